"""Opening SMTP connections the way the settings say (TLS mode, login)."""

from __future__ import annotations

import aiosmtplib

from newsletter.errors import DeliveryError
from newsletter.mime import OutgoingMessage
from newsletter.settings import Settings, SmtpSecurity


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
        timeout=settings.smtp_timeout_seconds,
    )


async def send_single_message(settings: Settings, message: OutgoingMessage) -> None:
    """Send one transactional message (a confirmation) on its own connection."""
    client = make_smtp_client(settings)
    try:
        async with client:
            await client.sendmail(message.envelope_from, [message.recipient], message.data)
    except aiosmtplib.SMTPException as error:
        raise DeliveryError(
            f"could not send to {message.recipient} "
            f"via {settings.smtp_host}:{settings.smtp_port}: {error}"
        ) from error
    except OSError as error:
        raise DeliveryError(
            f"cannot reach the SMTP server {settings.smtp_host}:{settings.smtp_port}: {error}"
        ) from error
