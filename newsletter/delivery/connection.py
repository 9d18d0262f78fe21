"""One SMTP connection: opening it the way the settings say, and one message's conversation.

`transmit` turns every answer the server gives (or fails to give) into an
`SmtpReply` instead of raising, because a refusal is an ordinary outcome the
ledger records, not an error of the program. The pool (`transport.SmtpPool`) keeps
several connections open for a send; `send_once` opens one for one message
(an operator's test copy).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib

from newsletter.core.errors import DeliveryError
from newsletter.core.mime import OutgoingMessage
from newsletter.core.settings import Settings, SmtpSecurity

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


async def transmit(
    client: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes
) -> SmtpReply:
    """Send one message on an open connection and report the server's answer."""
    options = [] if recipient.isascii() else ["SMTPUTF8"]
    try:
        await client.sendmail(sender, [recipient], message, mail_options=options)
    except aiosmtplib.SMTPRecipientsRefused as error:
        refusal = error.recipients[0]
        return SmtpReply(refusal.code, refusal.message, SmtpStage.RCPT)
    except aiosmtplib.SMTPSenderRefused as error:
        return SmtpReply(error.code, error.message, SmtpStage.MAIL)
    except aiosmtplib.SMTPDataError as error:
        return SmtpReply(error.code, error.message, SmtpStage.DATA)
    except aiosmtplib.SMTPResponseException as error:
        return SmtpReply(error.code, error.message, SmtpStage.MAIL)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        return SmtpReply(None, f"connection lost: {error}", SmtpStage.CONNECTION)
    except ValueError as error:
        # aiosmtplib refuses an address it cannot put on the wire; no retry helps.
        return SmtpReply(501, f"address cannot be sent: {error}", SmtpStage.RCPT)
    return ACCEPTED


async def close_politely(client: aiosmtplib.SMTP) -> None:
    """Say QUIT (briefly) if the connection is open, then close it."""
    try:
        if client.is_connected:
            await asyncio.wait_for(client.quit(), QUIT_TIMEOUT_SECONDS)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        client.close()


async def send_once(settings: Settings, sender: str, recipient: str, message: bytes) -> SmtpReply:
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
