"""Writing sign-ups in batches: the ones that wait together share one transaction.

A sign-up is written twice (`routes/signup.py`): received before its answer
(`subscribers.received`: one insert, the same for every address) and recorded
after it. Under load many wait at once; rather than a thread hop and a
transaction each, the writer takes everything waiting (up to MAX_BATCH of
each kind) into one threadpool call and one transaction: the sign-ups
answered earlier are recorded, and the new ones received, together. So an
answer waits for its own row and, at most, for other visitors' recordings:
never for its own, which would tell by its timing whether the address is
known. Each caller still waits for its own item's commit. If the batch's
transaction fails, each item is tried again in a transaction of its own, so
one bad sign-up cannot lose the others (the in-memory confirmation caps then
count those sign-ups twice: they only ever err towards fewer emails).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from starlette.concurrency import run_in_threadpool

from subscribers.signup import SignupDetails

logger = logging.getLogger(__name__)

MAX_BATCH = 64
# When recordings have transactions of their own (PostgreSQL), how long a batch waits
# for others to join it. Nobody waits for a recording (its answer has gone), and under
# load the gathered batch shares one checkout, BEGIN and COMMIT, and its new addresses one
# insert (`register_signups`).
RECORDING_GATHER_SECONDS = 0.05

# A sign-up as received (None: a filled-in honeypot's mark), and one to record with its row's id.
Arrival = SignupDetails | None
Received = tuple[int, SignupDetails | None]
# Records the second list and receives the first, in one transaction; the new rows' ids.
WriteBatch = Callable[[Sequence[Arrival], Sequence[Received]], Sequence[int]]


class SignupWriter:
    """Hands waiting sign-ups to `write_batch` together; each caller awaits its own outcome.

    `write_batch(arrivals, received)` runs in the threadpool: it records the
    `received` sign-ups and writes the `arrivals` in one transaction (raising
    if that fails), and returns the arrivals' row ids, in order.

    `together`: arrivals and recordings share each transaction (SQLite: its
    statements run in-process, so recording adds little to an answer's wait,
    and one transaction costs less CPU than two). Otherwise they go in
    separate, concurrent transactions (PostgreSQL: every statement of a
    recording is a round trip to the server, and the answers must not wait
    for a batch of them); the recordings are then gathered for
    RECORDING_GATHER_SECONDS before their transaction.
    """

    def __init__(self, write_batch: WriteBatch, *, together: bool = True) -> None:
        self._write_batch = write_batch
        self._together = together
        self._arrivals: list[tuple[Arrival, asyncio.Future[int]]] = []
        self._received: list[tuple[Received, asyncio.Future[None]]] = []
        # The running drains, by what they take: "both", or "arrivals" and "received".
        self._draining: dict[str, asyncio.Task[None]] = {}

    async def receive(self, signup: Arrival) -> int:
        """Write one sign-up as received; its row's id once committed (or what writing raised)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._arrivals.append((signup, future))
        self._start("both" if self._together else "arrivals")
        return await future

    async def record(self, received_id: int, signup: Arrival) -> None:
        """Record a received sign-up (and delete its row); returns once committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._received.append(((received_id, signup), future))
        self._start("both" if self._together else "received")
        await future

    def _start(self, kind: str) -> None:
        if kind not in self._draining:
            self._draining[kind] = asyncio.create_task(self._drain(kind))

    async def _drain(self, kind: str) -> None:
        try:
            while True:
                if kind == "received":
                    # Before every batch, not only the first: a batch then holds what
                    # arrived meanwhile, and under load that is a full one.
                    await asyncio.sleep(RECORDING_GATHER_SECONDS)
                arrivals: list[tuple[Arrival, asyncio.Future[int]]] = []
                received: list[tuple[Received, asyncio.Future[None]]] = []
                if kind != "received":
                    arrivals, self._arrivals = (
                        self._arrivals[:MAX_BATCH],
                        self._arrivals[MAX_BATCH:],
                    )
                if kind != "arrivals":
                    received, self._received = (
                        self._received[:MAX_BATCH],
                        self._received[MAX_BATCH:],
                    )
                if not arrivals and not received:
                    return
                await self._write(arrivals, received)
        finally:
            del self._draining[kind]

    async def _write(
        self,
        arrivals: list[tuple[Arrival, asyncio.Future[int]]],
        received: list[tuple[Received, asyncio.Future[None]]],
    ) -> None:
        try:
            ids = await run_in_threadpool(
                self._write_batch, [item for item, _ in arrivals], [item for item, _ in received]
            )
        except Exception as error:
            if len(arrivals) + len(received) == 1:
                for _, arrived in arrivals:
                    _settle(arrived, error=error)
                for _, recorded in received:
                    _settle(recorded, error=error)
                return
            logger.warning(
                "a batch of %d sign-ups failed (%s); writing each alone",
                len(arrivals) + len(received),
                error,
            )
            for arrival in arrivals:
                await self._write([arrival], [])
            for item in received:
                await self._write([], [item])
            return
        for (_, arrived), row_id in zip(arrivals, ids, strict=True):
            _settle(arrived, result=row_id)
        for _, recorded in received:
            _settle(recorded, result=None)


def _settle(
    future: asyncio.Future[int] | asyncio.Future[None],
    *,
    result: int | None = None,
    error: Exception | None = None,
) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
