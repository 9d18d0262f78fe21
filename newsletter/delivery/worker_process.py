"""`newsletter worker --forever` as a child of `newsletter serve`: started, watched, stopped.

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
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from newsletter.core.settings import Settings, settings_environment

__all__ = ["WorkerProcess"]

logger = logging.getLogger("newsletter.worker_process")

STOP_GRACE_SECONDS = 15.0
MAX_RESTARTS = 5
FIRST_RESTART_DELAY_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 60.0
RESTART_RESET_SECONDS = 300.0


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
    ) -> None:
        self.command = list(command or [sys.executable, "-m", "newsletter", "worker", "--forever"])
        self.environment = {
            name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")
        } | settings_environment(settings)
        self.stop_grace_seconds = stop_grace_seconds
        self.max_restarts = max_restarts
        self.first_restart_delay_seconds = first_restart_delay_seconds
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
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
        return process.returncode

    def _spawn(self) -> subprocess.Popen[bytes]:
        # stdout carries only the worker's progress bar; its log lines go to stderr.
        return subprocess.Popen(
            self.command,
            env=self.environment,
            stdin=subprocess.DEVNULL,
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
            if self._stopping.is_set():
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
