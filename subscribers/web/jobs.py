"""Edition sends started over HTTP, running as asyncio tasks the app holds until shutdown.

One task per edition date: a second trigger while one runs gets the running
one back instead of a second send. (Sends started elsewhere, by the CLI or
another process, are kept apart by the send engine's own guard.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from newsletter.clock import utc_now
from newsletter.errors import NewsletterError

logger = logging.getLogger(__name__)


class SendJobState(StrEnum):
    """Where a send started over HTTP stands."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class SendJob:
    """One HTTP-triggered send: when it started and ended, and how."""

    edition_date: dt.date
    state: SendJobState
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    error: str | None = None
    result: object | None = None


SendRunner = Callable[[dt.date], Awaitable[object]]


class EditionSendJobs:
    """Starts at most one background send per edition date and remembers how each ended."""

    def __init__(self, run_send: SendRunner) -> None:
        self._run_send = run_send
        self._jobs: dict[dt.date, SendJob] = {}
        self._tasks: dict[dt.date, asyncio.Task[None]] = {}

    def start(self, edition_date: dt.date) -> tuple[SendJob, bool]:
        """Start a send unless one is running; returns the job and whether it is new."""
        running = self._tasks.get(edition_date)
        if running is not None and not running.done():
            return self._jobs[edition_date], False
        job = SendJob(edition_date=edition_date, state=SendJobState.RUNNING, started_at=utc_now())
        self._jobs[edition_date] = job
        self._tasks[edition_date] = asyncio.create_task(
            self._run(edition_date), name=f"send-edition-{edition_date.isoformat()}"
        )
        return job, True

    def get(self, edition_date: dt.date) -> SendJob | None:
        """The latest HTTP-triggered send of that edition in this process, if any."""
        return self._jobs.get(edition_date)

    async def wait(self, edition_date: dt.date) -> SendJob | None:
        """Wait for the running send of that edition (if any) to end."""
        task = self._tasks.get(edition_date)
        if task is not None:
            await asyncio.shield(task)
        return self._jobs.get(edition_date)

    async def close(self) -> None:
        """Cancel running sends at shutdown; the delivery ledger lets a later run resume them."""
        tasks = [task for task in self._tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, edition_date: dt.date) -> None:
        job = self._jobs[edition_date]
        try:
            result = await self._run_send(edition_date)
        except asyncio.CancelledError:
            self._jobs[edition_date] = replace(
                job, state=SendJobState.CANCELLED, finished_at=utc_now()
            )
            raise
        except NewsletterError as error:
            self._finish(job, SendJobState.FAILED, error=str(error))
        except Exception as error:  # keep the app serving; the operator sees the reason
            logger.exception("send of the %s edition failed", edition_date.isoformat())
            self._finish(job, SendJobState.FAILED, error=f"unexpected error: {error}")
        else:
            self._finish(job, SendJobState.FINISHED, result=result)

    def _finish(
        self,
        job: SendJob,
        state: SendJobState,
        *,
        error: str | None = None,
        result: object | None = None,
    ) -> None:
        self._jobs[job.edition_date] = replace(
            job, state=state, finished_at=utc_now(), error=error, result=result
        )
