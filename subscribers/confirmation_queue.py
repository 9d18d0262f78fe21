"""The queue of confirmation emails: the only module that writes `confirmation_queue`.

A sign-up (or an import) claims the subscriber's once-per-interval slot and
queues the email in the same transaction, so it survives a restart. A worker
leases due rows, builds and sends each email, then deletes the row; a relay
failure puts the row back with a later `next_attempt_at`; giving up hands the
slot back so a new sign-up can try again. A worker that dies mid-send leaves
its lease to run out; the next worker sends that email (again, if the relay
had taken it: at most once more per claim).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import ARRAY, and_, bindparam, delete, func, or_, select, text, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from newsletter.core.clock import UtcDateTime
from newsletter.core.db import upsert_insert
from subscribers import store
from subscribers.models import QueuedConfirmation, QueuedEmail, Subscriber, SubscriberStatus
from subscribers.store import ConfirmationClaim

_QUEUE = QueuedConfirmation.__table__  # type: ignore[attr-defined]
_SUBSCRIBERS = Subscriber.__table__  # type: ignore[attr-defined]
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True, slots=True)
class LeasedConfirmation:
    """A queued confirmation a worker holds: whom to write to, and the slot behind it."""

    id: int
    email: str
    name: str | None
    status: SubscriberStatus
    claim: ConfirmationClaim
    attempts: int  # including this one
    kind: QueuedEmail = QueuedEmail.CONFIRM


def enqueue(
    session: Session,
    *,
    subscriber_id: int,
    claim: ConfirmationClaim,
    kind: QueuedEmail = QueuedEmail.CONFIRM,
) -> None:
    """Queue the confirmation a claim allows, in the caller's transaction (one row per reader).

    A row still waiting for the same reader (a relay that has been down longer
    than the resend interval) takes the new claim and starts its retries over;
    a welcome replaces a confirmation the reader no longer needs.
    """
    enqueue_many(session, [(subscriber_id, claim)], kind=kind)


def enqueue_many(
    session: Session,
    claims: Sequence[tuple[int, ConfirmationClaim]],
    *,
    kind: QueuedEmail = QueuedEmail.CONFIRM,
) -> None:
    """`enqueue` for several readers (subscriber id, claim) at once: one statement."""
    if not claims:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql" and len(claims) > 1:
        # One array per column: the same statement text whatever the batch, parsed
        # once by the driver (see store.insert_new_pending). A reader's last claim
        # counts, as one upsert after another would leave it.
        latest = dict(claims)
        connection.execute(
            _ENQUEUE_UNNEST,
            {
                "subscriber_id": list(latest),
                "claimed_at": [claim.claimed_at for claim in latest.values()],
                "previous_sent_at": [claim.previous_sent_at for claim in latest.values()],
                "kind": kind.value,
            },
        )
        return
    rows = [
        {
            "subscriber_id": subscriber_id,
            "claimed_at": claim.claimed_at,
            "previous_sent_at": claim.previous_sent_at,
            "attempts": 0,
            "next_attempt_at": claim.claimed_at,
            "leased_by": None,
            "leased_until": None,
            "last_error": None,
            "created_at": claim.claimed_at,
            "kind": kind.value,
        }
        for subscriber_id, claim in claims
    ]
    # One row alone is an ordinary execute; several, one executemany.
    connection.execute(
        _enqueue_statement(connection.dialect.name), rows[0] if len(rows) == 1 else rows
    )


# `enqueue_many` on PostgreSQL: a row per element of the arrays, as `_enqueue_statement` writes it.
_ENQUEUE_UNNEST: Final = text(
    """
    INSERT INTO confirmation_queue (subscriber_id, claimed_at, previous_sent_at, attempts,
        next_attempt_at, leased_by, leased_until, last_error, created_at, kind)
    SELECT subscriber_id, claimed_at, previous_sent_at, 0, claimed_at, NULL, NULL, NULL,
        claimed_at, :kind
    FROM unnest(CAST(:subscriber_id AS integer[]), CAST(:claimed_at AS timestamp[]),
        CAST(:previous_sent_at AS timestamp[])) AS new (subscriber_id, claimed_at,
        previous_sent_at)
    ON CONFLICT (subscriber_id) DO UPDATE SET claimed_at = excluded.claimed_at,
        previous_sent_at = excluded.previous_sent_at, attempts = excluded.attempts,
        next_attempt_at = excluded.next_attempt_at, leased_by = excluded.leased_by,
        leased_until = excluded.leased_until, last_error = excluded.last_error,
        created_at = excluded.created_at, kind = excluded.kind
    """
).bindparams(
    bindparam("claimed_at", type_=ARRAY(UtcDateTime)),
    bindparam("previous_sent_at", type_=ARRAY(UtcDateTime)),
)


@lru_cache(maxsize=4)
def _enqueue_statement(dialect_name: str) -> Any:
    # Built once per dialect: the ON CONFLICT clause costs more to build than to run.
    insert = upsert_insert(dialect_name, _QUEUE)
    changed = [
        column.name for column in _QUEUE.columns if column.name not in ("id", "subscriber_id")
    ]
    return insert.on_conflict_do_update(
        index_elements=["subscriber_id"], set_={name: insert.excluded[name] for name in changed}
    )


def lease_due(
    connection: Connection, *, worker_id: str, now: datetime, lease_seconds: float, limit: int
) -> list[LeasedConfirmation]:
    """Lease up to `limit` rows that are due and not held by a live lease; count the attempt."""
    due = and_(
        _QUEUE.c.next_attempt_at <= now,
        or_(_QUEUE.c.leased_until.is_(None), _QUEUE.c.leased_until < now),
    )
    ids = list(
        connection.execute(
            select(_QUEUE.c.id).where(due).order_by(_QUEUE.c.next_attempt_at).limit(limit)
        ).scalars()
    )
    if not ids:
        return []
    # The guard is repeated: of two workers that read the same ids, one takes each row.
    taken = list(
        connection.execute(
            update(_QUEUE)
            .where(_QUEUE.c.id.in_(ids), due)
            .values(
                leased_by=worker_id,
                leased_until=now + timedelta(seconds=lease_seconds),
                attempts=_QUEUE.c.attempts + 1,
            )
            .returning(_QUEUE.c.id)
        ).scalars()
    )
    if not taken:
        return []
    rows = connection.execute(
        select(
            _QUEUE.c.id,
            _QUEUE.c.claimed_at,
            _QUEUE.c.previous_sent_at,
            _QUEUE.c.attempts,
            _QUEUE.c.kind,
            _SUBSCRIBERS.c.email,
            _SUBSCRIBERS.c.name,
            _SUBSCRIBERS.c.status,
            _SUBSCRIBERS.c.key,
        )
        .join(_SUBSCRIBERS, _SUBSCRIBERS.c.id == _QUEUE.c.subscriber_id)
        .where(_QUEUE.c.id.in_(taken))
        .order_by(_QUEUE.c.id)
    ).all()
    return [
        LeasedConfirmation(
            id=row.id,
            email=row.email,
            name=row.name,
            status=SubscriberStatus(row.status),
            claim=ConfirmationClaim(
                subscriber_key=row.key,
                claimed_at=row.claimed_at,
                previous_sent_at=row.previous_sent_at,
            ),
            attempts=row.attempts,
            kind=QueuedEmail(row.kind),
        )
        for row in rows
    ]


def finish(connection: Connection, *, ids: Sequence[int], worker_id: str) -> None:
    """Delete rows whose email went out (or is no longer wanted) while this worker held them."""
    if ids:
        connection.execute(
            delete(_QUEUE).where(_QUEUE.c.id.in_(ids), _QUEUE.c.leased_by == worker_id)
        )


def retry_later(
    connection: Connection, *, row_id: int, worker_id: str, at: datetime, error: str
) -> None:
    """Put a row back for another attempt at `at`, noting what went wrong."""
    connection.execute(
        update(_QUEUE)
        .where(_QUEUE.c.id == row_id, _QUEUE.c.leased_by == worker_id)
        .values(
            next_attempt_at=at,
            leased_by=None,
            leased_until=None,
            last_error=error[:MAX_ERROR_LENGTH],
        )
    )


def give_up(
    connection: Connection, *, row_id: int, worker_id: str, claim: ConfirmationClaim
) -> None:
    """Drop a row that cannot be sent and hand its slot back, so a new sign-up may try again."""
    connection.execute(delete(_QUEUE).where(_QUEUE.c.id == row_id, _QUEUE.c.leased_by == worker_id))
    store.release_confirmation_slot(connection, claim=claim)


def release_leases(connection: Connection, *, worker_id: str) -> None:
    """Hand back every row this worker holds (it is stopping before sending them)."""
    connection.execute(
        update(_QUEUE)
        .where(_QUEUE.c.leased_by == worker_id)
        .values(leased_by=None, leased_until=None, attempts=_QUEUE.c.attempts - 1)
    )


def count_waiting(connection: Connection) -> int:
    """How many confirmation emails are queued (due now or waiting for a retry)."""
    return int(connection.execute(select(func.count()).select_from(_QUEUE)).scalar_one())
