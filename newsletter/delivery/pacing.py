"""One pace for every worker: token buckets in the database, debited a batch at a time.

NEWSLETTER_SEND_RATE_PER_SECOND and _PER_HOUR are the relay's limits, so they
hold for all workers together, on every machine. The buckets live in the one
`send_pace` row. A worker takes tokens for a whole batch in the transaction
that claims the batch (`claim_paced` around `ledger.claim_batch`): the row is
locked first (an UPDATE, so PostgreSQL holds the row and SQLite its write
lock), the batch is capped by the tokens there, and the tokens of rows it did
not find go back before the commit. One transaction per batch, none per
message; with no rate set, the row is never touched.

Tokens are spent when taken. A worker killed afterwards has sent fewer
messages than it paid for, never more, and nobody gets its tokens back, so a
crash can only slow the send down. Rows it held return to the queue when its
lease ends and are paid for again when claimed again.

The per-second bucket holds a quarter of a second's worth (BURST_SECONDS), so
over any interval of T seconds the relay sees at most rate × T + that burst
(plus the spread of the time from taking a token to the message arriving);
the hourly bucket holds a minute's worth. A worker short of tokens is told
when a useful share of a batch (CLAIM_INTERVAL_SECONDS of tokens) will be
there, and claims again then rather than polling message by message. Under a
pace a worker claims its next batch only once its queue is empty, and sends a
batch as fast as its connections go: rows paid for and held back would leave
later in a bunch, and with a burst this small there is nothing left to smooth
(the per-process pacer this replaces smoothed each message, but could not see
the other workers).

Times are the workers' clocks (as for leases), so machines sharing a database
need synchronised clocks; one that runs behind refills nothing until its clock
catches up.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, update

from newsletter.core.db import upsert_insert
from newsletter.models import SendPace

__all__ = [
    "BURST_SECONDS",
    "CLAIM_INTERVAL_SECONDS",
    "Bucket",
    "PaceRates",
    "PaceState",
    "claim_paced",
    "plan_grant",
]

send_pace = SendPace.__table__  # type: ignore[attr-defined]

PACE_ROW_ID = 1
BURST_SECONDS = 0.25
CLAIM_INTERVAL_SECONDS = 0.1

B = TypeVar("B", bound=Sized)


@dataclass(frozen=True, slots=True)
class Bucket:
    """`rate` tokens per second, holding at most `capacity`; waiters wait for `chunk` tokens."""

    rate: float
    capacity: float
    chunk: int

    @classmethod
    def make(cls, rate: float, burst_seconds: float) -> Bucket:
        """A bucket of `rate` per second holding `burst_seconds` of tokens (at least one)."""
        capacity = max(1.0, rate * burst_seconds)
        chunk = max(1, min(math.floor(capacity), math.floor(rate * CLAIM_INTERVAL_SECONDS)))
        return cls(rate, capacity, chunk)

    def refill(self, tokens: float | None, elapsed_seconds: float) -> float:
        """The tokens after `elapsed_seconds` (a None bucket is full; time never runs back)."""
        if tokens is None:
            return self.capacity
        return min(self.capacity, tokens + max(0.0, elapsed_seconds) * self.rate)


@dataclass(frozen=True, slots=True)
class PaceRates:
    """The configured limits as buckets: per second, per hour (None: no such limit)."""

    second: Bucket | None
    hour: Bucket | None

    @classmethod
    def from_limits(cls, *, per_second: float, per_hour: float) -> PaceRates:
        """Buckets for the settings' limits (0 = unlimited)."""
        return cls(
            second=Bucket.make(per_second, BURST_SECONDS) if per_second > 0 else None,
            # A minute's worth, so an hour never sees much over its limit.
            hour=Bucket.make(per_hour / 3600.0, 60.0) if per_hour > 0 else None,
        )

    @property
    def unlimited(self) -> bool:
        """True when no limit is set: nothing to take, no row to touch."""
        return self.second is None and self.hour is None


@dataclass(frozen=True, slots=True)
class PaceState:
    """The shared buckets as stored: tokens of each (None = full) and when they were counted."""

    second_tokens: float | None = None
    hour_tokens: float | None = None
    refilled_at: dt.datetime | None = None


def plan_grant(
    rates: PaceRates, state: PaceState, *, want: int, now: dt.datetime
) -> tuple[int, float, PaceState]:
    """How many tokens a worker wanting `want` gets now, else how long until it should ask again.

    Returns (granted, wait_seconds, state after taking them). Nothing is
    granted below a useful share (the buckets' chunk, or `want` if smaller),
    so waiting workers take batches rather than one message at a time.
    """
    elapsed = 0.0 if state.refilled_at is None else (now - state.refilled_at).total_seconds()
    counted_at = now if state.refilled_at is None else max(now, state.refilled_at)
    pairs = [
        (bucket, bucket.refill(tokens, elapsed))
        for bucket, tokens in ((rates.second, state.second_tokens), (rates.hour, state.hour_tokens))
        if bucket is not None
    ]
    if not pairs or want <= 0:
        return max(want, 0), 0.0, state
    available = min(math.floor(tokens + 1e-9) for _, tokens in pairs)
    enough = min(
        want,
        max(bucket.chunk for bucket, _ in pairs),
        min(math.floor(bucket.capacity) for bucket, _ in pairs),
    )
    granted = min(want, available) if available >= enough else 0
    wait = 0.0
    if not granted:
        wait = max((enough - tokens) / bucket.rate for bucket, tokens in pairs)
    after = PaceState(
        second_tokens=_left(rates.second, pairs, granted),
        hour_tokens=_left(rates.hour, pairs, granted),
        refilled_at=counted_at,
    )
    return granted, max(wait, 0.0), after


def give_back(rates: PaceRates, state: PaceState, count: int) -> PaceState:
    """The buckets with `count` unused tokens returned (never above capacity)."""
    if count <= 0:
        return state

    def back(bucket: Bucket | None, tokens: float | None) -> float | None:
        if bucket is None or tokens is None:
            return tokens
        return min(bucket.capacity, tokens + count)

    return PaceState(
        second_tokens=back(rates.second, state.second_tokens),
        hour_tokens=back(rates.hour, state.hour_tokens),
        refilled_at=state.refilled_at,
    )


def _left(bucket: Bucket | None, pairs: list[tuple[Bucket, float]], granted: int) -> float | None:
    for each, tokens in pairs:
        if each is bucket:
            return tokens - granted
    return None


def claim_paced(
    connection: Connection,
    rates: PaceRates,
    *,
    want: int,
    now: dt.datetime,
    claim: Callable[[int], B],
) -> tuple[B | None, float]:
    """Take tokens for up to `want` rows and claim that many with `claim(limit)`, atomically.

    Returns (the claimed rows, 0) or, when the shared pace has too few tokens
    now, (None, seconds until it will have them). Must run inside the claim's
    transaction: the pace row stays locked until it commits.
    """
    if rates.unlimited:
        return claim(want), 0.0
    state = _lock_pace_row(connection)
    granted, wait, after = plan_grant(rates, state, want=want, now=now)
    if not granted:
        _write_pace_row(connection, after)
        return None, wait
    rows = claim(granted)
    _write_pace_row(connection, give_back(rates, after, granted - len(rows)))
    return rows, 0.0


def _lock_pace_row(connection: Connection) -> PaceState:
    # An UPDATE rather than a SELECT … FOR UPDATE: on SQLite a transaction that
    # reads first and writes later can fail (SQLITE_BUSY) when another process
    # wrote in between; one that writes first waits for the lock instead.
    lock = (
        update(send_pace)
        .where(send_pace.c.id == PACE_ROW_ID)
        .values(refilled_at=send_pace.c.refilled_at)
        .returning(send_pace.c.second_tokens, send_pace.c.hour_tokens, send_pace.c.refilled_at)
    )
    row = connection.execute(lock).one_or_none()
    if row is None:
        connection.execute(
            upsert_insert(connection.dialect.name, send_pace)
            .values(id=PACE_ROW_ID)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        row = connection.execute(lock).one()
    return PaceState(row.second_tokens, row.hour_tokens, row.refilled_at)


def _write_pace_row(connection: Connection, state: PaceState) -> None:
    connection.execute(
        update(send_pace)
        .where(send_pace.c.id == PACE_ROW_ID)
        .values(
            second_tokens=state.second_tokens,
            hour_tokens=state.hour_tokens,
            refilled_at=state.refilled_at,
        )
    )
