"""A recording SMTP server for tests, with per-test fault injection.

A `Fault` rule decides, per recipient or per message, whether the server
answers a chosen code at RCPT or DATA, or drops the connection; a
`sender_fault` answers a chosen code at MAIL FROM.
The EHLO reply can advertise PIPELINING, a chosen SIZE limit, or hide
extensions (`pipelining`, `size_limit`, `hidden`), and `chunks` keeps the raw
bytes of each read when `keep_chunks` is set (what arrived in one piece).
`RefusingGreeter` is a server that refuses every session in its greeting. A `Hold`
keeps chosen recipients waiting at RCPT until the test releases them (a slow
server), without stopping the server's other sessions.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP as SmtpProtocol
from aiosmtpd.smtp import Envelope, Session

from newsletter.outbox import SmtpCatcher, _SessionSmtp


@dataclass
class ReceivedMessage:
    """One accepted message: the envelope, the parsed message and how the session was secured."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    tls: bool = False  # the session was encrypted (STARTTLS or implicit TLS)
    login: Any = None  # what the server's authenticator returned for the session's AUTH


# A rule gets (stage, address, attempt number for that address) and returns
# None to accept, a reply line such as "451 4.3.0 try later" to refuse, or
# "DROP" to close the connection without answering.
FaultRule = Callable[[str, str, int], str | None]

# Longest a held recipient waits for `release` (a failing test must not hang the server).
HOLD_LIMIT_SECONDS = 60.0


@dataclass
class Hold:
    """Keeps recipients for which `applies(address)` is true waiting at RCPT until released.

    `reached` is set as the first one starts waiting; `release()` lets all of them go on.
    """

    applies: Callable[[str], bool]
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """Answer every held recipient (now and later) without waiting."""
        self.released.set()


@dataclass
class RecordingHandler:
    """Accepts messages, records them, and applies the fault rule first."""

    fault: FaultRule | None = None
    # Gets (sender, attempt number for that sender); answers as a FaultRule does, at MAIL FROM.
    sender_fault: Callable[[str, int], str | None] | None = None
    hold: Hold | None = None
    # What EHLO advertises beyond aiosmtpd's own list (aiosmtpd reads pipelined
    # commands correctly but does not say PIPELINING).
    pipelining: bool = False
    size_limit: int | None = None  # the SIZE advertised; None keeps aiosmtpd's
    hidden: frozenset[str] = frozenset()  # extension keywords left out ("SIZE", "8BITMIME")
    keep_chunks: bool = False
    chunks: list[bytes] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # MAIL, RCPT, DATA and RSET, in order
    messages: list[ReceivedMessage] = field(default_factory=list)
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    async def handle_EHLO(
        self,
        server: SmtpProtocol,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to a handler that answers EHLO
        first, *middle, last = (response[4:] for response in responses)
        lines = [first]
        for line in middle:
            keyword = line.split(" ", 1)[0].upper()
            if keyword in self.hidden:
                continue
            if keyword == "SIZE" and self.size_limit is not None:
                line = f"SIZE {self.size_limit}"
            lines.append(line)
        if self.pipelining:
            lines.append("PIPELINING")
        lines.append(last)
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_RSET(self, server: SmtpProtocol, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.commands.append("RSET")
        return "250 OK"

    def _decide(self, stage: str, address: str) -> str | None:
        with self.lock:
            count = self.attempts.get((stage, address), 0) + 1
            self.attempts[(stage, address)] = count
        return self.fault(stage, address, count) if self.fault else None

    async def handle_MAIL(
        self,
        server: SmtpProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        with self.lock:
            self.commands.append("MAIL " + " ".join([address, *mail_options]))
        # Only `sender_fault` is asked here, so rules written for RCPT and DATA stay as they were.
        if self.sender_fault is not None:
            with self.lock:
                count = self.attempts.get(("mail", address), 0) + 1
                self.attempts[("mail", address)] = count
            reply = self.sender_fault(address, count)
            if reply:
                return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SmtpProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self.lock:
            self.commands.append(f"RCPT {address}")
        hold = self.hold
        if hold is not None and hold.applies(address):
            hold.reached.set()
            # In a thread, so the server's other sessions carry on meanwhile.
            await asyncio.to_thread(hold.released.wait, HOLD_LIMIT_SECONDS)
        reply = self._decide("rcpt", address)
        if reply == "DROP":
            assert server.transport is not None
            server.transport.close()
            return "421 closing"
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SmtpProtocol, session: Session, envelope: Envelope) -> str:
        address = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        with self.lock:
            self.commands.append("DATA")
        reply = self._decide("data", address)
        if reply == "DROP":
            assert server.transport is not None
            server.transport.close()
            return "421 closing"
        if reply:
            return reply
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        with self.lock:
            self.messages.append(
                ReceivedMessage(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    raw=raw,
                    message=parsed,
                    tls=tls,
                    login=session.auth_data if session.authenticated else None,
                )
            )
            self.arrived.notify_all()
        return "250 OK queued"

    def wait_for_messages(self, count: int, timeout: float) -> bool:
        """Wait until at least `count` messages arrived; False if they did not in time."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)

    def recipients(self) -> list[str]:
        """Every accepted recipient, one entry per accepted message and recipient."""
        with self.lock:
            return [rcpt for m in self.messages for rcpt in m.rcpt_tos]


class _ChunkKeepingSmtp(_SessionSmtp):
    """The catcher's session, keeping each read's raw bytes when its handler asks."""

    def data_received(self, data: bytes) -> None:
        handler = self.event_handler
        if isinstance(handler, RecordingHandler) and handler.keep_chunks:
            with handler.lock:
                handler.chunks.append(bytes(data))
        super().data_received(data)


class RecordingSmtpServer(SmtpCatcher):
    """`SmtpCatcher` with a `RecordingHandler`; `.handler.messages` holds what arrived.

    `pipelining`, `size_limit`, `hidden` and `keep_chunks` go to the handler
    (see `RecordingHandler`). It says PIPELINING unless told not to, as Postfix
    and the large relays do, so the send tests run the path production takes
    (the envelope written ahead behind the previous content included).
    """

    handler: RecordingHandler
    session_class = _ChunkKeepingSmtp

    def __init__(
        self,
        fault: FaultRule | None = None,
        *,
        hold: Hold | None = None,
        pipelining: bool = True,
        size_limit: int | None = None,
        hidden: frozenset[str] = frozenset(),
        keep_chunks: bool = False,
        **kwargs: Any,
    ) -> None:
        handler = RecordingHandler(
            fault=fault,
            hold=hold,
            pipelining=pipelining,
            size_limit=size_limit,
            hidden=hidden,
            keep_chunks=keep_chunks,
        )
        super().__init__(handler, **kwargs)

    def stop(self) -> None:
        """Let held recipients go, then close the server."""
        if self.handler.hold is not None:
            self.handler.hold.release()
        super().stop()

    @property
    def messages(self) -> list[ReceivedMessage]:
        """What the server accepted so far."""
        return self.handler.messages


class RefusingGreeter(socketserver.ThreadingTCPServer):
    """A server that answers every connection with `greeting` (say "554 …") and hangs up."""

    daemon_threads = True

    def __init__(self, greeting: str) -> None:
        line = greeting.encode() + b"\r\n"

        class Greet(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(line)
                # Let the client read the line before the connection goes away.
                self.request.shutdown(socket.SHUT_WR)
                self.request.recv(1024)

        super().__init__(("127.0.0.1", 0), Greet)
        self.port: int = self.server_address[1]

    def __enter__(self) -> RefusingGreeter:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def closed_port() -> int:
    """A local port nothing listens on (bound, then closed): connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
