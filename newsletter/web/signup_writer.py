"""Writing sign-ups in batches: the ones that arrive together share one transaction.

A sign-up is written twice (`routes/signup.py`): received before its answer
(`subscribers.received`), recorded after it. Under load, many wait at once;
rather than a thread hop and a transaction each, a writer takes all that are
waiting (up to MAX_BATCH) into one transaction in one threadpool call. Each
caller still waits for its own item's commit and gets its own result. If the
batch's transaction fails, each of its items is tried again in a transaction
of its own, so one bad sign-up cannot lose the others (the in-memory
confirmation caps then count those sign-ups twice: they only ever err
towards fewer emails).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger(__name__)

MAX_BATCH = 64


class SignupWriter(Generic[Item, Result]):
    """Hands waiting items to `write_batch` together; each caller awaits its own result.

    `write_batch` gets a list of items and writes them all in one transaction
    (raising if that fails), returning one result per item, in order; it runs
    in the threadpool.
    """

    def __init__(self, write_batch: Callable[[Sequence[Item]], Sequence[Result]]) -> None:
        self._write_batch = write_batch
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def write(self, item: Item) -> Result:
        """Write one item; returns its result once it is committed (raises what writing raised)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._write(batch)
        finally:
            self._draining = None

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await run_in_threadpool(self._write_batch, [item for item, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0][1], error)
                return
            logger.warning(
                "a batch of %d sign-ups failed (%s); writing each alone", len(batch), error
            )
            for item in batch:
                await self._write([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its caller was cancelled meanwhile
                future.set_result(result)


def _settle(future: asyncio.Future[Result], error: Exception) -> None:
    if not future.done():  # its caller was cancelled meanwhile
        future.set_exception(error)
