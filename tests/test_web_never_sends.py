"""The web never sends: /admin only changes the ledger, worker processes deliver.

Real components throughout: the `newsletter worker --forever` and `newsletter
serve` commands as processes, a recording aiosmtpd server, SQLite in a temp
directory. Waits are on conditions with a deadline, never fixed sleeps.
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from newsletter.core.db import create_db_engine, session_scope
from newsletter.core.settings import Settings
from newsletter.delivery.ledger import deliveries
from newsletter.delivery.stats import edition_stats
from newsletter.models import EditionStatus
from newsletter.web.app import LEFT_SIGNUPS_TASK
from subscribers.store import add_subscriber, remove_subscriber
from tests.support.cli import cli_environment
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import ADMIN_TOKEN, running_app, store_papers, web_settings

DAY = dt.date(2026, 3, 9)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READERS = [f"reader{n}@example.org" for n in range(5)]
# The sending side: what a worker imports and the web app must not.
WORKER_MODULES = frozenset(
    {
        "newsletter.delivery.worker",
        "newsletter.delivery.transport",
        "newsletter.delivery.pacing",
        "newsletter.delivery.progress",
    }
)
WEB_PACKAGE = Path(__file__).resolve().parent.parent / "newsletter" / "web"


# The process tests find child processes in /proc.
needs_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="needs /proc to find child processes (Linux)"
)


# ---- helpers ---------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` until it holds; fail saying `what` did not happen by the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.02)


class Process:
    """A `newsletter` command as a child process whose stderr is read line by line."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "newsletter", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        """The first stderr line containing `text`; fails if the process ends first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                ended = self.popen.poll() is not None and not self._reader.is_alive()
                assert left > 0 and not ended, f"no {text!r} on stderr:\n" + "\n".join(self.lines)
                self._changed.wait(min(left, 0.5))

    def signal_and_wait(self, signum: int, timeout: float = 30.0) -> int:
        """Send a signal and wait for the process to end; its exit status."""
        self.popen.send_signal(signum)
        status = self.popen.wait(timeout)
        self._reader.join(timeout)
        return status

    def close(self) -> None:
        """Make sure the process is gone (killed if a failed test left it) and its pipe closed."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._reader.join(10)
        assert self.popen.stderr is not None
        self.popen.stderr.close()


@contextmanager
def newsletter_process(*args: str, env: dict[str, str]) -> Iterator[Process]:
    """A `newsletter` process, killed on the way out if the test left it running."""
    process = Process(*args, env=env)
    try:
        yield process
    finally:
        process.close()


def children_of(pid: int) -> list[int]:
    """The ids of the live processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] != "Z"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def add_readers(engine: Engine) -> None:
    """Five confirmed readers, plus one pending and one who left (neither gets anything)."""
    with session_scope(engine) as session:
        for address in READERS:
            add_subscriber(session, email=address, confirmed=True)
        add_subscriber(session, email="pending@example.org")
        add_subscriber(session, email="left@example.org", confirmed=True)
        remove_subscriber(session, email="left@example.org")


def queued_rows(engine: Engine) -> int:
    """How many delivery rows are waiting in the ledger."""
    with engine.connect() as connection:
        count: int = connection.execute(
            select(func.count()).where(deliveries.c.status == "queued")
        ).scalar_one()
    return count


def process_environment(database_url: str, smtp_port: int) -> dict[str, str]:
    """A `newsletter` process's environment: this database, this SMTP server, an admin token."""
    env = cli_environment(database_url, smtp_port)
    env["NEWSLETTER_ADMIN_TOKEN"] = ADMIN_TOKEN
    return env


# ---- the rule itself -------------------------------------------------------------------------


def test_the_web_app_never_imports_the_sending_worker(tmp_path: Path) -> None:
    # A fresh interpreter: the test process itself has imported everything.
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        import httpx
        from newsletter.core.db import create_db_engine, upgrade_schema
        from newsletter.core.settings import load_settings
        from newsletter.web.app import LEFT_SIGNUPS_TASK, create_app

        settings = load_settings(
            database_url="sqlite:///{tmp_path / "structure.db"}",
            admin_token="{ADMIN_TOKEN}",
            smtp_port=1,
        )
        engine = create_db_engine(settings.database_url)
        upgrade_schema(engine)
        create_app(settings, sending_worker=True)  # wired, never started here
        app = create_app(settings, engine=engine)
        auth = {{"Authorization": "Bearer {ADMIN_TOKEN}"}}

        async def visit():
            transport = httpx.ASGITransport(app=app)
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=transport, base_url="http://test"
            ) as client:
                for method, path in [
                    ("GET", "/"),
                    ("GET", "/editions"),
                    ("POST", "/admin/editions/2026-03-09/send"),
                    ("POST", "/admin/editions/2026-03-09/resume"),
                    ("GET", "/admin/editions/2026-03-09"),
                    ("GET", "/admin/subscribers"),
                ]:
                    answer = await client.request(method, path, headers=auth)
                    assert answer.status_code < 500, (path, answer.text)

        asyncio.run(visit())
        print(json.dumps(sorted(sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "newsletter.web.routes.admin" in loaded
    assert loaded & WORKER_MODULES == set()


def test_no_web_module_imports_the_sending_worker_even_lazily() -> None:
    # The runtime check above only sees imports that ran; this one reads every import statement.
    offenders = []
    checked = 0
    for path in sorted(WEB_PACKAGE.rglob("*.py")):
        checked += 1
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            else:
                continue
            if names & WORKER_MODULES:
                offenders.append(f"{path.name}:{node.lineno}")
    assert checked > 10  # the web package was found and read
    assert offenders == []


# ---- /admin queues, a worker sends -----------------------------------------------------------


async def test_an_admin_send_only_queues_when_no_worker_runs(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    store_papers(engine, DAY)
    add_readers(engine)
    async with running_app(web_settings(settings), engine) as (_, client):
        started = await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
        # Nothing of the send is left running inside the app: no task (but the app's
        # own, which records sign-ups a stopped server answered), no thread.
        others = [
            task
            for task in asyncio.all_tasks()
            if task is not asyncio.current_task() and task.get_name() != LEFT_SIGNUPS_TASK
        ]
        status = await client.get(started.json()["status_url"], headers=AUTH)
    assert started.status_code == 202
    assert others == []
    assert started.json()["status"] == "sending"
    assert started.json()["deliveries"] == {
        "queued": 5,
        "sent": 0,
        "failed": 0,
        "bounced": 0,
        "skipped": 0,
        "complained": 0,
    }
    assert status.json()["deliveries"] == started.json()["deliveries"]
    assert queued_rows(engine) == 5
    assert smtp_server.messages == []


async def test_a_worker_process_delivers_an_admin_send_and_every_app_sees_the_ledger(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, database_url: str
) -> None:
    store_papers(engine, DAY)
    add_readers(engine)
    env = process_environment(database_url, smtp_server.port)
    other_engine = create_db_engine(database_url)  # a second server process's own engine
    config = web_settings(settings)
    try:
        with newsletter_process("-v", "worker", "--forever", env=env) as worker:
            # Started before the edition: it must notice a send queued later.
            worker.wait_for_line("runs until stopped")
            async with (
                running_app(config, engine) as (_, first),
                running_app(config, other_engine) as (_, second),
            ):
                started = await first.post(f"/admin/editions/{DAY}/send", headers=AUTH)
                assert started.status_code == 202, started.text
                status_url = started.json()["status_url"]
                await asyncio.to_thread(
                    wait_until,
                    lambda: edition_stats(engine, DAY).status is EditionStatus.SENT,
                    "the edition's send",
                )
                seen_by_first = (await first.get(status_url, headers=AUTH)).json()
                seen_by_second = (await second.get(status_url, headers=AUTH)).json()
            status = worker.signal_and_wait(signal.SIGTERM)
    finally:
        other_engine.dispose()
    assert sorted(smtp_server.handler.recipients()) == READERS  # each exactly once
    assert seen_by_first == seen_by_second
    assert seen_by_first["deliveries"] == {
        "queued": 0,
        "sent": 5,
        "failed": 0,
        "bounced": 0,
        "skipped": 0,
        "complained": 0,
    }
    assert seen_by_first["send_finished_at"] is not None
    assert status == 0, "\n".join(worker.lines)
    assert any("SIGTERM: stopping" in line for line in worker.lines)


# ---- `newsletter serve` and its worker child -------------------------------------------------


@needs_proc
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_serve_runs_one_worker_child_that_sends_and_stops_with_it(
    engine: Engine, smtp_server: RecordingSmtpServer, database_url: str, stop_signal: int
) -> None:
    store_papers(engine, DAY)
    add_readers(engine)
    port = free_port()
    env = process_environment(database_url, smtp_server.port)
    with newsletter_process("-v", "serve", "--port", str(port), env=env) as server:
        server.wait_for_line("Application startup complete")
        worker_line = server.wait_for_line("started the sending worker")
        [child] = children_of(server.popen.pid)
        assert f"(pid {child})" in worker_line
        command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        assert command[1:5] == [b"-m", b"newsletter", b"worker", b"--forever"]

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
            started = client.post(f"/admin/editions/{DAY}/send")
            assert started.status_code == 202, started.text
            status_path = started.json()["status_url"].removeprefix(env["NEWSLETTER_BASE_URL"])
            wait_until(
                lambda: client.get(status_path).json()["status"] == "sent", "the edition's send"
            )

        server.signal_and_wait(stop_signal)
    assert sorted(smtp_server.handler.recipients()) == READERS
    assert not is_running(child), "the worker child outlived the server"
    assert children_of(server.popen.pid) == []


@needs_proc
def test_serve_without_a_worker_starts_none_and_only_queues(
    engine: Engine, smtp_server: RecordingSmtpServer, database_url: str
) -> None:
    store_papers(engine, DAY)
    add_readers(engine)
    port = free_port()
    env = process_environment(database_url, smtp_server.port)
    with newsletter_process("-v", "serve", "--port", str(port), "--no-worker", env=env) as server:
        server.wait_for_line("Application startup complete")
        assert children_of(server.popen.pid) == []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
            started = client.post(f"/admin/editions/{DAY}/send")
        assert children_of(server.popen.pid) == []
        server.signal_and_wait(signal.SIGTERM)
    assert started.status_code == 202, started.text
    assert queued_rows(engine) == len(READERS)
    assert smtp_server.messages == []
    assert not any("sending worker" in line for line in server.lines)
