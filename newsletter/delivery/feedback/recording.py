"""Recording bounces and complaints: the ledger row, the reader, the suppression list.

`record_feedback` is the only writer of `feedback_events`. For each event, in
one transaction for the batch:

1. Find the delivery it is about: the row a verified VERP token names; else
   the row whose Message-ID the report quotes (when the report names an
   address too, it must be that row's); else the latest row sent to the
   address. Then the reader: that row's subscriber, else the subscriber with
   that address. Neither found: the event is counted as unknown, nothing is written.
2. Store the event once: its `dedupe_key` (kind and delivery, or kind,
   mailbox, Message-ID and day when no delivery is known) makes the same
   report delivered twice a duplicate that changes nothing.
3. Act on it:
   - hard bounce: the row `sent` → `bounced`; the reader `bounced` and the
     mailbox suppressed (`subscribers.store.mark_bounced`);
   - soft bounce: counted; `NEWSLETTER_SOFT_BOUNCE_LIMIT` of them for one
     mailbox within `NEWSLETTER_SOFT_BOUNCE_DAYS` bounce the reader as above;
   - complaint: the row `sent` or `bounced` → `complained`; the reader
     `complained` (unsubscribed) and the mailbox suppressed with reason
     `complained` (`subscribers.store.mark_complained`).
   A row or reader with no subscriber row (a test copy) still gets its mailbox suppressed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, func, select, update

from newsletter.core.clock import as_utc
from newsletter.core.db import upsert_insert
from newsletter.core.settings import Settings
from newsletter.core.text import single_line
from newsletter.delivery.feedback.events import FeedbackEvent, FeedbackKind, FeedbackSummary
from newsletter.delivery.ledger import clean_error_text, deliveries, subscribers
from newsletter.models import DeliveryStatus, FeedbackRecord
from subscribers.addresses import mailbox_of
from subscribers.models import SuppressionReason
from subscribers.store import mark_bounced, mark_complained
from subscribers.suppressions import suppress_address

__all__ = ["feedback_events", "record_feedback"]

logger = logging.getLogger(__name__)

feedback_events = FeedbackRecord.__table__  # type: ignore[attr-defined]
MAX_ADDRESS_LENGTH = 320


@dataclass(frozen=True, slots=True)
class _Target:
    """Whom an event is about: the ledger row (if found) and the reader (if any)."""

    delivery_id: int | None
    delivery_status: str | None
    subscriber_id: int | None
    subscriber_key: str | None
    address: str


def record_feedback(
    engine: Engine, events: Sequence[FeedbackEvent], *, settings: Settings, now: datetime
) -> FeedbackSummary:
    """Store each event in the ledger row it names and act on its reader (idempotent)."""
    summary = FeedbackSummary()
    with engine.begin() as connection:
        for event in events:
            summary += _record_one(connection, event, settings=settings, now=now)
    return summary


def _record_one(
    connection: Connection, event: FeedbackEvent, *, settings: Settings, now: datetime
) -> FeedbackSummary:
    # Events may come from outside (an SES webhook): clip what the columns cannot hold.
    event = replace(
        event,
        address=event.address if len(event.address) <= MAX_ADDRESS_LENGTH else "",
        reason=single_line(clean_error_text(event.reason)),
        message_id=event.message_id if len(event.message_id or "") <= 255 else None,
        occurred_at=as_utc(event.occurred_at),
    )
    target = _find_target(connection, event)
    if target is None:
        logger.info("feedback about nobody of ours: %s %s", event.kind.value, event.address)
        return FeedbackSummary(unknown=1)
    mailbox = mailbox_of(target.address)
    stored = connection.execute(
        upsert_insert(connection.dialect.name, feedback_events)
        .values(
            dedupe_key=_dedupe_key(event, target, mailbox),
            kind=event.kind.value,
            source=event.source[:16],
            address=mailbox,
            delivery_id=target.delivery_id,
            subscriber_id=target.subscriber_id,
            reason=event.reason,
            message_id=event.message_id,
            occurred_at=event.occurred_at,
            created_at=now,
        )
        .on_conflict_do_nothing()
        # RETURNING, not rowcount: PostgreSQL reports no count for an INSERT that returns ids.
        .returning(feedback_events.c.id)
    ).first()
    if stored is None:
        return FeedbackSummary(duplicates=1)
    if event.kind is FeedbackKind.HARD_BOUNCE:
        _set_row_status(connection, target, DeliveryStatus.BOUNCED, event.reason, now)
        return FeedbackSummary(recorded=1, bounced=_bounce(connection, target, event.reason, now))
    if event.kind is FeedbackKind.COMPLAINT:
        _set_row_status(connection, target, DeliveryStatus.COMPLAINED, event.reason, now)
        return FeedbackSummary(recorded=1, complained=_complain(connection, target, event, now))
    window_start = now - timedelta(days=settings.soft_bounce_days)
    soft_bounces = connection.execute(
        select(func.count()).where(
            feedback_events.c.address == mailbox,
            feedback_events.c.kind == FeedbackKind.SOFT_BOUNCE.value,
            feedback_events.c.occurred_at > window_start,
            feedback_events.c.occurred_at <= now,
        )
    ).scalar_one()
    if soft_bounces < settings.soft_bounce_limit:
        return FeedbackSummary(recorded=1)
    note = (
        f"{soft_bounces} soft bounces within {settings.soft_bounce_days} days; "
        f"the last: {event.reason}"
    )
    return FeedbackSummary(recorded=1, bounced=_bounce(connection, target, note, now))


def _find_target(connection: Connection, event: FeedbackEvent) -> _Target | None:
    columns = (deliveries.c.id, deliveries.c.status, deliveries.c.email, deliveries.c.subscriber_id)
    row = None
    if event.delivery_id is not None:
        row = connection.execute(
            select(*columns).where(deliveries.c.id == event.delivery_id)
        ).first()
        if row is None:
            return None  # a token we signed for a row that is gone (or another database's)
    if row is None and event.message_id is not None:
        row = connection.execute(
            select(*columns).where(deliveries.c.message_id == event.message_id)
        ).first()
        if row is not None and event.address and mailbox_of(row.email) != mailbox_of(event.address):
            row = None  # the quoted Message-ID is of someone else's digest
    if row is None and event.address:
        row = connection.execute(
            select(*columns)
            .where(func.lower(deliveries.c.email) == event.address.lower())
            .order_by(deliveries.c.id.desc())
            .limit(1)
        ).first()
    address = event.address or (row.email if row is not None else "")
    if not address:
        return None
    reader = None
    if row is not None and row.subscriber_id is not None:
        reader = connection.execute(
            select(subscribers.c.id, subscribers.c.key).where(subscribers.c.id == row.subscriber_id)
        ).first()
    if reader is None and row is None:
        reader = connection.execute(
            select(subscribers.c.id, subscribers.c.key).where(
                func.lower(subscribers.c.email) == address.lower()
            )
        ).first()
    if row is None and reader is None:
        return None
    return _Target(
        delivery_id=row.id if row is not None else None,
        delivery_status=row.status if row is not None else None,
        subscriber_id=reader.id if reader is not None else None,
        subscriber_key=reader.key if reader is not None else None,
        address=row.email if row is not None and event.delivery_id is not None else address,
    )


def _dedupe_key(event: FeedbackEvent, target: _Target, mailbox: str) -> str:
    if target.delivery_id is not None:
        identity = f"{event.kind.value}|delivery|{target.delivery_id}"
    else:
        identity = (
            f"{event.kind.value}|mailbox|{mailbox}|{event.message_id or ''}|"
            f"{event.occurred_at.date().isoformat()}"
        )
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


def _set_row_status(
    connection: Connection, target: _Target, status: DeliveryStatus, reason: str, now: datetime
) -> None:
    if target.delivery_id is None:
        return
    # A complaint outweighs a bounce; neither touches a row that never went out.
    before = [DeliveryStatus.SENT.value]
    if status is DeliveryStatus.COMPLAINED:
        before.append(DeliveryStatus.BOUNCED.value)
    connection.execute(
        update(deliveries)
        .where(deliveries.c.id == target.delivery_id, deliveries.c.status.in_(before))
        .values(status=status.value, last_error=clean_error_text(reason), updated_at=now)
    )


def _bounce(connection: Connection, target: _Target, note: str, now: datetime) -> int:
    if target.subscriber_key is None:
        suppress_address(
            connection, target.address, reason=SuppressionReason.BOUNCED, now=now, note=note
        )
        return 0
    return mark_bounced(connection, bounces=[(target.subscriber_key, note)], now=now)


def _complain(connection: Connection, target: _Target, event: FeedbackEvent, now: datetime) -> int:
    if target.subscriber_key is None:
        suppress_address(
            connection,
            target.address,
            reason=SuppressionReason.COMPLAINED,
            now=now,
            note=event.reason,
        )
        return 0
    return mark_complained(connection, complaints=[(target.subscriber_key, event.reason)], now=now)
