"""`retry failed`: a finished edition's failed readers get it after all, once, with the same
Message-ID; those who bounced, left or were suppressed do not."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, update

from newsletter.core.clock import utc_now
from newsletter.core.errors import DeliveryError
from newsletter.core.settings import Settings
from newsletter.delivery.control import retry_failed
from newsletter.delivery.ledger import subscribers
from newsletter.delivery.worker import send_edition
from newsletter.models import DeliveryStatus, EditionStatus
from subscribers.models import SubscriberStatus
from tests.support.sending import (
    DAY,
    edition_status,
    ledger_rows,
    make_edition,
    received,
    seed_subscribers,
)
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import ADMIN_TOKEN, running_app, web_settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_retry_failed_queues_only_the_failed_rows_and_keeps_their_message_ids(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 6)
    gone, refused, leaving = readers[0], readers[2], readers[4]
    replies = {
        gone: "550 5.1.1 no such user",
        refused: "554 5.6.0 message refused",
        leaving: "554 5.6.0 message refused",
    }
    smtp_server.handler.fault = lambda stage, rcpt, n: (
        replies.get(rcpt) if stage == "rcpt" else None
    )
    make_edition(engine)
    with pytest.raises(DeliveryError, match="has not started"):
        retry_failed(engine, DAY)

    await send_edition(settings, engine, edition_date=DAY)
    assert edition_status(engine)[0] is EditionStatus.FINISHED_WITH_FAILURES
    before = {row.email: row for row in ledger_rows(engine)}
    with engine.begin() as connection:  # one failed reader has left since
        connection.execute(
            update(subscribers)
            .where(subscribers.c.email == leaving)
            .values(status=SubscriberStatus.UNSUBSCRIBED.value, unsubscribed_at=utc_now())
        )
    smtp_server.handler.fault = None
    smtp_server.handler.messages.clear()

    assert retry_failed(engine, DAY) == 1
    assert edition_status(engine)[0] is EditionStatus.SENDING
    row = next(r for r in ledger_rows(engine) if r.email == refused)
    assert (row.status, row.attempts) == (DeliveryStatus.QUEUED, 0)
    report = await send_edition(settings, engine, edition_date=DAY)

    assert report.sent == 1
    assert received(smtp_server) == {refused: 1}
    [arrived] = smtp_server.messages
    after = {row.email: row for row in ledger_rows(engine)}
    assert after[refused].status is DeliveryStatus.SENT
    assert arrived.message["Message-ID"] == before[refused].message_id == after[refused].message_id
    assert after[gone].status is DeliveryStatus.BOUNCED
    assert after[leaving].status is DeliveryStatus.FAILED
    # The bounce and the reader who left still were not reached.
    assert edition_status(engine)[0] is EditionStatus.FINISHED_WITH_FAILURES


async def test_retry_failed_over_http(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 3)
    smtp_server.handler.fault = lambda stage, rcpt, n: (
        "554 5.6.0 message refused" if stage == "rcpt" and rcpt == readers[1] else None
    )
    make_edition(engine)
    await send_edition(settings, engine, edition_date=DAY)
    smtp_server.handler.fault = None

    async with running_app(web_settings(settings), engine) as (_, client):
        retried = await client.post(f"/admin/editions/{DAY}/retry-failed", headers=AUTH)
        again = await client.post(f"/admin/editions/{DAY}/retry-failed", headers=AUTH)
    assert retried.status_code == 202
    assert retried.json()["status"] == "sending"
    assert retried.json()["deliveries"]["queued"] == 1
    assert again.status_code == 409 and "still being sent" in again.json()["detail"]

    await send_edition(settings, engine, edition_date=DAY)
    assert received(smtp_server) == {reader: 1 for reader in readers}
    assert edition_status(engine)[0] is EditionStatus.SENT
