"""Reading and changing subscribers: the only module that writes the subscriber table."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Protocol

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from sqlalchemy import bindparam, case, delete, func, or_, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from newsletter.core.clock import UtcDateTime, utc_now
from newsletter.core.db import upsert_insert
from newsletter.core.errors import (
    InvalidEmailError,
    InvalidSubscriberDetailsError,
    SubscriberNotFoundError,
)
from newsletter.core.text import has_unsafe_characters, single_line
from subscribers.addresses import mailbox_of
from subscribers.models import (
    DigestMode,
    Frequency,
    JudgementSource,
    QueuedConfirmation,
    ReaderPaper,
    Subscriber,
    SubscriberStatus,
    SuppressionReason,
    Verdict,
    new_subscriber_key,
)
from subscribers.suppressions import find_active, reveal, suppress_erased, suppress_subscribers

MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 100
# "What are you working on?": a paragraph, not an essay.
MAX_INTERESTS_LENGTH = 500


def normalise_email(raw: str) -> str:
    """A syntactically valid, normalised address (no DNS look-up), or InvalidEmailError."""
    candidate = raw.strip()
    if not candidate:
        raise InvalidEmailError("an email address is required")
    if len(candidate) > MAX_EMAIL_LENGTH:
        raise InvalidEmailError(f"that address is longer than {MAX_EMAIL_LENGTH} characters")
    if has_unsafe_characters(candidate):
        # Checked before the validator, which is not built for lone surrogates.
        raise InvalidEmailError(
            "that address contains line breaks, control characters or invisible formatting"
        )
    quick = _normalise_common_email(candidate)
    if quick is not None:
        return quick
    try:
        # The sender speaks plain SMTP without SMTPUTF8, so the address must have an
        # ASCII form: an international domain becomes punycode, a non-ASCII mailbox name
        # is refused here rather than failing at every send.
        result = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise InvalidEmailError(f"{candidate!r} is not a valid email address: {error}") from None
    return result.ascii_email or result.normalized


# RFC 5322 dot-atom: a mailbox name the validator returns unchanged.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# Names the validator lower-cases (RFC 2142); they take the full path.
_CASE_INSENSITIVE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def _normalise_common_email(candidate: str) -> str | None:
    """What the validator returns for a plain `name@domain`, checking each domain once; else None.

    An import checks 100,000 addresses on a few thousand domains, and the domain
    is most of the validator's work. Anything unusual (quoting, a display name,
    a non-ASCII or case-insensitive mailbox name, a bad domain) returns None and
    takes the validator's full path, which also words the error.
    """
    local, at, domain = candidate.rpartition("@")
    if not at or not _DOT_ATOM.fullmatch(local) or local.lower() in _CASE_INSENSITIVE_NAMES:
        return None
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None:
        return None
    address = f"{local}@{ascii_domain}"
    return address if len(address) <= MAX_EMAIL_LENGTH else None


@lru_cache(maxsize=8192)
def _ascii_domain(domain: str) -> str | None:
    try:
        result = validate_email(f"a@{domain}", check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return result.ascii_domain


def clean_interests(raw: str | None) -> str:
    """A reader's free-text interests on one line; refused (not cut) when too long."""
    text = single_line(raw or "")
    if len(text) > MAX_INTERESTS_LENGTH:
        raise InvalidSubscriberDetailsError(
            f"interests are limited to {MAX_INTERESTS_LENGTH} characters ({len(text)} given)"
        )
    return text


def clean_name(raw: str | None) -> str | None:
    """A display name safe for headers and pages: one line, no bidi controls, capped."""
    if raw is None:
        return None
    return single_line(raw)[:MAX_NAME_LENGTH].rstrip() or None


def find_subscriber(session: Session, *, email: str) -> Subscriber | None:
    """The subscriber with this address, ignoring case."""
    statement = select(Subscriber).where(func.lower(Subscriber.email) == email.lower())
    return session.exec(statement).first()


def find_subscriber_by_key(session: Session, *, key: str) -> Subscriber | None:
    """The subscriber whose signed links carry this key."""
    return session.exec(select(Subscriber).where(Subscriber.key == key)).first()


def add_subscriber(
    session: Session,
    *,
    email: str,
    name: str | None = None,
    topics: Sequence[str] | None = None,
    interests: str | None = None,
    confirmed: bool = False,
) -> Subscriber:
    """Add an address (operator path); an existing one is updated, and confirmed if asked.

    `topics` must already be checked against the configured ones; None leaves
    an existing reader's topics (and interests) as they are. The command asks
    `check_confirmable` first.
    """
    address = normalise_email(email)
    cleaned_interests = None if interests is None else clean_interests(interests)
    now = utc_now()
    subscriber = find_subscriber(session, email=address)
    if subscriber is None:
        subscriber = Subscriber(
            email=address,
            name=clean_name(name),
            topics=list(topics or ()),
            interests=cleaned_interests or "",
        )
        session.add(subscriber)
    else:
        if name is not None:
            subscriber.name = clean_name(name)
        if topics is not None:
            subscriber.topics = list(topics)
        if cleaned_interests is not None:
            subscriber.interests = cleaned_interests
    if confirmed and subscriber.status != SubscriberStatus.CONFIRMED:
        subscriber.status = SubscriberStatus.CONFIRMED
        subscriber.confirmed_at = now
    subscriber.updated_at = now
    session.flush()
    # An erased address the operator stores again is one the send path must see.
    reveal(session.connection(), address)
    return subscriber


def check_confirmable(session: Session, *, email: str, force: bool) -> None:
    """Refuse an operator's confirming a suppressed mailbox, or a reader who left unless `force`.

    Someone who unsubscribed may have asked to come back (`force`); a bounced,
    complaining or erased mailbox gets nothing until its owner signs up again.
    """
    address = normalise_email(email)
    subscriber = find_subscriber(session, email=address)
    suppression = find_active(session.connection(), address)
    if suppression is not None:
        raise InvalidSubscriberDetailsError(
            f"{address} is suppressed ({suppression.reason}): it gets nothing until its "
            "owner signs up again on the sign-up page; not confirmed"
        )
    if subscriber is not None and subscriber.status == SubscriberStatus.UNSUBSCRIBED and not force:
        raise InvalidSubscriberDetailsError(
            f"{address} unsubscribed earlier: not re-subscribed; "
            "add --force if they asked to come back"
        )


def add_confirmed_subscribers(session: Session, *, emails: Iterable[str]) -> int:
    """Bulk-add already confirmed addresses (imports, demos); returns how many were new."""
    added = 0
    for email in emails:
        if find_subscriber(session, email=email) is None:
            add_subscriber(session, email=email, confirmed=True)
            added += 1
    return added


def iter_subscribers(session: Session, *, batch_size: int = 1000) -> Iterator[Subscriber]:
    """Every subscriber in id order, read in batches so large lists stream."""
    last_id = 0
    while True:
        batch = session.exec(
            select(Subscriber)
            .where(col(Subscriber.id) > last_id)
            .order_by(col(Subscriber.id))
            .limit(batch_size)
        ).all()
        if not batch:
            return
        yield from batch
        last_id = batch[-1].id or last_id


def remove_subscriber(session: Session, *, email: str) -> Subscriber:
    """Unsubscribe an address on an operator's request; it receives nothing more."""
    subscriber = find_subscriber(session, email=email.strip())
    if subscriber is None:
        raise SubscriberNotFoundError(f"no subscriber has the address {email.strip()!r}")
    mark_unsubscribed(subscriber)
    session.flush()
    return subscriber


def mark_unsubscribed(subscriber: Subscriber) -> None:
    """Unsubscribe (idempotent: the first time is the one recorded)."""
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED:
        now = utc_now()
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
        subscriber.unsubscribed_at = now
        subscriber.updated_at = now


def count_by_status(session: Session) -> dict[SubscriberStatus, int]:
    """How many subscribers stand in each status (every status present, zero included)."""
    rows = session.exec(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all()
    counts = {status: 0 for status in SubscriberStatus}
    for status, count in rows:
        counts[SubscriberStatus(status)] = count
    return counts


def add_pending_subscriber(
    session: Session, *, email: str, name: str | None, topics: Sequence[str]
) -> Subscriber:
    """The subscriber for a sign-up: a new pending row, or the existing one for that address.

    Two sign-ups of the same new address can race; the loser of the unique
    index finds the winner's row instead of failing.
    """
    existing = find_subscriber(session, email=email)
    if existing is not None:
        return existing
    subscriber = Subscriber(email=email, name=name, topics=list(topics))
    try:
        with session.begin_nested():
            session.add(subscriber)
            session.flush()
    except IntegrityError:
        winner = find_subscriber(session, email=email)
        if winner is None:
            raise
        return winner
    return subscriber


def insert_new_pending(
    session: Session,
    signups: Sequence[NewSignup],
    *,
    now: datetime,
) -> dict[str, tuple[int, str]]:
    """Add the addresses not on the list as pending, their confirmation slots taken at `now`.

    One statement for them all: (id, key) of each new row, by address. An
    address missing from the answer is on the list already (or a racing
    sign-up, or an earlier one of `signups`, just added it), which the caller
    then handles as an existing subscriber.
    """
    if not signups:
        return {}
    connection = session.connection()
    values = [
        {
            "email": signup.email,
            "mailbox": mailbox_of(signup.email),
            "name": signup.name,
            "status": SubscriberStatus.PENDING.value,
            "key": new_subscriber_key(),
            "topics": list(signup.topics),
            "interests": signup.profile.interests if signup.profile else "",
            "digest_mode": (
                signup.profile.digest_mode if signup.profile else DigestMode.PERSONAL
            ).value,
            "personal_count": signup.profile.personal_count if signup.profile else 5,
            "frequency": (signup.profile.frequency if signup.profile else Frequency.DAILY).value,
            "weekly_day": signup.profile.weekly_day if signup.profile else 0,
            "paused": False,
            "created_at": now,
            "updated_at": now,
            "confirmation_sent_at": now,
        }
        for signup in signups
    ]
    if connection.dialect.name == "postgresql" and len(values) > 1:
        # One row per array element: the statement's text and its 12 parameters are the
        # same for any batch, so the driver parses it once (many VALUES rows, 15
        # parameters each, it would parse again for every batch).
        columns = {name: [row[name] for row in values] for name in _PER_ROW_COLUMNS}
        columns["topics"] = [json.dumps(row["topics"]) for row in values]
        status = SubscriberStatus.PENDING.value
        rows = connection.execute(_NEW_PENDING_UNNEST, {**columns, "status": status, "now": now})
    else:
        # Several rows make one INSERT with many VALUES (SQLAlchemy's "insertmanyvalues").
        statement = _new_pending_statement(connection.dialect.name)
        rows = connection.execute(statement, values[0] if len(values) == 1 else values)
    return {row[2]: (row[0], row[1]) for row in rows.all()}


_PER_ROW_COLUMNS: Final = (
    "email",
    "mailbox",
    "name",
    "key",
    "interests",
    "digest_mode",
    "personal_count",
    "frequency",
    "weekly_day",
)
# `insert_new_pending` on PostgreSQL: the new rows from one array per column. ON CONFLICT
# covers the unique index on lower(email), and skips the second of two rows with one address.
_NEW_PENDING_UNNEST: Final = text(
    """
    INSERT INTO subscribers (email, mailbox, name, status, key, topics, interests, digest_mode,
        personal_count, frequency, weekly_day, paused, created_at, updated_at,
        confirmation_sent_at)
    SELECT email, mailbox, name, :status, key, CAST(topics AS json), interests, digest_mode,
        personal_count, frequency, weekly_day, false, :now, :now, :now
    FROM unnest(CAST(:email AS varchar[]), CAST(:mailbox AS varchar[]),
        CAST(:name AS varchar[]), CAST(:key AS varchar[]), CAST(:topics AS text[]),
        CAST(:interests AS text[]), CAST(:digest_mode AS varchar[]),
        CAST(:personal_count AS integer[]), CAST(:frequency AS varchar[]),
        CAST(:weekly_day AS integer[]))
        AS new (email, mailbox, name, key, topics, interests, digest_mode, personal_count,
            frequency, weekly_day)
    ON CONFLICT DO NOTHING
    RETURNING id, key, email
    """
).bindparams(bindparam("now", type_=UtcDateTime))


class NewSignup(Protocol):
    """What `insert_new_pending` reads of a sign-up."""

    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def topics(self) -> Sequence[str]: ...
    @property
    def profile(self) -> Profile | None: ...


@lru_cache(maxsize=4)
def _new_pending_statement(dialect_name: str) -> Any:
    # Built once per dialect; ON CONFLICT covers the unique index on lower(email), and skips
    # the second of two rows of one statement with the same address.
    table = Subscriber.__table__  # type: ignore[attr-defined]
    insert = upsert_insert(dialect_name, table)
    return insert.on_conflict_do_nothing().returning(table.c.id, table.c.key, table.c.email)


def reopen_subscription(subscriber: Subscriber, *, name: str | None, topics: Sequence[str]) -> None:
    """Put a not-yet-confirmed or departed address back to pending with the details it gave."""
    subscriber.status = SubscriberStatus.PENDING
    subscriber.name = name
    subscriber.topics = list(topics)
    subscriber.paused = False
    subscriber.updated_at = utc_now()


@dataclass(frozen=True, slots=True)
class ConfirmationClaim:
    """The right, taken at `claimed_at`, to send one confirmation email to a subscriber."""

    subscriber_key: str
    claimed_at: datetime
    previous_sent_at: datetime | None


def claim_confirmation_slot(
    session: Session, subscriber: Subscriber, *, now: datetime, interval_seconds: int
) -> ConfirmationClaim | None:
    """Reserve the right to send a confirmation now; None when one went out too recently.

    The check and the write are one UPDATE, so two simultaneous sign-ups of one
    address send one email. A failed send hands the slot back with
    `release_confirmation_slot`.
    """
    assert subscriber.id is not None
    previous = subscriber.confirmation_sent_at
    threshold = now - timedelta(seconds=interval_seconds)
    result = session.exec(
        update(Subscriber)
        .where(col(Subscriber.id) == subscriber.id)
        .where(
            or_(
                col(Subscriber.confirmation_sent_at).is_(None),
                col(Subscriber.confirmation_sent_at) <= threshold,
            )
        )
        .values(confirmation_sent_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    set_committed_value(subscriber, "confirmation_sent_at", now)
    return ConfirmationClaim(
        subscriber_key=subscriber.key, claimed_at=now, previous_sent_at=previous
    )


def release_confirmation_slot(session: Session | Connection, *, claim: ConfirmationClaim) -> None:
    """Undo a claim whose email could not be sent, so the next sign-up may try again."""
    session.execute(
        update(Subscriber)
        .where(col(Subscriber.key) == claim.subscriber_key)
        .where(col(Subscriber.confirmation_sent_at) == claim.claimed_at)
        .values(confirmation_sent_at=claim.previous_sent_at)
        .execution_options(synchronize_session=False)
    )


def mark_confirmed(subscriber: Subscriber, *, now: datetime, client_address: str | None) -> None:
    """Record the double opt-in: when, and from which client address."""
    subscriber.status = SubscriberStatus.CONFIRMED
    subscriber.confirmed_at = now
    subscriber.confirmed_ip = client_address[:64] if client_address else None
    subscriber.paused = False
    subscriber.updated_at = now


def update_details(subscriber: Subscriber, *, name: str | None, topics: Sequence[str]) -> None:
    """Change the name and followed topics a subscriber chose."""
    subscriber.name = name
    subscriber.topics = list(topics)
    subscriber.updated_at = utc_now()


def set_paused(subscriber: Subscriber, *, paused: bool) -> None:
    """Pause or resume digests without leaving the list."""
    subscriber.paused = paused
    subscriber.updated_at = utc_now()


def mark_bounced(
    connection: Connection,
    *,
    bounces: Sequence[tuple[str | None, str]],
    now: datetime,
) -> int:
    """Mark the subscribers behind hard bounces `bounced` and suppress their mailboxes.

    Set-based, on the send path's connection and transaction. `bounces` holds
    (subscriber key, what the server said). The status keeps this subscriber
    row out of later editions; the suppression keeps the mailbox out whatever
    any of its rows say later, until its owner confirms. Returns how many
    subscribers it newly made `bounced`.
    """
    known = [(key, note) for key, note in bounces if key]
    if not known:
        return 0
    table = Subscriber.__table__  # type: ignore[attr-defined]
    changed: int = connection.execute(
        update(table)
        .where(
            table.c.key.in_([key for key, _ in known]),
            # An address that left or complained keeps that (stronger) status.
            table.c.status.in_([SubscriberStatus.CONFIRMED.value, SubscriberStatus.PENDING.value]),
        )
        .values(status=SubscriberStatus.BOUNCED.value, bounced_at=now, updated_at=now)
    ).rowcount
    suppress_subscribers(connection, known, reason=SuppressionReason.BOUNCED, now=now)
    return changed


def mark_complained(
    connection: Connection,
    *,
    complaints: Sequence[tuple[str, str]],
    now: datetime,
) -> int:
    """Unsubscribe the subscribers behind spam complaints (`complained`) and suppress them.

    `complaints` holds (subscriber key, the report's reason). A complaint
    outweighs every other status; returns how many subscribers it newly changed.
    """
    if not complaints:
        return 0
    table = Subscriber.__table__  # type: ignore[attr-defined]
    changed: int = connection.execute(
        update(table)
        .where(
            table.c.key.in_([key for key, _ in complaints]),
            table.c.status != SubscriberStatus.COMPLAINED.value,
        )
        .values(
            status=SubscriberStatus.COMPLAINED.value,
            unsubscribed_at=func.coalesce(table.c.unsubscribed_at, now),
            updated_at=now,
        )
    ).rowcount
    suppress_subscribers(connection, complaints, reason=SuppressionReason.COMPLAINED, now=now)
    return changed


@dataclass(frozen=True, slots=True)
class ImportedSubscriber:
    """One checked row of an import: a normalised address and what to store for it."""

    email: str
    name: str | None
    topics: tuple[str, ...]
    status: SubscriberStatus  # pending, confirmed or unsubscribed
    interests: str = ""


@dataclass(frozen=True, slots=True)
class ImportBatchResult:
    """What one batch did: rows added, addresses already present, and re-subscribed ones."""

    added: list[str]  # addresses
    already_present: list[str]
    unsubscribed_kept: list[str]  # present as unsubscribed; left alone without `force`
    resubscribed: list[str]
    opted_out: list[str]  # on the list here, unsubscribed in the file: now unsubscribed
    pending_keys: list[str]  # pending rows of this batch that have never been sent a confirmation


def existing_statuses(
    session: Session, *, emails: Sequence[str]
) -> dict[str, tuple[SubscriberStatus, str, datetime | None]]:
    """For these addresses (lower-cased), the stored (status, key, confirmation_sent_at)."""
    lowered = [email.lower() for email in emails]
    if not lowered:
        return {}
    rows = session.exec(
        select(
            func.lower(Subscriber.email),
            Subscriber.status,
            Subscriber.key,
            Subscriber.confirmation_sent_at,
        ).where(func.lower(Subscriber.email).in_(lowered))
    ).all()
    return {row[0]: (SubscriberStatus(row[1]), row[2], row[3]) for row in rows}


def import_subscribers(
    session: Session,
    rows: Sequence[ImportedSubscriber],
    *,
    force: bool,
    now: datetime,
) -> ImportBatchResult:
    """Add a batch of checked, deduplicated, unsuppressed rows in the caller's transaction.

    An address already on the list is left as it is, except that an
    `unsubscribed` row unsubscribes a pending or confirmed reader (the list
    keeps its opt-outs) and `force` re-subscribes one that unsubscribed (to the
    row's status). New rows are
    inserted in one statement; a sign-up racing the import for the same
    address keeps its row (ON CONFLICT DO NOTHING).
    """
    result = ImportBatchResult([], [], [], [], [], [])
    existing = existing_statuses(session, emails=[row.email for row in rows])
    new_rows: list[dict[str, object]] = []
    for row in rows:
        found = existing.get(row.email.lower())
        if found is None:
            key = new_subscriber_key()
            new_rows.append(_new_row(row, key=key, now=now))
            result.added.append(row.email)
            if row.status == SubscriberStatus.PENDING:
                result.pending_keys.append(key)
            continue
        status, key, sent_at = found
        wants_subscription = row.status != SubscriberStatus.UNSUBSCRIBED
        if status == SubscriberStatus.UNSUBSCRIBED and wants_subscription:
            if not force:
                result.unsubscribed_kept.append(row.email)
                continue
            _resubscribe(session, key=key, row=row, now=now)
            result.resubscribed.append(row.email)
            if row.status == SubscriberStatus.PENDING:
                result.pending_keys.append(key)
            continue
        if not wants_subscription and status in _SUBSCRIBED:
            # An opt-out the list brings along wins over a subscription made here.
            _unsubscribe_by_key(session, key=key, now=now)
            result.opted_out.append(row.email)
            continue
        result.already_present.append(row.email)
        # A rerun finishes what a crashed run left: pending rows never asked to confirm.
        if status == SubscriberStatus.PENDING and sent_at is None and wants_subscription:
            result.pending_keys.append(key)
    if new_rows:
        table = Subscriber.__table__  # type: ignore[attr-defined]
        dialect = session.connection().dialect.name
        insert = upsert_insert(dialect, table)
        session.connection().execute(insert.on_conflict_do_nothing(), new_rows)
    return result


def _new_row(row: ImportedSubscriber, *, key: str, now: datetime) -> dict[str, object]:
    confirmed = row.status == SubscriberStatus.CONFIRMED
    unsubscribed = row.status == SubscriberStatus.UNSUBSCRIBED
    return {
        "email": row.email,
        "mailbox": mailbox_of(row.email),
        "name": row.name,
        "status": row.status.value,
        "key": key,
        "topics": list(row.topics),
        "interests": row.interests,
        "digest_mode": "personal",
        "personal_count": 5,
        "frequency": "daily",
        "weekly_day": 0,
        "paused": False,
        "created_at": now,
        "updated_at": now,
        "confirmation_sent_at": None,
        "confirmed_at": now if confirmed else None,
        "confirmed_ip": None,
        "unsubscribed_at": now if unsubscribed else None,
        "bounced_at": None,
    }


_SUBSCRIBED = (SubscriberStatus.PENDING, SubscriberStatus.CONFIRMED)


def _unsubscribe_by_key(session: Session, *, key: str, now: datetime) -> None:
    session.exec(
        update(Subscriber)
        .where(col(Subscriber.key) == key)
        .values(status=SubscriberStatus.UNSUBSCRIBED.value, unsubscribed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def _resubscribe(session: Session, *, key: str, row: ImportedSubscriber, now: datetime) -> None:
    confirmed = row.status == SubscriberStatus.CONFIRMED
    session.exec(
        update(Subscriber)
        .where(col(Subscriber.key) == key)
        .values(
            status=row.status.value,
            confirmed_at=now if confirmed else None,
            unsubscribed_at=None,
            paused=False,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


MIN_PERSONAL_COUNT = 1
MAX_PERSONAL_COUNT = 10


@dataclass(frozen=True, slots=True)
class Profile:
    """What shapes a reader's digest, as they chose it (checked by `check_profile`)."""

    interests: str
    digest_mode: DigestMode
    personal_count: int
    frequency: Frequency
    weekly_day: int


def check_profile(
    *,
    interests: str | None,
    digest_mode: str,
    personal_count: int,
    frequency: str,
    weekly_day: int,
) -> Profile:
    """The profile with every value checked; InvalidSubscriberDetailsError names what is wrong."""
    try:
        mode = DigestMode(digest_mode)
    except ValueError:
        raise InvalidSubscriberDetailsError(
            "the digest is either 'personal' (For you, then trending) or 'trending'"
        ) from None
    try:
        how_often = Frequency(frequency)
    except ValueError:
        raise InvalidSubscriberDetailsError("the digest comes 'daily' or 'weekly'") from None
    if not MIN_PERSONAL_COUNT <= personal_count <= MAX_PERSONAL_COUNT:
        raise InvalidSubscriberDetailsError(
            f"choose between {MIN_PERSONAL_COUNT} and {MAX_PERSONAL_COUNT} papers"
        )
    if not 0 <= weekly_day <= 6:
        raise InvalidSubscriberDetailsError("the weekly day is 0 (Monday) to 6 (Sunday)")
    return Profile(
        interests=clean_interests(interests),
        digest_mode=mode,
        personal_count=personal_count,
        frequency=how_often,
        weekly_day=weekly_day,
    )


def update_profile(subscriber: Subscriber, *, profile: Profile) -> None:
    """Store the reader's interests, digest mode, paper count and frequency."""
    subscriber.interests = profile.interests
    subscriber.digest_mode = profile.digest_mode
    subscriber.personal_count = profile.personal_count
    subscriber.frequency = profile.frequency
    subscriber.weekly_day = profile.weekly_day
    subscriber.updated_at = utc_now()


@dataclass(frozen=True, slots=True)
class JudgedPaper:
    """A paper a reader liked or disliked, about to be stored."""

    arxiv_id: str | None
    title: str
    abstract: str
    verdict: Verdict
    source: JudgementSource


def paper_key_of(*, arxiv_id: str | None, title: str) -> str:
    """The arXiv id, or `title:` and a hash of the normalised title (one judgement per paper)."""
    if arxiv_id:
        return arxiv_id
    normalised = " ".join(title.casefold().split())
    return "title:" + hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:40]


def save_judged_papers(
    session: Session, *, subscriber_id: int, papers: Sequence[JudgedPaper], now: datetime
) -> int:
    """Record judgements, the latest one winning per paper; returns how many papers were new.

    A title or abstract already known is kept when the new judgement brings none.
    """
    keyed = {paper_key_of(arxiv_id=p.arxiv_id, title=p.title): p for p in papers}
    if not keyed:
        return 0
    known = set(
        session.exec(
            select(ReaderPaper.paper_key).where(
                col(ReaderPaper.subscriber_id) == subscriber_id,
                col(ReaderPaper.paper_key).in_(list(keyed)),
            )
        ).all()
    )
    _upsert_judgements(session, subscriber_id=subscriber_id, keyed=keyed, now=now)
    return len(keyed.keys() - known)


# Rows per INSERT: far below SQLite's limit on bound parameters (nine per row).
_JUDGEMENTS_PER_STATEMENT = 500


def _upsert_judgements(
    session: Session,
    *,
    subscriber_id: int,
    keyed: dict[str, JudgedPaper],
    now: datetime,
    replace: bool = True,
) -> int:
    """The one write of `reader_papers`: insert each paper, or replace the reader's verdict.

    One statement per batch, so two requests judging the same paper at once end
    in one row (the unique index decides) instead of an integrity error. With
    `replace=False` a paper already judged is left alone. Returns the rows written.
    """
    table = ReaderPaper.__table__  # type: ignore[attr-defined]
    rows = [
        {
            "subscriber_id": subscriber_id,
            "paper_key": key,
            "arxiv_id": paper.arxiv_id,
            "title": paper.title,
            "abstract": paper.abstract,
            "verdict": paper.verdict.value,
            "source": paper.source.value,
            "created_at": now,
            "updated_at": now,
        }
        for key, paper in keyed.items()
    ]
    written = 0
    for start in range(0, len(rows), _JUDGEMENTS_PER_STATEMENT):
        insert = upsert_insert(session.get_bind().dialect.name, table).values(
            rows[start : start + _JUDGEMENTS_PER_STATEMENT]
        )
        new = insert.excluded
        statement = (
            insert.on_conflict_do_update(
                index_elements=["subscriber_id", "paper_key"],
                set_={
                    "verdict": new.verdict,
                    "source": new.source,
                    "title": case((new.title != "", new.title), else_=table.c.title),
                    "abstract": case((new.abstract != "", new.abstract), else_=table.c.abstract),
                    "arxiv_id": func.coalesce(new.arxiv_id, table.c.arxiv_id),
                    "updated_at": new.updated_at,
                },
            )
            if replace
            else insert.on_conflict_do_nothing(index_elements=["subscriber_id", "paper_key"])
        )
        written += len(session.execute(statement.returning(table.c.id)).all())
    # Rows of this reader already loaded in the session are stale now.
    for loaded in list(session.identity_map.values()):
        if isinstance(loaded, ReaderPaper) and loaded.subscriber_id == subscriber_id:
            session.expire(loaded)
    return written


def erase_subscriber(session: Session, *, subscriber: Subscriber, now: datetime) -> None:
    """Delete the reader's rows (judged papers, queued confirmation, the subscriber itself).

    Their mailbox stays on the suppression list as a hash only. Rows of other
    tables that point at the subscriber (the delivery ledger, feedback events)
    must be detached first by their owners (`newsletter.privacy`).
    """
    assert subscriber.id is not None
    connection = session.connection()
    suppress_erased(connection, subscriber.email, now=now)
    session.exec(delete(ReaderPaper).where(col(ReaderPaper.subscriber_id) == subscriber.id))
    session.exec(
        delete(QueuedConfirmation).where(col(QueuedConfirmation.subscriber_id) == subscriber.id)
    )
    session.delete(subscriber)
    session.flush()


@dataclass(frozen=True, slots=True)
class Judgement:
    """What a reader had said about a paper (kept so a change can be undone)."""

    verdict: Verdict
    source: JudgementSource


def list_judgements(session: Session, *, subscriber_id: int) -> list[ReaderPaper]:
    """The papers a reader judged, the latest change first."""
    statement = (
        select(ReaderPaper)
        .where(ReaderPaper.subscriber_id == subscriber_id)
        .order_by(col(ReaderPaper.updated_at).desc(), col(ReaderPaper.id).desc())
    )
    return list(session.exec(statement).all())


def find_judgement(session: Session, *, subscriber_id: int, paper_key: str) -> ReaderPaper | None:
    """The reader's judgement of one paper, if any."""
    statement = select(ReaderPaper).where(
        ReaderPaper.subscriber_id == subscriber_id, ReaderPaper.paper_key == paper_key
    )
    return session.exec(statement).first()


def record_judgement(
    session: Session,
    *,
    subscriber_id: int,
    paper_key: str,
    arxiv_id: str | None,
    title: str,
    abstract: str,
    verdict: Verdict,
    source: JudgementSource,
    now: datetime | None = None,
) -> Judgement | None:
    """Record a reader's verdict on a paper, replacing any earlier one; what it replaced."""
    moment = now or utc_now()
    keyed = {
        paper_key: JudgedPaper(
            arxiv_id=arxiv_id, title=title, abstract=abstract, verdict=verdict, source=source
        )
    }
    existing = find_judgement(session, subscriber_id=subscriber_id, paper_key=paper_key)
    if existing is None:
        if _upsert_judgements(
            session, subscriber_id=subscriber_id, keyed=keyed, now=moment, replace=False
        ):
            return None
        # Another request recorded this paper meanwhile: this replaces what it said.
        existing = find_judgement(session, subscriber_id=subscriber_id, paper_key=paper_key)
        if existing is None:
            raise RuntimeError("a judgement that conflicted on insert cannot be found")
    previous = Judgement(Verdict(existing.verdict), JudgementSource(existing.source))
    _upsert_judgements(session, subscriber_id=subscriber_id, keyed=keyed, now=moment)
    return previous


def restore_judgement(
    session: Session, *, subscriber_id: int, paper_key: str, previous: Judgement | None
) -> None:
    """Undo: put back what the reader had said about a paper (None: nothing, so remove it)."""
    existing = find_judgement(session, subscriber_id=subscriber_id, paper_key=paper_key)
    if existing is None:
        return
    if previous is None:
        session.delete(existing)
        return
    existing.verdict = previous.verdict
    existing.source = previous.source
    existing.updated_at = utc_now()
    session.add(existing)


def remove_judgement(session: Session, *, subscriber_id: int, paper_key: str) -> bool:
    """Forget the reader's judgement of a paper; False when there was none."""
    existing = find_judgement(session, subscriber_id=subscriber_id, paper_key=paper_key)
    if existing is None:
        return False
    session.delete(existing)
    return True


def flip_judgement(session: Session, *, subscriber_id: int, paper_key: str) -> ReaderPaper | None:
    """Turn liked into disliked and back; None when the reader had not judged the paper."""
    existing = find_judgement(session, subscriber_id=subscriber_id, paper_key=paper_key)
    if existing is None:
        return None
    liked = Verdict(existing.verdict) is Verdict.LIKED
    existing.verdict = Verdict.DISLIKED if liked else Verdict.LIKED
    existing.updated_at = utc_now()
    session.add(existing)
    return existing
