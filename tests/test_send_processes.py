"""`--processes N`: N sending processes over one ledger, one progress, signals that reach them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.delivery.ledger import subscribers
from newsletter.delivery.worker import start_edition
from newsletter.delivery.worker_process import available_cores
from newsletter.models import DeliveryStatus, EditionStatus
from subscribers.models import SubscriberStatus
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
from tests.support.smtp_server import Hold, RecordingSmtpServer
from tests.test_send_crash import child_pids, summary_numbers

LANES = 4


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Check the condition every few milliseconds until it holds, or fail by the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.02)


@contextmanager
def sqlite_database(tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite database file's URL."""
    url = f"sqlite:///{tmp_path / 'processes.db'}"
    engine = create_db_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """A migrated private PostgreSQL database's URL (or the test is skipped)."""
    with postgres_database_or_skip() as url:
        engine = create_db_engine(url)
        upgrade_schema(engine)
        engine.dispose()
        yield url


@pytest.fixture
def engine_for(tmp_path: Path) -> Iterator[Callable[[str], Engine]]:
    """Opens engines on test databases and closes them afterwards."""
    engines: list[Engine] = []

    def open_engine(url: str) -> Engine:
        engines.append(create_db_engine(url))
        return engines[-1]

    yield open_engine
    for engine in engines:
        engine.dispose()


def prepared(engine: Engine, readers: int) -> list[str]:
    """Readers, and an edition started for them (the CLI would render it from stored papers)."""
    addresses = seed_subscribers(engine, readers)
    make_edition(engine)
    assert start_edition(engine, DAY) == readers
    return addresses


def both_working(log: Path) -> bool:
    """True once both sending processes logged their start (they run with --verbose)."""
    return log.read_text().count(" started; it ") == 2


def lease_holders(engine: Engine) -> set[str]:
    """The worker ids holding rows of the edition now."""
    return {row.lease_owner for row in ledger_rows(engine) if row.lease_owner is not None}


def newsletter(*args: str) -> list[str]:
    """The `newsletter` command line."""
    return [sys.executable, "-m", "newsletter", *args]


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_send_with_two_processes_reaches_everyone_once_and_reports_them_together(
    database: str,
    tmp_path: Path,
    smtp_server: RecordingSmtpServer,
    engine_for: Callable[[str], Engine],
) -> None:
    opened = sqlite_database(tmp_path) if database == "sqlite" else postgres_database()
    with opened as url:
        engine = engine_for(url)
        readers = prepared(engine, 300)
        leaver = readers.pop(150)  # unsubscribes after the audience was fixed
        with engine.begin() as connection:
            connection.execute(
                update(subscribers)
                .where(subscribers.c.email == leaver)
                .values(status=SubscriberStatus.UNSUBSCRIBED.value)
            )
        env = worker_environment(
            url,
            smtp_server.port,
            NEWSLETTER_SEND_BATCH_SIZE="25",
            NEWSLETTER_SMTP_CONCURRENCY=str(LANES),
        )

        result = subprocess.run(
            newsletter("--verbose", "send", "--date", DAY.isoformat(), "--processes", "2"),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert result.returncode == 0, result.stdout + result.stderr
        assert received(smtp_server) == Counter(readers)
        # One summary, for both processes, counted from the ledger.
        assert result.stdout.count("Send summary") == 1
        numbers = summary_numbers(result.stdout)
        assert (numbers["queued"], numbers["sent"], numbers["failed"]) == (300, 299, 0)
        assert numbers["left"] == 1
        # Two workers (two processes) did the sending.
        started = {line for line in result.stderr.splitlines() if " started; it stops" in line}
        assert len(started) == 2, result.stderr
        assert Counter(row.status for row in ledger_rows(engine)) == {
            DeliveryStatus.SENT: 299,
            DeliveryStatus.SKIPPED: 1,
        }
        assert edition_status(engine)[0] is EditionStatus.SENT


def test_a_relay_refusal_pauses_once_and_the_parent_exits_3(
    tmp_path: Path, smtp_server: RecordingSmtpServer, engine_for: Callable[[str], Engine]
) -> None:
    with sqlite_database(tmp_path) as url:
        engine = engine_for(url)
        prepared(engine, 100)
        smtp_server.handler.sender_fault = lambda _, n: "530 5.7.0 Authentication required"
        env = worker_environment(url, smtp_server.port, NEWSLETTER_SEND_BATCH_SIZE="10")

        result = subprocess.run(
            newsletter("send", "--date", DAY.isoformat(), "--processes", "2"),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert result.returncode == 3, result.stdout + result.stderr
        assert result.stderr.count("The edition paused: the SMTP relay asks for") == 1
        assert "Traceback" not in result.stderr
        assert edition_status(engine)[0] is EditionStatus.PAUSED
        assert {(row.status, row.attempts) for row in ledger_rows(engine)} == {
            (DeliveryStatus.QUEUED, 0)
        }


def test_ctrl_c_stops_every_process_after_its_messages_in_flight(
    tmp_path: Path, engine_for: Callable[[str], Engine]
) -> None:
    hold = Hold(lambda _: True)  # every message waits at RCPT until the test lets it go
    with sqlite_database(tmp_path) as url, RecordingSmtpServer(hold=hold) as server:
        engine = engine_for(url)
        readers = prepared(engine, 200)
        env = worker_environment(
            url,
            server.port,
            NEWSLETTER_SEND_BATCH_SIZE="20",
            NEWSLETTER_SMTP_CONCURRENCY=str(LANES),
        )
        log = tmp_path / "send.log"
        command = newsletter("-v", "send", "--date", DAY.isoformat(), "--processes", "2")
        with log.open("w") as errors:
            parent = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors)
            try:
                assert hold.reached.wait(60), "no message reached the server"
                wait_until(lambda: both_working(log), "both sending processes working")
                parent.send_signal(signal.SIGINT)  # Ctrl-C, to the parent only
                wait_until(
                    lambda: log.read_text().count("SIGTERM: stopping after the messages") == 2,
                    "both processes hearing of it",
                )
                hold.release()
                out, _ = parent.communicate(timeout=60)
            finally:
                if parent.poll() is None:
                    parent.kill()
                    parent.communicate()

        assert parent.returncode == 130, log.read_text()
        assert "Stopped by SIGINT: the recipients not sent yet are back in the queue" in (
            " ".join(log.read_text().split())
        )
        assert out.decode().count("Send summary") == 1
        # Only the messages in flight went out; every other row is back in the queue.
        first = received(server)
        assert 0 < sum(first.values()) <= 2 * LANES
        rows = ledger_rows(engine)
        assert {row.email for row in rows if row.status is DeliveryStatus.SENT} == set(first)
        assert all(row.lease_owner is None for row in rows)

        again = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert received(server) == Counter(readers)


def test_sending_processes_stop_by_themselves_when_their_parent_is_killed(
    tmp_path: Path, engine_for: Callable[[str], Engine]
) -> None:
    hold = Hold(lambda _: True)
    with sqlite_database(tmp_path) as url, RecordingSmtpServer(hold=hold) as server:
        engine = engine_for(url)
        prepared(engine, 200)
        env = worker_environment(
            url,
            server.port,
            NEWSLETTER_SEND_BATCH_SIZE="20",
            NEWSLETTER_SMTP_CONCURRENCY=str(LANES),
        )
        log = tmp_path / "send.log"
        command = newsletter("-v", "send", "--date", DAY.isoformat(), "--processes", "2")
        with log.open("w") as errors:
            parent = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
            try:
                assert hold.reached.wait(60), "no message reached the server"
                wait_until(lambda: both_working(log), "both sending processes working")
                children = child_pids(parent.pid)
                parent.kill()
                parent.wait()
                wait_until(
                    lambda: log.read_text().count("the parent process is gone") == 2,
                    "both processes noticing",
                )
                hold.release()
                wait_until(
                    lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
                    "both processes ending",
                )
            finally:
                hold.release()
                for pid in child_pids(parent.pid):
                    os.kill(pid, signal.SIGKILL)

        # They handed back what they had not sent: nothing waits for a lease to run out.
        first = received(server)
        assert sum(first.values()) <= 2 * LANES
        rows = ledger_rows(engine)
        assert all(row.lease_owner is None for row in rows)
        assert {row.email for row in rows if row.status is DeliveryStatus.SENT} == set(first)


def test_worker_processes_run_until_sigterm_and_report_together(
    tmp_path: Path, smtp_server: RecordingSmtpServer, engine_for: Callable[[str], Engine]
) -> None:
    with sqlite_database(tmp_path) as url:
        engine = engine_for(url)
        readers = prepared(engine, 120)
        env = worker_environment(url, smtp_server.port, NEWSLETTER_SEND_BATCH_SIZE="20")
        worker = subprocess.Popen(
            newsletter("worker", "--forever", "--processes", "2"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert smtp_server.handler.wait_for_messages(len(readers), timeout=60)
            wait_until(
                lambda: edition_status(engine)[0] is EditionStatus.SENT, "the edition finishing"
            )
            assert len(child_pids(worker.pid)) == 2
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

        assert worker.returncode == 0, out + err
        assert received(smtp_server) == Counter(readers)
        assert summary_numbers(out)["sent"] == len(readers)


def test_a_worker_process_that_dies_is_started_again_and_its_rows_are_not_left_waiting(
    tmp_path: Path, engine_for: Callable[[str], Engine]
) -> None:
    hold = Hold(lambda _: True)
    with sqlite_database(tmp_path) as url, RecordingSmtpServer(hold=hold) as server:
        engine = engine_for(url)
        readers = prepared(engine, 120)
        # The default lease (300 s): only the parent's release gets the dead child's rows back.
        env = worker_environment(url, server.port, NEWSLETTER_SEND_BATCH_SIZE="20")
        log = tmp_path / "worker.log"
        command = newsletter("-v", "worker", "--forever", "--processes", "2")
        with log.open("w") as errors:
            parent = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors)
            try:
                assert hold.reached.wait(60), "no message reached the server"
                # "Started" is logged before a process claims: kill one only once both hold
                # rows, or the victim may have nothing for the parent to take back.
                wait_until(lambda: len(lease_holders(engine)) == 2, "both processes holding rows")
                victim = child_pids(parent.pid)[0]
                os.kill(victim, signal.SIGKILL)  # holding its claimed rows
                wait_until(
                    lambda: "took back" in log.read_text(), "the parent taking its rows back"
                )
                wait_until(
                    lambda: "started the sending worker again" in log.read_text(),
                    "a new process in its place",
                )
                hold.release()
                wait_until(
                    lambda: edition_status(engine)[0] is EditionStatus.SENT, "the edition finishing"
                )
                parent.send_signal(signal.SIGTERM)
                out, _ = parent.communicate(timeout=60)
            finally:
                hold.release()
                if parent.poll() is None:
                    parent.kill()
                    parent.communicate()

        assert parent.returncode == 0, log.read_text()
        copies = received(server)
        assert set(copies) == set(readers)
        # Only what the killed process had in flight can have gone twice.
        assert sum(copies.values()) - len(readers) <= LANES
        assert {row.status for row in ledger_rows(engine)} == {DeliveryStatus.SENT}
        assert out.decode().count("Send summary") == 1


@pytest.mark.parametrize(("readers", "batch"), [(30, 500), (300, 25)])
def test_by_default_send_uses_the_cores_but_no_more_processes_than_batches(
    readers: int,
    batch: int,
    tmp_path: Path,
    smtp_server: RecordingSmtpServer,
    engine_for: Callable[[str], Engine],
) -> None:
    with sqlite_database(tmp_path) as url:
        engine = engine_for(url)
        addresses = prepared(engine, readers)
        env = worker_environment(url, smtp_server.port, NEWSLETTER_SEND_BATCH_SIZE=str(batch))

        result = subprocess.run(
            newsletter("-v", "send", "--date", DAY.isoformat()),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert result.returncode == 0, result.stdout + result.stderr
        assert received(smtp_server) == Counter(addresses)
        workers = result.stderr.count(" started; it ")
        assert workers == min(available_cores(), -(-readers // batch)), result.stderr
