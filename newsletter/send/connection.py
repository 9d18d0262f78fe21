"""Opening SMTP connections the way the settings say (TLS mode, login)."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from newsletter.errors import DeliveryError
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
        cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
        timeout=settings.smtp_timeout_seconds,
    )


def describe_login_refusal(host: str, port: int, error: aiosmtplib.SMTPAuthenticationError) -> str:
    """One line for the operator: the relay refused our credentials, and which settings to fix."""
    return (
        f"the SMTP server {host}:{port} refused the login ({error.code} {error.message}); "
        "check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
    )


async def send_single_message(settings: Settings, message: EmailMessage) -> None:
    """Send one transactional message (a confirmation, a test copy) on its own connection."""
    client = make_smtp_client(settings)
    try:
        async with client:
            await client.send_message(message)
    except aiosmtplib.SMTPAuthenticationError as error:
        raise DeliveryError(
            describe_login_refusal(settings.smtp_host, settings.smtp_port, error)
        ) from error
    except aiosmtplib.SMTPException as error:
        raise DeliveryError(
            f"could not send to {message['To']} "
            f"via {settings.smtp_host}:{settings.smtp_port}: {error}"
        ) from error
    except OSError as error:
        raise DeliveryError(
            f"cannot reach the SMTP server {settings.smtp_host}:{settings.smtp_port}: {error}"
        ) from error
