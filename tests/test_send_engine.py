"""The sending engine end to end: ledger, SMTP pool, operator controls, stats, progress."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import threading
from collections import Counter
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import Engine, insert, select, update

from newsletter.core.clock import utc_now
from newsletter.core.errors import DeliveryError, EditionNotFoundError
from newsletter.core.settings import Settings
from newsletter.core.wire import PreparedMessage
from newsletter.delivery.ledger import deliveries, editions, subscribers
from newsletter.delivery.progress import RichSendProgress
from newsletter.delivery.stats import edition_stats, list_edition_stats
from newsletter.delivery.transport import NextMessageSource, NullTransport, SmtpPool, SmtpReply
from newsletter.delivery.worker import (
    SendReport,
    cancel_edition,
    pause_edition,
    resume_edition,
    run_worker,
    send_edition,
    send_test_copy,
    start_edition,
)
from newsletter.models import DeliveryStatus, EditionStatus
from subscribers.models import SubscriberStatus
from tests.support.sending import (
    DAY,
    UNSUBSCRIBE,
    edition_status,
    ledger_rows,
    make_edition,
    received,
    seed_subscribers,
)
from tests.support.smtp_server import RecordingSmtpServer

# The SMTP conversation runs on uvloop (the commands') and on asyncio's own loop.
pytestmark = pytest.mark.both_event_loops


class RecordingProgress:
    """A SendProgress that remembers every call."""

    def __init__(self) -> None:
        self.started_with: tuple[int, int] | None = None
        self.advanced_with: list[DeliveryStatus] = []
        self.report: SendReport | None = None
        self.waits: list[tuple[int, dt.datetime, str | None]] = []

    def started(self, total: int, already_done: int) -> None:
        self.started_with = (total, already_done)

    def advanced(self, status: DeliveryStatus, count: int = 1) -> None:
        self.advanced_with.extend([status] * count)

    def waiting(self, count: int, until: dt.datetime, last_reply: str | None) -> None:
        self.waits.append((count, until, last_reply))

    def finished(self, report: SendReport) -> None:
        self.report = report


class HookedTransport(SmtpPool):
    """The real SMTP pool, with a hook called after each accepted message (pause, cancel...)."""

    def __init__(self, settings: Settings, after_accepted: int, hook: object) -> None:
        super().__init__(settings)
        self.after_accepted = after_accepted
        self.hook = hook
        self.accepted = 0

    async def send(
        self,
        lane: int,
        sender: str,
        recipient: str,
        message: PreparedMessage,
        *,
        next_message: NextMessageSource | None = None,
    ) -> SmtpReply:
        reply = await super().send(lane, sender, recipient, message, next_message=next_message)
        if reply.accepted:
            self.accepted += 1
            if self.accepted == self.after_accepted:
                assert callable(self.hook)
                await asyncio.to_thread(self.hook)
        return reply


# ---- the happy path -------------------------------------------------------------------------


async def test_send_reaches_only_confirmed_unpaused_subscribers_once(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 12)
    seed_subscribers(engine, 2, status=SubscriberStatus.PENDING, prefix="pending")
    seed_subscribers(engine, 2, status=SubscriberStatus.UNSUBSCRIBED, prefix="left")
    seed_subscribers(engine, 2, status=SubscriberStatus.BOUNCED, prefix="bounced")
    seed_subscribers(engine, 2, paused=True, prefix="paused")
    make_edition(engine)
    progress = RecordingProgress()

    report = await send_edition(settings, engine, edition_date=DAY, progress=progress)

    assert received(smtp_server) == Counter(readers)
    assert (report.queued, report.sent, report.failed, report.bounced) == (12, 12, 0, 0)
    assert report.already_done == 0 and report.paused_reason is None
    assert edition_status(engine) == (EditionStatus.SENT, None)
    rows = ledger_rows(engine)
    assert {row.status for row in rows} == {DeliveryStatus.SENT}
    assert all(row.attempts == 1 and row.last_code == 250 and row.sent_at for row in rows)
    assert all(row.lease_owner is None for row in rows)
    # Each message carries its row's Message-ID and its reader's own links.
    by_address = {row.email: row for row in rows}
    for arrived in smtp_server.messages:
        row = by_address[arrived.rcpt_tos[0]]
        assert arrived.message["Message-ID"] == row.message_id
        assert row.message_id == f"<20260302.{row.id}.digest@news.example.org>"
        assert arrived.message["To"].addresses[0].addr_spec == row.email
        assert arrived.mail_from == "digest@news.example.org"
        text = arrived.message.get_body(("plain",)).get_content()
        assert "Größte Modelle" in text and "https://news.example.org/unsubscribe/" in text
        assert UNSUBSCRIBE not in arrived.raw.decode()
    assert progress.started_with == (12, 0)
    assert progress.advanced_with == [DeliveryStatus.SENT] * 12
    assert progress.report == report


async def test_a_second_send_sends_nothing_and_says_so(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 5)
    make_edition(engine)
    await send_edition(settings, engine, edition_date=DAY)

    again = await send_edition(settings, engine, edition_date=DAY)

    assert len(smtp_server.messages) == 5
    assert (again.queued, again.sent, again.failed, again.already_done) == (0, 0, 0, 5)


async def test_the_audience_is_fixed_when_the_send_starts(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 3)
    make_edition(engine)
    assert start_edition(engine, DAY) == 3
    assert start_edition(engine, DAY) is None  # already started: nobody added twice
    late = seed_subscribers(engine, 2, prefix="late")

    report = await send_edition(settings, engine, edition_date=DAY)

    assert report.sent == 3
    assert not set(late) & set(received(smtp_server))


async def test_one_connection_carries_many_messages(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 30)
    make_edition(engine)
    one_lane = settings.model_copy(update={"smtp_concurrency": 1})
    connections: list[object] = []
    original = smtp_server.handler.handle_RCPT

    async def remember_session(server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        connections.append(id(session))
        return await original(server, session, envelope, address, options)

    smtp_server.handler.handle_RCPT = remember_session  # type: ignore[method-assign]
    await send_edition(one_lane, engine, edition_date=DAY)

    assert len(smtp_server.messages) == 30
    assert len(set(connections)) == 1


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux's scheduling policies")
async def test_a_send_runs_as_batch_work_and_leaves_the_process_as_it_was(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    # The relay, the web server and the database on the same machine come first.
    seed_subscribers(engine, 3)
    make_edition(engine)
    policies: list[int] = []
    transport = HookedTransport(settings, 1, lambda: None)
    original = transport.send

    async def noting_the_policy(*args: Any, **kwargs: Any) -> SmtpReply:
        policies.append(os.sched_getscheduler(0))
        return await original(*args, **kwargs)

    transport.send = noting_the_policy  # type: ignore[method-assign]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER

    try:
        report = await send_edition(settings, engine, edition_date=DAY, transport=transport)
    finally:
        await transport.aclose()

    assert report.sent == 3
    assert policies == [os.SCHED_BATCH] * 3
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


async def test_missing_or_unrendered_edition_is_refused(settings: Settings, engine: Engine) -> None:
    with pytest.raises(EditionNotFoundError, match="2026-03-02"):
        await send_edition(settings, engine, edition_date=DAY)
    with engine.begin() as connection:
        connection.execute(
            insert(editions).values(
                date=DAY, status="draft", subject="", html="", text="", created_at=utc_now()
            )
        )
    with pytest.raises(EditionNotFoundError, match="not been rendered"):
        await send_edition(settings, engine, edition_date=DAY)


# ---- pause, resume, cancel ------------------------------------------------------------------


async def test_pause_mid_send_stops_within_a_batch_and_resume_finishes_exactly_once(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 120)
    make_edition(engine)
    small_batches = settings.model_copy(update={"send_batch_size": 10, "smtp_concurrency": 2})
    transport = HookedTransport(
        small_batches, 20, lambda: pause_edition(engine, DAY, reason="checking a complaint")
    )

    try:
        report = await send_edition(small_batches, engine, edition_date=DAY, transport=transport)
    finally:
        await transport.aclose()

    assert report.paused_reason == "checking a complaint"
    assert edition_status(engine) == (EditionStatus.PAUSED, "checking a complaint")
    sent_before_resume = len(smtp_server.messages)
    # Stopped within about a batch: the claimed rows were handed back, not sent.
    assert 20 <= sent_before_resume <= 20 + 2 * small_batches.send_batch_size
    statuses = Counter(row.status for row in ledger_rows(engine))
    assert statuses[DeliveryStatus.QUEUED] == 120 - sent_before_resume
    assert all(row.lease_owner is None for row in ledger_rows(engine))
    with pytest.raises(DeliveryError, match=r"paused \(checking a complaint\).*newsletter resume"):
        await send_edition(small_batches, engine, edition_date=DAY)

    resume_edition(engine, DAY)
    final = await send_edition(small_batches, engine, edition_date=DAY)

    assert received(smtp_server) == Counter(readers)
    assert final.already_done == sent_before_resume
    assert final.sent == 120 - sent_before_resume
    assert edition_status(engine)[0] is EditionStatus.SENT


async def test_cancel_mid_send_leaves_nobody_queued(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 100)
    make_edition(engine)
    small_batches = settings.model_copy(update={"send_batch_size": 10, "smtp_concurrency": 2})
    transport = HookedTransport(small_batches, 15, lambda: cancel_edition(engine, DAY))

    try:
        report = await send_edition(small_batches, engine, edition_date=DAY, transport=transport)
    finally:
        await transport.aclose()

    arrived = len(smtp_server.messages)
    assert 15 <= arrived <= 15 + 2 * small_batches.send_batch_size
    rows = ledger_rows(engine)
    statuses = Counter(row.status for row in rows)
    assert statuses[DeliveryStatus.QUEUED] == 0
    # Whatever the server accepted is recorded as sent, the rest as cancelled.
    assert statuses[DeliveryStatus.SENT] == arrived
    assert {r.last_error for r in rows if r.status is DeliveryStatus.FAILED} == {
        "cancelled by operator"
    }
    assert report.sent == arrived
    assert edition_status(engine) == (EditionStatus.CANCELLED, "cancelled by operator")
    with pytest.raises(DeliveryError, match="cancelled"):
        await send_edition(small_batches, engine, edition_date=DAY)
    with pytest.raises(DeliveryError, match="cancelled"):
        resume_edition(engine, DAY)


async def test_operator_controls_refuse_what_makes_no_sense(
    settings: Settings, engine: Engine
) -> None:
    seed_subscribers(engine, 2)
    make_edition(engine)
    with pytest.raises(DeliveryError, match="has not started; only a running send can be paused"):
        pause_edition(engine, DAY, reason="x")
    with pytest.raises(DeliveryError, match="has not started"):
        resume_edition(engine, DAY)
    with pytest.raises(EditionNotFoundError):
        cancel_edition(engine, DAY + dt.timedelta(days=1))
    await send_edition(settings, engine, edition_date=DAY)
    with pytest.raises(DeliveryError, match="sent already"):
        cancel_edition(engine, DAY)
    with pytest.raises(DeliveryError, match="sent already"):
        resume_edition(engine, DAY)
    # Reasons are stored on one line.
    start_other = make_edition(engine, DAY + dt.timedelta(days=1))
    assert start_other
    start_edition(engine, DAY + dt.timedelta(days=1))
    pause_edition(engine, DAY + dt.timedelta(days=1), reason="line one\r\nline two")
    assert edition_status(engine, DAY + dt.timedelta(days=1)) == (
        EditionStatus.PAUSED,
        "line one line two",
    )


# ---- workers, test copies, stats, progress, pacing ------------------------------------------


async def test_worker_sends_every_edition_that_is_sending(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 7)
    make_edition(engine, DAY)
    make_edition(engine, DAY + dt.timedelta(days=1), subject="The next day")
    make_edition(engine, DAY + dt.timedelta(days=2), subject="Still a draft")
    start_edition(engine, DAY)
    start_edition(engine, DAY + dt.timedelta(days=1))

    report = await run_worker(settings, engine, worker_id="worker-a")

    assert received(smtp_server) == Counter(readers * 2)
    assert (report.queued, report.sent, report.edition_date) == (14, 14, None)
    assert edition_status(engine, DAY)[0] is EditionStatus.SENT
    assert edition_status(engine, DAY + dt.timedelta(days=1))[0] is EditionStatus.SENT
    assert edition_status(engine, DAY + dt.timedelta(days=2))[0] is EditionStatus.DRAFT


async def test_test_copy_is_marked_and_recorded_apart(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 3)
    make_edition(engine)

    delivery = await send_test_copy(settings, engine, edition_date=DAY, email="Editor@Example.org")

    assert delivery.is_test and delivery.subscriber_id is None
    assert delivery.status is DeliveryStatus.SENT
    [arrived] = smtp_server.messages
    assert arrived.rcpt_tos == ["Editor@example.org"]
    assert arrived.message["Subject"] == "[TEST] Papers of the day"
    assert arrived.message["Message-ID"] == delivery.message_id
    stats = edition_stats(engine, DAY)
    assert stats.test_sends == 1
    assert sum(stats.deliveries.values()) == 0  # the test copy is not part of the audience
    # The edition itself is untouched and sends normally afterwards.
    report = await send_edition(settings, engine, edition_date=DAY)
    assert report.sent == 3


async def test_test_copy_to_an_unreachable_server_is_recorded_failed(
    settings: Settings, engine: Engine
) -> None:
    make_edition(engine)
    nowhere = settings.model_copy(update={"smtp_port": 1, "smtp_timeout_seconds": 2.0})

    delivery = await send_test_copy(nowhere, engine, edition_date=DAY, email="ed@example.org")

    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.last_error and "cannot connect to 127.0.0.1:1" in delivery.last_error


async def test_stats_show_the_ledger(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 4)
    make_edition(engine)
    make_edition(engine, DAY - dt.timedelta(days=1), subject="Yesterday")
    await send_edition(settings, engine, edition_date=DAY)
    with engine.begin() as connection:
        connection.execute(
            update(subscribers)
            .where(subscribers.c.email == "reader00001@example.org")
            .values(status="unsubscribed", unsubscribed_at=utc_now())
        )

    stats = edition_stats(engine, DAY)

    assert stats.status is EditionStatus.SENT
    assert stats.deliveries == {
        DeliveryStatus.QUEUED: 0,
        DeliveryStatus.SENT: 4,
        DeliveryStatus.FAILED: 0,
        DeliveryStatus.BOUNCED: 0,
        DeliveryStatus.SKIPPED: 0,
        DeliveryStatus.COMPLAINED: 0,
    }
    assert stats.unsubscribed_since == 1
    assert stats.send_started_at and stats.send_finished_at
    assert stats.send_started_at <= stats.send_finished_at
    listed = list_edition_stats(engine)
    assert [s.edition_date for s in listed] == [DAY, DAY - dt.timedelta(days=1)]
    assert listed[1].status is EditionStatus.DRAFT and listed[1].unsubscribed_since == 0
    with pytest.raises(EditionNotFoundError):
        edition_stats(engine, DAY + dt.timedelta(days=5))


async def test_rich_progress_shows_counts_and_rate(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 6)
    make_edition(engine)
    output = io.StringIO()
    console = Console(file=output, width=160, force_terminal=False)

    with RichSendProgress(console) as progress:
        await send_edition(settings, engine, edition_date=DAY, progress=progress)

    shown = output.getvalue()
    assert "6/6" in shown
    assert "sent 6" in shown and "failed 0" in shown and "bounced 0" in shown
    assert "msg/s" in shown


async def test_null_transport_runs_the_whole_ledger_without_a_network(
    settings: Settings, engine: Engine
) -> None:
    seed_subscribers(engine, 250)
    make_edition(engine)
    transport = NullTransport(lanes=8)
    small = settings.model_copy(update={"send_batch_size": 40})

    report = await send_edition(small, engine, edition_date=DAY, transport=transport)

    assert report.sent == transport.delivered == 250
    assert {row.status for row in ledger_rows(engine)} == {DeliveryStatus.SENT}


async def test_send_rate_holds_across_connections(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 12)
    make_edition(engine)
    paced = settings.model_copy(update={"send_rate_per_second": 5.0, "smtp_concurrency": 4})
    started = asyncio.get_running_loop().time()

    await send_edition(paced, engine, edition_date=DAY)

    # A burst of one (a quarter second's worth, at least one), the other 11 at one per 0.2 s.
    assert asyncio.get_running_loop().time() - started >= 2.1
    assert len(smtp_server.messages) == 12


# ---- the ledger's leases --------------------------------------------------------------------


def test_a_lease_keeps_others_away_until_it_expires(settings: Settings, engine: Engine) -> None:
    from newsletter.delivery import ledger

    seed_subscribers(engine, 5)
    make_edition(engine)
    start_edition(engine, DAY)
    now = utc_now()
    with engine.begin() as connection:
        mine = ledger.claim_batch(
            connection, edition_id=None, worker_id="a", limit=3, now=now, lease_seconds=60
        )
        theirs = ledger.claim_batch(
            connection, edition_id=None, worker_id="b", limit=10, now=now, lease_seconds=60
        )
        # Worker "a" dies; a minute later its rows are anyone's again.
        later = now + dt.timedelta(seconds=61)
        rescued = ledger.claim_batch(
            connection, edition_id=None, worker_id="c", limit=10, now=later, lease_seconds=60
        )
    assert len(mine) == 3 and len(theirs) == 2
    assert not {row.id for row in mine} & {row.id for row in theirs}
    assert {row.id for row in rescued} == {row.id for row in mine + theirs}
    assert {row.lease_owner for row in ledger_rows(engine)} == {"c"}


def test_a_paused_edition_has_nothing_claimable(settings: Settings, engine: Engine) -> None:
    from newsletter.delivery import ledger

    seed_subscribers(engine, 4)
    make_edition(engine)
    start_edition(engine, DAY)
    pause_edition(engine, DAY, reason="operator")
    with engine.begin() as connection:
        claimed = ledger.claim_batch(
            connection, edition_id=None, worker_id="a", limit=10, now=utc_now(), lease_seconds=9
        )
    assert claimed == []


async def test_a_worker_left_running_picks_up_an_edition_started_later(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 9)
    make_edition(engine)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, engine, stop_when_idle=False, stop=stop))
    await asyncio.sleep(0.2)
    assert not worker.done()  # idle, polling, not finished

    start_edition(engine, DAY)
    for _ in range(200):
        if edition_status(engine)[0] is EditionStatus.SENT:
            break
        await asyncio.sleep(0.05)
    stop.set()
    report = await asyncio.wait_for(worker, 10)

    assert edition_status(engine)[0] is EditionStatus.SENT
    assert received(smtp_server) == Counter(readers)
    assert {row.status for row in ledger_rows(engine)} == {DeliveryStatus.SENT}
    assert (report.sent, report.edition_date) == (9, DAY)


# Held at RCPT: the first message's envelope is out, nothing else. Held at DATA: its
# content is out with the next reader's envelope behind it, and the reader after that
# has been taken and prepared while the relay had the message.
@pytest.mark.parametrize("held_at", ["rcpt", "data"])
async def test_a_stopped_worker_finishes_what_is_in_flight_and_hands_back_the_rest(
    settings: Settings, engine: Engine, held_at: str
) -> None:
    in_flight = threading.Event()
    release = threading.Event()

    def hold_the_first(stage: str, address: str, attempt: int) -> str | None:
        if stage == held_at and not in_flight.is_set():
            in_flight.set()
            release.wait(timeout=30)  # blocks the SMTP server until the test has asked to stop
        return None

    readers = seed_subscribers(engine, 20)
    make_edition(engine)
    start_edition(engine, DAY)
    with RecordingSmtpServer(fault=hold_the_first) as slow:
        one_lane = settings.model_copy(update={"smtp_port": slow.port, "smtp_concurrency": 1})
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_worker(one_lane, engine, worker_id="stopping", stop_when_idle=False, stop=stop)
        )
        assert await asyncio.to_thread(in_flight.wait, 10)
        stop.set()
        release.set()
        report = await asyncio.wait_for(worker, 20)
        rows = ledger_rows(engine)
        assert report.sent == 1  # the message in flight, and nothing after it
        assert received(slow) == Counter(readers[:1])
        assert [row.status for row in rows].count(DeliveryStatus.SENT) == 1
        assert [row.status for row in rows].count(DeliveryStatus.QUEUED) == 19
        assert {row.lease_owner for row in rows} == {None}  # handed back, not left leased

        again = await run_worker(one_lane, engine)

        assert again.sent == 19
        assert received(slow) == Counter(readers)
    assert edition_status(engine)[0] is EditionStatus.SENT


async def test_extra_relays_share_the_load(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 40)
    make_edition(engine)
    with RecordingSmtpServer() as second_relay:
        two_relays = settings.model_copy(
            update={"smtp_extra_relays": [f"127.0.0.1:{second_relay.port}"], "smtp_concurrency": 2}
        )
        assert SmtpPool(two_relays).lanes == 4

        await send_edition(two_relays, engine, edition_date=DAY)

        assert smtp_server.messages and second_relay.messages
        assert received(smtp_server) + received(second_relay) == Counter(readers)


# ---- readers who leave while the edition is being sent ------------------------------------


async def test_readers_who_leave_after_the_send_started_get_nothing(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    addresses = seed_subscribers(engine, 6)
    make_edition(engine)
    start_edition(engine, DAY)  # the audience is fixed: six queued rows
    with engine.begin() as connection:
        connection.execute(
            update(subscribers)
            .where(subscribers.c.email == addresses[1])
            .values(status=SubscriberStatus.UNSUBSCRIBED.value, unsubscribed_at=utc_now())
        )
        connection.execute(
            update(subscribers).where(subscribers.c.email == addresses[2]).values(paused=True)
        )

    report = await send_edition(settings, engine, edition_date=DAY)

    assert sorted(smtp_server.handler.recipients()) == sorted(
        a for a in addresses if a not in (addresses[1], addresses[2])
    )
    assert (report.sent, report.skipped, report.failed) == (4, 2, 0)
    rows = {row.email: row for row in ledger_rows(engine)}
    for gone in (addresses[1], addresses[2]):
        assert rows[gone].status is DeliveryStatus.SKIPPED
        assert "left or paused after the send started" in (rows[gone].last_error or "")
    assert not any(row.status is DeliveryStatus.QUEUED for row in rows.values())
    # Everyone still subscribed was reached: those who left are no failure of the send.
    assert edition_status(engine)[0] is EditionStatus.SENT


def test_rows_held_by_a_dead_process_on_this_machine_return_at_once(
    settings: Settings, engine: Engine
) -> None:
    import os
    import socket
    import subprocess
    import sys

    from newsletter.delivery import ledger
    from newsletter.delivery.worker import is_dead_local_worker

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    host = socket.gethostname()[:40]
    dead = f"{host}:{finished.pid}:abc123"
    alive = f"{host}:{os.getppid()}:def456"
    elsewhere = "another-machine:1:aaaaaa"
    assert is_dead_local_worker(dead)
    assert not is_dead_local_worker(alive)
    assert not is_dead_local_worker(elsewhere)
    assert not is_dead_local_worker("operator-named-worker")

    seed_subscribers(engine, 6)
    make_edition(engine)
    start_edition(engine, DAY)
    later = utc_now() + dt.timedelta(hours=1)
    owners = [dead, dead, alive, alive, elsewhere, elsewhere]
    with engine.begin() as connection:
        ids = connection.execute(select(deliveries.c.id).order_by(deliveries.c.id)).scalars().all()
        for row_id, owner in zip(ids, owners, strict=True):
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id == row_id)
                .values(lease_owner=owner, lease_expires_at=later)
            )
        assert sorted(ledger.lease_owners(connection)) == sorted({dead, alive, elsewhere})
        gone = [o for o in ledger.lease_owners(connection) if is_dead_local_worker(o)]
        assert ledger.release_leases(connection, gone) == 2
        held = Counter(connection.execute(select(deliveries.c.lease_owner)).scalars().all())
    assert held == Counter({None: 2, alive: 2, elsewhere: 2})
