"""Relay problems are not reader problems: a refused sender or session pauses the edition,
fails nobody, and a resume reaches every reader exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import socket
import subprocess
import sys
from collections import Counter

import pytest
from rich.console import Console
from sqlalchemy import Engine

from newsletter.core.settings import Settings
from newsletter.delivery.ledger import OutcomeKind
from newsletter.delivery.progress import RichSendProgress, describe_wait
from newsletter.delivery.report import SendReport
from newsletter.delivery.transport import SmtpReply, SmtpStage
from newsletter.delivery.worker import (
    EARLY_TRIP_ATTEMPTS,
    POLICY_STREAK,
    Blame,
    blame_reply,
    classify_reply,
    resume_edition,
    send_edition,
)
from newsletter.ingest import PaperSource, ingest_papers
from newsletter.models import DeliveryStatus, EditionStatus
from newsletter.sample_data import SAMPLE_DAY, sample_day_path
from tests.support.sending import (
    DAY,
    edition_status,
    ledger_rows,
    make_edition,
    received,
    seed_subscribers,
    worker_environment,
)
from tests.support.smtp_server import RecordingSmtpServer, RefusingGreeter, closed_port


def untouched(engine: Engine) -> set[tuple[DeliveryStatus, int]]:
    """The (status, attempts) pairs of the edition's rows."""
    return {(row.status, row.attempts) for row in ledger_rows(engine)}


async def resume_and_send(settings: Settings, engine: Engine, server: RecordingSmtpServer) -> None:
    """The operator fixes the relay and resumes: the send goes on to the end."""
    server.handler.fault = server.handler.sender_fault = None
    resume_edition(engine, DAY)
    report = await send_edition(settings, engine, edition_date=DAY)
    assert report.paused_reason is None
    assert edition_status(engine)[0] is EditionStatus.SENT


@pytest.mark.parametrize(
    ("reply", "blame"),
    [
        (SmtpReply(None, "cannot connect", SmtpStage.CONNECT), Blame.RELAY),
        (SmtpReply(421, "4.3.2 not now", SmtpStage.CONNECT), Blame.RELAY),
        (SmtpReply(554, "5.3.2 go away", SmtpStage.CONNECT), Blame.RELAY),
        (SmtpReply(535, "5.7.8 bad login", SmtpStage.LOGIN), Blame.RELAY),
        (SmtpReply(530, "5.7.0 Authentication required", SmtpStage.MAIL), Blame.RELAY),
        (SmtpReply(530, "5.7.0 Authentication required", SmtpStage.RCPT), Blame.RELAY),
        (SmtpReply(553, "5.1.8 sender domain unknown", SmtpStage.MAIL), Blame.RELAY),
        (SmtpReply(451, "4.3.0 try later", SmtpStage.MAIL), Blame.READER),
        (SmtpReply(550, "5.7.1 relaying denied", SmtpStage.RCPT), Blame.POLICY),
        (SmtpReply(554, "5.7.1 message refused", SmtpStage.DATA), Blame.POLICY),
        (SmtpReply(550, "5.1.1 no such user", SmtpStage.RCPT), Blame.READER),
        (SmtpReply(452, "4.2.2 over quota", SmtpStage.RCPT), Blame.READER),
        (SmtpReply(None, "connection lost", SmtpStage.CONNECTION), Blame.READER),
    ],
)
def test_the_rules_say_whom_a_refusal_concerns(reply: SmtpReply, blame: Blame) -> None:
    assert blame_reply(reply) is blame


def test_a_policy_refusal_of_one_reader_is_no_bounce() -> None:
    reply = SmtpReply(550, "5.7.1 blocked by policy", SmtpStage.RCPT)
    assert classify_reply(reply, attempt=1, max_attempts=5) is OutcomeKind.FAILED


async def test_530_at_mail_from_pauses_at_once_and_fails_nobody(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 5)
    smtp_server.handler.sender_fault = lambda sender, n: "530 5.7.0 Authentication required"
    make_edition(engine)

    report = await send_edition(settings, engine, edition_date=DAY)

    assert (report.sent, report.failed, report.bounced) == (0, 0, 0)
    assert report.paused_reason == (
        "the SMTP relay asks for authentication (530 5.7.0 Authentication required); "
        "set NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
    )
    assert edition_status(engine)[0] is EditionStatus.PAUSED
    assert untouched(engine) == {(DeliveryStatus.QUEUED, 0)}
    # The first refusal stopped it: the relay was not asked once per reader.
    mail_from_attempts = smtp_server.handler.attempts[("mail", "digest@news.example.org")]
    assert mail_from_attempts <= settings.smtp_concurrency

    await resume_and_send(settings, engine, smtp_server)
    assert received(smtp_server) == Counter(readers)


async def test_a_reader_whose_envelope_went_ahead_of_a_pause_is_handed_back_untried(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    # One connection: the second reader's MAIL, RCPT and DATA follow the first
    # reader's content in the same write; the relay then refuses that content
    # with a 530 (the relay's problem), which pauses the edition.
    readers = seed_subscribers(engine, 4)
    first = readers[0]
    smtp_server.handler.fault = lambda stage, address, n: (
        "530 5.7.0 Authentication required" if stage == "data" and address == first else None
    )
    make_edition(engine)
    one_lane = settings.model_copy(update={"smtp_concurrency": 1})

    report = await send_edition(one_lane, engine, edition_date=DAY)

    assert report.paused_reason is not None
    assert "530 5.7.0 Authentication required" in report.paused_reason
    assert f"RCPT {readers[1]}" in smtp_server.handler.commands  # its envelope went ahead
    assert smtp_server.messages == []  # and its content never followed
    assert untouched(engine) == {(DeliveryStatus.QUEUED, 0)}

    await resume_and_send(settings, engine, smtp_server)
    assert received(smtp_server) == Counter(readers)


async def test_a_refused_sender_pauses_at_once(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 4)
    smtp_server.handler.sender_fault = lambda sender, n: "553 5.1.8 sender address rejected"
    make_edition(engine)

    report = await send_edition(settings, engine, edition_date=DAY)

    assert report.paused_reason == (
        "the SMTP relay refused the sender at MAIL FROM (553 5.1.8 sender address rejected)"
    )
    assert untouched(engine) == {(DeliveryStatus.QUEUED, 0)}
    await resume_and_send(settings, engine, smtp_server)
    assert received(smtp_server) == Counter(readers)


async def test_policy_refusals_repeated_across_readers_are_the_relays(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 8)
    smtp_server.handler.fault = lambda stage, _, n: (
        "550 5.7.1 relaying denied" if stage == "rcpt" else None
    )
    make_edition(engine)

    report = await send_edition(settings, engine, edition_date=DAY)

    assert (report.sent, report.failed, report.bounced) == (0, 0, 0)
    assert report.paused_reason is not None
    assert report.paused_reason.startswith(
        f"the SMTP relay refused {POLICY_STREAK} readers in a row by policy "
        "(last: 550 5.7.1 relaying denied)"
    )
    assert edition_status(engine)[0] is EditionStatus.PAUSED
    assert untouched(engine) == {(DeliveryStatus.QUEUED, 0)}

    await resume_and_send(settings, engine, smtp_server)
    assert received(smtp_server) == Counter(readers)


async def test_one_readers_policy_refusal_stays_theirs(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 5)
    blocked = readers[1]
    smtp_server.handler.fault = lambda stage, rcpt, n: (
        "550 5.7.1 blocked by recipient policy" if stage == "rcpt" and rcpt == blocked else None
    )
    make_edition(engine)

    report = await send_edition(settings, engine, edition_date=DAY)

    assert report.paused_reason is None
    assert (report.sent, report.failed, report.bounced) == (4, 1, 0)
    row = next(r for r in ledger_rows(engine) if r.email == blocked)
    assert (row.status, row.attempts, row.last_code) == (DeliveryStatus.FAILED, 1, 550)


async def test_a_refused_greeting_pauses_with_the_reply(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 5)
    make_edition(engine)
    with RefusingGreeter("554 5.3.2 not accepting mail") as greeter:
        refusing = settings.model_copy(update={"smtp_port": greeter.port})
        report = await send_edition(refusing, engine, edition_date=DAY)

    assert report.paused_reason == (
        f"the SMTP server 127.0.0.1:{greeter.port} refused the session "
        "(554 5.3.2 not accepting mail)"
    )
    assert untouched(engine) == {(DeliveryStatus.QUEUED, 0)}
    await resume_and_send(settings, engine, smtp_server)
    assert received(smtp_server) == Counter(readers)


async def test_a_relay_nobody_answers_at_pauses_at_once(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 5)
    make_edition(engine)
    port = closed_port()
    down = settings.model_copy(update={"smtp_port": port})

    report = await send_edition(down, engine, edition_date=DAY)

    assert report.paused_reason is not None
    assert report.paused_reason.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert edition_status(engine)[0] is EditionStatus.PAUSED
    assert untouched(engine) == {(DeliveryStatus.QUEUED, 0)}
    await resume_and_send(settings, engine, smtp_server)
    assert received(smtp_server) == Counter(readers)


async def test_a_small_list_where_every_attempt_fails_trips_the_breaker_early(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 5)
    smtp_server.handler.fault = lambda stage, _, n: "451 4.3.0 busy" if stage == "data" else None
    make_edition(engine)
    assert settings.send_failure_window > EARLY_TRIP_ATTEMPTS  # the old rule never trips here

    patient = settings.model_copy(update={"send_max_attempts": 50})  # no row runs out first

    report = await send_edition(patient, engine, edition_date=DAY)

    assert report.paused_reason == (
        f"the last {EARLY_TRIP_ATTEMPTS} attempts all failed; last error: 451 4.3.0 busy"
    )
    assert edition_status(engine) == (EditionStatus.PAUSED, report.paused_reason)
    attempts = sum(row.attempts for row in ledger_rows(engine))
    # At most the messages already in flight when it tripped come after the tenth.
    assert EARLY_TRIP_ATTEMPTS <= attempts <= EARLY_TRIP_ATTEMPTS + patient.smtp_concurrency
    assert {row.status for row in ledger_rows(engine)} == {DeliveryStatus.QUEUED}


def test_newsletter_send_against_a_relay_that_wants_a_login_exits_3_and_resume_delivers(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    asyncio.run(
        ingest_papers(
            settings, engine, day=SAMPLE_DAY, source=PaperSource.FILE, file=sample_day_path()
        )
    )
    readers = seed_subscribers(engine, 5)
    smtp_server.handler.sender_fault = lambda sender, n: "530 5.7.0 Authentication required"
    env = worker_environment(settings.database_url, smtp_server.port, COLUMNS="200")
    day = SAMPLE_DAY.isoformat()

    def newsletter(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args, "--date", day],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    result = newsletter("send")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "The edition paused: the SMTP relay asks for authentication "
        "(530 5.7.0 Authentication required); set NEWSLETTER_SMTP_USERNAME and "
        "NEWSLETTER_SMTP_PASSWORD\n"
    ) in result.stderr
    assert edition_status(engine, SAMPLE_DAY)[0] is EditionStatus.PAUSED
    assert {(r.status, r.attempts) for r in ledger_rows(engine, SAMPLE_DAY)} == {
        (DeliveryStatus.QUEUED, 0)
    }

    smtp_server.handler.sender_fault = None
    result = newsletter("resume")
    assert result.returncode == 0, result.stdout + result.stderr
    assert received(smtp_server) == Counter(readers)
    assert edition_status(engine, SAMPLE_DAY)[0] is EditionStatus.SENT


async def test_an_edition_that_missed_readers_finishes_with_failures_not_sent(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 5)
    gone, refused = readers[0], readers[3]
    replies = {gone: "550 5.1.1 no such user", refused: "554 5.6.0 message refused"}
    smtp_server.handler.fault = lambda stage, rcpt, n: (
        replies.get(rcpt) if stage == "rcpt" else None
    )
    make_edition(engine)

    report = await send_edition(settings, engine, edition_date=DAY)

    assert (report.sent, report.failed, report.bounced) == (3, 1, 1)
    assert edition_status(engine)[0] is EditionStatus.FINISHED_WITH_FAILURES
    # Finished is finished: a second send queues nothing and says so truthfully.
    again = await send_edition(settings, engine, edition_date=DAY)
    assert (again.queued, again.sent, again.already_done) == (0, 0, 5)
    assert received(smtp_server) == Counter(set(readers) - {gone, refused})


class WaitRecorder:
    """A SendProgress that keeps what `waiting` was told."""

    def __init__(self) -> None:
        self.waits: list[tuple[int, dt.datetime, str | None]] = []

    def started(self, total: int, already_done: int) -> None:
        pass

    def advanced(self, status: DeliveryStatus, count: int = 1) -> None:
        pass

    def waiting(self, count: int, until: dt.datetime, last_reply: str | None) -> None:
        self.waits.append((count, until, last_reply))

    def finished(self, report: SendReport) -> None:
        pass


async def test_rows_waiting_on_backoff_are_shown_with_their_time_and_the_last_reply(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 3)
    smtp_server.handler.fault = lambda stage, rcpt, n: (
        "451 4.3.0 busy" if stage == "rcpt" and rcpt == readers[0] and n == 1 else None
    )
    make_edition(engine)
    progress = WaitRecorder()
    patient = settings.model_copy(update={"send_retry_base_seconds": 0.3})

    report = await send_edition(
        patient, engine, edition_date=DAY, progress=progress, jitter=lambda low, high: high
    )

    assert report.sent == 3
    assert progress.waits, "the wait for the retry was never shown"
    count, until, last_reply = progress.waits[0]
    assert (count, last_reply) == (1, "451 4.3.0 busy")
    row = next(r for r in ledger_rows(engine) if r.email == readers[0])
    assert row.attempts == 2 and row.sent_at is not None and until <= row.sent_at


def test_the_progress_bar_says_who_waits_until_when_and_why() -> None:
    until = dt.datetime(2026, 3, 2, 6, 30, 5, tzinfo=dt.UTC)
    assert describe_wait(4, until, "451 4.3.0 busy [x]") == (
        "4 waiting to retry until 06:30:05 UTC; last reply: 451 4.3.0 busy [x]"
    )
    output = io.StringIO()
    with RichSendProgress(Console(file=output, width=200, force_terminal=False)) as bar:
        bar.started(5, 0)
        bar.waiting(4, until, "451 4.3.0 busy [x]")
    assert "4 waiting to retry until 06:30:05 UTC; last reply: 451 4.3.0 busy [x]" in (
        output.getvalue()
    )


async def test_a_relay_that_never_greets_pauses_within_the_smtp_timeout(
    settings: Settings, engine: Engine
) -> None:
    seed_subscribers(engine, 3)
    make_edition(engine)
    with socket.socket() as silent:  # accepts connections (the kernel does) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        quiet = settings.model_copy(update={"smtp_port": port, "smtp_timeout_seconds": 0.5})
        report = await send_edition(quiet, engine, edition_date=DAY)

    assert report.paused_reason is not None
    assert report.paused_reason.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert report.elapsed_seconds < 10 * quiet.smtp_timeout_seconds
    assert untouched(engine) == {(DeliveryStatus.QUEUED, 0)}
