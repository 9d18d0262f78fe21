"""Rows and processes the sending tests share: subscribers, a draft edition, the ledger."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter

from sqlalchemy import Engine, insert, select

from newsletter.core.clock import utc_now
from newsletter.delivery.ledger import deliveries, editions, subscribers
from newsletter.models import Delivery, EditionStatus
from newsletter.values import PersonalField
from subscribers.models import SubscriberStatus
from tests.support import REPO_ROOT
from tests.support.smtp_server import RecordingSmtpServer

# The random part of the placeholders, as a real rendering of an edition has it.
LINK_MARKER = "5e7d0c1b9a8f4e3d2c1b0a9f8e7d6c5b"
UNSUBSCRIBE = PersonalField.UNSUBSCRIBE_URL.placeholder(LINK_MARKER)
PREFERENCES = PersonalField.PREFERENCES_URL.placeholder(LINK_MARKER)

DAY = dt.date(2026, 3, 2)


def seed_subscribers(
    engine: Engine,
    count: int,
    *,
    status: SubscriberStatus = SubscriberStatus.CONFIRMED,
    paused: bool = False,
    prefix: str = "reader",
) -> list[str]:
    """Insert `count` subscribers in one statement; returns their addresses."""
    now = utc_now()
    addresses = [f"{prefix}{i:05d}@example.org" for i in range(count)]
    rows = [
        {
            "email": address,
            "name": f"Reader {i}",
            "status": status.value,
            "key": f"{prefix}-key-{i:05d}",
            "topics": [],
            "paused": paused,
            "created_at": now,
            "updated_at": now,
            "unsubscribed_at": now if status is SubscriberStatus.UNSUBSCRIBED else None,
        }
        for i, address in enumerate(addresses)
    ]
    if rows:
        with engine.begin() as connection:
            connection.execute(insert(subscribers), rows)
    return addresses


def insert_subscriber_row(engine: Engine, *, email: str, key: str) -> None:
    """A confirmed subscriber written straight into the table, unchecked (as an import might)."""
    now = utc_now()
    with engine.begin() as connection:
        connection.execute(
            insert(subscribers).values(
                email=email,
                name=None,
                status=SubscriberStatus.CONFIRMED.value,
                key=key,
                topics=[],
                paused=False,
                created_at=now,
                updated_at=now,
            )
        )


def make_edition(engine: Engine, day: dt.date = DAY, *, subject: str = "Papers of the day") -> int:
    """A rendered draft edition whose body carries both personal placeholders."""
    html = (
        f"<html><body><h1>{subject}</h1><p>Größte Modelle</p>"
        f'<a href="{UNSUBSCRIBE}">unsubscribe</a> '
        f'<a href="{PREFERENCES}">preferences</a></body></html>'
    )
    text = (
        f"{subject}\n\nGrößte Modelle\n\nUnsubscribe: {UNSUBSCRIBE}\nPreferences: {PREFERENCES}\n"
    )
    with engine.begin() as connection:
        return connection.execute(
            insert(editions)
            .values(
                date=day,
                status=EditionStatus.DRAFT.value,
                subject=subject,
                html=html,
                text=text,
                link_marker=LINK_MARKER,
                created_at=utc_now(),
                rendered_at=utc_now(),
            )
            .returning(editions.c.id)
        ).scalar_one()


def ledger_rows(engine: Engine, day: dt.date = DAY) -> list[Delivery]:
    """Every non-test delivery row of the edition, in id order."""
    with engine.connect() as connection:
        edition_id = connection.execute(
            select(editions.c.id).where(editions.c.date == day)
        ).scalar_one()
        rows = connection.execute(
            select(deliveries)
            .where(deliveries.c.edition_id == edition_id, deliveries.c.is_test.is_(False))
            .order_by(deliveries.c.id)
        ).mappings()
        return [Delivery.model_validate(dict(row)) for row in rows]


def edition_status(engine: Engine, day: dt.date = DAY) -> tuple[EditionStatus, str | None]:
    """The edition's status and reason."""
    with engine.connect() as connection:
        status, reason = connection.execute(
            select(editions.c.status, editions.c.status_reason).where(editions.c.date == day)
        ).one()
    return EditionStatus(status), reason


def subscriber_status(engine: Engine, address: str) -> SubscriberStatus:
    """One subscriber's status."""
    with engine.connect() as connection:
        return SubscriberStatus(
            connection.execute(
                select(subscribers.c.status).where(subscribers.c.email == address)
            ).scalar_one()
        )


def received(server: RecordingSmtpServer) -> Counter[str]:
    """How many copies each address received."""
    return Counter(server.handler.recipients())


def worker_environment(database_url: str, smtp_port: int, **extra: str) -> dict[str, str]:
    """The environment of a sending subprocess: this repo, the test database and SMTP server."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(smtp_port),
        NEWSLETTER_SECRET_KEY="test-secret-key-0123456789",
        NEWSLETTER_BASE_URL="https://news.example.org",
        NEWSLETTER_FROM_ADDRESS="Daily ML Papers <digest@news.example.org>",
        NEWSLETTER_SEND_RETRY_BASE_SECONDS="0",
    )
    env.update(extra)
    return env
