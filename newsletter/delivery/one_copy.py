"""One copy of an edition to one address, sent at once: the operator's test send.

The copy goes out on its own SMTP connection (no pool, no worker), is marked
as a test in its subject and is recorded in the ledger with `is_test=True`, so
it never counts as a delivery of the edition.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from newsletter.core.clock import utc_now
from newsletter.core.settings import Settings
from newsletter.core.wire import PreparedMessage
from newsletter.delivery import ledger
from newsletter.delivery.assemble import CompiledDigest, Recipient, make_message_id
from newsletter.delivery.connection import send_once
from newsletter.delivery.control import load_rendered_edition
from newsletter.delivery.ledger import Outcome, OutcomeKind, clean_error_text
from newsletter.delivery.verp import EnvelopeSenders
from newsletter.models import Delivery, DeliveryStatus
from subscribers.store import normalise_email

__all__ = ["send_test_copy"]

TEST_COPY_OWNER = "test-copy"


async def send_test_copy(
    settings: Settings, engine: Engine, *, edition_date: dt.date, email: str
) -> Delivery:
    """Send one copy, subject marked as a test, to one address; recorded with is_test=True."""
    address = normalise_email(email)

    def record_attempt() -> tuple[int, str, str, PreparedMessage]:
        # Database work and MIME encoding both stay off the caller's event loop.
        now = utc_now()
        with engine.begin() as connection:
            edition = load_rendered_edition(connection, edition_date)
            row_id: int = connection.execute(
                ledger.deliveries.insert()
                .values(
                    edition_id=edition.id,
                    subscriber_id=None,
                    email=address,
                    is_test=True,
                    status=DeliveryStatus.QUEUED.value,
                    attempts=0,
                    lease_owner=TEST_COPY_OWNER,
                    lease_expires_at=now + dt.timedelta(hours=1),
                    created_at=now,
                    updated_at=now,
                )
                .returning(ledger.deliveries.c.id)
            ).scalar_one()
        message_id = make_message_id(settings, edition_date=edition_date, delivery_id=row_id)
        digest = CompiledDigest.compile(
            settings,
            subject=edition.subject,
            html=edition.html,
            text=edition.text,
            edition_date=edition_date,
            link_marker=edition.link_marker,
            is_test=True,
        )
        message = digest.prepare(Recipient(address, None, None, message_id))
        return row_id, message_id, EnvelopeSenders(settings).for_delivery(row_id), message

    row_id, message_id, sender, message = await asyncio.to_thread(record_attempt)
    reply = await send_once(settings, sender, address, message)
    if reply.accepted:
        outcome = Outcome(row_id, OutcomeKind.SENT, message_id=message_id)
    else:
        outcome = Outcome(
            row_id,
            OutcomeKind.FAILED,
            message_id=message_id,
            code=reply.code,
            error=clean_error_text(reply.text),
        )

    def record_outcome() -> Delivery:
        with engine.begin() as connection:
            return _record(connection, outcome, row_id)

    return await asyncio.to_thread(record_outcome)


def _record(connection: Connection, outcome: Outcome, row_id: int) -> Delivery:
    ledger.record_outcomes(connection, [outcome], utc_now())
    row = connection.execute(
        select(ledger.deliveries).where(ledger.deliveries.c.id == row_id)
    ).mappings()
    return Delivery.model_validate(dict(row.one()))
