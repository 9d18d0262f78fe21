"""Three worker processes share one edition's queue on the real PostgreSQL: one copy each."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.delivery.worker import start_edition
from newsletter.models import DeliveryStatus, EditionStatus
from tests.support.postgres import postgres_database_or_skip
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

pytestmark = pytest.mark.postgres

WORKERS = 3
AUDIENCE = 600

# Each worker connects first, says "ready", then waits for "go" on its stdin,
# so all of them really compete for the same rows.
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
print(json.dumps({"sent": report.sent, "failed": report.failed}), flush=True)
"""


def test_three_worker_processes_send_each_recipient_exactly_once(
    smtp_server: RecordingSmtpServer,
) -> None:
    with postgres_database_or_skip() as database_url:
        engine = create_db_engine(database_url)
        try:
            upgrade_schema(engine)
            readers = seed_subscribers(engine, AUDIENCE)
            make_edition(engine)
            assert start_edition(engine, DAY) == AUDIENCE
            env = worker_environment(
                database_url,
                smtp_server.port,
                NEWSLETTER_SEND_BATCH_SIZE="20",
                NEWSLETTER_SMTP_CONCURRENCY="3",
            )
            workers = [
                subprocess.Popen(
                    [sys.executable, "-c", WORKER_SCRIPT, f"worker-{n}"],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for n in range(WORKERS)
            ]
            try:
                for worker in workers:
                    assert worker.stdout is not None
                    assert worker.stdout.readline().strip() == "ready", worker.stderr
                for worker in workers:
                    assert worker.stdin is not None
                    worker.stdin.write("go\n")
                    worker.stdin.flush()
                outputs = [worker.communicate(timeout=90) for worker in workers]
            finally:
                for worker in workers:
                    if worker.poll() is None:
                        worker.kill()
                        worker.wait()
            for worker, (_out, err) in zip(workers, outputs, strict=True):
                assert worker.returncode == 0, err
            reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

            assert received(smtp_server) == Counter(readers)
            # Every worker took part, and together they sent each message once.
            assert all(report["sent"] > 0 for report in reports), reports
            assert sum(report["sent"] for report in reports) == AUDIENCE
            rows = ledger_rows(engine)
            assert {row.status for row in rows} == {DeliveryStatus.SENT}
            assert all(row.attempts == 1 for row in rows)
            assert edition_status(engine)[0] is EditionStatus.SENT
        finally:
            engine.dispose()
