"""`newsletter bounces fetch` against a real IMAP server (Dovecot, started per test).

A digest goes out with VERP envelope senders; the bounces and the complaint
that come back land in the mailbox (APPEND over IMAP, as a delivery would);
the command records them, deletes what it recorded and keeps what it could
not use.
"""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from newsletter.core.settings import Settings
from newsletter.delivery.feedback.recording import feedback_events
from newsletter.delivery.worker import send_edition
from newsletter.models import DeliveryStatus
from subscribers.models import SubscriberStatus
from tests.support.cli import cli_environment, run_cli
from tests.support.feedback_messages import abuse_report, garbage_message, postfix_dsn
from tests.support.imap_server import UTF8_PASSWORD, UTF8_USER, DovecotServer, running_dovecot
from tests.support.sending import (
    DAY,
    ledger_rows,
    make_edition,
    seed_subscribers,
    subscriber_status,
)
from tests.support.smtp_server import RecordingSmtpServer

BOUNCE_ADDRESS = "bounces@bounces.example.org"


@pytest.fixture
def imap_server() -> Iterator[DovecotServer]:
    """Dovecot on free ports with an empty INBOX."""
    with running_dovecot() as server:
        yield server


@pytest.fixture
def bounce_settings(settings: Settings) -> Settings:
    """The test settings with a bounce address, so digests carry VERP envelope senders."""
    return settings.model_copy(update={"bounce_address": BOUNCE_ADDRESS})


def fetch_env(
    settings: Settings, server: DovecotServer, smtp_port: int, **overrides: str
) -> dict[str, str]:
    """The environment of `newsletter bounces fetch` on the test database and this mailbox."""
    env = cli_environment(settings.database_url, smtp_port)
    env.update(
        NEWSLETTER_SECRET_KEY=settings.secret_key,  # the key that signed the VERP tokens
        NEWSLETTER_BOUNCE_ADDRESS=BOUNCE_ADDRESS,
        NEWSLETTER_BOUNCE_IMAP_HOST="127.0.0.1",
        NEWSLETTER_BOUNCE_IMAP_PORT=str(server.port),
        NEWSLETTER_BOUNCE_IMAP_SECURITY="none",
        NEWSLETTER_BOUNCE_IMAP_USER=server.user,
        NEWSLETTER_BOUNCE_IMAP_PASSWORD=server.password,
        NEWSLETTER_BOUNCE_IMAP_TIMEOUT_SECONDS="20",
    )
    env.update(overrides)
    return env


async def sent_digests(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, count: int
) -> dict[str, tuple[str, EmailMessage]]:
    """Send an edition to `count` readers; each reader's (VERP envelope sender, message)."""
    seed_subscribers(engine, count)
    make_edition(engine)
    await send_edition(settings, engine, edition_date=DAY)
    digests = {}
    for received in smtp_server.messages:
        [recipient] = received.rcpt_tos
        assert received.mail_from.startswith("bounces+"), received.mail_from
        digests[recipient] = (received.mail_from, received.message)
    return digests


def row_status(engine: Engine, address: str) -> DeliveryStatus:
    """The status of this reader's ledger row."""
    [row] = [row for row in ledger_rows(engine) if row.email == address]
    return row.status


def feedback_rows(engine: Engine) -> list[tuple[str, str, str]]:
    """Every recorded event as (kind, address, source)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                feedback_events.c.kind, feedback_events.c.address, feedback_events.c.source
            ).order_by(feedback_events.c.id)
        ).all()
    return [tuple(row) for row in rows]


async def test_fetch_records_bounces_and_complaints_and_deletes_only_what_it_recorded(
    bounce_settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    imap_server: DovecotServer,
) -> None:
    digests = await sent_digests(bounce_settings, engine, smtp_server, 4)
    gone, full, complainer, fine = sorted(digests)
    imap_server.append(
        postfix_dsn(verp_address=digests[gone][0], recipient=gone, sent=digests[gone][1])
    )
    imap_server.append(
        postfix_dsn(
            verp_address=digests[full][0],
            recipient=full,
            sent=digests[full][1],
            action="delayed",
            status="4.2.2",
            diagnostic="452 4.2.2 <{recipient}>: Mailbox full",
        )
    )
    imap_server.append(
        abuse_report(
            to=BOUNCE_ADDRESS,
            recipient=complainer,
            envelope_sender=digests[complainer][0],
            sent=digests[complainer][1],
        )
    )
    garbage = garbage_message(BOUNCE_ADDRESS)
    imap_server.append(garbage)

    result = run_cli(
        "bounces", "fetch", env=fetch_env(bounce_settings, imap_server, smtp_server.port)
    )

    assert result.stdout.strip() == (
        "4 messages read; events: 1 hard bounce, 1 soft bounce, 1 complaint; "
        "unrecognised: 1 kept, 0 removed; 3 new, 0 seen before, 0 about no reader of ours; "
        "3 deleted"
    )
    assert subscriber_status(engine, gone) is SubscriberStatus.BOUNCED
    assert subscriber_status(engine, full) is SubscriberStatus.CONFIRMED  # one soft bounce counts
    assert subscriber_status(engine, complainer) is SubscriberStatus.COMPLAINED
    assert subscriber_status(engine, fine) is SubscriberStatus.CONFIRMED
    assert row_status(engine, gone) is DeliveryStatus.BOUNCED
    assert row_status(engine, complainer) is DeliveryStatus.COMPLAINED
    assert row_status(engine, full) is DeliveryStatus.SENT
    assert sorted(feedback_rows(engine)) == sorted(
        [
            ("hard_bounce", gone, "dsn"),
            ("soft_bounce", full, "dsn"),
            ("complaint", complainer, "arf"),
        ]
    )
    # Only the message it could not use is left, unread.
    assert imap_server.messages() == [garbage]

    again = run_cli(
        "bounces", "fetch", env=fetch_env(bounce_settings, imap_server, smtp_server.port)
    )
    assert again.stdout.startswith(
        "1 message read; events: 0 hard bounces, 0 soft bounces, 0 complaints; unrecognised: 1 kept"
    )
    removed = run_cli(
        "bounces",
        "fetch",
        "--delete-unrecognised",
        env=fetch_env(bounce_settings, imap_server, smtp_server.port),
    )
    assert "unrecognised: 0 kept, 1 removed" in removed.stdout
    assert imap_server.messages() == []


async def test_keep_records_but_deletes_nothing_and_a_second_run_changes_nothing(
    bounce_settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    imap_server: DovecotServer,
) -> None:
    digests = await sent_digests(bounce_settings, engine, smtp_server, 1)
    [(reader, (verp, sent))] = digests.items()
    dsn = postfix_dsn(verp_address=verp, recipient=reader, sent=sent)
    garbage = garbage_message(BOUNCE_ADDRESS)
    imap_server.append(dsn)
    imap_server.append(garbage)
    env = fetch_env(bounce_settings, imap_server, smtp_server.port)

    first = run_cli("bounces", "fetch", "--keep", "--delete-unrecognised", env=env)
    second = run_cli("bounces", "fetch", "--keep", env=env)

    assert "1 hard bounce" in first.stdout and "1 new, 0 seen before" in first.stdout
    assert "unrecognised: 1 kept, 0 removed" in first.stdout and "0 deleted" in first.stdout
    assert "1 hard bounce" in second.stdout and "0 new, 1 seen before" in second.stdout
    assert subscriber_status(engine, reader) is SubscriberStatus.BOUNCED
    assert len(feedback_rows(engine)) == 1
    assert imap_server.messages() == [dsn, garbage]
    for flags in imap_server.flags():
        assert "\\Seen" not in flags and "\\Deleted" not in flags


async def test_tls_with_the_servers_certificate_trusted(
    bounce_settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    imap_server: DovecotServer,
) -> None:
    digests = await sent_digests(bounce_settings, engine, smtp_server, 1)
    [(reader, (verp, sent))] = digests.items()
    imap_server.append(postfix_dsn(verp_address=verp, recipient=reader, sent=sent))
    ca_file = str(imap_server.certificate.cert_file)

    implicit = run_cli(
        "bounces",
        "fetch",
        "--keep",
        env=fetch_env(
            bounce_settings,
            imap_server,
            smtp_server.port,
            NEWSLETTER_BOUNCE_IMAP_SECURITY="tls",
            NEWSLETTER_BOUNCE_IMAP_PORT=str(imap_server.tls_port),
            NEWSLETTER_BOUNCE_IMAP_CA_FILE=ca_file,
            NEWSLETTER_BOUNCE_IMAP_HOST="localhost",
        ),
    )
    starttls = run_cli(
        "bounces",
        "fetch",
        env=fetch_env(
            bounce_settings,
            imap_server,
            smtp_server.port,
            NEWSLETTER_BOUNCE_IMAP_SECURITY="starttls",
            NEWSLETTER_BOUNCE_IMAP_CA_FILE=ca_file,
            NEWSLETTER_BOUNCE_IMAP_HOST="localhost",
        ),
    )

    assert "1 hard bounce" in implicit.stdout
    assert "1 deleted" in starttls.stdout
    assert subscriber_status(engine, reader) is SubscriberStatus.BOUNCED
    assert imap_server.messages() == []


async def test_a_database_failure_stops_the_run_and_keeps_the_messages(
    bounce_settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    imap_server: DovecotServer,
) -> None:
    digests = await sent_digests(bounce_settings, engine, smtp_server, 2)
    for reader, (verp, sent) in sorted(digests.items()):
        imap_server.append(postfix_dsn(verp_address=verp, recipient=reader, sent=sent))
    with engine.begin() as connection:  # the schema's version is right, the table is gone
        connection.execute(text("DROP TABLE feedback_events"))

    result = run_cli(
        "bounces",
        "fetch",
        env=fetch_env(bounce_settings, imap_server, smtp_server.port),
        check=False,
    )

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error:") and "feedback_events" in line
    assert len(imap_server.messages()) == 2
    assert all("\\Deleted" not in flags for flags in imap_server.flags())
    assert {subscriber_status(engine, reader) for reader in digests} == {SubscriberStatus.CONFIRMED}


def test_a_password_beyond_ascii_logs_in(
    settings: Settings, smtp_server: RecordingSmtpServer, imap_server: DovecotServer
) -> None:
    imap_server.append(garbage_message(BOUNCE_ADDRESS))
    result = run_cli(
        "bounces",
        "fetch",
        env=fetch_env(
            settings,
            imap_server,
            smtp_server.port,
            NEWSLETTER_BOUNCE_IMAP_USER=UTF8_USER,
            NEWSLETTER_BOUNCE_IMAP_PASSWORD=UTF8_PASSWORD,
        ),
    )
    assert result.stdout.startswith("1 message read;")


def test_a_missing_folder_is_one_line_and_exit_1(
    settings: Settings, smtp_server: RecordingSmtpServer, imap_server: DovecotServer
) -> None:
    result = run_cli(
        "bounces",
        "fetch",
        env=fetch_env(
            settings, imap_server, smtp_server.port, NEWSLETTER_BOUNCE_IMAP_MAILBOX="No Such"
        ),
        check=False,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot open the mailbox 'No Such'")
    assert "NEWSLETTER_BOUNCE_IMAP_MAILBOX" in line


def test_an_untrusted_certificate_is_one_line_and_exit_1(
    settings: Settings, smtp_server: RecordingSmtpServer, imap_server: DovecotServer
) -> None:
    imap_server.append(garbage_message(BOUNCE_ADDRESS))
    result = run_cli(
        "bounces",
        "fetch",
        env=fetch_env(
            settings,
            imap_server,
            smtp_server.port,
            NEWSLETTER_BOUNCE_IMAP_SECURITY="tls",
            NEWSLETTER_BOUNCE_IMAP_PORT=str(imap_server.tls_port),
            NEWSLETTER_BOUNCE_IMAP_HOST="localhost",
        ),
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        f"error: cannot reach the bounce mailbox at localhost:{imap_server.tls_port}"
    )
    assert "certificate is not trusted" in line
    assert len(imap_server.messages()) == 1


def test_a_refused_login_is_one_line_and_exit_1(
    settings: Settings, smtp_server: RecordingSmtpServer, imap_server: DovecotServer
) -> None:
    result = run_cli(
        "bounces",
        "fetch",
        env=fetch_env(
            settings, imap_server, smtp_server.port, NEWSLETTER_BOUNCE_IMAP_PASSWORD="wrong"
        ),
        check=False,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "refused the login of 'bounces'" in line
    assert "NEWSLETTER_BOUNCE_IMAP_PASSWORD" in line
    assert "Traceback" not in result.stderr


def test_an_unreachable_server_is_one_line_and_exit_1(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {
        **cli_env,
        "NEWSLETTER_BOUNCE_IMAP_HOST": "127.0.0.1",
        "NEWSLETTER_BOUNCE_IMAP_PORT": str(port),
        "NEWSLETTER_BOUNCE_IMAP_USER": "bounces",
        "NEWSLETTER_BOUNCE_IMAP_PASSWORD": "secret",
    }
    result = run_cli("bounces", "fetch", env=env, check=False)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the bounce mailbox at 127.0.0.1:{port}")
    assert "Connection refused" in line


def test_fetch_without_a_mailbox_configured_says_what_to_set(cli_env: dict[str, str]) -> None:
    result = run_cli("bounces", "fetch", env=cli_env, check=False)
    assert result.returncode == 1
    assert "NEWSLETTER_BOUNCE_IMAP_HOST" in result.stderr


def test_plain_imap_is_refused_for_a_remote_host(cli_env: dict[str, str]) -> None:
    env = {
        **cli_env,
        "NEWSLETTER_BOUNCE_IMAP_HOST": "imap.example.org",
        "NEWSLETTER_BOUNCE_IMAP_SECURITY": "none",
    }
    result = run_cli("bounces", "fetch", env=env, check=False)
    assert result.returncode == 1
    assert "password in clear" in result.stderr
