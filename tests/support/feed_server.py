"""A local HTTP server for feed tests: serves recorded-shape files, with programmable failures.

Each path gets a queue of responses; the last one repeats once the queue is
down to it, so `serve(path, FeedResponse(503), FeedResponse(503), ok)` answers
503 twice and then 200 forever. A responder may also be a function of the
request, for answers that depend on the query (pagination).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

FEEDS_DIR = Path(__file__).resolve().parents[1] / "feeds"


@dataclass(frozen=True)
class FeedResponse:
    """One canned HTTP answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: object, *, status: int = 200) -> FeedResponse:
        """A JSON answer."""
        return cls(status=status, body=json.dumps(value).encode())

    @classmethod
    def feed_file(cls, name: str, *, content_type: str | None = None) -> FeedResponse:
        """A 200 answer with the bytes of `tests/feeds/<name>`."""
        if content_type is None:
            content_type = "application/json" if name.endswith(".json") else "application/xml"
        return cls(body=(FEEDS_DIR / name).read_bytes(), content_type=content_type)


@dataclass(frozen=True)
class RecordedRequest:
    """What a client sent: path, query parameters and headers (names lower-cased)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


Responder = FeedResponse | Callable[[RecordedRequest], FeedResponse]


class FeedServer:
    """A threaded HTTP server on 127.0.0.1 and a free port; use as a context manager."""

    def __init__(self) -> None:
        self._routes: dict[str, list[Responder]] = {}
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        # A short poll interval keeps shutdown (once per test) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        """The absolute URL of `path` on this server."""
        return self.base_url + path

    def serve(self, path: str, *responses: Responder) -> None:
        """Answer requests for `path` with `responses` in turn, repeating the last one."""
        if not responses:
            raise ValueError("give at least one response")
        with self._lock:
            self._routes[path] = list(responses)

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        """The requests received so far, optionally only those for `path`."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def _answer(self, request: RecordedRequest) -> FeedResponse:
        with self._lock:
            self._requests.append(request)
            queue = self._routes.get(request.path)
            if not queue:
                return FeedResponse(404, b'{"error": "Not Found"}')
            responder = queue.pop(0) if len(queue) > 1 else queue[0]
        return responder(request) if callable(responder) else responder

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                request = RecordedRequest(
                    path=parts.path,
                    query=dict(parse_qsl(parts.query)),
                    headers={name.lower(): value for name, value in self.headers.items()},
                )
                response = server._answer(request)
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        return Handler

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


@contextmanager
def running_feed_server() -> Iterator[FeedServer]:
    """A started feed server, stopped afterwards."""
    with FeedServer() as server:
        yield server
