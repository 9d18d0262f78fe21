"""Kill the sending process with SIGKILL mid-edition, start it again: nobody lost, few doubled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
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
from newsletter.delivery.worker import FLUSH_MAX_ROWS, start_edition
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


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is `parent` (read from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def kill_with_children(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the sending processes first, then their parent: a machine that lost power."""
    for pid in [*child_pids(process.pid), process.pid]:
        with contextlib.suppress(ProcessLookupError):  # ended by itself: the test says so
            os.kill(pid, signal.SIGKILL)


def summary_numbers(output: str) -> dict[str, int]:
    """The numbers of the CLI's "Send summary" table."""
    names = ("queued", "sent", "failed", "bounced", "left", "already_done")
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|]", line) if cell.strip()]
        if len(cells) == 7 and all(re.fullmatch(r"[0-9.]+", cell) for cell in cells):
            return dict(zip(names, (int(cell) for cell in cells[:6]), strict=True))
    raise AssertionError(f"no send summary in {output!r}")


def crash_and_restart(
    engine: Engine, database_url: str, server: SmtpCatcher, tmp: Path, processes: int = 1
) -> None:
    """The scenario: send, SIGKILL after a third arrived, send again; then check the promise.

    With `processes` > 1 it is `newsletter send --processes N`, every process killed.
    """
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
    if processes == 1:
        command = [sys.executable, "-c", SEND_SCRIPT, DAY.isoformat()]
    else:
        # Started here: the CLI would render a draft from stored papers, and there are none.
        start_edition(engine, DAY)
        command = [sys.executable, "-m", "newsletter", "send", "--date", DAY.isoformat()]
        command += ["--processes", str(processes)]
    with (tmp / "first.log").open("wb") as log:
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_messages_while_running(server, first, audience // 3, timeout=60)
            if processes > 1:
                assert len(child_pids(first.pid)) == processes
        finally:
            kill_with_children(first)
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
    if processes == 1:
        report = json.loads(second.stdout.strip().splitlines()[-1])
    else:
        report = summary_numbers(second.stdout)

    after = _received(server)
    assert set(after) == set(readers), "someone never received the edition"
    doubled = {address for address, copies in after.items() if copies > 1}
    assert max(after.values()) <= 2
    # Exactly the accepted-but-unrecorded messages went twice, and never more than the bound.
    assert doubled == unrecorded
    assert len(doubled) <= processes * 2 * (lanes + FLUSH_MAX_ROWS)
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


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_mid_send_on_sqlite_loses_no_one(
    tmp_path: Path, slow_server: SmtpCatcher, processes: int
) -> None:
    database_url = f"sqlite:///{tmp_path / 'crash.db'}"
    engine = create_db_engine(database_url)
    upgrade_schema(engine)
    try:
        crash_and_restart(engine, database_url, slow_server, tmp_path, processes)
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_mid_send_on_postgres_loses_no_one(
    tmp_path: Path, slow_server: SmtpCatcher, processes: int
) -> None:
    with postgres_database_or_skip() as database_url:
        engine = create_db_engine(database_url)
        upgrade_schema(engine)
        try:
            crash_and_restart(engine, database_url, slow_server, tmp_path, processes)
        finally:
            engine.dispose()
