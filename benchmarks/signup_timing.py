"""Sign-up answer times by the address's state (new, pending, confirmed, unsubscribed).

Runs the web app under uvicorn on a temp SQLite database with an in-process
SMTP server and times POST /subscribe (JSON) until the answer's last byte. The
four kinds are interleaved, their order rotating every round, with a pause
between requests so that the work one sign-up leaves for after its answer
(recording it, the confirmation email) does not land in the next one's time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from newsletter.core.db import create_db_engine, session_scope, upgrade_schema
from newsletter.core.settings import load_settings
from newsletter.outbox import SmtpCatcher
from newsletter.web.app import create_app
from subscribers import store


class CountingHandler:
    """Accepts and counts messages."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.count += 1
        return "250 OK"


class RawClient:
    """Each request on a new connection, sent in one write; the time ends at the last byte.

    (On a kept-alive connection uvicorn's h11 server answers the second and later
    requests about 40 ms late, a delayed-ACK effect that would hide what is measured.)
    """

    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def post_json(self, path: str, payload: object) -> int:
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(head + body)
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(65536)
            head_bytes, _, rest = buffer.partition(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length: *(\d+)", head_bytes)
            assert match is not None
            while len(rest) < int(match.group(1)):
                rest += sock.recv(65536)
        return int(head_bytes.split(b" ", 2)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-kind", type=int, default=150)
    parser.add_argument("--pause-ms", type=float, default=60.0)
    args = parser.parse_args()
    n = args.per_kind
    with tempfile.TemporaryDirectory() as tmp, SmtpCatcher(CountingHandler()) as smtp:
        settings = load_settings(
            database_url=f"sqlite:///{Path(tmp) / 'timing.db'}",
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            secret_key="timing-secret-key-0123456789-abcdefghij",
            signup_rate_limit=1_000_000,
            # Every confirmation that is due goes out, as for a real list's varied addresses.
            confirm_domain_limit=1_000_000,
        )
        engine = create_db_engine(settings.database_url)
        upgrade_schema(engine)
        now = dt.datetime.now(dt.UTC)
        with session_scope(engine) as session:
            for i in range(n):
                store.add_subscriber(session, email=f"confirmed{i}@example.org", confirmed=True)
                store.add_subscriber(session, email=f"left{i}@example.org", confirmed=True)
                store.remove_subscriber(session, email=f"left{i}@example.org")
                pending = store.add_subscriber(session, email=f"pending{i}@example.org")
                pending.confirmation_sent_at = now
        app = create_app(settings, engine=engine)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        times: dict[str, list[float]] = {
            k: [] for k in ("new", "pending", "confirmed", "unsubscribed")
        }
        with RawClient(port) as client:
            for i in range(5):  # warm-up
                client.post_json("/subscribe", {"email": f"warm{i}@example.org"})
            kinds = ["new", "pending", "confirmed", "unsubscribed"]
            for i in range(n):
                names = {
                    "new": f"new{i}@example.org",
                    "pending": f"pending{i}@example.org",
                    "confirmed": f"confirmed{i}@example.org",
                    "unsubscribed": f"left{i}@example.org",
                }
                for kind in kinds[i % 4 :] + kinds[: i % 4]:
                    time.sleep(args.pause_ms / 1000)
                    start = time.perf_counter()
                    status = client.post_json("/subscribe", {"email": names[kind]})
                    times[kind].append((time.perf_counter() - start) * 1000)
                    assert status == 202, status
        server.should_exit = True
        thread.join()
        engine.dispose()
    for kind, values in times.items():
        values.sort()
        print(
            f"{kind:13s} median {statistics.median(values):6.2f} ms  "
            f"p10 {values[len(values) // 10]:6.2f}  p90 {values[len(values) * 9 // 10]:6.2f}  "
            f"(n={len(values)})"
        )


if __name__ == "__main__":
    main()
