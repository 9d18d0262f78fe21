"""Request bodies over a small limit get 413 before they are read, streamed or not.

A pure ASGI middleware, so it sits in front of everything that reads a body
(FastAPI's form and JSON parsing, the sign-up route's own reading): a declared
`Content-Length` over the limit is refused without reading a byte, and a body
without one (chunked) is counted as it streams and refused at the limit.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A sign-up or preferences form is a few hundred bytes; 16 KiB leaves room for
# long names in any script and still bounds what one request can make us hold.
FORM_BODY_LIMIT = 16 * 1024
# Everything else takes a button press or one address (admin test-send).
OTHER_BODY_LIMIT = 4 * 1024
_FORM_PATHS = ("/subscribe", "/preferences/", "/api/preferences/")
# A reader's BibTeX library (subscribers.library caps the file itself at 1 MiB);
# the multipart envelope adds a little.
LIBRARY_BODY_LIMIT = 1024 * 1024 + 16 * 1024
_LIBRARY_SUFFIX = "/library"
# Webhooks (/hooks/ses): an SNS message is at most 256 KB, and its JSON envelope
# escapes the SES notification inside it, which can add a little.
HOOK_BODY_LIMIT = 320 * 1024
_HOOK_PATHS = ("/hooks/",)


# A subscriber list is uploaded here; its limit is a setting (NEWSLETTER_IMPORT_MAX_BYTES).
IMPORT_PATH = "/admin/subscribers/import"
# The console's upload form posts the same kind of list here.
CONSOLE_IMPORT_PATH = "/admin/console/readers/import"


def body_limit_for(path: str) -> int:
    """The largest request body, in bytes, accepted on this path."""
    if path.startswith(_HOOK_PATHS):
        return HOOK_BODY_LIMIT
    if path.startswith("/preferences/") and path.endswith(_LIBRARY_SUFFIX):
        return LIBRARY_BODY_LIMIT
    return FORM_BODY_LIMIT if path.startswith(_FORM_PATHS) else OTHER_BODY_LIMIT


def body_limits(*, import_max_bytes: int) -> Callable[[str], int]:
    """`body_limit_for`, with the subscriber import's own, larger limit."""

    def limit_for(path: str) -> int:
        return (
            import_max_bytes if path in (IMPORT_PATH, CONSOLE_IMPORT_PATH) else body_limit_for(path)
        )

    return limit_for


class RequestBodyTooLargeError(Exception):
    """Raised into the app when a streamed body passes its limit; the middleware answers."""


Refusal = Callable[[Request, int], Response]


class BodySizeLimitMiddleware:
    """Answers 413 (through `refusal`) for bodies larger than `limit_for(path)` bytes."""

    def __init__(
        self, app: ASGIApp, *, refusal: Refusal, limit_for: Callable[[str], int] = body_limit_for
    ) -> None:
        self.app = app
        self.refusal = refusal
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a declared oversize body at once; count a streamed one as it arrives."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, receive, send, limit)
            return

        received = 0
        exceeded = False
        answered = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise RequestBodyTooLargeError
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise RequestBodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if exceeded and not answered:
                # The app answered the error it saw (often a 400 from the body parser);
                # the refusal below says what really happened.
                return
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or answered:
                raise
        if exceeded and not answered:
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        # No "Connection: close": closing a socket with body bytes still arriving makes
        # the kernel send a reset, which can destroy the 413 before the client reads it.
        # The server discards the rest of the body (uvicorn: once the answer is complete)
        # without keeping it, and drops the connection when it falls silent.
        await self.refusal(Request(scope), limit)(scope, receive, send)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
