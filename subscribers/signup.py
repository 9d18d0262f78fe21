"""Joining and leaving: sign-up, double opt-in, unsubscribe and preferences.

These functions hold the rules and touch only a `Session` (writes go through
`subscribers.store` and `subscribers.confirmation_queue`); the web routes add
HTTP and the rate limit around them. A confirmation that is due is queued in
the caller's transaction; a worker builds and sends it
(`newsletter.delivery.confirmations`). Callers commit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from typing import Protocol

from jinja2 import Environment
from sqlmodel import Session

from newsletter.core.clock import utc_now
from newsletter.core.dkim import DkimSigner
from newsletter.core.errors import InvalidSubscriberDetailsError, InvalidTokenError
from newsletter.core.headers import (
    mailbox_header,
    mailbox_setting_header,
    unstructured_header,
)
from newsletter.core.mime import OutgoingMessage, compose_alternative
from newsletter.core.settings import Settings
from newsletter.core.templating import render_email
from subscribers import confirmation_queue, store, suppressions
from subscribers.models import QueuedEmail, Subscriber, SubscriberStatus
from subscribers.store import ConfirmationClaim
from subscribers.tokens import (
    confirm_url,
    preferences_url,
    read_confirm_token_issued,
    read_preferences_token,
    read_unsubscribe_token,
    unsubscribe_url,
)

logger = logging.getLogger(__name__)

# Angle brackets are the one thing a real name never needs and markup always does.
_MARKUP = re.compile(r"[<>]")
MAX_TOPICS_INPUT = 50


class ConfirmationQuota(Protocol):
    """Caps on confirmation emails (per mailbox, per domain) that a sign-up must fit in."""

    def reserve(self, address: str) -> str | None:
        """Count one confirmation email to this address if allowed, else say why not."""
        ...


@dataclass(frozen=True, slots=True)
class SignupDetails:
    """A sign-up after validation: a normalised address, a clean name, known topics.

    `profile` (None: the defaults) and `liked_ids` (pasted arXiv ids) are the
    personal digest's answers; they are stored for a new or pending address
    only, never over a confirmed reader's own.
    """

    email: str
    name: str | None
    topics: tuple[str, ...]
    profile: store.Profile | None = None
    liked_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfirmationEmail:
    """A confirmation that is due, with the claim to hand back if it cannot be sent."""

    email: str
    name: str | None
    claim: ConfirmationClaim


class ConfirmOutcome(StrEnum):
    """What a confirmation link does (or did) for its subscriber."""

    CONFIRMABLE = "confirmable"  # pending: the button will confirm
    CONFIRMED = "confirmed"  # confirmed by this request
    ALREADY_CONFIRMED = "already-confirmed"
    NO_LONGER_VALID = "no-longer-valid"  # the address left or bounced since the link went out


class PreferencesAction(StrEnum):
    """The buttons of the preferences page."""

    SAVE = "save"
    PAUSE = "pause"
    RESUME = "resume"
    UNSUBSCRIBE = "unsubscribe"


def validate_name(raw: str | None) -> str | None:
    """A display name with line breaks collapsed; markup is refused rather than mangled."""
    name = store.clean_name(raw)
    if name is not None and _MARKUP.search(name):
        raise InvalidSubscriberDetailsError("a name cannot contain < or >")
    return name


def validate_topics(settings: Settings, raw: Iterable[str]) -> tuple[str, ...]:
    """The chosen topics as configured (spelling and order); unknown ones are refused."""
    chosen = [topic.strip() for topic in raw if topic.strip()]
    if len(chosen) > MAX_TOPICS_INPUT:
        raise InvalidSubscriberDetailsError("too many topics chosen")
    known = {topic.casefold(): topic for topic in settings.topics}
    unknown = [topic for topic in chosen if topic.casefold() not in known]
    if unknown:
        raise InvalidSubscriberDetailsError(
            f"unknown topic {unknown[0][:40]!r}; choose from: {', '.join(settings.topics)}"
        )
    picked = {topic.casefold() for topic in chosen}
    return tuple(topic for topic in settings.topics if topic.casefold() in picked)


def register_signup(
    session: Session,
    settings: Settings,
    details: SignupDetails,
    *,
    now: datetime,
    quota: ConfirmationQuota,
    liked: Sequence[store.JudgedPaper] = (),
) -> ConfirmationEmail | None:
    """Record a sign-up and say whether a confirmation email is due now.

    `liked` holds the papers of `details.liked_ids`, titled by the caller.

    A confirmed address is left exactly as it is (the form must not let a
    stranger change someone's topics); a pending one takes the new details;
    one that left, bounced or complained goes back to pending and must confirm
    again, and so does a confirmed one whose mailbox is suppressed (it gets no
    digest until its owner confirms this sign-up). A confirmation goes out at
    most once per resend interval per address, and only within the quota's
    caps per mailbox and domain. Whatever happens here, the caller answers the
    same thing.
    """
    [confirmation] = register_signups(session, settings, [(details, liked)], now=now, quota=quota)
    return confirmation


def register_signups(
    session: Session,
    settings: Settings,
    signups: Sequence[tuple[SignupDetails, Sequence[store.JudgedPaper]]],
    *,
    now: datetime,
    quota: ConfirmationQuota,
) -> list[ConfirmationEmail | None]:
    """`register_signup` for each (details, liked), in order; the confirmations due.

    The addresses new to the list (the common case) cost two statements
    together, whatever their number: one inserts them all, one queues their
    confirmations. Each of the others (known addresses, and an address given
    twice) is handled as `register_signup` describes.
    """
    created = store.insert_new_pending(session, [details for details, _ in signups], now=now)
    due: list[ConfirmationEmail | None] = []
    queued: list[tuple[int, ConfirmationClaim]] = []
    for details, liked in signups:
        new = created.pop(details.email, None)  # popped: the same address again is known
        if new is None:
            due.append(
                _register_known(session, settings, details, now=now, quota=quota, liked=liked)
            )
            continue
        subscriber_id, key = new
        if liked:
            store.save_judged_papers(session, subscriber_id=subscriber_id, papers=liked, now=now)
        slot = ConfirmationClaim(subscriber_key=key, claimed_at=now, previous_sent_at=None)
        confirmation = ConfirmationEmail(details.email, details.name, slot)
        if not _within_quota(session, quota, confirmation):
            due.append(None)
            continue
        queued.append((subscriber_id, slot))
        due.append(confirmation)
    confirmation_queue.enqueue_many(session, queued)
    return due


def _register_known(
    session: Session,
    settings: Settings,
    details: SignupDetails,
    *,
    now: datetime,
    quota: ConfirmationQuota,
    liked: Sequence[store.JudgedPaper],
) -> ConfirmationEmail | None:
    """A sign-up of an address on the list already (see `register_signup`)."""
    subscriber = store.add_pending_subscriber(
        session, email=details.email, name=details.name, topics=details.topics
    )
    suppressed = suppressions.find_active(session.connection(), subscriber.email) is not None
    if subscriber.status == SubscriberStatus.CONFIRMED and not suppressed:
        return None
    store.reopen_subscription(subscriber, name=details.name, topics=details.topics)
    if details.profile is not None:
        store.update_profile(subscriber, profile=details.profile)
    session.flush()
    if liked:
        assert subscriber.id is not None
        store.save_judged_papers(session, subscriber_id=subscriber.id, papers=liked, now=now)
    claim = store.claim_confirmation_slot(
        session, subscriber, now=now, interval_seconds=settings.confirm_resend_interval_seconds
    )
    if claim is None:
        return None
    assert subscriber.id is not None
    return _queue_within_quota(
        session, quota, subscriber.id, ConfirmationEmail(subscriber.email, subscriber.name, claim)
    )


def _queue_within_quota(
    session: Session, quota: ConfirmationQuota, subscriber_id: int, confirmation: ConfirmationEmail
) -> ConfirmationEmail | None:
    """Queue the claimed confirmation if the caps allow it, else hand the slot back."""
    if not _within_quota(session, quota, confirmation):
        return None
    confirmation_queue.enqueue(session, subscriber_id=subscriber_id, claim=confirmation.claim)
    return confirmation


def _within_quota(
    session: Session, quota: ConfirmationQuota, confirmation: ConfirmationEmail
) -> bool:
    """Whether the caps allow this confirmation; if not, its slot is handed back (and logged)."""
    refused = quota.reserve(confirmation.email)
    if refused is None:
        return True
    store.release_confirmation_slot(session, claim=confirmation.claim)
    logger.warning("no confirmation email to %s: %s", confirmation.email, refused)
    return False


def build_confirmation_message(
    settings: Settings,
    env: Environment,
    confirmation: ConfirmationEmail,
    *,
    now: datetime,
    signer: DkimSigner | None = None,
) -> OutgoingMessage:
    """The double opt-in email: text and HTML, the signed expiring link, Date and Message-ID."""
    link = confirm_url(
        settings.base_url, settings.secret_key, confirmation.claim.subscriber_key, issued_at=now
    )
    days = max(1, settings.confirm_token_max_age_seconds // 86400)
    hours = max(1, settings.confirm_token_max_age_seconds // 3600)
    context: dict[str, object] = {
        "list_name": settings.list_name,
        "name": confirmation.name,
        "confirm_url": link,
        "expires_in": f"{days} day{'s' if days != 1 else ''}"
        if settings.confirm_token_max_age_seconds >= 86400
        else f"{hours} hour{'s' if hours != 1 else ''}",
        "base_url": settings.base_url,
        "postal_address": settings.postal_address,
    }
    subject = f"Confirm your subscription to {settings.list_name}"
    return _one_reader_message(
        settings, env, "confirm", context, confirmation, subject=subject, now=now, signer=signer
    )


def _one_reader_message(
    settings: Settings,
    env: Environment,
    template: str,
    context: dict[str, object],
    reader: ConfirmationEmail,
    *,
    subject: str,
    now: datetime,
    signer: DkimSigner | None,
) -> OutgoingMessage:
    """One templated email to one reader (the confirmation, the welcome), signed if asked."""
    html, text = render_email(env, template, context)
    # Every header is written by newsletter.core.headers: the name is a stranger's
    # text, and the email package's folding would decode encoded-words in it.
    headers = [
        mailbox_setting_header("From", settings.from_address),
        mailbox_header("To", reader.name, reader.email),
        unstructured_header("Subject", subject),
        f"Date: {format_datetime(now)}\r\n".encode("ascii"),
        f"Message-ID: {make_msgid(domain=settings.sender_domain)}\r\n".encode("ascii"),
        b"Auto-Submitted: auto-generated\r\n",
    ]
    if settings.reply_to:
        headers.append(mailbox_setting_header("Reply-To", settings.reply_to))
    data = compose_alternative(headers, text=text, html=html, label=template)
    if signer is not None:
        data = signer.sign(data)
    return OutgoingMessage(
        envelope_from=settings.envelope_sender, recipient=reader.email, data=data
    )


def build_welcome_message(
    settings: Settings,
    env: Environment,
    welcome: ConfirmationEmail,
    *,
    latest_edition_url: str | None,
    first_digest: str,
    now: datetime,
    signer: DkimSigner | None = None,
) -> OutgoingMessage:
    """The short email after confirming: when digests come, the latest one, the preferences."""
    key = welcome.claim.subscriber_key
    context: dict[str, object] = {
        "list_name": settings.list_name,
        "name": welcome.name,
        "first_digest": first_digest,
        "latest_edition_url": latest_edition_url,
        "preferences_url": preferences_url(settings.base_url, settings.secret_key, key),
        "unsubscribe_url": unsubscribe_url(settings.base_url, settings.secret_key, key),
        "postal_address": settings.postal_address,
    }
    subject = f"Welcome to {settings.list_name}"
    return _one_reader_message(
        settings, env, "welcome", context, welcome, subject=subject, now=now, signer=signer
    )


def _subscriber_for_key(session: Session, key: str) -> Subscriber:
    subscriber = store.find_subscriber_by_key(session, key=key)
    if subscriber is None:
        raise InvalidTokenError(
            "this link belongs to an address that is no longer on the list; sign up again"
        )
    return subscriber


def inspect_confirmation(
    session: Session, settings: Settings, token: str, *, now: datetime
) -> tuple[Subscriber, ConfirmOutcome]:
    """What the confirm button would do, without changing anything (scanners prefetch GETs)."""
    key, issued_at = read_confirm_token_issued(
        settings.secret_key,
        token,
        max_age_seconds=settings.confirm_token_max_age_seconds,
        now=now,
    )
    subscriber = _subscriber_for_key(session, key)
    return subscriber, _confirm_outcome(session, subscriber, issued_at)


def _confirm_outcome(
    session: Session, subscriber: Subscriber, issued_at: datetime
) -> ConfirmOutcome:
    if subscriber.status == SubscriberStatus.PENDING:
        suppression = suppressions.find_active(session.connection(), subscriber.email)
        # Only a link sent after the suppression lifts it (tokens carry whole seconds).
        if suppression is not None and issued_at < suppression.created_at.replace(microsecond=0):
            return ConfirmOutcome.NO_LONGER_VALID
        return ConfirmOutcome.CONFIRMABLE
    if subscriber.status == SubscriberStatus.CONFIRMED:
        return ConfirmOutcome.ALREADY_CONFIRMED
    return ConfirmOutcome.NO_LONGER_VALID


def confirm_subscription(
    session: Session,
    settings: Settings,
    token: str,
    *,
    now: datetime,
    client_address: str | None,
) -> tuple[Subscriber, ConfirmOutcome]:
    """Confirm a pending address, recording when and from where; repeating it changes nothing.

    The owner's click is what lifts a suppression of their mailbox, and the
    suppression's note records it.
    """
    subscriber, outcome = inspect_confirmation(session, settings, token, now=now)
    if outcome is ConfirmOutcome.CONFIRMABLE:
        store.mark_confirmed(subscriber, now=now, client_address=client_address)
        suppressions.lift(
            session.connection(),
            subscriber.email,
            now=now,
            why=f"{subscriber.email} confirmed a new sign-up from {client_address or 'unknown'}",
        )
        session.flush()
        assert subscriber.id is not None
        # The welcome goes the confirmation's way: queued here, sent by a worker.
        # Its claim takes no slot (nothing is reserved at `now`), so giving it up frees none.
        confirmation_queue.enqueue(
            session,
            subscriber_id=subscriber.id,
            claim=ConfirmationClaim(subscriber.key, claimed_at=now, previous_sent_at=None),
            kind=QueuedEmail.WELCOME,
        )
        outcome = ConfirmOutcome.CONFIRMED
    return subscriber, outcome


def subscriber_for_unsubscribe(session: Session, settings: Settings, token: str) -> Subscriber:
    """The subscriber an unsubscribe link names (InvalidTokenError when forged or unknown)."""
    return _subscriber_for_key(session, read_unsubscribe_token(settings.secret_key, token))


def unsubscribe(session: Session, settings: Settings, token: str) -> Subscriber | None:
    """Unsubscribe the link's subscriber; idempotent, and a deleted subscriber is already gone."""
    key = read_unsubscribe_token(settings.secret_key, token)
    subscriber = store.find_subscriber_by_key(session, key=key)
    if subscriber is not None:
        store.mark_unsubscribed(subscriber)
        session.flush()
    return subscriber


def subscriber_for_preferences(session: Session, settings: Settings, token: str) -> Subscriber:
    """The subscriber a preferences link names (InvalidTokenError when forged or unknown)."""
    return _subscriber_for_key(session, read_preferences_token(settings.secret_key, token))


def change_preferences(
    session: Session,
    settings: Settings,
    token: str,
    *,
    action: PreferencesAction,
    name: str | None = None,
    topics: Sequence[str] = (),
    profile: store.Profile | None = None,
    liked: Sequence[store.JudgedPaper] = (),
) -> Subscriber:
    """Apply one button of the preferences page; SAVE validates the name and topics first.

    With SAVE, a checked `profile` replaces the reader's interests, digest mode,
    count and frequency, and `liked` papers are recorded (None and () leave them).
    """
    subscriber = subscriber_for_preferences(session, settings, token)
    if action is PreferencesAction.SAVE:
        store.update_details(
            subscriber, name=validate_name(name), topics=validate_topics(settings, topics)
        )
        if profile is not None:
            store.update_profile(subscriber, profile=profile)
        if liked:
            assert subscriber.id is not None
            store.save_judged_papers(
                session, subscriber_id=subscriber.id, papers=liked, now=utc_now()
            )
    elif action is PreferencesAction.PAUSE:
        store.set_paused(subscriber, paused=True)
    elif action is PreferencesAction.RESUME:
        store.set_paused(subscriber, paused=False)
    else:
        store.mark_unsubscribed(subscriber)
    session.flush()
    return subscriber


def queue_import_confirmation(
    session: Session, settings: Settings, *, key: str, now: datetime
) -> ConfirmationEmail | None:
    """Queue the confirmation a pending, imported reader needs; None if not pending or asked lately.

    The same once-per-interval slot as a sign-up's, so a rerun of an import, or
    a sign-up racing it, sends one email.
    """
    subscriber = store.find_subscriber_by_key(session, key=key)
    if subscriber is None or subscriber.status != SubscriberStatus.PENDING:
        return None
    claim = store.claim_confirmation_slot(
        session, subscriber, now=now, interval_seconds=settings.confirm_resend_interval_seconds
    )
    if claim is None:
        return None
    assert subscriber.id is not None
    confirmation_queue.enqueue(session, subscriber_id=subscriber.id, claim=claim)
    return ConfirmationEmail(email=subscriber.email, name=subscriber.name, claim=claim)
