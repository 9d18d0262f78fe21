"""The subscriber table."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, Index, String, func
from sqlmodel import Field, SQLModel

from newsletter.clock import UtcDateTime, utc_now


class SubscriberStatus(StrEnum):
    """Where a subscriber stands; only `confirmed` ones receive digests."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


def new_subscriber_key() -> str:
    """A random, opaque key that signed links carry instead of the row id or address."""
    return secrets.token_urlsafe(16)


class Subscriber(SQLModel, table=True):
    """One reader of the digest. The address is unique ignoring case."""

    __tablename__ = "subscribers"
    __table_args__ = (
        Index("ix_subscribers_email_lower", func.lower(Column("email")), unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=Column("email", String(320), nullable=False))
    name: str | None = Field(default=None, max_length=200)
    status: SubscriberStatus = Field(
        default=SubscriberStatus.PENDING, sa_type=String(16), index=True
    )
    key: str = Field(default_factory=new_subscriber_key, unique=True, max_length=64)
    topics: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    paused: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    confirmation_sent_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    confirmed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    confirmed_ip: str | None = Field(default=None, max_length=64)
    unsubscribed_at: datetime | None = Field(default=None, sa_type=UtcDateTime, index=True)
    bounced_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
