"""The delivery ledger: one row per recipient of an edition, claimed with a lease.

Every statement here is a single set-based SQL statement, so the audience is
never loaded into Python and a batch of outcomes is one round trip:

- `queue_audience` fixes the audience with one INSERT … SELECT (suppressed
  mailboxes excluded in the same statement);
- `claim_batch` leases up to N claimable rows with one UPDATE … RETURNING
  (on PostgreSQL its subquery takes `FOR UPDATE SKIP LOCKED`, so workers on
  several machines never claim the same row; SQLite serialises writers, so
  the same statement is safe there for one process);
- `record_outcomes` writes a batch of results with one executemany per kind.

A row is claimable when it is `queued`, its retry time has come and nobody
holds a live lease on it; a worker that dies simply stops renewing its lease
and its rows return to the queue when the lease expires.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    Connection,
    Exists,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    cast,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from newsletter.core.clock import UtcDateTime, as_utc
from newsletter.core.db import upsert_insert
from newsletter.editions.lifecycle import EditionEvent, apply_event, transition_statement
from newsletter.models import Delivery, DeliveryStatus, Edition, EditionStatus
from subscribers.models import Frequency, Subscriber, SubscriberStatus
from subscribers.store import mark_bounced
from subscribers.suppressions import not_suppressed

deliveries = Delivery.__table__  # type: ignore[attr-defined]
editions = Edition.__table__  # type: ignore[attr-defined]
subscribers = Subscriber.__table__  # type: ignore[attr-defined]

MAX_ERROR_LENGTH = 500
# Why a row ended `skipped`: its reader left (or paused) after the audience was fixed.
LEFT_BEFORE_SENDING = "not sent: the subscriber left or paused after the send started"


def clean_error_text(text: str) -> str:
    """Error text safe for one log line and one column: no CR/LF, bounded length."""
    flat = " ".join(text.replace("\r", " ").replace("\n", " ").split())
    return flat[:MAX_ERROR_LENGTH]


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A leased ledger row: what the sender needs to build and send one message."""

    id: int
    edition_id: int
    email: str
    name: str | None
    subscriber_key: str | None
    attempts: int
    # False when the subscriber unsubscribed, bounced or paused after the
    # audience was fixed: the row then ends without a message.
    still_subscribed: bool = True
    # The reader's "For you" selection (None: the edition's trending digest).
    selection_id: int | None = None


class OutcomeKind(StrEnum):
    """What one attempt did to its row."""

    SENT = "sent"
    RETRY = "retry"  # stays queued until next_attempt_at
    FAILED = "failed"
    BOUNCED = "bounced"
    SKIPPED = "skipped"  # the reader left after the audience was fixed: no attempt counted
    RELEASED = "released"  # never attempted (edition paused): back to the queue, no attempt counted


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt (or a release), waiting to be written."""

    delivery_id: int
    kind: OutcomeKind
    message_id: str | None = None
    code: int | None = None
    error: str | None = None
    next_attempt_at: dt.datetime | None = None
    subscriber_key: str | None = None  # set for bounces: whose status changes
    # For `sent` rows, the Message-ID cut around the row id (shared by one
    # edition's rows), so a whole batch is marked with a single UPDATE.
    message_id_parts: MessageIdParts | None = None


@dataclass(frozen=True, slots=True)
class MessageIdParts:
    """A Message-ID format as the text before and after the delivery row's id."""

    prefix: str
    suffix: str

    def format(self, delivery_id: int) -> str:
        """The Message-ID of one row."""
        return f"{self.prefix}{delivery_id}{self.suffix}"


# Each personal reader's selection while the audience is queued (one transaction).
_reader_selections = Table(
    "reader_selections_at_start",
    MetaData(),
    Column("subscriber_id", Integer, primary_key=True),
    Column("selection_id", Integer, nullable=False),
    prefixes=["TEMPORARY"],
)


def queue_audience(
    connection: Connection,
    *,
    edition_id: int,
    now: dt.datetime,
    selection_of: Iterable[Mapping[int, int]] | None = None,
) -> int:
    """Queue one row per confirmed, unpaused, unsuppressed subscriber; returns how many.

    Weekly readers are queued only on their weekday.

    `selection_of` maps personal readers to their selection (`selections.id`),
    a batch of readers at a time (each batch is taken only when the one before
    is written: the caller holds one batch): their rows
    carry it, and rows are numbered selection by selection, so a worker taking
    rows in order meets each selection's readers together and keeps few
    compiled digests at a time.
    """
    when = literal(now, UtcDateTime())
    columns = [
        "edition_id",
        "subscriber_id",
        "email",
        "name",
        "subscriber_key",
        "is_test",
        "status",
        "attempts",
        "created_at",
        "updated_at",
    ]
    values = [
        literal(edition_id),
        subscribers.c.id,
        subscribers.c.email,
        subscribers.c.name,
        subscribers.c.key,
        false(),
        literal(DeliveryStatus.QUEUED.value),
        literal(0),
        when,
        when,
    ]
    day = connection.execute(
        select(editions.c.date).where(editions.c.id == edition_id)
    ).scalar_one()
    conditions = _audience(day)
    if selection_of is not None:
        _reader_selections.create(connection)
        # A reader in two batches keeps the first: on PostgreSQL a reader who
        # turned from daily to weekly while the batches were ranked can be in both.
        taking = upsert_insert(connection.dialect.name, _reader_selections).on_conflict_do_nothing(
            index_elements=["subscriber_id"]
        )
        for batch in selection_of:
            rows = [{"subscriber_id": k, "selection_id": v} for k, v in batch.items()]
            for start in range(0, len(rows), 5000):
                connection.execute(taking, rows[start : start + 5000])
        chosen = _reader_selections.c.selection_id
        audience = (
            select(*values, chosen)
            .select_from(
                subscribers.outerjoin(
                    _reader_selections, _reader_selections.c.subscriber_id == subscribers.c.id
                )
            )
            .where(*conditions)
            .order_by(func.coalesce(chosen, 0), subscribers.c.id)
        )
        connection.execute(insert(deliveries).from_select([*columns, "selection_id"], audience))
        _reader_selections.drop(connection)
    else:
        audience = select(*values).where(*conditions).order_by(subscribers.c.id)
        connection.execute(insert(deliveries).from_select(columns, audience))
    # Counted afterwards: drivers disagree on the rowcount of INSERT … SELECT.
    return connection.execute(
        select(func.count()).where(
            deliveries.c.edition_id == edition_id, deliveries.c.is_test == false()
        )
    ).scalar_one()


def _audience(day: dt.date) -> tuple[ColumnElement[bool], ...]:
    """Who the edition of `day` goes to: confirmed, unpaused, unsuppressed readers.

    Weekly readers get only the edition of their weekday (`editions.personal`).
    """
    return (
        subscribers.c.status == SubscriberStatus.CONFIRMED.value,
        subscribers.c.paused == false(),
        not_suppressed(subscribers.c.mailbox),
        or_(
            subscribers.c.frequency == Frequency.DAILY.value,
            subscribers.c.weekly_day == day.weekday(),
        ),
    )


def audience_addresses(
    connection: Connection, *, day: dt.date, limit: int | None
) -> tuple[int, list[str]]:
    """How many readers the edition of `day` would queue now, and the first `limit` (all: None)."""
    count = connection.execute(
        select(func.count()).select_from(subscribers).where(*_audience(day))
    ).scalar_one()
    statement = select(subscribers.c.email).where(*_audience(day)).order_by(subscribers.c.id)
    if limit is not None:
        statement = statement.limit(limit)
    return count, list(connection.execute(statement).scalars())


def start_sending(
    connection: Connection,
    *,
    edition_id: int,
    now: dt.datetime,
    selections: Callable[[Connection], Iterable[Mapping[int, int]]] | None = None,
) -> int | None:
    """Move a draft edition to `sending` and fix its audience; None if it was not a draft.

    The status change and the audience insert share one transaction, and the
    conditional UPDATE makes exactly one of several racing starters win.
    `selections`, called once the edition is won, stores the personal
    readers' selections and says whose is which, batch by batch
    (`selections.store_selections`): a starter that lost stores nothing.
    """
    if not apply_event(
        connection, edition_id=edition_id, event=EditionEvent.START, send_started_at=now
    ):
        return None
    selection_of = selections(connection) if selections is not None else None
    return queue_audience(connection, edition_id=edition_id, now=now, selection_of=selection_of)


def requeue_failed(connection: Connection, *, edition_id: int) -> int:
    """Queue an edition's `failed` rows again, attempts reset, Message-ID kept; how many.

    Not the readers who bounced, left, paused or are suppressed since: only those
    who still want the digest and whose delivery failed.
    """
    statement = (
        update(deliveries)
        .where(
            deliveries.c.edition_id == edition_id,
            deliveries.c.is_test == false(),
            deliveries.c.status == DeliveryStatus.FAILED.value,
            deliveries.c.subscriber_id.is_not(None),
            _still_subscribed(),
        )
        .values(
            status=DeliveryStatus.QUEUED.value,
            attempts=0,
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return connection.execute(statement).rowcount


def _sending_editions(edition_id: int | None) -> Select[tuple[int]]:
    """The ids of editions being sent (only the given one, if any)."""
    statement = select(editions.c.id).where(editions.c.status == EditionStatus.SENDING.value)
    if edition_id is not None:
        statement = statement.where(editions.c.id == edition_id)
    return statement


def _queued_rows(edition_id: int | None) -> list[ColumnElement[bool]]:
    return [
        deliveries.c.edition_id.in_(_sending_editions(edition_id)),
        deliveries.c.status == DeliveryStatus.QUEUED.value,
        deliveries.c.is_test == false(),
    ]


def _still_subscribed() -> ColumnElement[bool]:
    """Whether a row's subscriber still wants (and may get) the digest; test sends always do."""
    return or_(
        deliveries.c.subscriber_id.is_(None),
        exists().where(
            subscribers.c.id == deliveries.c.subscriber_id,
            subscribers.c.status == SubscriberStatus.CONFIRMED.value,
            subscribers.c.paused == false(),
            not_suppressed(subscribers.c.mailbox),
        ),
    )


def claim_batch(
    connection: Connection,
    *,
    edition_id: int | None,
    worker_id: str,
    limit: int,
    now: dt.datetime,
    lease_seconds: float,
) -> list[ClaimedDelivery]:
    """Lease up to `limit` claimable rows of a sending edition (or any) to this worker."""
    candidates = (
        select(deliveries.c.id)
        .where(
            *_queued_rows(edition_id),
            or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
            or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at < now),
        )
        .limit(limit)
        .with_for_update(skip_locked=True, of=deliveries)
    )
    statement = (
        update(deliveries)
        .where(deliveries.c.id.in_(candidates.scalar_subquery()))
        .values(
            lease_owner=worker_id,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
        )
        .returning(
            deliveries.c.id,
            deliveries.c.edition_id,
            deliveries.c.email,
            deliveries.c.name,
            deliveries.c.subscriber_key,
            deliveries.c.attempts,
            deliveries.c.selection_id,
            _still_subscribed(),
        )
    )
    rows = connection.execute(statement).all()
    claimed = [
        ClaimedDelivery(
            id=row.id,
            edition_id=row.edition_id,
            email=row.email,
            name=row.name,
            subscriber_key=row.subscriber_key,
            attempts=row.attempts,
            still_subscribed=bool(row[-1]),
            selection_id=row.selection_id,
        )
        for row in rows
    ]
    # Both databases return rows in no promised order; id order keeps sends predictable.
    claimed.sort(key=lambda row: row.id)
    return claimed


def renew_leases(
    connection: Connection, *, worker_id: str, now: dt.datetime, lease_seconds: float
) -> set[int]:
    """Extend the lease of every queued row this worker still holds; returns their ids.

    A row it claimed that is missing was taken by another worker after its
    lease ran out (or ended meanwhile): it is no longer this worker's to send.
    """
    rows = connection.execute(
        update(deliveries)
        .where(
            deliveries.c.lease_owner == worker_id,
            deliveries.c.status == DeliveryStatus.QUEUED.value,
        )
        .values(lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
        .returning(deliveries.c.id)
    )
    return set(rows.scalars())


def record_outcomes(connection: Connection, outcomes: Iterable[Outcome], now: dt.datetime) -> None:
    """Write a batch of attempt results: one executemany per kind of outcome.

    `sent` is written whatever the row's status (the server accepted it, that
    is the truth); the other kinds only touch rows still `queued`, so a row
    cancelled by the operator meanwhile stays `failed`.
    """
    by_kind: dict[OutcomeKind, list[Outcome]] = {}
    for outcome in outcomes:
        by_kind.setdefault(outcome.kind, []).append(outcome)
    row_id: BindParameter[int] = bindparam("row_id")
    still_queued = deliveries.c.status == DeliveryStatus.QUEUED.value
    if sent := by_kind.get(OutcomeKind.SENT):
        _record_sent(connection, sent, now)
    if retry := by_kind.get(OutcomeKind.RETRY):
        connection.execute(
            update(deliveries)
            .where(deliveries.c.id == row_id, still_queued)
            .values(
                attempts=deliveries.c.attempts + 1,
                message_id=bindparam("message_id"),
                last_code=bindparam("code"),
                last_error=bindparam("error"),
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=bindparam("next_attempt_at", type_=UtcDateTime()),
                updated_at=now,
            ),
            [_final_params(o) | {"next_attempt_at": o.next_attempt_at} for o in retry],
        )
    for kind, status in (
        (OutcomeKind.FAILED, DeliveryStatus.FAILED),
        (OutcomeKind.BOUNCED, DeliveryStatus.BOUNCED),
    ):
        if rows := by_kind.get(kind):
            connection.execute(
                update(deliveries)
                .where(deliveries.c.id == row_id, still_queued)
                .values(
                    status=status.value,
                    attempts=deliveries.c.attempts + 1,
                    message_id=bindparam("message_id"),
                    last_code=bindparam("code"),
                    last_error=bindparam("error"),
                    lease_owner=None,
                    lease_expires_at=None,
                    next_attempt_at=None,
                    updated_at=now,
                ),
                [_final_params(o) for o in rows],
            )
    if skipped := by_kind.get(OutcomeKind.SKIPPED):
        connection.execute(
            update(deliveries)
            .where(deliveries.c.id == row_id, still_queued)
            .values(
                status=DeliveryStatus.SKIPPED.value,
                last_error=bindparam("error"),
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=None,
                updated_at=now,
            ),
            [{"row_id": o.delivery_id, "error": o.error} for o in skipped],
        )
    if released := by_kind.get(OutcomeKind.RELEASED):
        connection.execute(
            update(deliveries)
            .where(deliveries.c.id == row_id, still_queued)
            .values(lease_owner=None, lease_expires_at=None),
            [{"row_id": o.delivery_id} for o in released],
        )
    if bounced := by_kind.get(OutcomeKind.BOUNCED):
        mark_bounced(
            connection,
            bounces=[
                (o.subscriber_key, f"hard bounce: {o.code or ''} {o.error or ''}") for o in bounced
            ],
            now=now,
        )


def _record_sent(connection: Connection, sent: list[Outcome], now: dt.datetime) -> None:
    sent_values = {
        "status": DeliveryStatus.SENT.value,
        "attempts": deliveries.c.attempts + 1,
        "last_code": 250,
        "last_error": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "next_attempt_at": None,
        "sent_at": now,
        "updated_at": now,
    }
    by_format: dict[MessageIdParts, list[int]] = {}
    one_by_one: list[Outcome] = []
    for outcome in sent:
        if outcome.message_id_parts is None:
            one_by_one.append(outcome)
        else:
            by_format.setdefault(outcome.message_id_parts, []).append(outcome.delivery_id)
    for parts, ids in by_format.items():
        # One statement for the batch: the database writes each row's
        # Message-ID from the shared format instead of one bound value per row.
        message_id = (
            literal(parts.prefix, String)
            + cast(deliveries.c.id, String)
            + literal(parts.suffix, String)
        )
        connection.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(message_id=message_id, **sent_values)
        )
    if one_by_one:
        connection.execute(
            update(deliveries)
            .where(deliveries.c.id == bindparam("row_id"))
            .values(message_id=bindparam("message_id"), **sent_values),
            [{"row_id": o.delivery_id, "message_id": o.message_id} for o in one_by_one],
        )


def _final_params(outcome: Outcome) -> dict[str, object]:
    return {
        "row_id": outcome.delivery_id,
        "message_id": outcome.message_id,
        "code": outcome.code,
        "error": outcome.error,
    }


def lease_owners(connection: Connection) -> list[str]:
    """The workers holding leases on queued rows (live or expired)."""
    rows = connection.execute(
        select(deliveries.c.lease_owner)
        .where(
            deliveries.c.status == DeliveryStatus.QUEUED.value,
            deliveries.c.lease_owner.is_not(None),
        )
        .distinct()
    ).all()
    return [row[0] for row in rows]


def release_leases(connection: Connection, owners: Sequence[str]) -> int:
    """Hand the queued rows of these workers back to the queue now; returns how many."""
    if not owners:
        return 0
    return connection.execute(
        update(deliveries)
        .where(
            deliveries.c.status == DeliveryStatus.QUEUED.value,
            deliveries.c.lease_owner.in_(list(owners)),
        )
        .values(lease_owner=None, lease_expires_at=None)
    ).rowcount


def next_wake_time(connection: Connection, *, edition_id: int | None) -> dt.datetime | None:
    """When a queued row of a sending edition (or the given one) may next be claimable.

    None when no row is queued; a time in the past when one is claimable now.
    """
    return queued_and_next_wake_time(connection, edition_id=edition_id)[1]


def queued_and_next_wake_time(
    connection: Connection, *, edition_id: int | None
) -> tuple[int, dt.datetime | None, bool]:
    """Rows of sending editions (or the given one) queued, `next_wake_time`, and why then.

    The third: True when the next wake is a lease running out, that is, rows
    another worker holds in flight (it will write them long before), not a
    retry's backoff.
    """
    count, retry_at, lease_until = connection.execute(
        select(
            func.count(),
            func.min(deliveries.c.next_attempt_at),
            func.min(deliveries.c.lease_expires_at),
        ).where(*_queued_rows(edition_id))
    ).one()
    if not count:
        return 0, None, False
    retry = None if retry_at is None else _aggregate_time(retry_at)
    lease = None if lease_until is None else _aggregate_time(lease_until)
    times = [time for time in (retry, lease) if time is not None]
    if not times:  # queued rows with neither time set are claimable right now
        return count, dt.datetime.min.replace(tzinfo=dt.UTC), False
    wake = min(times)
    return count, wake, wake == lease and (retry is None or lease <= retry)


def _aggregate_time(value: object) -> dt.datetime:
    if isinstance(value, str):  # SQLite hands aggregates back as text
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return as_utc(value)


def finish_editions(connection: Connection, *, edition_id: int | None, now: dt.datetime) -> int:
    """End sending editions (or the given one) when no row is left queued.

    `sent` when every reader's row ended `sent` (or `skipped`: they left meanwhile),
    else `finished_with_failures`.
    """

    def rows_where(*conditions: ColumnElement[bool]) -> Exists:
        return exists().where(
            deliveries.c.edition_id == editions.c.id, deliveries.c.is_test == false(), *conditions
        )

    nothing_queued = ~rows_where(deliveries.c.status == DeliveryStatus.QUEUED.value)
    # `skipped`: the reader left meanwhile; `complained`: a complaint came after delivery.
    reached_statuses = [
        DeliveryStatus.SENT.value,
        DeliveryStatus.SKIPPED.value,
        DeliveryStatus.COMPLAINED.value,
    ]
    not_reached = rows_where(deliveries.c.status.not_in(reached_statuses))
    conditions = [nothing_queued]
    if edition_id is not None:
        conditions.append(editions.c.id == edition_id)
    finished = 0
    for event, reached in (
        (EditionEvent.FINISH_WITH_FAILURES, not_reached),
        (EditionEvent.FINISH, ~not_reached),
    ):
        statement = transition_statement(event, *conditions, reached, send_finished_at=now)
        finished += connection.execute(statement).rowcount
    return finished


def count_sending(connection: Connection) -> dict[DeliveryStatus, int]:
    """How many (non-test) rows of every sending edition stand in each status."""
    counts = dict.fromkeys(DeliveryStatus, 0)
    rows = connection.execute(
        select(deliveries.c.status, func.count())
        .where(
            deliveries.c.edition_id.in_(_sending_editions(None)),
            deliveries.c.is_test == false(),
        )
        .group_by(deliveries.c.status)
    ).all()
    for status, count in rows:
        counts[DeliveryStatus(status)] = count
    return counts


@dataclass(frozen=True, slots=True)
class EditionTally:
    """One edition's status and its (non-test) rows by status."""

    status: EditionStatus
    status_reason: str | None
    counts: dict[DeliveryStatus, int]


def tally_editions(
    connection: Connection, *, edition_ids: Sequence[int] | None
) -> dict[int, EditionTally]:
    """The tally of these editions, or of every sending one when None; one query each.

    What the parent of several sending processes shows and reports: the ledger is
    the one place where all of them meet.
    """
    chosen = _sending_editions(None) if edition_ids is None else list(edition_ids)
    rows = connection.execute(
        select(deliveries.c.edition_id, deliveries.c.status, func.count())
        .where(deliveries.c.edition_id.in_(chosen), deliveries.c.is_test == false())
        .group_by(deliveries.c.edition_id, deliveries.c.status)
    ).all()
    states = connection.execute(
        select(editions.c.id, editions.c.status, editions.c.status_reason).where(
            editions.c.id.in_(chosen)
        )
    ).all()
    tallies = {
        edition_id: EditionTally(EditionStatus(status), reason, dict.fromkeys(DeliveryStatus, 0))
        for edition_id, status, reason in states
    }
    for edition_id, status, count in rows:
        tallies[edition_id].counts[DeliveryStatus(status)] += count
    return tallies


def count_by_status(connection: Connection, *, edition_id: int) -> dict[DeliveryStatus, int]:
    """How many (non-test) rows of an edition stand in each status, every status present."""
    counts = dict.fromkeys(DeliveryStatus, 0)
    rows = connection.execute(
        select(deliveries.c.status, func.count())
        .where(deliveries.c.edition_id == edition_id, deliveries.c.is_test == false())
        .group_by(deliveries.c.status)
    ).all()
    for status, count in rows:
        counts[DeliveryStatus(status)] = count
    return counts


def fail_queued(connection: Connection, *, edition_id: int, reason: str, now: dt.datetime) -> int:
    """End every still-queued row of an edition `failed` with the reason; returns how many."""
    return connection.execute(
        update(deliveries)
        .where(
            deliveries.c.edition_id == edition_id,
            deliveries.c.status == DeliveryStatus.QUEUED.value,
        )
        .values(
            status=DeliveryStatus.FAILED.value,
            last_error=reason,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=None,
            updated_at=now,
        )
    ).rowcount
