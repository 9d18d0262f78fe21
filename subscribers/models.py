"""The audience's tables: subscribers, and the suppression list that outlives them."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlmodel import Field, SQLModel

from newsletter.core.clock import UtcDateTime, utc_now
from subscribers.addresses import mailbox_of


class SubscriberStatus(StrEnum):
    """Where a subscriber stands; only `confirmed` ones receive digests."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class QueuedEmail(StrEnum):
    """The emails the confirmation queue carries to one reader."""

    CONFIRM = "confirm"  # the double opt-in link, to a pending reader
    WELCOME = "welcome"  # after the click: the preferences and the latest edition


class DigestMode(StrEnum):
    """What a reader's digest holds."""

    PERSONAL = "personal"  # "For you", then "Trending today" without those papers
    TRENDING = "trending"  # the day's popularity ranking only


class Frequency(StrEnum):
    """How often a reader gets a digest."""

    DAILY = "daily"
    WEEKLY = "weekly"


# A weekly reader's `weekly_day` by name (0 = Monday), as forms and messages spell it.
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Verdict(StrEnum):
    """What a reader said about a paper."""

    LIKED = "liked"
    DISLIKED = "disliked"


class JudgementSource(StrEnum):
    """Where a judgement came from; the preferences page shows it."""

    PASTED = "pasted"  # arXiv ids given on the form, the API or the CLI
    LIBRARY = "library"  # a BibTeX export of their reference manager
    EMAIL = "email"  # "More like this" / "Less like this" in a digest


def _mailbox_of_row(context: DefaultExecutionContext) -> str:
    # Every insert, through the ORM or a bulk INSERT, fills the key from the address.
    row = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return mailbox_of(str(row["email"]))


def new_subscriber_key() -> str:
    """A random, opaque key that signed links carry instead of the row id or address."""
    return secrets.token_urlsafe(16)


class Subscriber(SQLModel, table=True):
    """One reader of the digest. The address is unique ignoring case."""

    __tablename__ = "subscribers"
    __table_args__ = (
        Index("ix_subscribers_email_lower", func.lower(Column("email")), unique=True),
        # The console's readers list: one status, in address order (keyset paging).
        Index("ix_subscribers_status_email_lower", "status", func.lower(Column("email"))),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=Column("email", String(320), nullable=False))
    # The address as the suppression list keys it (`subscribers.addresses.mailbox_of`);
    # addresses never change, so it is written once, on insert.
    mailbox: str = Field(
        default=None,
        sa_column=Column(
            "mailbox",
            String(320),
            nullable=False,
            index=True,
            default=_mailbox_of_row,
            server_default="",
        ),
    )
    name: str | None = Field(default=None, max_length=200)
    status: SubscriberStatus = Field(
        default=SubscriberStatus.PENDING, sa_type=String(16), index=True
    )
    key: str = Field(default_factory=new_subscriber_key, unique=True, max_length=64)
    topics: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # What they work on, in their own words (at most 500 characters): the personal
    # digest's strongest cold-start signal.
    interests: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    # "personal": "For you" then "Trending today"; "trending": today's digest only.
    digest_mode: DigestMode = Field(
        default=DigestMode.PERSONAL,
        sa_column=Column(String(16), nullable=False, server_default=DigestMode.PERSONAL.value),
    )
    # How many papers "For you" holds at most.
    personal_count: int = Field(
        default=5, sa_column=Column(Integer, nullable=False, server_default="5")
    )
    # Daily, or weekly on `weekly_day` (0 = Monday): the best of the week not yet sent.
    frequency: Frequency = Field(
        default=Frequency.DAILY,
        sa_column=Column(String(16), nullable=False, server_default=Frequency.DAILY.value),
    )
    weekly_day: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    paused: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    confirmation_sent_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    confirmed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    confirmed_ip: str | None = Field(default=None, max_length=64)
    unsubscribed_at: datetime | None = Field(default=None, sa_type=UtcDateTime, index=True)
    bounced_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class SuppressionReason(StrEnum):
    """Why a mailbox gets no digest until its owner confirms a new sign-up."""

    BOUNCED = "bounced"  # a digest hard-bounced
    COMPLAINED = "complained"  # the reader reported a digest as spam
    ERASED = "erased"  # the reader's data was erased on request; the mailbox stays blocked
    OPERATOR = "operator"  # an operator blocked it


class Suppression(SQLModel, table=True):
    """A mailbox the send path skips, whatever its subscriber rows say; one row per mailbox.

    A lifted suppression stays as a record (`lifted_at`, and the note says how);
    a new suppression of the same mailbox takes the row over again.
    """

    __tablename__ = "suppressions"

    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(sa_column=Column("address", String(320), nullable=False, unique=True))
    reason: SuppressionReason = Field(sa_type=String(16))
    note: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    lifted_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class QueuedConfirmation(SQLModel, table=True):
    """A confirmation email that is due: written with the sign-up, sent by a worker, then deleted.

    One row per subscriber at most. `claimed_at` and `previous_sent_at` are the
    slot the sign-up took (`store.claim_confirmation_slot`), handed back if the
    email cannot be sent at all. A worker leases the row while it sends, so a
    worker that dies mid-send leaves it to the next one when the lease runs out.
    """

    __tablename__ = "confirmation_queue"

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(
        sa_column=Column(
            "subscriber_id",
            Integer,
            ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        )
    )
    claimed_at: datetime = Field(sa_type=UtcDateTime)
    previous_sent_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_type=UtcDateTime, index=True)
    leased_by: str | None = Field(default=None, max_length=200)
    leased_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    # Which email: the double opt-in's link, or the welcome that follows the click.
    kind: QueuedEmail = Field(
        default=QueuedEmail.CONFIRM,
        sa_column=Column(String(16), nullable=False, server_default=QueuedEmail.CONFIRM.value),
    )


class ReaderPaper(SQLModel, table=True):
    """A paper a reader judged: liked (pasted, from their library, from an email) or disliked.

    Papers from a BibTeX library may have no arXiv id and may not be stored
    among the papers, so the row keeps their title and abstract: the profile
    reads them as text. `paper_key` is the arXiv id, or `title:` and a hash of
    the normalised title, so a paper is judged once per reader.
    """

    __tablename__ = "reader_papers"
    __table_args__ = (
        Index("uq_reader_papers_subscriber_paper", "subscriber_id", "paper_key", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    paper_key: str = Field(max_length=80)
    arxiv_id: str | None = Field(default=None, max_length=32)
    title: str = Field(default="", sa_column=Column(Text, nullable=False))
    abstract: str = Field(default="", sa_column=Column(Text, nullable=False))
    verdict: Verdict = Field(sa_type=String(16))
    source: JudgementSource = Field(sa_type=String(16))
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class ReceivedSignup(SQLModel, table=True):
    """A sign-up as it was answered: written before the answer, deleted as it is recorded.

    The answer waits for this row alone, the same insert whatever the address,
    so neither its timing nor a crash after it says or loses anything; the
    recording (`subscribers.received`) reads and writes differently for a new,
    pending, confirmed or departed address, and comes after the answer.
    """

    __tablename__ = "received_signups"

    id: int | None = Field(default=None, primary_key=True)
    # SignupDetails as plain values; `trap` marks a filled-in honeypot (dropped unrecorded).
    details: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(sa_type=UtcDateTime, index=True)
