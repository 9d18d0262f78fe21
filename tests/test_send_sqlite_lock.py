"""Sending on SQLite while another process holds the write lock.

Two sending processes share one SQLite file, whose write lock one of them
holds at a time. A worker that finds it held must keep its connections
sending while it waits (up to the backpressure's bound of unwritten outcomes),
not sleep in SQLite's busy handler with its whole event loop stalled.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from sqlalchemy import Engine

from newsletter.core.db import try_begin_write
from newsletter.core.settings import Settings
from newsletter.delivery import worker
from newsletter.delivery.worker import FLUSH_MAX_ROWS, send_edition
from newsletter.models import DeliveryStatus
from tests.support.sending import DAY, ledger_rows, make_edition, received, seed_subscribers
from tests.support.smtp_server import RecordingSmtpServer

READERS = 300
WAIT_SECONDS = 60.0


# One lane: it is held back when the first batch is full, so it goes on only if the
# batch's write in progress lets it (with several, one in flight could go on alone).
@pytest.mark.parametrize("lanes", [4, 1])
async def test_a_worker_keeps_sending_while_another_process_holds_the_write_lock(
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    lanes: int,
) -> None:
    settings = settings.model_copy(update={"smtp_concurrency": lanes})
    # The first flush comes when FLUSH_MAX_ROWS outcomes are in hand, not at a tick of
    # the clock: a tick that found only the first few would leave a worker that went on
    # with fewer messages to send before its backpressure than the count below.
    monkeypatch.setattr(worker, "FLUSH_INTERVAL_SECONDS", WAIT_SECONDS)
    addresses = seed_subscribers(engine, READERS)
    make_edition(engine)
    # Stalled in a busy handler, a worker could not get past the outcomes of its first
    # flush and the messages already on the wire: this many arrive only if it went on.
    beyond_a_stalled_worker = FLUSH_MAX_ROWS + lanes + 1
    other_process = sqlite3.connect(
        settings.database_url.removeprefix("sqlite:///"),
        isolation_level=None,
        check_same_thread=False,
    )
    lock = threading.Lock()
    arrived = 0
    went_on = threading.Event()

    def lock_at_the_first_message(stage: str, address: str, attempt: int) -> None:
        nonlocal arrived
        if stage != "data":
            return None
        with lock:
            arrived += 1
            if arrived == 1:  # another process starts writing, and keeps the lock
                other_process.execute("BEGIN IMMEDIATE")
            if arrived == beyond_a_stalled_worker:
                went_on.set()
        return None

    smtp_server.handler.fault = lock_at_the_first_message
    sending = asyncio.create_task(send_edition(settings, engine, edition_date=DAY))
    try:
        assert await asyncio.to_thread(went_on.wait, WAIT_SECONDS)
        # Nothing could be written meanwhile: those messages went out while the worker waited.
        assert not any(row.status == DeliveryStatus.SENT for row in ledger_rows(engine))
    finally:
        if other_process.in_transaction:
            other_process.execute("ROLLBACK")
        other_process.close()
    report = await sending
    assert report.sent == READERS
    assert {row.status for row in ledger_rows(engine)} == {DeliveryStatus.SENT}
    assert received(smtp_server) == dict.fromkeys(addresses, 1)


def test_the_write_lock_is_taken_at_once_or_reported_held(
    settings: Settings, engine: Engine
) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE notes (text TEXT)")
    other_process = sqlite3.connect(
        settings.database_url.removeprefix("sqlite:///"), isolation_level=None
    )
    try:
        other_process.execute("BEGIN IMMEDIATE")
        with engine.begin() as connection:
            assert not try_begin_write(connection)
            # The connection's own wait for a lock is back as it was.
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000
        other_process.execute("ROLLBACK")
        with engine.begin() as connection:
            assert try_begin_write(connection)
            connection.exec_driver_sql("INSERT INTO notes VALUES ('written')")
        assert other_process.execute("SELECT text FROM notes").fetchall() == [("written",)]
    finally:
        other_process.close()
