"""The life of an edition: one table of status transitions, and the one writer of its status.

    draft ──start──► sending ──finish──► sent
                      │  ▲   └──finish_with_failures──► finished_with_failures
                      │  └────────retry_failed──────────────────┘
                 pause│  │resume
                      ▼  │
                     paused
    draft, sending, paused ──cancel──► cancelled

Every change of `editions.status` in the product is a conditional UPDATE made
here from `TRANSITIONS`, so two processes racing (a web request and a worker,
two workers) cannot move an edition along a path the table does not have:
the loser's UPDATE matches no row.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import ColumnElement, Update, update
from sqlalchemy.engine import Connection

from newsletter.core.errors import DeliveryError
from newsletter.models import Edition, EditionStatus

__all__ = [
    "TRANSITIONS",
    "EditionEvent",
    "apply_event",
    "next_status",
    "statuses_allowing",
    "transition_statement",
]

editions = Edition.__table__  # type: ignore[attr-defined]


class EditionEvent(StrEnum):
    """What can happen to an edition."""

    START = "start"  # its audience is fixed and queued
    PAUSE = "pause"  # by the operator, or by a worker's failure breaker
    RESUME = "resume"
    CANCEL = "cancel"
    FINISH = "finish"  # nobody is left queued, and every reader was reached (or left)
    FINISH_WITH_FAILURES = "finish_with_failures"  # nobody is left queued; some were not reached
    RETRY_FAILED = "retry"  # the failed rows are queued again


_DRAFT, _SENDING, _PAUSED = EditionStatus.DRAFT, EditionStatus.SENDING, EditionStatus.PAUSED
_SENT, _CANCELLED = EditionStatus.SENT, EditionStatus.CANCELLED
_PARTLY = EditionStatus.FINISHED_WITH_FAILURES

# (status now, event) → status after. A pair that is missing is refused.
TRANSITIONS: Final[Mapping[tuple[EditionStatus, EditionEvent], EditionStatus]] = {
    (_DRAFT, EditionEvent.START): _SENDING,
    (_SENDING, EditionEvent.PAUSE): _PAUSED,
    (_PAUSED, EditionEvent.PAUSE): _PAUSED,  # pausing again only updates the reason
    (_PAUSED, EditionEvent.RESUME): _SENDING,
    (_SENDING, EditionEvent.RESUME): _SENDING,  # already going: nothing to do
    (_DRAFT, EditionEvent.CANCEL): _CANCELLED,
    (_SENDING, EditionEvent.CANCEL): _CANCELLED,
    (_PAUSED, EditionEvent.CANCEL): _CANCELLED,
    (_CANCELLED, EditionEvent.CANCEL): _CANCELLED,
    (_SENDING, EditionEvent.FINISH): _SENT,
    (_SENDING, EditionEvent.FINISH_WITH_FAILURES): _PARTLY,
    (_PARTLY, EditionEvent.RETRY_FAILED): _SENDING,
}

# Why a refused pair is refused, in words an operator can act on.
_REFUSALS: Final[Mapping[tuple[EditionStatus, EditionEvent], str]] = {
    (_SENDING, EditionEvent.START): "it is being sent already",
    (_PAUSED, EditionEvent.START): "it is paused; resume it instead",
    (_SENT, EditionEvent.START): "it has been sent already",
    (_CANCELLED, EditionEvent.START): "it was cancelled; it cannot be sent",
    (_DRAFT, EditionEvent.PAUSE): "it has not started; only a running send can be paused",
    (_SENT, EditionEvent.PAUSE): "it has been sent already; only a running send can be paused",
    (_CANCELLED, EditionEvent.PAUSE): "it was cancelled; only a running send can be paused",
    (_DRAFT, EditionEvent.RESUME): "it has not started; run `newsletter send` to start it",
    (_SENT, EditionEvent.RESUME): "it has been sent already",
    (_CANCELLED, EditionEvent.RESUME): "it was cancelled, and a cancelled edition stays cancelled",
    (_SENT, EditionEvent.CANCEL): "it has been sent already; there is nothing left to cancel",
    (_PARTLY, EditionEvent.START): "it has been sent already, and some readers were not reached",
    (_PARTLY, EditionEvent.PAUSE): "it has finished; only a running send can be paused",
    (_PARTLY, EditionEvent.RESUME): "it has finished, and some readers were not reached",
    (_PARTLY, EditionEvent.CANCEL): "it has finished; there is nothing left to cancel",
    (_DRAFT, EditionEvent.RETRY_FAILED): "it has not started; run `newsletter send` to start it",
    (_SENDING, EditionEvent.RETRY_FAILED): "it is still being sent; retry once it has finished",
    (_PAUSED, EditionEvent.RETRY_FAILED): "it is paused; resume it, and retry once it has finished",
    (_SENT, EditionEvent.RETRY_FAILED): "it reached every reader; there is nothing to retry",
    (
        _CANCELLED,
        EditionEvent.RETRY_FAILED,
    ): "it was cancelled, and a cancelled edition stays cancelled",
}


def next_status(
    current: EditionStatus, event: EditionEvent, *, edition: str = "this edition"
) -> EditionStatus:
    """The status `event` leads to from `current`, or DeliveryError saying why it cannot."""
    after = TRANSITIONS.get((current, event))
    if after is None:
        why = _REFUSALS.get((current, event), f"it is {current.value}")
        raise DeliveryError(f"cannot {event.value} {edition}: {why}")
    return after


def statuses_allowing(event: EditionEvent) -> frozenset[EditionStatus]:
    """Every status from which `event` is allowed."""
    return frozenset(status for status, allowed in TRANSITIONS if allowed is event)


def transition_statement(
    event: EditionEvent, *conditions: ColumnElement[bool], reason: str | None = None, **extra: Any
) -> Update:
    """The UPDATE that applies `event` to every edition matching `conditions`.

    Only rows in a status that allows the event change. Each event leads to
    one status from wherever it is allowed, so one UPDATE serves them all.
    """
    targets = {TRANSITIONS[(status, event)] for status in statuses_allowing(event)}
    (target,) = targets
    allowed = sorted(status.value for status in statuses_allowing(event))
    return (
        update(editions)
        .where(editions.c.status.in_(allowed), *conditions)
        .values(status=target.value, status_reason=reason, **extra)
    )


def apply_event(
    connection: Connection,
    *,
    edition_id: int,
    event: EditionEvent,
    reason: str | None = None,
    **extra: Any,
) -> bool:
    """Apply `event` to one edition if its status allows it; whether it changed a row."""
    statement = transition_statement(event, editions.c.id == edition_id, reason=reason, **extra)
    return bool(connection.execute(statement).rowcount)
