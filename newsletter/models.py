"""The pipeline's tables: papers, editions and their ranked papers, deliveries.

The subscriber table belongs to the audience package (`subscribers.models`);
it is re-exported here so that one import registers every table.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlmodel import Field, SQLModel

from newsletter.core.clock import UtcDateTime, utc_now
from subscribers.models import ReaderPaper, Subscriber, SubscriberStatus

__all__ = [
    "CorpusTerm",
    "Delivery",
    "DeliveryStatus",
    "Edition",
    "EditionPaper",
    "EditionStatus",
    "FeedbackRecord",
    "Paper",
    "ReaderPaper",
    "Selection",
    "SendBreaker",
    "SendPace",
    "Subscriber",
    "SubscriberStatus",
]


class Paper(SQLModel, table=True):
    """One paper, keyed by its arXiv id; every source updates the same row."""

    __tablename__ = "papers"

    id: int | None = Field(default=None, primary_key=True)
    arxiv_id: str = Field(unique=True, max_length=32)
    title: str = Field(sa_column=Column(Text, nullable=False))
    abstract: str = Field(default="", sa_column=Column(Text, nullable=False))
    authors: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    published_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    daily_date: dt.date | None = Field(default=None, index=True)
    upvotes: int = 0
    num_comments: int = 0
    github_repo: str | None = Field(default=None, max_length=500)
    github_stars: int | None = None
    project_page: str | None = Field(default=None, max_length=500)
    thumbnail: str | None = Field(default=None, max_length=500)
    ai_summary: str | None = Field(default=None, sa_column=Column(Text))
    ai_keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    sources: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # The distinct terms this paper added to `corpus_terms` (None: not counted yet),
    # so that new text replaces exactly what the old text counted.
    indexed_terms: list[str] | None = Field(default=None, sa_column=Column(JSON))
    indexed_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: dt.datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    updated_at: dt.datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class CorpusTerm(SQLModel, table=True):
    """How many stored papers hold a term: the document frequencies of personal ranking.

    Kept as counts, so an ingest adds its papers without refitting anything
    (`relevance.terms.TermStatistics`).
    """

    __tablename__ = "corpus_terms"

    term: str = Field(primary_key=True, max_length=200)
    papers: int = 0


class EditionStatus(StrEnum):
    """The life of one day's digest."""

    DRAFT = "draft"  # ranked and rendered, not sent
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"  # every queued reader got it (or left meanwhile)
    FINISHED_WITH_FAILURES = "finished_with_failures"  # nothing queued, someone not reached
    CANCELLED = "cancelled"


class Edition(SQLModel, table=True):
    """One digest per date: its ranked papers and its rendered, non-personal body."""

    __tablename__ = "editions"

    id: int | None = Field(default=None, primary_key=True)
    date: dt.date = Field(unique=True)
    status: EditionStatus = Field(default=EditionStatus.DRAFT, sa_type=String(32))
    subject: str = Field(default="", max_length=300)
    html: str = Field(default="", sa_column=Column(Text, nullable=False))
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    # The random part of this rendering's personal-link placeholders (see
    # values.PersonalLinks): feed text cannot guess it, so only the template's
    # own link positions are ever filled. Rows rendered before it existed hold "".
    link_marker: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    status_reason: str | None = Field(default=None, sa_column=Column(Text))
    created_at: dt.datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    rendered_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    send_started_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    send_finished_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)


class EditionPaper(SQLModel, table=True):
    """A paper's place in an edition."""

    __tablename__ = "edition_papers"

    edition_id: int = Field(foreign_key="editions.id", primary_key=True)
    paper_id: int = Field(foreign_key="papers.id", primary_key=True)
    position: int
    score: float


class DeliveryStatus(StrEnum):
    """The outcome of one message to one recipient."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"  # refused at RCPT, or a hard bounce reported later
    # The reader unsubscribed, bounced or paused after the audience was fixed:
    # no message went out, and that is no failure of the send.
    SKIPPED = "skipped"
    COMPLAINED = "complained"  # delivered, then reported as spam by the reader


class Delivery(SQLModel, table=True):
    """The ledger: one row per (edition, subscriber), written before the first attempt.

    Test sends have no subscriber and are marked `is_test`. A worker claims a
    row by setting `lease_owner` and `lease_expires_at`; a row whose lease has
    expired returns to the queue.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
        Index("ix_deliveries_claim", "edition_id", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="editions.id")
    subscriber_id: int | None = Field(default=None, foreign_key="subscribers.id", index=True)
    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=200)
    subscriber_key: str | None = Field(default=None, max_length=64)
    is_test: bool = False
    status: DeliveryStatus = Field(default=DeliveryStatus.QUEUED, sa_type=String(16))
    attempts: int = 0
    last_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    message_id: str | None = Field(default=None, max_length=255)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    next_attempt_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: dt.datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    updated_at: dt.datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    sent_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    # The reader's own "For you" papers (None: the trending digest alone).
    selection_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("selections.id", name="fk_deliveries_selection_id"), nullable=True
        ),
    )


class Selection(SQLModel, table=True):
    """One "For you" section of an edition; readers who get the same papers share it.

    `picks` is the list of `{"arxiv_id", "score", "why"}`, best first, that the
    ledger rows pointing here carried: what feedback links and the reader's own
    copy refer to.
    """

    __tablename__ = "selections"
    __table_args__ = (
        UniqueConstraint("edition_id", "fingerprint", name="uq_selections_edition_fingerprint"),
    )

    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="editions.id", index=True)
    fingerprint: str = Field(max_length=64)
    picks: list[dict[str, object]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    # False: no "For you" section (a weekly reader of the trending digest).
    for_you: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=true())
    )
    # A weekly reader's "Trending this week" (arXiv ids, best first); None: today's ranking.
    trending: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: dt.datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class FeedbackRecord(SQLModel, table=True):
    """One bounce or complaint reported after sending (`delivery.feedback` writes it).

    `dedupe_key` makes the same report delivered twice one row; soft bounces of
    a mailbox are counted here for the N-within-M-days rule.
    """

    __tablename__ = "feedback_events"
    __table_args__ = (Index("ix_feedback_events_address", "address", "kind", "occurred_at"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=16)  # hard_bounce, soft_bounce, complaint
    source: str = Field(max_length=16)  # dsn, bounce-text, arf, ses, ...
    address: str = Field(max_length=320)  # the mailbox (subscribers.addresses.mailbox_of)
    delivery_id: int | None = Field(default=None, foreign_key="deliveries.id", index=True)
    subscriber_id: int | None = Field(default=None, foreign_key="subscribers.id")
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    message_id: str | None = Field(default=None, max_length=255)
    occurred_at: dt.datetime = Field(sa_type=UtcDateTime)
    created_at: dt.datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class SendPace(SQLModel, table=True):
    """The relay's pace shared by every worker: token buckets debited a batch at a time.

    One row (id 1). A NULL bucket is full; `refilled_at` is when the buckets
    were last brought up to date (see `delivery.pacing`).
    """

    __tablename__ = "send_pace"

    id: int = Field(primary_key=True)
    second_tokens: float | None = None
    hour_tokens: float | None = None
    refilled_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)


class SendBreaker(SQLModel, table=True):
    """An edition's failure breaker, shared by every worker (see `delivery.breaker`)."""

    __tablename__ = "send_breakers"

    edition_id: int = Field(foreign_key="editions.id", primary_key=True)
    attempts: int = 0  # in the window (at most NEWSLETTER_SEND_FAILURE_WINDOW)
    failures: int = 0  # of those attempts
    failing_in_a_row: int = 0
    updated_at: dt.datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
