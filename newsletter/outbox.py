"""An SMTP server in the process (aiosmtpd) that stores every message it accepts.

`make demo` sends through it over real SMTP, so the demo exercises exactly the
code path production uses; the messages land in a Maildir a person can open.
Tests build their own recording and fault-injecting handlers on `SmtpCatcher`.
"""

from __future__ import annotations

import asyncio
import mailbox
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.smtp import SMTP as SmtpProtocol
from aiosmtpd.smtp import Envelope, Session


class MaildirHandler:
    """Accepts every message and stores it in a Maildir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.maildir = mailbox.Maildir(directory, create=True)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SmtpProtocol, session: Session, envelope: Envelope) -> str:
        """Store the message as received."""
        content = envelope.original_content or b""
        with self._lock:
            self.maildir.add(content)
        return "250 OK stored"


class SmtpCatcher:
    """An aiosmtpd server on 127.0.0.1 with its own event loop in a background thread.

    Port 0 picks a free port; `port` tells which one after `start()`.
    """

    def __init__(self, handler: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def _protocol(self) -> SmtpProtocol:
        return SmtpProtocol(
            self.handler,
            hostname="outbox.localhost",
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=50 * 1024 * 1024,
        )

    def start(self) -> Self:
        """Listen and serve in the background."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(self._protocol, self.host, self.port), self._loop
        )
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the server and its loop."""
        if self._server is not None:
            server = self._server

            async def close() -> None:
                server.close()
                await server.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._server = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
