"""Kill the sending process with SIGKILL mid-edition, start it again: nobody lost, few doubled."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP as SmtpProtocol
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import Engine

from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.delivery.worker import FLUSH_MAX_ROWS
from newsletter.models import DeliveryStatus, EditionStatus
from newsletter.outbox import SmtpCatcher
from tests.support.postgres import postgres_database_or_skip
from tests.support.sending import (
    DAY,
    edition_status,
    ledger_rows,
    make_edition,
    seed_subscribers,
    worker_environment,
)
from tests.support.smtp_server import RecordingHandler

SEND_SCRIPT = """
import asyncio, datetime, json, sys
from newsletter.core.db import create_db_engine
from newsletter.delivery.worker import send_edition
from newsletter.core.settings import load_settings

settings = load_settings()
engine = create_db_engine(settings.database_url)
report = asyncio.run(
    send_edition(settings, engine, edition_date=datetime.date.fromisoformat(sys.argv[1]))
)
print(json.dumps({"sent": report.sent, "already_done": report.already_done,
                  "failed": report.failed, "queued": report.queued}))
"""


class SlowRecordingHandler(RecordingHandler):
    """Records like RecordingHandler but takes a few milliseconds per message, like a real relay."""

    delay_seconds = 0.004

    async def handle_DATA(self, server: SmtpProtocol, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay_seconds)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_server() -> Iterator[SmtpCatcher]:
    """A slow recording SMTP server in a background thread."""
    with SmtpCatcher(SlowRecordingHandler()) as server:
        yield server


def _received(server: SmtpCatcher) -> Counter[str]:
    handler = server.handler
    assert isinstance(handler, RecordingHandler)
    return Counter(handler.recipients())


def _wait_for_messages_while_running(
    server: SmtpCatcher, process: subprocess.Popen[bytes], count: int, timeout: float
) -> None:
    handler = server.handler
    assert isinstance(handler, RecordingHandler)
    deadline = time.monotonic() + timeout
    # Woken by each arrival; every second, make sure the sender has not ended on its own.
    while not handler.wait_for_messages(count, timeout=1):
        assert process.poll() is None, "the sending process ended before the kill"
        assert time.monotonic() < deadline, f"{count} messages never arrived"


def crash_and_restart(engine: Engine, database_url: str, server: SmtpCatcher, tmp: Path) -> None:
    """The scenario: send, SIGKILL after a third arrived, send again; then check the promise."""
    audience = 450
    lanes = 4
    readers = seed_subscribers(engine, audience)
    make_edition(engine)
    env = worker_environment(
        database_url,
        server.port,
        NEWSLETTER_SEND_LEASE_SECONDS="1",
        NEWSLETTER_SMTP_CONCURRENCY=str(lanes),
        NEWSLETTER_SEND_BATCH_SIZE="50",
    )
    command = [sys.executable, "-c", SEND_SCRIPT, DAY.isoformat()]
    with (tmp / "first.log").open("wb") as log:
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_messages_while_running(server, first, audience // 3, timeout=60)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp / "first.log").read_text()
    # Messages whose DATA had fully arrived may still be finishing in the slow handler;
    # once the dead process's connections are closed on the server's side, none can.
    assert server.wait_until_no_sessions(timeout=10), "the killed sender's sessions stayed open"
    before = _received(server)
    rows = {row.email: row for row in ledger_rows(engine)}
    assert 0 < sum(before.values()) < audience, "the kill came too late to test anything"
    assert {row.status for row in rows.values()} <= {DeliveryStatus.SENT, DeliveryStatus.QUEUED}
    # Accepted by the server but not yet marked sent: what the restart may send again.
    unrecorded = {a for a in before if rows[a].status is not DeliveryStatus.SENT}
    recorded = {a for a, row in rows.items() if row.status is DeliveryStatus.SENT}
    assert recorded <= set(before), "a row was marked sent that the server never accepted"

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    assert second.returncode == 0, second.stdout + second.stderr
    report = json.loads(second.stdout.strip().splitlines()[-1])

    after = _received(server)
    assert set(after) == set(readers), "someone never received the edition"
    doubled = {address for address, copies in after.items() if copies > 1}
    assert max(after.values()) <= 2
    # Exactly the accepted-but-unrecorded messages went twice, and never more than the bound.
    assert doubled == unrecorded
    assert len(doubled) <= 2 * (lanes + FLUSH_MAX_ROWS)
    assert report["already_done"] == len(recorded)
    assert report["sent"] == audience - len(recorded)
    final = ledger_rows(engine)
    assert {row.status for row in final} == {DeliveryStatus.SENT}
    assert all(row.lease_owner is None for row in final)
    assert edition_status(engine)[0] is EditionStatus.SENT
    # The resent copy carries the Message-ID of the first one, so receivers can drop it.
    handler = server.handler
    assert isinstance(handler, RecordingHandler)
    for address in doubled:
        ids = {m.message["Message-ID"] for m in handler.messages if m.rcpt_tos == [address]}
        assert len(ids) == 1


def test_sigkill_mid_send_on_sqlite_loses_no_one(tmp_path: Path, slow_server: SmtpCatcher) -> None:
    database_url = f"sqlite:///{tmp_path / 'crash.db'}"
    engine = create_db_engine(database_url)
    upgrade_schema(engine)
    try:
        crash_and_restart(engine, database_url, slow_server, tmp_path)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_sigkill_mid_send_on_postgres_loses_no_one(
    tmp_path: Path, slow_server: SmtpCatcher
) -> None:
    with postgres_database_or_skip() as database_url:
        engine = create_db_engine(database_url)
        upgrade_schema(engine)
        try:
            crash_and_restart(engine, database_url, slow_server, tmp_path)
        finally:
            engine.dispose()
