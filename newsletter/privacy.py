"""What the list holds about one reader: shown to them, exported as JSON, and erased on request.

The subscriber row and the papers they judged are theirs and go entirely. The
delivery ledger and the bounce/complaint events are the list's record of what
it sent; their rows stay (the edition's counts must not change after the
fact) but keep no address: `email`/`address` become the same `sha256:` hash
the suppression list keeps, the name, link key and last SMTP error (which can
quote the address) are blanked, and the links to the subscriber row and to
their selection are cut (a selection no other row shares is deleted: its why
lines may quote the reader's words). A row still queued is skipped, so no
worker sends to an erased reader.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Row, delete, exists, select, update
from sqlmodel import Session

from newsletter.models import Delivery, DeliveryStatus, Edition, FeedbackRecord, Selection
from subscribers import received, store
from subscribers.addresses import mailbox_of
from subscribers.models import Subscriber
from subscribers.suppressions import hashed_mailbox

deliveries = Delivery.__table__  # type: ignore[attr-defined]
editions = Edition.__table__  # type: ignore[attr-defined]
feedback_events = FeedbackRecord.__table__  # type: ignore[attr-defined]
selections = Selection.__table__  # type: ignore[attr-defined]

_UNSENT = (DeliveryStatus.QUEUED.value, DeliveryStatus.FAILED.value)


def _when(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def reader_record(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """Everything stored about this reader, as plain JSON values (the "Download my data" file)."""
    assert subscriber.id is not None
    papers = store.list_judgements(session, subscriber_id=subscriber.id)
    received = session.connection().execute(
        select(
            editions.c.date,
            deliveries.c.status,
            deliveries.c.sent_at,
            deliveries.c.selection_id,
            selections.c.picks,
            selections.c.for_you,
            selections.c.trending,
        )
        .join(editions, editions.c.id == deliveries.c.edition_id)
        .outerjoin(selections, selections.c.id == deliveries.c.selection_id)
        .where(deliveries.c.subscriber_id == subscriber.id)
        .order_by(editions.c.date)
    )
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "status": str(subscriber.status),
        "paused": subscriber.paused,
        "created_at": _when(subscriber.created_at),
        "updated_at": _when(subscriber.updated_at),
        "confirmation_sent_at": _when(subscriber.confirmation_sent_at),
        "confirmed_at": _when(subscriber.confirmed_at),
        "confirmed_from": subscriber.confirmed_ip,
        "unsubscribed_at": _when(subscriber.unsubscribed_at),
        "bounced_at": _when(subscriber.bounced_at),
        "topics": list(subscriber.topics),
        "interests": subscriber.interests,
        "digest_mode": str(subscriber.digest_mode),
        "personal_count": subscriber.personal_count,
        "frequency": str(subscriber.frequency),
        "weekly_day": subscriber.weekly_day,
        "papers": [
            {
                "arxiv_id": paper.arxiv_id,
                "title": paper.title,
                "abstract": paper.abstract,
                "verdict": str(paper.verdict),
                "source": str(paper.source),
                "created_at": _when(paper.created_at),
                "updated_at": _when(paper.updated_at),
            }
            for paper in papers
        ],
        "deliveries": [
            {
                "edition": row.date.isoformat(),
                "status": row.status,
                "sent_at": _when(row.sent_at),
                "selection": _selection_of(row),
            }
            for row in received
        ],
    }


def _selection_of(row: Row[Any, Any, Any, Any, Any, Any, Any]) -> dict[str, Any] | None:
    """Which papers a delivery carried beyond the edition: None for the trending edition alone."""
    if row.selection_id is None:
        return None
    return {
        # Their "For you" (None: the digest had no such section), best first.
        "for_you": [{"arxiv_id": p["arxiv_id"], "why": p["why"]} for p in row.picks]
        if row.for_you
        else None,
        # A weekly digest's "Trending this week"; None: the edition's own ranking.
        "trending_this_week": row.trending,
    }


def erase_reader(session: Session, subscriber: Subscriber, *, now: dt.datetime) -> None:
    """Erase the reader: their rows deleted, the ledger's rows kept without an address."""
    assert subscriber.id is not None
    hashed = hashed_mailbox(subscriber.email)
    connection = session.connection()
    chosen = sorted(
        connection.execute(
            select(deliveries.c.selection_id).where(
                deliveries.c.subscriber_id == subscriber.id, deliveries.c.selection_id.is_not(None)
            )
        ).scalars()
    )
    connection.execute(
        update(deliveries)
        .where(deliveries.c.subscriber_id == subscriber.id, deliveries.c.status.in_(_UNSENT))
        .values(status=DeliveryStatus.SKIPPED.value, lease_owner=None, lease_expires_at=None)
    )
    connection.execute(
        update(deliveries)
        .where(deliveries.c.subscriber_id == subscriber.id)
        .values(
            email=hashed,
            name=None,
            subscriber_key=None,
            subscriber_id=None,
            last_error=None,
            selection_id=None,
            updated_at=now,
        )
    )
    # Their "For you" lists, whose why lines may quote their own words, unless
    # another reader's row shares one.
    for start in range(0, len(chosen), 900):
        connection.execute(
            delete(selections).where(
                selections.c.id.in_(chosen[start : start + 900]),
                ~exists().where(deliveries.c.selection_id == selections.c.id),
            )
        )
    connection.execute(
        update(feedback_events)
        .where(
            (feedback_events.c.subscriber_id == subscriber.id)
            | (feedback_events.c.address == mailbox_of(subscriber.email))
        )
        .values(address=hashed, subscriber_id=None, reason="")
    )
    # A sign-up of theirs answered but not yet recorded must not bring the address back.
    received.forget_address(connection, subscriber.email)
    store.erase_subscriber(session, subscriber=subscriber, now=now)
