"""STARTTLS, implicit TLS and AUTH through the real sending code, against aiosmtpd.

The relay presents a self-signed certificate made for the test; the client
trusts it only through NEWSLETTER_SMTP_CA_FILE, so these tests also show that
an untrusted certificate is refused and that a wrong password stops a send
with one clear line instead of failing the readers.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import Engine

from newsletter.core.errors import ConfigurationError, DeliveryError
from newsletter.core.headers import mailbox_header, mailbox_setting_header, unstructured_header
from newsletter.core.mime import OutgoingMessage, compose_alternative
from newsletter.core.settings import Settings, SmtpSecurity, load_settings
from newsletter.delivery.connection import send_single_message
from newsletter.delivery.worker import resume_edition, send_edition
from newsletter.ingest import PaperSource, ingest_papers
from newsletter.models import DeliveryStatus, EditionStatus
from newsletter.sample_data import SAMPLE_DAY, sample_day_path
from tests.support.certificates import SelfSignedCertificate, make_self_signed_certificate
from tests.support.sending import (
    DAY,
    edition_status,
    ledger_rows,
    make_edition,
    received,
    seed_subscribers,
    worker_environment,
)
from tests.support.smtp_server import RecordingSmtpServer

USERNAME = "relay-user"
PASSWORD = "relay-password-0123"


def check_login(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    """The relay's authenticator: one account; the session remembers its name."""
    accepted = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USERNAME.encode()
        and auth_data.password == PASSWORD.encode()
    )
    # handled=False: aiosmtpd answers a refusal itself (535 5.7.8).
    return AuthResult(success=accepted, handled=False, auth_data=USERNAME if accepted else None)


@pytest.fixture
def certificate(tmp_path: Path) -> SelfSignedCertificate:
    """A fresh self-signed certificate for 127.0.0.1."""
    return make_self_signed_certificate(tmp_path)


@pytest.fixture(params=[SmtpSecurity.STARTTLS, SmtpSecurity.TLS], ids=["starttls", "tls"])
async def relay(
    request: pytest.FixtureRequest, certificate: SelfSignedCertificate
) -> AsyncIterator[tuple[RecordingSmtpServer, SmtpSecurity]]:
    """A relay that wants TLS and a login, in the parametrized mode."""
    security: SmtpSecurity = request.param
    if security is SmtpSecurity.STARTTLS:
        server = RecordingSmtpServer(
            tls_context=certificate.server_context(),
            require_starttls=True,
            authenticator=check_login,
            auth_required=True,
        )
    else:
        # aiosmtpd counts only STARTTLS as TLS for AUTH; the socket is encrypted already.
        server = RecordingSmtpServer(
            ssl_context=certificate.server_context(),
            authenticator=check_login,
            auth_require_tls=False,
        )
    with server:
        yield server, security
        # A client that gives up (wrong password) says its TLS goodbye on the test's
        # event loop after the test returns; let it finish before that loop closes.
        await asyncio.to_thread(server.wait_until_no_sessions, 10)


def relay_settings(
    settings: Settings,
    relay: tuple[RecordingSmtpServer, SmtpSecurity],
    certificate: SelfSignedCertificate,
    **overrides: Any,
) -> Settings:
    """The test settings pointed at the relay, trusting its certificate, with the right login."""
    server, security = relay
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "smtp_security": security,
        "smtp_username": USERNAME,
        "smtp_password": PASSWORD,
        "smtp_ca_file": certificate.cert_file,
    }
    return settings.model_copy(update=values | overrides)


def one_message(to: str) -> OutgoingMessage:
    headers = [
        mailbox_setting_header("From", "Daily ML Papers <digest@news.example.org>"),
        mailbox_header("To", None, to),
        unstructured_header("Subject", "Please confirm"),
    ]
    data = compose_alternative(headers, text="Confirm here.", html="<p>Confirm here.</p>")
    return OutgoingMessage("digest@news.example.org", to, data)


async def test_an_edition_goes_out_encrypted_and_logged_in(
    settings: Settings,
    engine: Engine,
    relay: tuple[RecordingSmtpServer, SmtpSecurity],
    certificate: SelfSignedCertificate,
) -> None:
    server, _ = relay
    readers = seed_subscribers(engine, 6)
    make_edition(engine)
    report = await send_edition(
        relay_settings(settings, relay, certificate), engine, edition_date=DAY
    )
    assert (report.sent, report.failed, report.paused_reason) == (6, 0, None)
    assert received(server) == Counter(readers)
    assert all(m.tls and m.login == USERNAME for m in server.messages)


async def test_a_single_message_goes_out_encrypted_and_logged_in(
    settings: Settings,
    relay: tuple[RecordingSmtpServer, SmtpSecurity],
    certificate: SelfSignedCertificate,
) -> None:
    server, _ = relay
    await send_single_message(
        relay_settings(settings, relay, certificate), one_message("ada@example.org")
    )
    [arrived] = server.messages
    assert arrived.rcpt_tos == ["ada@example.org"]
    assert arrived.tls and arrived.login == USERNAME


async def test_a_certificate_nobody_vouches_for_is_refused(
    settings: Settings,
    relay: tuple[RecordingSmtpServer, SmtpSecurity],
    certificate: SelfSignedCertificate,
) -> None:
    server, _ = relay
    untrusting = relay_settings(settings, relay, certificate, smtp_ca_file=None)
    with pytest.raises(DeliveryError, match="certificate verify failed"):
        await send_single_message(untrusting, one_message("ada@example.org"))
    assert server.messages == []


async def test_a_wrong_password_pauses_the_edition_with_every_reader_still_queued(
    settings: Settings,
    engine: Engine,
    relay: tuple[RecordingSmtpServer, SmtpSecurity],
    certificate: SelfSignedCertificate,
) -> None:
    server, _ = relay
    readers = seed_subscribers(engine, 6)
    make_edition(engine)
    wrong = relay_settings(settings, relay, certificate, smtp_password="not-the-password")
    report = await send_edition(wrong, engine, edition_date=DAY)

    assert (report.sent, report.failed, report.bounced) == (0, 0, 0)
    assert report.paused_reason is not None
    assert f"127.0.0.1:{server.port} refused the login (535" in report.paused_reason
    assert "NEWSLETTER_SMTP_PASSWORD" in report.paused_reason
    assert edition_status(engine)[0] is EditionStatus.PAUSED
    assert {(row.status, row.attempts) for row in ledger_rows(engine)} == {
        (DeliveryStatus.QUEUED, 0)
    }
    assert server.messages == []

    # With the password fixed, a resume reaches everyone, once.
    resume_edition(engine, DAY)
    report = await send_edition(
        relay_settings(settings, relay, certificate), engine, edition_date=DAY
    )
    assert report.sent == len(readers)
    assert received(server) == Counter(readers)


async def test_a_wrong_password_for_a_single_message_is_one_clear_line(
    settings: Settings,
    relay: tuple[RecordingSmtpServer, SmtpSecurity],
    certificate: SelfSignedCertificate,
) -> None:
    server, _ = relay
    wrong = relay_settings(settings, relay, certificate, smtp_password="not-the-password")
    with pytest.raises(DeliveryError) as raised:
        await send_single_message(wrong, one_message("ada@example.org"))
    assert str(raised.value) == (
        f"the SMTP server 127.0.0.1:{server.port} refused the login "
        "(535 5.7.8 Authentication credentials invalid); "
        "check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
    )


def test_newsletter_send_with_a_wrong_password_stops_with_one_line(
    settings: Settings,
    engine: Engine,
    relay: tuple[RecordingSmtpServer, SmtpSecurity],
    certificate: SelfSignedCertificate,
) -> None:
    server, security = relay
    asyncio.run(
        ingest_papers(
            settings, engine, day=SAMPLE_DAY, source=PaperSource.FILE, file=sample_day_path()
        )
    )
    seed_subscribers(engine, 3)
    env = worker_environment(
        settings.database_url,
        server.port,
        NEWSLETTER_SMTP_SECURITY=security.value,
        NEWSLETTER_SMTP_USERNAME=USERNAME,
        NEWSLETTER_SMTP_PASSWORD="not-the-password",
        NEWSLETTER_SMTP_CA_FILE=str(certificate.cert_file),
        COLUMNS="200",
    )
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "send", "--date", SAMPLE_DAY.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert (
        f"The edition paused: the SMTP server 127.0.0.1:{server.port} refused the login "
        "(535 5.7.8 Authentication credentials invalid); "
        "check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD\n"
    ) in result.stderr
    assert server.messages == []


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="NEWSLETTER_SMTP_CA_FILE"):
        load_settings(smtp_ca_file=tmp_path / "absent.pem")
