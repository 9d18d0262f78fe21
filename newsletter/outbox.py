"""An SMTP server in the process (aiosmtpd) that stores every message it accepts.

`make demo` sends through it over real SMTP, so the demo exercises exactly the
code path production uses; the messages land in a Maildir a person can open.
Tests build their own recording and fault-injecting handlers on `SmtpCatcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import ssl
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.smtp import SMTP as SmtpProtocol
from aiosmtpd.smtp import Envelope, Session

CLOSE_TIMEOUT_SECONDS = 10.0


EML_FOLDER = "eml"


class MaildirHandler:
    """Accepts every message and stores it in a Maildir, with an `.eml` copy beside it.

    Maildir file names have no extension, so a desktop opens none of them with
    a double click; each copy in `eml/` (numbered, named after the recipient)
    opens in the mail program.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.maildir = mailbox.Maildir(directory, create=True)
        self.eml_directory = directory / EML_FOLDER
        self.eml_directory.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._stored = 0

    async def handle_DATA(self, server: SmtpProtocol, session: Session, envelope: Envelope) -> str:
        """Store the message as received, and its `.eml` copy."""
        content = envelope.original_content or b""
        recipient = envelope.rcpt_tos[0] if envelope.rcpt_tos else "unknown"
        with self._lock:
            self.maildir.add(content)
            self._stored += 1
            name = f"{self._stored:04d}-{_file_safe(recipient)}.eml"
            (self.eml_directory / name).write_bytes(content)
        return "250 OK stored"

    def clear(self) -> None:
        """Remove every stored message and copy (the demo starts afresh on each run)."""
        with self._lock:
            self.maildir.clear()
            for copy in self.eml_directory.glob("*.eml"):
                copy.unlink()
            self._stored = 0


def _file_safe(address: str) -> str:
    """An address as part of a file name: letters, digits and `@._+-` only, at most 64."""
    return "".join(c if c.isalnum() or c in "@._+-" else "_" for c in address)[:64]


class _SessionSmtp(SmtpProtocol):
    """aiosmtpd's SMTP protocol, telling its catcher when a client connects and hangs up."""

    def __init__(self, catcher: SmtpCatcher, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._catcher = catcher

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the session (STARTTLS calls this again for the same one)."""
        super().connection_made(transport)
        self._catcher._session_changed(self, is_open=True)

    def connection_lost(self, error: Exception | None) -> None:
        """The client is gone: nothing more can arrive in this session."""
        super().connection_lost(error)
        self._catcher._session_changed(self, is_open=False)


class SmtpCatcher:
    """An aiosmtpd server on 127.0.0.1 with its own event loop in a background thread.

    Port 0 picks a free port; `port` tells which one after `start()`. An
    `ssl_context` makes it speak implicit TLS; other keywords go to aiosmtpd's
    `SMTP` (`tls_context` and `require_starttls` for STARTTLS, `authenticator`).
    A subclass may serve with its own `session_class` (a subclass of the session).
    """

    session_class: type[_SessionSmtp] = _SessionSmtp

    def __init__(
        self,
        handler: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        **protocol_options: Any,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._ssl_context = ssl_context
        self._protocol_options = protocol_options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._sessions: set[_SessionSmtp] = set()
        self._sessions_changed = threading.Condition()

    def _protocol(self) -> SmtpProtocol:
        return self.session_class(
            self,
            self.handler,
            hostname="outbox.localhost",
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=50 * 1024 * 1024,
            **self._protocol_options,
        )

    def start(self) -> Self:
        """Listen and serve in the background."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(self._protocol, self.host, self.port, ssl=self._ssl_context),
            self._loop,
        )
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _session_changed(self, session: _SessionSmtp, *, is_open: bool) -> None:
        with self._sessions_changed:
            if is_open:
                self._sessions.add(session)
            else:
                self._sessions.discard(session)
            self._sessions_changed.notify_all()

    def wait_until_no_sessions(self, timeout: float) -> bool:
        """Wait until every client has hung up; False if some are still connected."""
        with self._sessions_changed:
            return self._sessions_changed.wait_for(lambda: not self._sessions, timeout)

    def stop(self) -> None:
        """Close the server, hang up on connected clients, and close the loop."""
        if self._server is not None:
            server = self._server

            async def close() -> None:
                # Stopping the loop while a connection is still closing leaks its socket.
                # Python 3.11 waits for every connection (TLS handshakes included) only
                # when wait_closed() is already waiting as close() is called.
                all_closed = asyncio.ensure_future(server.wait_closed())
                await asyncio.sleep(0)  # let it start waiting
                server.close()
                for session in list(self._sessions):
                    if session.transport is not None:
                        session.transport.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_closed, CLOSE_TIMEOUT_SECONDS)

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(
                timeout=CLOSE_TIMEOUT_SECONDS + 5
            )
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
