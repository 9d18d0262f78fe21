"""One SMTP connection: opening it the way the settings say, and one message's conversation.

`transmit` turns every answer the server gives (or fails to give) into an
`SmtpReply` instead of raising, because a refusal is an ordinary outcome the
ledger records, not an error of the program. aiosmtplib opens the session
(connect, EHLO, STARTTLS or implicit TLS, AUTH, its errors); `transmit` then
writes MAIL, RCPT and DATA itself through aiosmtplib's protocol: in one write
when the server offers PIPELINING, with SIZE when it offers that, and the
prepared message (`core.wire.PreparedMessage`) as it is, without aiosmtplib's
per-message line-end and dot-stuffing passes. When the caller has the next
message ready, its MAIL, RCPT and DATA follow this message's content in the
same write (RFC 2920 3.1 lets the content open a group), so a message costs
one round trip instead of two. The pool (`transport.SmtpPool`) keeps
several connections open for a send; `send_once` opens one for one message
(an operator's test copy).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from newsletter.core.errors import DeliveryError
from newsletter.core.mime import OutgoingMessage
from newsletter.core.settings import Settings, SmtpSecurity
from newsletter.core.wire import PreparedMessage

QUIT_TIMEOUT_SECONDS = 2.0


class SmtpStage(StrEnum):
    """Where in the SMTP conversation a reply came from."""

    CONNECT = "connect"
    LOGIN = "login"  # the relay refused our credentials: nothing to do with the recipient
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    CONNECTION = "connection"  # no reply at all: dropped or timed out
    PREPARE = "prepare"  # never offered: the message could not be assembled for this row


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """The server's answer to one message; `code` is None when no answer came."""

    code: int | None
    text: str
    stage: SmtpStage

    @property
    def accepted(self) -> bool:
        """True when the server took responsibility for the message (250 to DATA)."""
        return self.code is not None and 200 <= self.code < 300

    @property
    def ends_session(self) -> bool:
        """True when the connection cannot carry another message (dropped, or 421 closing)."""
        if self.stage in (SmtpStage.CONNECT, SmtpStage.LOGIN, SmtpStage.CONNECTION):
            return True
        # 421 means the server is closing this session; a refused recipient keeps it open.
        return self.code == 421 and self.stage is not SmtpStage.RCPT


ACCEPTED = SmtpReply(250, "OK", SmtpStage.DATA)


@dataclass(frozen=True, slots=True)
class NextMessage:
    """The message a connection will carry next, offered while the current one goes out."""

    sender: str
    recipient: str
    message: PreparedMessage


# Asked once the current message's envelope is accepted: the next message if it is
# ready now (its envelope then goes out behind this message's content), else None.
NextMessageSource = Callable[[], NextMessage | None]


def parse_relay(relay: str, default_port: int) -> tuple[str, int]:
    """Split `host[:port]` into its parts."""
    host, _, port = relay.rpartition(":") if ":" in relay else (relay, "", "")
    return host, int(port) if port else default_port


def make_smtp_client(
    settings: Settings, *, host: str | None = None, port: int | None = None
) -> aiosmtplib.SMTP:
    """An unconnected client for the configured relay (or the one given)."""
    return aiosmtplib.SMTP(
        hostname=host or settings.smtp_host,
        port=port or settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        use_tls=settings.smtp_security is SmtpSecurity.TLS,
        start_tls=settings.smtp_security is SmtpSecurity.STARTTLS,
        cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
        timeout=settings.smtp_timeout_seconds,
    )


def describe_login_refusal(host: str, port: int, error: aiosmtplib.SMTPAuthenticationError) -> str:
    """One line for the operator: the relay refused our credentials, and which settings to fix."""
    return (
        f"the SMTP server {host}:{port} refused the login ({error.code} {error.message}); "
        "check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
    )


async def connect(client: aiosmtplib.SMTP) -> SmtpReply | None:
    """Open the client's connection: None when it is open, else why it is not."""
    try:
        await client.connect()
        if client.is_ehlo_or_helo_needed:
            # Once per session (connect says EHLO only for STARTTLS or AUTH): the
            # extensions it lists (PIPELINING, SIZE, 8BITMIME) decide how `transmit` sends.
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
    except aiosmtplib.SMTPAuthenticationError as error:
        text = describe_login_refusal(client.hostname or "", client.port or 0, error)
        return SmtpReply(error.code, text, SmtpStage.LOGIN)
    except aiosmtplib.SMTPResponseException as error:
        # The greeting, EHLO or STARTTLS refused: the session, not any recipient.
        where = f"{client.hostname}:{client.port}"
        text = f"the SMTP server {where} refused the session ({error.code} {error.message})"
        return SmtpReply(error.code, text, SmtpStage.CONNECT)
    except (aiosmtplib.SMTPException, OSError) as error:
        where = f"{client.hostname}:{client.port}"
        return SmtpReply(None, f"cannot connect to {where}: {error}", SmtpStage.CONNECT)
    return None


# An address as it may stand in MAIL FROM or RCPT TO: no controls, spaces or brackets.
_ENVELOPE_ADDRESS: Final = re.compile(r"[^\x00-\x20\x7f<>]*")
# Longest reply (all its lines) the pipelined reader buffers before calling it garbage.
MAX_REPLY_BYTES: Final = 32 * 1024


class _PipelinedProtocol(SMTPProtocol):
    """aiosmtplib's protocol, able to collect several replies to commands written at once.

    aiosmtplib reads one reply per command and drops whatever arrives while no
    command waits, so replies to pipelined commands would be lost. While a
    transaction runs (`_replies` is a queue), every complete reply goes into
    the queue in order, and a lost connection puts an error there; otherwise
    aiosmtplib's own reading (greeting, EHLO, STARTTLS, AUTH, QUIT) is unchanged.
    Depends on `SMTPProtocol._buffer` and `_read_response_from_buffer`
    (tests/test_smtp_wire.py fails loudly if they change).
    """

    _replies: asyncio.Queue[SMTPResponse | Exception] | None = None
    # The message whose MAIL, RCPT and DATA went out behind the last one's content:
    # its replies are on their way, and the server may be waiting for its content.
    _written_ahead: PreparedMessage | None = None

    def data_received(self, data: bytes) -> None:
        """Queue each complete reply during a transaction; aiosmtplib's reading otherwise."""
        replies = self._replies
        if replies is None:
            super().data_received(data)
            return
        self._buffer.extend(data)
        try:
            while (reply := self._read_response_from_buffer()) is not None:
                replies.put_nowait(reply)
        except aiosmtplib.SMTPException as error:
            replies.put_nowait(error)
        if len(self._buffer) > MAX_REPLY_BYTES:
            del self._buffer[:]
            replies.put_nowait(aiosmtplib.SMTPResponseException(-1, "Response too long"))

    def eof_received(self) -> bool:
        """The server closed its side: a waiting transaction learns it at once."""
        if self._replies is not None:
            self._replies.put_nowait(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: a waiting transaction learns it at once."""
        if self._replies is not None:
            self._replies.put_nowait(aiosmtplib.SMTPServerDisconnected("Connection lost"))
        super().connection_lost(exc)


def written_ahead(client: aiosmtplib.SMTP) -> PreparedMessage | None:
    """The message whose envelope this connection already wrote (None: no such message).

    Such a connection can carry only that message next: once DATA is accepted,
    only its content (or closing the connection) ends the transaction.
    """
    protocol = client.protocol
    if not isinstance(protocol, _PipelinedProtocol) or not protocol.is_connected:
        return None
    return protocol._written_ahead


def _transaction_protocol(client: aiosmtplib.SMTP) -> _PipelinedProtocol | None:
    """The client's open connection's protocol, made able to read pipelined replies."""
    protocol = client.protocol
    if protocol is None or not protocol.is_connected:
        return None
    if not isinstance(protocol, _PipelinedProtocol):
        # Same object, same state, one more behaviour (only while `_replies` is set).
        protocol.__class__ = _PipelinedProtocol
        # uvloop's transports keep the protocol's data_received from when it was set:
        # setting it again makes them call the new class's, as asyncio's do anyway.
        if protocol.transport is not None:  # it is: the protocol is connected
            protocol.transport.set_protocol(protocol)
    assert isinstance(protocol, _PipelinedProtocol)
    return protocol


class _Refused(Exception):
    """A reply that ends the transaction at `stage`."""

    def __init__(self, code: int, text: str, stage: SmtpStage) -> None:
        super().__init__(text)
        self.reply = SmtpReply(code, text, stage)


def _mail_command(
    client: aiosmtplib.SMTP, sender: str, recipient: str, message: PreparedMessage
) -> tuple[bytes, bytes] | SmtpReply:
    """MAIL FROM and RCPT TO with the parameters the message needs and the server offers.

    Or why this message cannot be offered at all (a refusal of this row alone,
    never of the session).
    """
    if _ENVELOPE_ADDRESS.fullmatch(recipient) is None or not recipient:
        return SmtpReply(501, f"address cannot be sent: {recipient!r}", SmtpStage.RCPT)
    if _ENVELOPE_ADDRESS.fullmatch(sender) is None:
        return SmtpReply(501, f"envelope sender cannot be sent: {sender!r}", SmtpStage.MAIL)
    extensions = client.esmtp_extensions
    parameters = b""
    if "size" in extensions:
        limit = _size_limit(extensions["size"])
        if limit and message.size > limit:
            where = f"{client.hostname}:{client.port}"
            return SmtpReply(
                552,
                f"5.3.4 the message is {message.size} bytes, over the {limit}-byte "
                f"limit (SIZE) of the SMTP server {where}; not sent",
                SmtpStage.PREPARE,
            )
        parameters += b" SIZE=%d" % message.size
    if message.eight_bit:
        if "8bitmime" not in extensions:
            return SmtpReply(
                554,
                "5.6.3 the message has 8-bit content and the SMTP server does not offer "
                "8BITMIME; not sent",
                SmtpStage.PREPARE,
            )
        parameters += b" BODY=8BITMIME"
    encoding = "ascii"
    if not (sender.isascii() and recipient.isascii()):
        if "smtputf8" not in extensions:
            return SmtpReply(
                553,
                "5.6.7 the address needs SMTPUTF8 and the SMTP server does not offer it; not sent",
                SmtpStage.PREPARE,
            )
        parameters += b" SMTPUTF8"
        encoding = "utf-8"
    mail = b"MAIL FROM:<" + sender.encode(encoding) + b">" + parameters + b"\r\n"
    rcpt = b"RCPT TO:<" + recipient.encode(encoding) + b">\r\n"
    return mail, rcpt


def _size_limit(parameter: str) -> int:
    """The SIZE keyword's limit (RFC 1870); 0 when it states none."""
    text = parameter.strip()
    return int(text) if text.isascii() and text.isdigit() else 0


async def transmit(
    client: aiosmtplib.SMTP,
    sender: str,
    recipient: str,
    message: PreparedMessage,
    *,
    next_message: NextMessageSource | None = None,
) -> SmtpReply:
    """Send one prepared message on an open connection and report the server's answer.

    MAIL FROM, RCPT TO and DATA go in one write when the server offers
    PIPELINING (RFC 2920), else one by one; each reply is judged at its own
    stage either way. The message's bytes are written as they are (see
    `PreparedMessage`). After a refused envelope the session is reset (RSET)
    so it can carry the next message; if that fails, the connection is closed.

    With PIPELINING, `next_message` is asked for the next message once this
    envelope is accepted; its envelope then follows this content in the same
    write, and the next call, which must be for that very message, reads its
    replies instead of writing it again (`written_ahead`).
    """
    protocol = _transaction_protocol(client)
    lock = protocol._command_lock if protocol is not None else None
    if protocol is None or lock is None:
        return SmtpReply(None, "connection lost: not connected", SmtpStage.CONNECTION)
    ahead = protocol._written_ahead
    if ahead is not None and ahead is not message:
        # Only closing ends a transaction whose DATA may have been accepted (SmtpPool
        # starts a new connection before it gets here; this is the last guard).
        client.close()
        return SmtpReply(
            None, "connection lost: it was waiting for another message", SmtpStage.CONNECTION
        )
    commands: tuple[bytes, bytes] | None = None
    if ahead is None:
        envelope = _mail_command(client, sender, recipient, message)
        if isinstance(envelope, SmtpReply):
            return envelope
        commands = envelope
    async with lock:
        transaction = _Transaction(client, protocol)
        try:
            if commands is not None:
                transaction.write_envelope(*commands)
            protocol._written_ahead = None
            return await transaction.run(message, next_message)
        except (aiosmtplib.SMTPException, OSError) as error:
            protocol._written_ahead = None
            client.close()
            return SmtpReply(None, f"connection lost: {error}", SmtpStage.CONNECTION)
        except asyncio.CancelledError:
            # Replies may still be on their way; the next message must not read them.
            protocol._written_ahead = None
            client.close()
            raise
        finally:
            if protocol._written_ahead is None:
                protocol._replies = None


_ENVELOPE_STAGES: Final = (
    ((250,), SmtpStage.MAIL),
    ((250, 251), SmtpStage.RCPT),
    ((354,), SmtpStage.DATA),
)


class _Transaction:
    """One message's MAIL, RCPT and DATA on a connection whose command lock is held."""

    def __init__(self, client: aiosmtplib.SMTP, protocol: _PipelinedProtocol) -> None:
        self.client = client
        self.protocol = protocol
        self.seconds = client.timeout
        self.pipelining = client.supports_extension("pipelining")
        if protocol._replies is None:
            protocol._replies = asyncio.Queue()
        # Replies to an envelope written ahead are already in this queue, in order.
        self.replies: asyncio.Queue[SMTPResponse | Exception] = protocol._replies
        self.envelope: tuple[bytes, bytes] | None = None

    def write_envelope(self, mail: bytes, rcpt: bytes) -> None:
        """MAIL, RCPT and DATA in one write with PIPELINING; else kept for `run`, one by one."""
        if self.pipelining:
            self.protocol.write(mail + rcpt + b"DATA\r\n")
        else:
            self.envelope = (mail, rcpt)

    async def reply(self) -> SMTPResponse:
        """The next reply, in order; raises when the connection is lost or goes quiet."""
        replies = self.replies
        if not replies.empty():
            # Already here (pipelined replies arrive together: the last message's 250, then
            # this one's MAIL, RCPT and DATA): nothing to wait for, so no timer to arm.
            reply = replies.get_nowait()
        else:
            try:
                # Not wait_for: on Python 3.11 it can swallow a cancellation that meets a reply.
                async with asyncio.timeout(self.seconds):
                    reply = await replies.get()
            except TimeoutError as error:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from error
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def command(self, line: bytes, codes: tuple[int, ...], stage: SmtpStage) -> None:
        """Write one command and raise `_Refused` unless its reply is one of `codes`."""
        self.protocol.write(line)
        reply = await self.reply()
        if reply.code not in codes:
            raise _Refused(reply.code, reply.message, stage)

    async def run(
        self, message: PreparedMessage, next_message: NextMessageSource | None
    ) -> SmtpReply:
        """The whole exchange once the envelope is written; the reply that decides its fate."""
        try:
            if self.envelope is None:
                await self.pipelined_replies()
            else:
                mail, rcpt = self.envelope
                for line, (codes, stage) in zip(
                    (mail, rcpt, b"DATA\r\n"), _ENVELOPE_STAGES, strict=True
                ):
                    await self.command(line, codes, stage)
        except _Refused as refused:
            # Even after a 421: a server that really closes fails the RSET, and is closed.
            await self.reset()
            return refused.reply
        following = self.next_envelope(next_message)
        if following is None:
            self.protocol.write(message.data)
        else:
            upcoming, commands = following
            # One write, one round trip: this content, then the next MAIL, RCPT and DATA.
            self.protocol.write(message.data + commands)
            self.protocol._written_ahead = upcoming
        final = await self.reply()
        if final.code != 250:
            # The transaction is over either way (RFC 5321 4.1.1.4); the session goes on.
            return SmtpReply(final.code, final.message, SmtpStage.DATA)
        return ACCEPTED

    def next_envelope(
        self, next_message: NextMessageSource | None
    ) -> tuple[PreparedMessage, bytes] | None:
        """The next message and its envelope's bytes, when it can follow this content now."""
        if next_message is None or not self.pipelining:
            return None
        upcoming = next_message()
        if upcoming is None:
            return None
        commands = _mail_command(self.client, upcoming.sender, upcoming.recipient, upcoming.message)
        if isinstance(commands, SmtpReply):
            return None  # its own call says why it cannot be offered
        mail, rcpt = commands
        return upcoming.message, mail + rcpt + b"DATA\r\n"

    async def pipelined_replies(self) -> None:
        """Read the replies to MAIL, RCPT and DATA written at once; `_Refused` at the first bad.

        A refusal is judged at its own stage, as if the commands had gone one
        by one; if the server hangs up after refusing, the refusal still counts.
        """
        refused: _Refused | None = None
        reply: SMTPResponse | None = None
        for codes, stage in _ENVELOPE_STAGES:
            try:
                reply = await self.reply()
            except (aiosmtplib.SMTPException, OSError):
                if refused is None:
                    raise
                self.client.close()
                raise refused from None
            if refused is None and reply.code not in codes:
                refused = _Refused(reply.code, reply.message, stage)
        if refused is None:
            return
        if reply is not None and reply.code == 354:
            # RFC 2920 3.1: DATA was accepted though the envelope was not; end it empty.
            try:
                self.protocol.write(b".\r\n")
                await self.reply()
            except (aiosmtplib.SMTPException, OSError):
                self.client.close()
        raise refused

    async def reset(self) -> None:
        """RSET after a refused envelope; a session that cannot be reset is closed."""
        try:
            self.protocol.write(b"RSET\r\n")
            reply = await self.reply()
        except (aiosmtplib.SMTPException, OSError):
            self.client.close()
            return
        if reply.code != 250:
            self.client.close()


async def close_politely(client: aiosmtplib.SMTP) -> None:
    """Say QUIT (briefly) if the connection is open, then close it.

    Not when an envelope was written ahead for a message that never followed:
    the server may be reading content, and QUIT would become part of it; closing
    without the final "." is what abandons it.
    """
    try:
        if client.is_connected and written_ahead(client) is None:
            await asyncio.wait_for(client.quit(), QUIT_TIMEOUT_SECONDS)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        client.close()


async def send_once(
    settings: Settings, sender: str, recipient: str, message: PreparedMessage
) -> SmtpReply:
    """Deliver one message on its own connection to the main relay and report the answer."""
    client = make_smtp_client(settings)
    refused = await connect(client)
    if refused is not None:
        client.close()
        return refused
    try:
        return await transmit(client, sender, recipient, message)
    finally:
        await close_politely(client)


async def send_single_message(settings: Settings, message: OutgoingMessage) -> None:
    """Send one transactional message (a confirmation) on its own connection."""
    client = make_smtp_client(settings)
    try:
        async with client:
            await client.sendmail(message.envelope_from, [message.recipient], message.data)
    except aiosmtplib.SMTPAuthenticationError as error:
        raise DeliveryError(
            describe_login_refusal(settings.smtp_host, settings.smtp_port, error)
        ) from error
    except aiosmtplib.SMTPException as error:
        raise DeliveryError(
            f"could not send to {message.recipient} "
            f"via {settings.smtp_host}:{settings.smtp_port}: {error}"
        ) from error
    except OSError as error:
        raise DeliveryError(
            f"cannot reach the SMTP server {settings.smtp_host}:{settings.smtp_port}: {error}"
        ) from error
