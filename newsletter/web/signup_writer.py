"""Recording sign-ups in batches: the ones that arrive together share one transaction.

Each sign-up is recorded after its answer (`routes/signup.py`), in the
threadpool. Under load, many are waiting at once; rather than a thread hop
and a transaction each, the writer takes all that are waiting (up to
MAX_BATCH) into one transaction in one threadpool call. Each caller still
waits for its own sign-up's commit, so nothing is recorded later than before.
If the batch's transaction fails, each of its sign-ups is tried again in a
transaction of its own, so one bad sign-up cannot lose the others (the
in-memory confirmation caps then count those sign-ups twice: they only ever
err towards fewer emails).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from starlette.concurrency import run_in_threadpool

from subscribers.signup import SignupDetails

logger = logging.getLogger(__name__)

MAX_BATCH = 64


class SignupWriter:
    """Hands waiting sign-ups to `write_batch` together; each caller awaits its own outcome.

    `write_batch` gets a list of sign-ups and records them all in one
    transaction (raising if that fails); it runs in the threadpool.
    """

    def __init__(self, write_batch: Callable[[Sequence[SignupDetails]], None]) -> None:
        self._write_batch = write_batch
        self._waiting: list[tuple[SignupDetails, asyncio.Future[None]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def record(self, signup: SignupDetails) -> None:
        """Record one sign-up; returns once it is committed (raises what recording raised)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((signup, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._write(batch)
        finally:
            self._draining = None

    async def _write(self, batch: list[tuple[SignupDetails, asyncio.Future[None]]]) -> None:
        try:
            await run_in_threadpool(self._write_batch, [signup for signup, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0][1], error)
                return
            logger.warning(
                "a batch of %d sign-ups failed (%s); recording each alone", len(batch), error
            )
            for item in batch:
                await self._write([item])
            return
        for _, future in batch:
            _settle(future, None)


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(None)
