"""Sending processes as children: the worker of `newsletter serve`, and `--processes N`.

A child runs the `newsletter` command itself, so it is exactly what an
operator would start by hand, given the parent's settings in its environment.
It is a new interpreter (a subprocess), except for the children of
`--processes N` that are never restarted (`send`, and `worker` without
`--forever`): those are forks of the parent (ForkedChild), made before the
parent starts any thread or event loop and with its database engine disposed,
so they share nothing unsafe, and they start sending at once rather than after
a second of imports on the cores the sending needs. A restarted child is always
a new interpreter: by then the parent runs threads, which a fork must not
copy. Each child opens its own engine and SMTP connections; they meet only in
the ledger, whose claims, leases, shared pace and breaker already make any
number of workers safe, on one machine or several.

`newsletter serve` runs one `newsletter worker --forever` child:

The web app never sends; it only changes the ledger. On one machine this
child does the sending, so the /admin send button works on a fresh install;
`newsletter serve --no-worker` leaves it to `newsletter worker --forever`
processes started elsewhere. The child is the very command an operator would
run, given the server's settings in its environment. It runs in a session of
its own, so a Ctrl-C at the terminal reaches only the server, which then stops
the child itself: SIGTERM (the worker finishes the messages in flight and hands
back the rest), then SIGKILL if it has not ended after STOP_GRACE_SECONDS.

A child that dies is logged and started again after a pause that doubles, at
most MAX_RESTARTS times in a row (one that ran RESTART_RESET_SECONDS counts as
healthy again), so a broken setup does not spin.

`newsletter send --processes N` and `newsletter worker --processes N` run N
children (`run_sending_processes`) and show one progress, read from the ledger.
Those children read their standard input, a pipe from the parent (and only from
it: a forked child closes its siblings' ends): when the
parent dies, even by SIGKILL, it closes and they stop gracefully instead of
sending on unwatched. A SIGINT or SIGTERM to the parent is forwarded to them
as SIGTERM (finish the messages in flight, hand back the rest); a second one
kills them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, NoReturn

from sqlalchemy import Engine, select

from newsletter.core.clock import utc_now
from newsletter.core.settings import Settings, settings_environment
from newsletter.delivery import ledger
from newsletter.delivery.report import SendProgress, SendReport
from newsletter.models import DeliveryStatus, EditionStatus

__all__ = [
    "ProcessesOutcome",
    "WorkerProcess",
    "available_cores",
    "run_sending_processes",
]

logger = logging.getLogger("newsletter.worker_process")

STOP_GRACE_SECONDS = 15.0
MAX_RESTARTS = 5
FIRST_RESTART_DELAY_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 60.0
RESTART_RESET_SECONDS = 300.0
# How often the parent of several sending processes reads the ledger for its progress. Each
# read counts the edition's rows: at 0.25 s, on 20,000 readers, the parent spent 0.17 ms of
# CPU per message doing so (a quarter of a sending process's own), on a machine whose cores
# the children and the relay need; once a second the bar still moves smoothly.
PROGRESS_POLL_SECONDS = 1.0
# How soon the parent of several sending processes forwards a SIGINT or SIGTERM to them.
SIGNAL_CHECK_SECONDS = 0.1


def available_cores() -> int:
    """The CPUs this process may run on (its affinity), at least one."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if counter is not None:
        counted: int | None = counter()
        return max(1, counted or 1)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class WorkerProcess:
    """One sending worker process owned by this one, restarted (bounded) if it dies."""

    def __init__(
        self,
        settings: Settings,
        *,
        command: Sequence[str] | None = None,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        max_restarts: int = MAX_RESTARTS,
        first_restart_delay_seconds: float = FIRST_RESTART_DELAY_SECONDS,
        restart: bool = True,
        stop_with_parent: bool = False,
        on_exit: Callable[[], None] | None = None,
        run_in_fork: Callable[[Sequence[str]], int] | None = None,
    ) -> None:
        # One process: the server has the other cores (`worker --processes N` elsewhere for more).
        self.command = list(
            command
            or [sys.executable, "-m", "newsletter", "worker", "--forever", "--processes", "1"]
        )
        self.environment = {
            name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")
        } | settings_environment(settings)
        self.stop_grace_seconds = stop_grace_seconds
        self.max_restarts = max_restarts
        self.first_restart_delay_seconds = first_restart_delay_seconds
        self.restart = restart  # False: a child that ends is done (a send that finished)
        self.stop_with_parent = stop_with_parent  # its stdin is a pipe only this process holds
        self.on_exit = on_exit  # called (in the watcher) each time a child ends, before a restart
        # Given: the child is a fork of this process running `run_in_fork(command)` (see
        # ForkedChild), not a new interpreter; its stdin is then always a pipe from this one.
        self.run_in_fork = run_in_fork
        if run_in_fork is not None and restart:
            raise ValueError(
                "a forked child is never restarted: a restart would fork a parent "
                "whose threads may hold locks"
            )
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | ForkedChild | None = None
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The current child's process id (None before start)."""
        process = self._process
        return process.pid if process is not None else None

    @property
    def watching(self) -> bool:
        """True while a child runs or is about to be started again."""
        return self._watcher is not None and self._watcher.is_alive()

    def start(self) -> None:
        """Start the child, and a thread that restarts it if it dies."""
        with self._lock:
            self._process = self._spawn()
        logger.info("started the sending worker (pid %d)", self._process.pid)
        self._watcher = threading.Thread(
            target=self._watch, name="worker-process-watcher", daemon=True
        )
        self._watcher.start()

    @property
    def returncode(self) -> int | None:
        """The current child's exit status (None while it runs, or before start)."""
        process = self._process
        return process.poll() if process is not None else None

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM: finish the messages in flight); do not restart it."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def kill(self) -> None:
        """End the child at once (SIGKILL); its rows return to the queue when their lease ends."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def stop(self) -> int | None:
        """Stop the child (SIGTERM, then SIGKILL after the grace period); its exit status."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_grace_seconds)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "the sending worker (pid %d) did not stop within %.0f s; killing it "
                    "(its recipients return to the queue when the next worker starts here)",
                    process.pid,
                    self.stop_grace_seconds,
                )
                process.kill()
                process.wait()
        if self._watcher is not None:
            self._watcher.join()
        if process.stdin is not None:
            process.stdin.close()
        return process.returncode

    def _spawn(self) -> subprocess.Popen[bytes] | ForkedChild:
        if self.run_in_fork is not None:
            return ForkedChild(self.command, self.environment, self.run_in_fork)
        # stdout carries only the worker's progress bar; its log lines go to stderr.
        return subprocess.Popen(
            self.command,
            env=self.environment,
            stdin=subprocess.PIPE if self.stop_with_parent else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _watch(self) -> None:
        failures = 0
        while True:
            process = self._process
            assert process is not None
            started = time.monotonic()
            status = process.wait()
            if self.on_exit is not None:
                try:
                    self.on_exit()
                except Exception:
                    logger.exception("after the sending worker (pid %d) ended", process.pid)
            if self._stopping.is_set() or not self.restart:
                return
            if time.monotonic() - started >= RESTART_RESET_SECONDS:
                failures = 0
            failures += 1
            if failures > self.max_restarts:
                logger.error(
                    "the sending worker (pid %d) exited with status %d after %d restarts; "
                    "not starting it again, so sends wait until a worker runs: fix the "
                    "cause, then restart `newsletter serve` or run `newsletter worker --forever`",
                    process.pid,
                    status,
                    self.max_restarts,
                )
                return
            delay = min(
                self.first_restart_delay_seconds * 2 ** (failures - 1), MAX_RESTART_DELAY_SECONDS
            )
            logger.error(
                "the sending worker (pid %d) exited with status %d; starting it again in %.0f s",
                process.pid,
                status,
                delay,
            )
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self._process = self._spawn()
                except OSError as error:
                    logger.error("cannot start the sending worker again: %s", error)
                    return
                self.restarts += 1
            logger.warning("started the sending worker again (pid %d)", self._process.pid)


class ForkedChild:
    """A child forked from this process, with the part of `subprocess.Popen`'s interface used here.

    The children of `--processes N` (when they are not to be restarted) are
    forks: a new interpreter spends about a second importing and compiling the
    digest before its first message, on the very cores the sending needs. The
    child runs `run(command)`, the command line it would have run as a
    subprocess, in this interpreter, under `environment`, in a session of its
    own, with standard output discarded and standard input a pipe whose other
    end only this process holds. It then exits with `run`'s status.

    A fork is safe only while this process holds nothing two processes cannot
    share: the caller forks before it starts an event loop or threads of its
    own (other than the watchers of children forked before, which only wait),
    and with its database engine disposed, so no connection is open.
    """

    # The write ends of every forked child's stdin pipe: each new child closes the others',
    # so a child sees its pipe close when this process ends, not when its siblings do.
    _parent_ends: ClassVar[set[int]] = set()

    def __init__(
        self,
        command: Sequence[str],
        environment: Mapping[str, str],
        run: Callable[[Sequence[str]], int],
    ) -> None:
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):  # else the child would write them out again
            stream.flush()
        pid = os.fork()
        if pid == 0:
            _run_forked(command, environment, run, read_end, write_end)
        os.close(read_end)
        self.pid = pid
        self.stdin = _ParentEnd(write_end)  # closing it tells the child
        self.returncode: int | None = None
        self._reaped = threading.Event()

    def poll(self) -> int | None:
        """The exit status if the child has ended (negative: the signal that ended it)."""
        self._reap(os.WNOHANG)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to end; its exit status (TimeoutExpired after `timeout`)."""
        if timeout is None:
            self._reap(0)
        else:
            deadline = time.monotonic() + timeout
            while not self._reap(os.WNOHANG):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout)
                self._reaped.wait(min(left, 0.05))
        assert self.returncode is not None
        return self.returncode

    def terminate(self) -> None:
        """SIGTERM the child, unless it has ended."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the child, unless it has ended."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        if self.poll() is None:  # once reaped, its pid may be another process's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def _reap(self, flags: int) -> bool:
        if self.returncode is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped by another thread's call, which sets returncode
            self._reaped.wait()
            return True
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self._reaped.set()
        return True


class _ParentEnd:
    """This process's end of a forked child's stdin pipe, known to the children forked later."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor
        ForkedChild._parent_ends.add(descriptor)

    def close(self) -> None:
        """Close it (the child then reads end of file); idempotent."""
        if self._descriptor is not None:
            ForkedChild._parent_ends.discard(self._descriptor)
            os.close(self._descriptor)
            self._descriptor = None


def _run_forked(
    command: Sequence[str],
    environment: Mapping[str, str],
    run: Callable[[Sequence[str]], int],
    read_end: int,
    write_end: int,
) -> NoReturn:
    """In a just-forked child: set it up as a subprocess would be, run the command, exit."""
    status = 1
    try:
        os.close(write_end)
        for other in ForkedChild._parent_ends:
            with contextlib.suppress(OSError):
                os.close(other)
        os.setsid()
        os.dup2(read_end, 0)
        os.close(read_end)
        discard = os.open(os.devnull, os.O_WRONLY)
        os.dup2(discard, 1)
        os.close(discard)
        # The parent's own handlers forward signals to its children: not this one's to run.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(environment)
        status = run(command)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


# ---- several sending processes ---------------------------------------------------------------


@dataclass(frozen=True)
class ProcessesOutcome:
    """What N sending processes did together (from the ledger), and which of them failed."""

    report: SendReport
    failed_statuses: list[int]  # exit statuses of children that stopped on an error
    interrupted: bool  # a signal stopped them before the work was done


class _LedgerTally:
    """The parent's view of the send: final rows counted from the ledger, as they change."""

    def __init__(self, engine: Engine, edition_id: int | None) -> None:
        self.engine = engine
        self.edition_id = edition_id
        self.first: dict[int, ledger.EditionTally] = {}  # each edition as first seen
        self.last: dict[int, ledger.EditionTally] = {}
        self.shown: dict[DeliveryStatus, int] = dict.fromkeys(DeliveryStatus, 0)
        self.refresh()

    def refresh(self) -> None:
        """Read the ledger again (for a worker: also the editions started since)."""
        with self.engine.begin() as connection:
            wanted = [self.edition_id] if self.edition_id is not None else None
            current = ledger.tally_editions(connection, edition_ids=wanted)
            missing = sorted(self.last.keys() - current.keys())
            if missing:  # finished since: no longer among the sending ones
                current |= ledger.tally_editions(connection, edition_ids=missing)
        for edition_id, tally in current.items():
            self.first.setdefault(edition_id, tally)
        self.last = current

    def total(self, status: DeliveryStatus, *, first: bool = False) -> int:
        """Rows in that status over every edition seen (as first seen, or now)."""
        tallies = self.first if first else self.last
        return sum(tally.counts[status] for tally in tallies.values())

    def done_since_start(self, status: DeliveryStatus) -> int:
        """Rows that reached a final status since the processes started."""
        return self.total(status) - self.total(status, first=True)

    def advance(self, progress: SendProgress) -> bool:
        """Report the rows that became final since the last call; whether there were any."""
        moved = False
        final = [status for status in DeliveryStatus if status is not DeliveryStatus.QUEUED]
        for status in final:
            now = self.done_since_start(status)
            if now > self.shown[status]:
                # One update for the second's outcomes: per message, the bar's
                # redraws cost the parent 0.28 s of CPU over 20,000 messages.
                progress.advanced(status, now - self.shown[status])
                moved = True
            self.shown[status] = max(now, self.shown[status])
        return moved

    def paused_reason(self) -> str | None:
        """The reason of an edition seen that is paused now (None if none is)."""
        for tally in self.last.values():
            if tally.status is EditionStatus.PAUSED:
                return tally.status_reason or "paused"
        return None

    def edition_dates(self) -> list[dt.date]:
        """The days of every edition seen."""
        with self.engine.begin() as connection:
            rows = connection.execute(
                select(ledger.editions.c.date).where(ledger.editions.c.id.in_(sorted(self.last)))
            ).scalars()
            return sorted(rows)


def run_sending_processes(
    settings: Settings,
    engine: Engine,
    *,
    children: Mapping[str, Sequence[str]],
    edition_id: int | None,
    progress: SendProgress | None,
    stop: threading.Event,
    kill: threading.Event,
    restart: bool = False,
    run_in_fork: Callable[[Sequence[str]], int] | None = None,
) -> ProcessesOutcome:
    """Run the children over the same ledger until all end; one progress, one report.

    `children` maps each child's worker id (its `--worker-id`) to its command line.
    `edition_id` is the edition being sent (None: every sending edition, as a worker).
    Setting `stop` forwards SIGTERM to every child; setting `kill` kills them.
    `restart` restarts a child that dies (`worker --forever`), as for `serve`.
    `run_in_fork`: fork the children, each running `run_in_fork(its command)` (see
    ForkedChild), rather than start them as subprocesses; not with `restart`. The
    caller must not have started threads or an event loop, nor `progress` (whose
    first `started` call may start its own thread): it is called after the forks.
    """
    started = time.monotonic()
    tally = _LedgerTally(engine, edition_id)
    queued = tally.total(DeliveryStatus.QUEUED)
    already_done = sum(tally.total(status) for status in DeliveryStatus) - queued
    if run_in_fork is not None:
        engine.dispose()  # a fork must inherit no open connection: see ForkedChild
    # Set by a child's watcher when the child ends: the send is over when the
    # last one does, and waiting out the progress poll cost up to a second.
    ended = threading.Event()

    def child_ended(worker_id: str) -> None:
        try:
            _release_leases(engine, worker_id)
        finally:
            ended.set()

    processes = [
        WorkerProcess(
            settings,
            command=command,
            restart=restart,
            stop_with_parent=True,
            # A child that died holding rows: the others (or the child started again, under
            # the same id) get them now, not when its lease runs out. One that stopped well
            # handed them back itself.
            on_exit=partial(child_ended, worker_id),
            run_in_fork=run_in_fork,
        )
        for worker_id, command in children.items()
    ]
    stopped = killed = False
    shown_at = time.monotonic()
    try:
        for child in processes:
            child.start()
        if progress is not None:
            progress.started(queued + already_done, already_done)
        while any(child.watching for child in processes):
            if kill.is_set() and not killed:
                killed = stopped = True
                for child in processes:
                    child.kill()
            elif stop.is_set() and not stopped:
                stopped = True
                for child in processes:
                    child.terminate()
            # Woken by a child's end, else soon enough to forward a signal.
            if ended.wait(SIGNAL_CHECK_SECONDS):
                ended.clear()
                continue
            if progress is not None and time.monotonic() - shown_at >= PROGRESS_POLL_SECONDS:
                shown_at = time.monotonic()
                _show(tally, progress, edition_id)
    finally:
        for child in processes:
            if child.watching or child.returncode is None:
                child.stop()
    tally.refresh()
    if progress is not None:
        tally.advance(progress)
    statuses = [child.stop() for child in processes]
    # Not failures: a paused edition (3), a child we killed, or one that ended by the SIGTERM
    # we forwarded before it could catch it (still starting: it held no rows).
    failed = [
        status
        for status in statuses
        if status is not None
        and status not in (0, 3)
        and not (killed and status < 0)
        and not (stopped and status == -signal.SIGTERM)
    ]
    dates = tally.edition_dates()
    report = SendReport(
        edition_date=dates[0] if len(dates) == 1 else None,
        queued=queued,
        sent=tally.done_since_start(DeliveryStatus.SENT),
        failed=tally.done_since_start(DeliveryStatus.FAILED),
        bounced=tally.done_since_start(DeliveryStatus.BOUNCED),
        already_done=already_done,
        paused_reason=tally.paused_reason(),
        elapsed_seconds=time.monotonic() - started,
        skipped=tally.done_since_start(DeliveryStatus.SKIPPED),
    )
    if progress is not None:
        progress.finished(report)
    return ProcessesOutcome(report, failed, interrupted=stopped)


def _release_leases(engine: Engine, worker_id: str) -> None:
    with engine.begin() as connection:
        released = ledger.release_leases(connection, [worker_id])
    if released:
        logger.warning(
            "took back %d recipients held by the sending process %s", released, worker_id
        )


def _show(tally: _LedgerTally, progress: SendProgress, edition_id: int | None) -> None:
    tally.refresh()
    if tally.advance(progress):
        return
    with tally.engine.begin() as connection:
        waiting, wake, in_flight = ledger.queued_and_next_wake_time(
            connection, edition_id=edition_id
        )
    if wake is not None and wake > utc_now() and not in_flight:
        # Every row left waits on its backoff: say so rather than sit silent.
        progress.waiting(waiting, wake, None)
