"""A flaky, refusing, connection-dropping SMTP server: final ledger states follow the rules."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections import Counter

import pytest
from sqlalchemy import Engine, select

from newsletter.core.errors import DeliveryError
from newsletter.core.settings import Settings
from newsletter.core.wire import PreparedMessage
from newsletter.delivery.ledger import subscribers
from newsletter.delivery.transport import NextMessageSource, SmtpPool, SmtpReply
from newsletter.delivery.worker import (
    MAX_RETRY_DELAY_SECONDS,
    resume_edition,
    retry_delay,
    send_edition,
)
from newsletter.models import DeliveryStatus, EditionStatus
from subscribers.models import SubscriberStatus
from tests.support.sending import (
    DAY,
    edition_status,
    insert_subscriber_row,
    ledger_rows,
    make_edition,
    received,
    seed_subscribers,
    subscriber_status,
)
from tests.support.smtp_server import FaultRule, RecordingSmtpServer

# The SMTP conversation runs on uvloop (the commands') and on asyncio's own loop.
pytestmark = pytest.mark.both_event_loops


def with_fault(server: RecordingSmtpServer, rule: FaultRule) -> None:
    """Install a fault rule on the running server."""
    server.handler.fault = rule


def only_for(address: str, replies: dict[tuple[str, int], str]) -> FaultRule:
    """Refuse `address` with the given reply at (stage, attempt); accept everything else."""

    def rule(stage: str, rcpt: str, attempt: int) -> str | None:
        return replies.get((stage, attempt)) if rcpt == address else None

    return rule


async def test_temporary_refusals_are_retried_until_sent(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 6)
    flaky = readers[2]
    with_fault(
        smtp_server,
        only_for(
            flaky,
            {
                ("rcpt", 1): "421 4.7.0 too many connections, try later",
                ("rcpt", 2): "451 4.3.0 local problem",
                ("rcpt", 3): "452 4.2.2 mailbox over quota for now",
            },
        ),
    )
    make_edition(engine)

    report = await send_edition(settings, engine, edition_date=DAY)

    assert received(smtp_server) == Counter(readers)
    row = next(r for r in ledger_rows(engine) if r.email == flaky)
    assert (row.status, row.attempts, row.last_code) == (DeliveryStatus.SENT, 4, 250)
    assert (report.sent, report.failed, report.bounced) == (6, 0, 0)
    assert edition_status(engine)[0] is EditionStatus.SENT


class TickingClock:
    """A test clock: each reading moves it on by a microsecond, and `jump` by whatever a test says.

    So time passes only as fast as the engine looks at it, never with the wall clock.
    """

    def __init__(self, start: dt.datetime) -> None:
        self._now = start
        self._lock = threading.Lock()  # the SMTP server's thread peeks at it too
        self.last = start  # the latest reading the engine took

    def __call__(self) -> dt.datetime:
        with self._lock:
            self._now += dt.timedelta(microseconds=1)
            self.last = self._now
            return self._now

    def peek(self) -> dt.datetime:
        """The time, without moving it."""
        with self._lock:
            return self._now

    def jump(self, to: dt.datetime) -> None:
        """Move the clock to `to`."""
        with self._lock:
            self._now = to


@pytest.mark.timeout(30)  # the retries are 30, 60 and 120 s apart by the clock, not by sleeping
async def test_retries_follow_the_documented_backoff_by_the_engine_s_clock(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 4)
    flaky = readers[1]
    start = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)
    clock = TickingClock(start)
    picks = random.Random(2026)
    # Per retry: the bounds the engine asked for, the time it failed at, the delay picked.
    retries: list[tuple[tuple[float, float], dt.datetime, float]] = []

    def jitter(low: float, high: float) -> float:
        delay = picks.uniform(low, high)
        failed_at = clock.last  # the reading `_refused` took just before asking
        retries.append(((low, high), failed_at, delay))
        # Time flies to just short of the retry: the row must wait out the last 50 µs.
        clock.jump(failed_at + dt.timedelta(seconds=delay) - dt.timedelta(microseconds=50))
        return delay

    # What the ledger said about the row as each retry went out, and when that was.
    seen: list[tuple[int, dt.datetime | None, dt.datetime]] = []

    def refuse_three_times(stage: str, rcpt: str, attempt: int) -> str | None:
        if stage != "rcpt" or rcpt != flaky:
            return None
        if attempt > 1:
            row = next(row for row in ledger_rows(engine) if row.email == flaky)
            seen.append((row.attempts, row.next_attempt_at, clock.peek()))
        return "451 4.3.0 try again later" if attempt <= 3 else None

    with_fault(smtp_server, refuse_three_times)
    make_edition(engine)
    backoff = settings.model_copy(update={"send_retry_base_seconds": 30.0, "send_max_attempts": 5})

    report = await send_edition(backoff, engine, edition_date=DAY, clock=clock, jitter=jitter)

    # README: retried after NEWSLETTER_SEND_RETRY_BASE_SECONDS, doubling, with jitter
    # between half and all of base × 2^(attempt-1).
    assert [bounds for bounds, _, _ in retries] == [(15.0, 30.0), (30.0, 60.0), (60.0, 120.0)]
    assert len(seen) == 3
    for attempt, ((_, failed_at, delay), (attempts, next_attempt_at, tried_at)) in enumerate(
        zip(retries, seen, strict=True), start=1
    ):
        assert attempts == attempt
        assert next_attempt_at == failed_at + dt.timedelta(seconds=delay)
        assert tried_at >= next_attempt_at  # not a moment before it was due
    assert retries[0][1] - start < dt.timedelta(seconds=1)  # the first try went out at once
    row = next(row for row in ledger_rows(engine) if row.email == flaky)
    assert (row.status, row.attempts, row.next_attempt_at) == (DeliveryStatus.SENT, 4, None)
    assert received(smtp_server) == Counter(readers)
    assert report.sent == 4


def test_retry_delays_are_capped_and_a_zero_base_retries_at_once() -> None:
    def highest(low: float, high: float) -> float:
        return high

    assert retry_delay(30.0, 1, jitter=highest) == 30.0
    assert retry_delay(30.0, 4, jitter=highest) == 240.0
    assert retry_delay(30.0, 30, jitter=highest) == MAX_RETRY_DELAY_SECONDS == 6 * 3600
    assert retry_delay(30.0, 30, jitter=lambda low, high: low) == 3 * 3600
    assert retry_delay(0.0, 3, jitter=highest) == 0.0


async def test_always_temporary_ends_failed_with_the_last_reply(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 4)
    stuck = readers[1]
    with_fault(
        smtp_server,
        lambda stage, rcpt, n: (
            f"451 4.3.0 busy ({n})" if stage == "data" and rcpt == stuck else None
        ),
    )
    make_edition(engine)
    three_tries = settings.model_copy(update={"send_max_attempts": 3})

    report = await send_edition(three_tries, engine, edition_date=DAY)

    row = next(r for r in ledger_rows(engine) if r.email == stuck)
    assert row.status is DeliveryStatus.FAILED
    assert (row.attempts, row.last_code, row.last_error) == (3, 451, "4.3.0 busy (3)")
    assert received(smtp_server) == Counter(set(readers) - {stuck})
    assert (report.sent, report.failed) == (3, 1)
    assert subscriber_status(engine, stuck) is SubscriberStatus.CONFIRMED


async def test_unknown_user_bounces_and_later_editions_skip_them(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 5)
    gone, moved, blocked = readers[0], readers[3], readers[4]
    replies = {
        gone: "550 5.1.1 <user> no such user",
        moved: "553 mailbox name not allowed",
        blocked: "554 5.7.1 relay access denied",  # a 5xx that is no bounce
    }
    with_fault(smtp_server, lambda stage, rcpt, n: replies.get(rcpt) if stage == "rcpt" else None)
    make_edition(engine)

    report = await send_edition(settings, engine, edition_date=DAY)

    rows = {r.email: r for r in ledger_rows(engine)}
    assert rows[gone].status is DeliveryStatus.BOUNCED and rows[gone].last_code == 550
    assert rows[gone].attempts == 1  # a hard bounce is not retried
    assert rows[moved].status is DeliveryStatus.BOUNCED
    assert rows[blocked].status is DeliveryStatus.FAILED and rows[blocked].last_code == 554
    assert (report.sent, report.failed, report.bounced) == (2, 1, 2)
    assert subscriber_status(engine, gone) is SubscriberStatus.BOUNCED
    assert subscriber_status(engine, moved) is SubscriberStatus.BOUNCED
    assert subscriber_status(engine, blocked) is SubscriberStatus.CONFIRMED
    with engine.connect() as connection:
        bounced_at = connection.execute(
            select(subscribers.c.bounced_at).where(subscribers.c.email == gone)
        ).scalar_one()
    assert bounced_at is not None

    next_day = DAY + dt.timedelta(days=1)
    make_edition(engine, next_day)
    with_fault(smtp_server, lambda stage, rcpt, n: None)
    smtp_server.handler.messages.clear()
    await send_edition(settings, engine, edition_date=next_day)

    assert received(smtp_server) == Counter(set(readers) - {gone, moved})


async def test_rejection_at_data_fails_and_leaves_the_subscriber_alone(
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    readers = seed_subscribers(engine, 3)
    refused = readers[1]
    with_fault(
        smtp_server,
        only_for(refused, {("data", 1): "554-5.7.1 message refused\r\n554 5.7.1 see policy"}),
    )
    make_edition(engine)

    with caplog.at_level(logging.WARNING, logger="newsletter.delivery"):
        await send_edition(settings, engine, edition_date=DAY)

    row = next(r for r in ledger_rows(engine) if r.email == refused)
    assert (row.status, row.attempts, row.last_code) == (DeliveryStatus.FAILED, 1, 554)
    assert row.last_error == "5.7.1 message refused 5.7.1 see policy"  # one line, no CR/LF
    assert subscriber_status(engine, refused) is SubscriberStatus.CONFIRMED
    [line] = [r.getMessage() for r in caplog.records if r.name == "newsletter.delivery"]
    assert "\n" not in line and "\r" not in line
    assert f"edition=2026-03-02 delivery={row.id} email={refused} code=554" in line
    assert "attempt=1 outcome=failed" in line


async def test_connections_dropped_at_chosen_points_are_retried_on_a_new_connection(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 10)
    drops = {(readers[2], "rcpt"), (readers[5], "data"), (readers[7], "data")}
    with_fault(
        smtp_server, lambda stage, rcpt, n: "DROP" if n == 1 and (rcpt, stage) in drops else None
    )
    make_edition(engine)
    one_lane = settings.model_copy(update={"smtp_concurrency": 1})

    report = await send_edition(one_lane, engine, edition_date=DAY)

    assert received(smtp_server) == Counter(readers)
    rows = {r.email: r for r in ledger_rows(engine)}
    assert {rows[address].attempts for address, _ in drops} == {2}
    assert report.sent == 10


@pytest.mark.parametrize("seed", [3, 17, 2026])
async def test_random_drops_and_refusals_end_every_row_by_the_rules(
    seed: int, settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 80)
    chance = random.Random(seed)
    lock = threading.Lock()
    dead = set(chance.sample(readers, 4))  # these addresses do not exist

    def rule(stage: str, rcpt: str, attempt: int) -> str | None:
        if stage == "rcpt" and rcpt in dead:
            return "550 5.1.1 unknown user"
        with lock:
            roll = chance.random()
        if roll < 0.08:
            return "DROP"
        if roll < 0.16:
            return "451 4.7.1 greylisted, come back later"
        return None

    with_fault(smtp_server, rule)
    make_edition(engine)
    settings = settings.model_copy(update={"send_max_attempts": 4, "send_batch_size": 16})

    report = await send_edition(settings, engine, edition_date=DAY)

    rows = ledger_rows(engine)
    copies = received(smtp_server)
    assert {r.status for r in rows} <= {
        DeliveryStatus.SENT,
        DeliveryStatus.FAILED,
        DeliveryStatus.BOUNCED,
    }
    assert max(copies.values()) == 1  # this server never accepts a message it dropped
    for row in rows:
        if row.status is DeliveryStatus.SENT:
            assert copies[row.email] == 1 and row.last_code == 250
        elif row.status is DeliveryStatus.BOUNCED:
            assert row.email in dead and copies[row.email] == 0
        else:  # failed only after every attempt met a drop or a temporary refusal
            assert row.attempts == 4 and copies[row.email] == 0
            assert row.last_code in (None, 451)
    assert {r.email for r in rows if r.status is DeliveryStatus.BOUNCED} == dead
    assert report.sent + report.failed + report.bounced == 80
    # Bounced and failed readers were not reached: the edition says so.
    assert edition_status(engine)[0] is EditionStatus.FINISHED_WITH_FAILURES


async def test_failure_rate_pauses_the_edition_and_resume_finishes_it(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 60)
    relay_down = threading.Event()
    relay_down.set()
    with_fault(
        smtp_server,
        lambda stage, rcpt, n: "451 4.4.1 relay overloaded" if relay_down.is_set() else None,
    )
    make_edition(engine)
    touchy = settings.model_copy(
        update={
            "send_failure_window": 10,
            "send_failure_threshold": 0.5,
            "send_max_attempts": 50,
            "send_batch_size": 10,
            "smtp_concurrency": 2,
        }
    )

    report = await send_edition(touchy, engine, edition_date=DAY)

    assert report.paused_reason is not None
    assert "failure rate" in report.paused_reason and "451" in report.paused_reason
    status, reason = edition_status(engine)
    assert status is EditionStatus.PAUSED and reason == report.paused_reason
    assert not smtp_server.messages
    assert all(r.status is DeliveryStatus.QUEUED for r in ledger_rows(engine))

    relay_down.clear()
    resume_edition(engine, DAY)
    final = await send_edition(touchy, engine, edition_date=DAY)

    assert final.paused_reason is None
    assert received(smtp_server) == Counter(readers)
    assert edition_status(engine) == (EditionStatus.SENT, None)


# ---- rows that cannot be sent, and a worker that breaks -------------------------------------


@pytest.mark.timeout(30)  # the guard: a bad row once left the send hanging for ever
async def test_rows_whose_message_cannot_be_prepared_fail_alone_and_the_send_goes_on(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 6)
    # A key no signed link can carry and an address no header can: rows an import or
    # an old version could have written, which the send path must not trust.
    insert_subscriber_row(engine, email="gone@example.org", key="gone+a-key-00000")
    insert_subscriber_row(engine, email="no address@example.org", key="fine-key-00001")
    make_edition(engine)

    report = await send_edition(settings, engine, edition_date=DAY)

    assert received(smtp_server) == Counter(readers)
    rows = {row.email: row for row in ledger_rows(engine)}
    bad_key, bad_address = rows["gone@example.org"], rows["no address@example.org"]
    for row in (bad_key, bad_address):
        assert (row.status, row.attempts, row.last_code) == (DeliveryStatus.FAILED, 1, None)
        assert row.next_attempt_at is None and row.lease_owner is None  # final, no retry
    assert bad_key.last_error is not None and bad_key.last_error.startswith("message not prepared")
    assert "'gone+a-key-00000'" in bad_key.last_error
    assert "cannot address a message to 'no address@example.org'" in (bad_address.last_error or "")
    assert (report.sent, report.failed, report.bounced) == (6, 2, 0)
    assert edition_status(engine) == (EditionStatus.FINISHED_WITH_FAILURES, None)
    assert subscriber_status(engine, "gone@example.org") is SubscriberStatus.CONFIRMED


class BreakingTransport(SmtpPool):
    """The real SMTP pool, except that sending to one address raises (a bug, say)."""

    def __init__(self, settings: Settings, breaks_on: str) -> None:
        super().__init__(settings)
        self.breaks_on = breaks_on

    async def send(
        self,
        lane: int,
        sender: str,
        recipient: str,
        message: PreparedMessage,
        *,
        next_message: NextMessageSource | None = None,
    ) -> SmtpReply:
        if recipient == self.breaks_on:
            raise RuntimeError("the transport broke")
        return await super().send(lane, sender, recipient, message, next_message=next_message)


@pytest.mark.timeout(30)
async def test_an_unexpected_error_in_a_worker_task_stops_the_send_with_a_clear_error(
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    readers = seed_subscribers(engine, 10)
    make_edition(engine)
    one_lane = settings.model_copy(update={"smtp_concurrency": 1})  # nothing else in flight
    transport = BreakingTransport(one_lane, breaks_on=readers[4])

    try:
        with (
            caplog.at_level(logging.ERROR, logger="newsletter.send"),
            pytest.raises(DeliveryError, match="run the same command again") as raised,
        ):
            await send_edition(one_lane, engine, edition_date=DAY, transport=transport)
    finally:
        await transport.aclose()

    assert "unexpected error (RuntimeError: the transport broke)" in str(raised.value)
    assert isinstance(raised.value.__cause__, RuntimeError)
    [logged] = [r for r in caplog.records if "stopped on an unexpected error" in r.getMessage()]
    assert logged.exc_info is not None  # the traceback is in the log, for whoever fixes it
    rows = ledger_rows(engine)
    assert received(smtp_server) == Counter(readers[:4])
    assert [row.status for row in rows].count(DeliveryStatus.SENT) == 4  # recorded, not lost
    assert {row.lease_owner for row in rows} == {None}  # the rest is back in the queue now
    assert edition_status(engine)[0] is EditionStatus.SENDING

    again = await send_edition(one_lane, engine, edition_date=DAY)

    assert again.sent == 6
    assert received(smtp_server) == Counter(readers)
    assert edition_status(engine)[0] is EditionStatus.SENT
