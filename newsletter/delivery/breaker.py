"""The failure breaker of an edition, shared by every worker: counters in `send_breakers`.

Each worker adds its attempts (sent, or refused for the reader's sake) to the
edition's row in the transaction that records their outcomes, and the row
decides for all of them. It trips when

- the window is full (NEWSLETTER_SEND_FAILURE_WINDOW attempts) and more than
  NEWSLETTER_SEND_FAILURE_THRESHOLD of them failed, or
- the last EARLY_TRIP_ATTEMPTS attempts all failed, so a small list trips too.

A full window that does not trip forgets its older half (the failures in
proportion), so it always judges between half a window and a whole one of
the latest attempts, in two integers rather than one row per attempt.

A trip pauses the edition with the reason in the same transaction, only if it
is still sending: however many workers see the failures, it trips once, and
every worker stops claiming its rows (and notices the pause at its next
flush). A worker's pause for a relay refusal (`pause_sending_edition`) is the
same conditional change. Either way the counters start again from zero, so
`resume` gets a fresh window; attempts recorded while the edition is not
sending do not count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, delete, exists, select, update

from newsletter.core.db import upsert_insert
from newsletter.delivery.ledger import clean_error_text, editions
from newsletter.editions.lifecycle import EditionEvent, transition_statement
from newsletter.models import EditionStatus, SendBreaker

__all__ = [
    "EARLY_TRIP_ATTEMPTS",
    "BreakerCheck",
    "BreakerState",
    "pause_sending_edition",
    "record_attempts",
]

send_breakers = SendBreaker.__table__  # type: ignore[attr-defined]

# This many failed attempts in a row pause an edition whatever the window: a small list too.
EARLY_TRIP_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class BreakerState:
    """The counters of one edition's breaker."""

    attempts: int = 0
    failures: int = 0
    failing_in_a_row: int = 0

    def after(
        self, failed_attempts: Iterable[bool], *, window: int, threshold: float
    ) -> tuple[BreakerState, str | None]:
        """The counters after these attempts (True = failed), and why it trips (None if not)."""
        attempts, failures, in_a_row = self.attempts, self.failures, self.failing_in_a_row
        for failed in failed_attempts:
            attempts += 1
            failures += failed
            in_a_row = in_a_row + 1 if failed else 0
            state = BreakerState(attempts, failures, in_a_row)
            if attempts >= window and failures / attempts > threshold:
                return state, (
                    f"failure rate {failures / attempts:.0%} over the last {attempts} "
                    f"attempts passed {threshold:.0%}"
                )
            if in_a_row >= EARLY_TRIP_ATTEMPTS:
                return state, f"the last {in_a_row} attempts all failed"
            if attempts >= window:
                kept = window // 2
                failures = round(failures * kept / attempts)
                attempts = kept
        return BreakerState(attempts, failures, in_a_row), None


@dataclass(frozen=True, slots=True)
class BreakerCheck:
    """What recording attempts found: the counters now, and whether the edition still sends."""

    state: BreakerState
    sending: bool  # False: paused, cancelled or finished (by this trip or elsewhere)
    tripped: str | None = None  # the pause reason, when these attempts tripped it


def record_attempts(
    connection: Connection,
    *,
    edition_id: int,
    failed_attempts: list[bool],
    window: int,
    threshold: float,
    last_error: str | None,
    now: dt.datetime,
) -> BreakerCheck:
    """Add attempts to the edition's shared breaker; pause the edition if it trips.

    Runs in the transaction that writes the attempts' outcomes, so counters and
    ledger never disagree. `failed_attempts` may be empty: then it only tells
    whether the edition still sends (and the current counters).
    """
    state = _lock(connection, edition_id, now)
    if state is None:
        return BreakerCheck(BreakerState(), sending=False)
    after, reason = state.after(failed_attempts, window=window, threshold=threshold)
    if reason is not None:
        full_reason = clean_error_text(
            f"{reason}; last error: {last_error}" if last_error else reason
        )
        if pause_sending_edition(connection, edition_id=edition_id, reason=full_reason):
            return BreakerCheck(after, sending=False, tripped=full_reason)
        return BreakerCheck(after, sending=False)
    if after != state:
        _write(connection, edition_id, after, now)
    return BreakerCheck(after, sending=True)


def pause_sending_edition(connection: Connection, *, edition_id: int, reason: str) -> bool:
    """Pause the edition if it is sending; whether it did (a worker's pause, not the operator's).

    One conditional UPDATE: of several workers pausing at once, one wins and its
    reason stays; an edition paused, cancelled or finished meanwhile is left alone.
    The breaker's counters go with the pause, so a `resume` starts a fresh window.
    """
    statement = transition_statement(
        EditionEvent.PAUSE,
        editions.c.id == edition_id,
        editions.c.status == EditionStatus.SENDING.value,
        reason=clean_error_text(reason),
    )
    if not connection.execute(statement).rowcount:
        return False
    connection.execute(delete(send_breakers).where(send_breakers.c.edition_id == edition_id))
    return True


def _lock(connection: Connection, edition_id: int, now: dt.datetime) -> BreakerState | None:
    """The edition's counters, row locked; None when the edition is not sending."""
    # Written first, then read (see pacing._lock_pace_row: SQLite must not read, then write).
    sending = exists().where(
        editions.c.id == edition_id, editions.c.status == EditionStatus.SENDING.value
    )
    lock = (
        update(send_breakers)
        .where(send_breakers.c.edition_id == edition_id, sending)
        .values(attempts=send_breakers.c.attempts)
        .returning(
            send_breakers.c.attempts, send_breakers.c.failures, send_breakers.c.failing_in_a_row
        )
    )
    row = connection.execute(lock).one_or_none()
    if row is None:
        if not connection.execute(select(sending)).scalar():
            return None
        connection.execute(
            upsert_insert(connection.dialect.name, send_breakers)
            .values(
                edition_id=edition_id, attempts=0, failures=0, failing_in_a_row=0, updated_at=now
            )
            .on_conflict_do_nothing(index_elements=["edition_id"])
        )
        row = connection.execute(lock).one_or_none()
        if row is None:
            return None
    return BreakerState(row.attempts, row.failures, row.failing_in_a_row)


def _write(connection: Connection, edition_id: int, state: BreakerState, now: dt.datetime) -> None:
    connection.execute(
        update(send_breakers)
        .where(send_breakers.c.edition_id == edition_id)
        .values(
            attempts=state.attempts,
            failures=state.failures,
            failing_in_a_row=state.failing_in_a_row,
            updated_at=now,
        )
    )
