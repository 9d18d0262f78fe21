"""The ledger at a glance: per-edition delivery counts for `newsletter stats` and the admin."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, select, true

from newsletter.core.errors import EditionNotFoundError
from newsletter.delivery.ledger import deliveries, editions, subscribers
from newsletter.models import DeliveryStatus, EditionStatus, FeedbackRecord

feedback_events = FeedbackRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class EditionStats:
    """One edition's status and how its deliveries stand."""

    edition_date: dt.date
    status: EditionStatus
    status_reason: str | None
    deliveries: dict[DeliveryStatus, int]  # every status present, test sends excluded
    soft_bounces: int  # rows with a soft bounce reported (they stay `sent`)
    test_sends: int
    unsubscribed_since: int  # subscribers who left since the send started
    send_started_at: dt.datetime | None
    send_finished_at: dt.datetime | None


def _stats_for(connection: Connection, edition: dict[str, object]) -> EditionStats:
    edition_id = edition["id"]
    counts = dict.fromkeys(DeliveryStatus, 0)
    test_sends = 0
    rows = connection.execute(
        select(deliveries.c.status, deliveries.c.is_test, func.count())
        .where(deliveries.c.edition_id == edition_id)
        .group_by(deliveries.c.status, deliveries.c.is_test)
    ).all()
    for status, is_test, count in rows:
        if is_test:
            test_sends += count
        else:
            counts[DeliveryStatus(status)] += count
    soft_bounces = connection.execute(
        select(func.count(func.distinct(feedback_events.c.delivery_id))).where(
            feedback_events.c.kind == "soft_bounce",
            feedback_events.c.delivery_id.in_(
                select(deliveries.c.id).where(
                    deliveries.c.edition_id == edition_id, deliveries.c.is_test.is_(False)
                )
            ),
        )
    ).scalar_one()
    started_at = edition["send_started_at"]
    unsubscribed = 0
    if started_at is not None:
        unsubscribed = connection.execute(
            select(func.count()).where(subscribers.c.unsubscribed_at >= started_at)
        ).scalar_one()
    finished_at = edition["send_finished_at"]
    assert isinstance(edition["date"], dt.date)
    assert started_at is None or isinstance(started_at, dt.datetime)
    assert finished_at is None or isinstance(finished_at, dt.datetime)
    reason = edition["status_reason"]
    return EditionStats(
        edition_date=edition["date"],
        status=EditionStatus(str(edition["status"])),
        status_reason=str(reason) if reason is not None else None,
        deliveries=counts,
        soft_bounces=soft_bounces,
        test_sends=test_sends,
        unsubscribed_since=unsubscribed,
        send_started_at=started_at,
        send_finished_at=finished_at,
    )


def edition_stats(engine: Engine, edition_date: dt.date) -> EditionStats:
    """The ledger of one edition, or EditionNotFoundError."""
    with engine.connect() as connection:
        row = (
            connection.execute(select(editions).where(editions.c.date == edition_date))
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise EditionNotFoundError(f"no edition exists for {edition_date.isoformat()}")
        return _stats_for(connection, dict(row))


def list_edition_stats(engine: Engine, limit: int = 30) -> list[EditionStats]:
    """The ledgers of the latest editions, newest first."""
    with engine.connect() as connection:
        rows = (
            connection.execute(
                select(editions).where(true()).order_by(editions.c.date.desc()).limit(limit)
            )
            .mappings()
            .all()
        )
        return [_stats_for(connection, dict(row)) for row in rows]
