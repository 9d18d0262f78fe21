"""Several worker processes share one pace and one breaker, measured at a real SMTP server."""

from __future__ import annotations

import json
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
from newsletter.delivery.breaker import EARLY_TRIP_ATTEMPTS
from newsletter.delivery.pacing import BURST_SECONDS
from newsletter.delivery.worker import start_edition
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

RATE = 20  # messages per second, for all workers together
AUDIENCE = 300
BURST = max(1, int(RATE * BURST_SECONDS))
# Between taking a token and the message's arrival: connecting, the loop's turns, a loaded
# machine (two cores shared with other jobs). Tokens taken over a second and a half may
# arrive within one second. Unshared, each worker would send RATE a second (and its own
# full burst first), so the bound still tells one shared pace from one per worker.
ARRIVAL_SPREAD = int(RATE * 0.5)

# Each worker connects first, says "ready", then waits for "go" on its stdin,
# so all of them really compete for the same tokens and rows.
WORKER_SCRIPT = """
import asyncio, json, sys
from newsletter.core.db import create_db_engine
from newsletter.delivery.worker import run_worker
from newsletter.core.settings import load_settings

settings = load_settings()
engine = create_db_engine(settings.database_url)
engine.connect().close()
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
report = asyncio.run(run_worker(settings, engine, worker_id=sys.argv[1]))
print(json.dumps({"sent": report.sent, "paused": report.paused_reason}), flush=True)
"""


class TimedHandler(RecordingHandler):
    """Records each accepted message's arrival time (monotonic seconds) as well."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    async def handle_DATA(self, server: SmtpProtocol, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self.lock:
                self.arrivals.append(time.monotonic())
        return reply


@pytest.fixture
def timed_server() -> Iterator[SmtpCatcher]:
    """A recording SMTP server that notes when each message arrived."""
    with SmtpCatcher(TimedHandler()) as server:
        yield server


def most_in_one_second(arrivals: list[float]) -> int:
    """The most messages that arrived within any one-second window."""
    times = sorted(arrivals)
    most = start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def run_workers(count: int, env: dict[str, str], tmp: Path) -> list[tuple[dict[str, object], str]]:
    """Start `count` worker processes together; wait for them; their reports and stderr."""
    workers = []
    logs = []
    for n in range(count):
        log = (tmp / f"worker-{n}.log").open("w+")
        logs.append(log)
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER_SCRIPT, f"worker-{n}"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        )
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    results = []
    for worker, out, log in zip(workers, outputs, logs, strict=True):
        log.seek(0)
        errors = log.read()
        log.close()
        assert worker.returncode == 0, errors
        results.append((json.loads(out.strip().splitlines()[-1]), errors))
    return results


def workers_keep_the_rate_together(
    engine: Engine, database_url: str, server: SmtpCatcher, tmp: Path, workers: int
) -> None:
    """The scenario: `workers` processes, one rate; the server's clock says it held."""
    readers = seed_subscribers(engine, AUDIENCE)
    make_edition(engine)
    assert start_edition(engine, DAY) == AUDIENCE
    env = worker_environment(
        database_url,
        server.port,
        NEWSLETTER_SEND_RATE_PER_SECOND=str(RATE),
        NEWSLETTER_SMTP_CONCURRENCY="4",
        NEWSLETTER_SEND_BATCH_SIZE="50",
    )

    results = run_workers(workers, env, tmp)

    handler = server.handler
    assert isinstance(handler, TimedHandler)
    assert Counter(handler.recipients()) == Counter(readers), "someone got none, or two"
    # Each worker alone paces at RATE, so without the shared pace they would send about
    # `workers` × RATE a second. Together they stay within RATE, plus the burst.
    most = most_in_one_second(handler.arrivals)
    assert most <= RATE + BURST + ARRIVAL_SPREAD, most
    elapsed = max(handler.arrivals) - min(handler.arrivals)
    assert elapsed >= (AUDIENCE - BURST) / RATE - 1.0
    assert all(int(str(report["sent"])) > 0 for report, _ in results), results
    assert sum(int(str(report["sent"])) for report, _ in results) == AUDIENCE
    assert {row.status for row in ledger_rows(engine)} == {DeliveryStatus.SENT}
    assert edition_status(engine)[0] is EditionStatus.SENT


@pytest.mark.postgres
def test_three_workers_on_postgres_keep_one_rate(tmp_path: Path, timed_server: SmtpCatcher) -> None:
    with postgres_database_or_skip() as database_url:
        engine = create_db_engine(database_url)
        try:
            upgrade_schema(engine)
            workers_keep_the_rate_together(engine, database_url, timed_server, tmp_path, 3)
        finally:
            engine.dispose()


def test_two_workers_on_sqlite_keep_one_rate(tmp_path: Path, timed_server: SmtpCatcher) -> None:
    database_url = f"sqlite:///{tmp_path / 'pace.db'}"
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine)
        workers_keep_the_rate_together(engine, database_url, timed_server, tmp_path, 2)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_failing_relay_trips_the_shared_breaker_once_and_every_worker_stops(
    database: str, tmp_path: Path, timed_server: SmtpCatcher
) -> None:
    if database == "sqlite":
        breaker_trips_once(f"sqlite:///{tmp_path / 'breaker.db'}", timed_server, tmp_path)
        return
    with postgres_database_or_skip() as database_url:
        breaker_trips_once(database_url, timed_server, tmp_path)


def breaker_trips_once(database_url: str, server: SmtpCatcher, tmp_path: Path) -> None:
    """The scenario: every RCPT refused, two workers; one trip, one pause, both stop."""
    workers, lanes, audience = 2, 2, 200
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine)
        seed_subscribers(engine, audience)
        make_edition(engine)
        start_edition(engine, DAY)
        handler = server.handler
        assert isinstance(handler, TimedHandler)
        handler.fault = lambda stage, _, n: "451 4.3.0 busy" if stage == "rcpt" else None
        env = worker_environment(
            database_url,
            server.port,
            NEWSLETTER_SMTP_CONCURRENCY=str(lanes),
            NEWSLETTER_SEND_BATCH_SIZE="20",
            NEWSLETTER_SEND_MAX_ATTEMPTS="50",  # no row runs out of attempts first
        )

        results = run_workers(workers, env, tmp_path)

        def attempts() -> int:
            with handler.lock:
                return sum(n for (stage, _), n in handler.attempts.items() if stage == "rcpt")

        status, reason = edition_status(engine)
        assert status is EditionStatus.PAUSED
        assert reason == (
            f"the last {EARLY_TRIP_ATTEMPTS} attempts all failed; last error: 451 4.3.0 busy"
        )
        # It tripped once: one worker paused the edition, the other found it paused.
        pauses = [errors.count("send paused") for _, errors in results]
        assert sorted(pauses) == [0, 1], [errors for _, errors in results]
        # Each worker stops within the attempts it had not yet written and those in
        # flight; a worker that finds the write lock held keeps its lanes sending
        # (`core.db.try_begin_write`), so it may hold a second batch unwritten.
        tried = attempts()
        assert (
            EARLY_TRIP_ATTEMPTS
            <= tried
            <= EARLY_TRIP_ATTEMPTS + workers * (2 * EARLY_TRIP_ATTEMPTS + lanes)
        )
        assert not handler.messages
        assert {row.status for row in ledger_rows(engine)} == {DeliveryStatus.QUEUED}
    finally:
        engine.dispose()
