"""Leases between workers sharing a queue, on a short lease and a slow SMTP server.

A worker renews its lease while it works, so another never takes over rows still
being sent; a worker that stops renewing loses its rows to another once the lease
runs out. The lease is real time (1.5 s here); what the tests wait for are events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from newsletter.core.clock import utc_now
from newsletter.core.settings import Settings
from newsletter.core.wire import PreparedMessage
from newsletter.delivery.transport import NextMessageSource, SmtpPool, SmtpReply, SmtpStage
from newsletter.delivery.worker import SendReport, run_worker, start_edition
from newsletter.models import DeliveryStatus, EditionStatus
from tests.support.sending import (
    DAY,
    edition_status,
    ledger_rows,
    make_edition,
    received,
    seed_subscribers,
)
from tests.support.smtp_server import Hold, RecordingSmtpServer

LEASE_SECONDS = 1.5


def short_lease(settings: Settings, smtp_port: int) -> Settings:
    """One connection per worker, a lease of LEASE_SECONDS, the given SMTP server."""
    return settings.model_copy(
        update={
            "smtp_port": smtp_port,
            "smtp_concurrency": 1,
            "send_lease_seconds": LEASE_SECONDS,
        }
    )


def lease_expiries(engine: Engine) -> set[dt.datetime | None]:
    """When the leases on the edition's rows run out."""
    return {row.lease_expires_at for row in ledger_rows(engine)}


@pytest.mark.timeout(60)
async def test_a_worker_renews_its_lease_while_it_works_so_another_never_takes_its_rows(
    settings: Settings, engine: Engine
) -> None:
    readers = seed_subscribers(engine, 6)
    make_edition(engine)
    start_edition(engine, DAY)
    hold = Hold(applies=lambda address: address == readers[0])
    with RecordingSmtpServer(hold=hold) as slow:
        config = short_lease(settings, slow.port)
        first = asyncio.create_task(run_worker(config, engine, worker_id="worker-a"))
        # The first worker claimed all six and the server keeps it waiting at RCPT.
        assert await asyncio.to_thread(hold.reached.wait, 20)
        [claimed_until] = {when for when in lease_expiries(engine) if when is not None}
        assert {row.lease_owner for row in ledger_rows(engine)} == {"worker-a"}

        # The second worker looks for work from now on; its clock tells when it has
        # looked a whole lease after the first one's claim would have run out.
        looked_past_the_lease = asyncio.Event()
        past_the_lease = claimed_until + dt.timedelta(seconds=LEASE_SECONDS)

        def second_clock() -> dt.datetime:
            now = utc_now()
            if now >= past_the_lease:
                looked_past_the_lease.set()
            return now

        stop_second = asyncio.Event()
        second = asyncio.create_task(
            run_worker(
                config,
                engine,
                worker_id="worker-b",
                stop_when_idle=False,
                stop=stop_second,
                clock=second_clock,
            )
        )
        await asyncio.wait_for(looked_past_the_lease.wait(), 20)

        rows = ledger_rows(engine)
        assert {row.lease_owner for row in rows} == {"worker-a"}  # nothing was taken over
        assert {row.status for row in rows} == {DeliveryStatus.QUEUED}
        assert all(row.lease_expires_at and row.lease_expires_at > past_the_lease for row in rows)
        hold.release()
        first_report = await asyncio.wait_for(first, 20)
        stop_second.set()
        second_report = await asyncio.wait_for(second, 20)

        assert (first_report.sent, second_report.sent) == (6, 0)
        assert received(slow) == Counter(readers)  # each reader exactly once
    assert edition_status(engine)[0] is EditionStatus.SENT


class StallingTransport(SmtpPool):
    """The real SMTP pool, except that the first send blocks its worker's whole event loop.

    A stand-in for any worker that stops renewing while holding rows: a synchronous
    call on its loop, a paused VM, a stuck disk. When `resume` is set the stalled send
    fails as a dropped connection would after so long, and the worker carries on.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.stalled = threading.Event()
        self.resume = threading.Event()
        self.sends = 0

    async def send(
        self,
        lane: int,
        sender: str,
        recipient: str,
        message: PreparedMessage,
        *,
        next_message: NextMessageSource | None = None,
    ) -> SmtpReply:
        self.sends += 1
        if self.sends == 1:
            self.stalled.set()
            self.resume.wait(timeout=60)  # blocks the loop on purpose: no renewals
            return SmtpReply(None, "connection lost while stalled", SmtpStage.CONNECTION)
        return await super().send(lane, sender, recipient, message, next_message=next_message)


@pytest.mark.timeout(60)
async def test_rows_of_a_worker_that_stops_renewing_are_taken_over_once_its_lease_runs_out(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 6)
    make_edition(engine)
    start_edition(engine, DAY)
    config = short_lease(settings, smtp_server.port)
    stalling = StallingTransport(config)

    async def stalling_worker() -> SendReport:
        try:
            return await run_worker(config, engine, worker_id="worker-a", transport=stalling)
        finally:
            await stalling.aclose()

    def run_stalling_worker() -> SendReport:
        # A loop of its own, in a thread of its own, so its stall does not stop this one.
        return asyncio.run(stalling_worker())

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_stalling_worker)
        try:
            assert await asyncio.to_thread(stalling.stalled.wait, 20)
            [held_until] = lease_expiries(engine)  # its last renewal, before it stalled
            assert held_until is not None

            second_report = await asyncio.wait_for(
                run_worker(config, engine, worker_id="worker-b"), 20
            )

            rows = ledger_rows(engine)
            assert second_report.sent == 6  # every row, the stalled one's included
            assert {row.status for row in rows} == {DeliveryStatus.SENT}
            assert all(row.sent_at and row.sent_at >= held_until for row in rows)  # not before
            assert received(smtp_server) == Counter(readers)
        finally:
            stalling.resume.set()
        # Back from its stall, the first worker finds its rows gone and sends none of them.
        first_report = await asyncio.wrap_future(first)

    assert first_report.sent == 0
    assert received(smtp_server) == Counter(readers)  # still exactly one each
    assert {row.status for row in ledger_rows(engine)} == {DeliveryStatus.SENT}
    assert edition_status(engine)[0] is EditionStatus.SENT
