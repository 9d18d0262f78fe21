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

A trip starts the counters again from zero in that transaction (so, however
many workers see the failures, one of them sees the trip), and that worker
then pauses the edition with the reason (`pause_sending_edition`, a change
from `sending` only, in a transaction of its own: the flush that holds ledger
rows never waits for the edition's row, which an operator's cancel holds
while it ends those rows). Every worker stops claiming its rows and notices
the pause at its next flush; attempts recorded while the edition is not
sending do not count, and `resume` starts a fresh window.
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
    "reset_breaker",
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
    sending: bool  # False: paused, cancelled or finished elsewhere
    tripped: str | None = None  # the pause reason, when these attempts tripped it (pause it!)


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
    """Add attempts to the edition's shared breaker; whether (and why) they trip it.

    Runs in the transaction that writes the attempts' outcomes, so counters and
    ledger never disagree. On a trip the counters start again and the caller
    pauses the edition (`pause_sending_edition`) once this has committed.
    """
    state = _lock(connection, edition_id, now)
    if state is None:
        return BreakerCheck(BreakerState(), sending=False)
    after, reason = state.after(failed_attempts, window=window, threshold=threshold)
    if reason is not None:
        _write(connection, edition_id, BreakerState(), now)
        full_reason = clean_error_text(
            f"{reason}; last error: {last_error}" if last_error else reason
        )
        return BreakerCheck(after, sending=True, tripped=full_reason)
    if after != state:
        _write(connection, edition_id, after, now)
    return BreakerCheck(after, sending=True)


def pause_sending_edition(connection: Connection, *, edition_id: int, reason: str) -> bool:
    """Pause the edition if it is sending; whether it did (a worker's pause, not the operator's).

    One conditional UPDATE: of several workers pausing at once, one wins and its
    reason stays; an edition paused, cancelled or finished meanwhile is left alone.
    """
    statement = transition_statement(
        EditionEvent.PAUSE,
        editions.c.id == edition_id,
        editions.c.status == EditionStatus.SENDING.value,
        reason=clean_error_text(reason),
    )
    return bool(connection.execute(statement).rowcount)


def reset_breaker(connection: Connection, *, edition_id: int) -> None:
    """Forget an edition's counters: a resumed or retried send starts a fresh window."""
    connection.execute(delete(send_breakers).where(send_breakers.c.edition_id == edition_id))


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
