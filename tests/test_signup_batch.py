"""Sign-ups recorded together (`register_signups`): the same outcome as one by one.

The web app records the sign-ups that wait at the same moment in one
transaction, new addresses in one statement. Whatever a batch mixes (new
addresses, one address twice, a confirmed reader, one who left), each reader
ends as `register_signup` alone would leave them, with one confirmation at
most. SQLite in a temp dir, and the real PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select

from newsletter.core.clock import as_utc
from newsletter.core.db import session_scope
from newsletter.core.settings import Settings
from subscribers.addresses import mailbox_of
from subscribers.models import (
    DigestMode,
    Frequency,
    QueuedConfirmation,
    Subscriber,
    SubscriberStatus,
)
from subscribers.ratelimit import ConfirmationCaps
from subscribers.signup import SignupDetails, register_signup, register_signups
from subscribers.store import Profile, find_subscriber, mark_confirmed, mark_unsubscribed

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
QUEUE = QueuedConfirmation.__table__  # type: ignore[attr-defined]
SUBSCRIBERS = Subscriber.__table__  # type: ignore[attr-defined]


def details(email: str, name: str | None = None) -> SignupDetails:
    return SignupDetails(email=email, name=name, topics=())


def add_reader(
    engine: Engine, settings: Settings, email: str, *, confirmed: bool, left: bool = False
) -> None:
    """A reader who signed up a week ago: confirmed, and maybe gone since."""
    earlier = NOW - dt.timedelta(days=7)
    caps = ConfirmationCaps.from_settings(settings)
    with session_scope(engine) as session:
        register_signup(session, settings, details(email, "Before"), now=earlier, quota=caps)
    with session_scope(engine) as session:
        subscriber = find_subscriber(session, email=email)
        assert subscriber is not None
        if confirmed:
            mark_confirmed(subscriber, now=earlier, client_address=None)
        if left:
            mark_unsubscribed(subscriber)
        session.add(subscriber)
    with engine.begin() as connection:
        connection.execute(QUEUE.delete())  # their confirmation went out back then


def test_a_mixed_batch_ends_as_the_sign_ups_one_by_one_would(
    each_database: Engine, settings: Settings
) -> None:
    add_reader(each_database, settings, "confirmed@example.org", confirmed=True)
    add_reader(each_database, settings, "left@example.org", confirmed=True, left=True)
    batch = [
        details("ada@example.org", "Ada"),
        details("confirmed@example.org", "Stranger"),
        details("bo@example.net", "Bo"),
        details("ada@example.org", "Ada again"),
        details("left@example.org", "Back"),
    ]

    with session_scope(each_database) as session:
        due = register_signups(
            session,
            settings,
            [(signup, []) for signup in batch],
            now=NOW,
            quota=ConfirmationCaps.from_settings(settings),
        )

    # A confirmation for each new address once, and for the reader who left; none for
    # the confirmed reader or for the second sign-up of an address within the interval.
    assert [confirmation.email if confirmation else None for confirmation in due] == [
        "ada@example.org",
        None,
        "bo@example.net",
        None,
        "left@example.org",
    ]
    with each_database.connect() as connection:
        readers = {
            row.email: (row.name, SubscriberStatus(row.status))
            for row in connection.execute(select(SUBSCRIBERS))
        }
        queued = connection.execute(
            select(SUBSCRIBERS.c.email).join(QUEUE, QUEUE.c.subscriber_id == SUBSCRIBERS.c.id)
        ).scalars()
        assert sorted(queued) == ["ada@example.org", "bo@example.net", "left@example.org"]
    assert readers == {
        # A pending address takes the latest details, as one sign-up after another would.
        "ada@example.org": ("Ada again", SubscriberStatus.PENDING),
        "bo@example.net": ("Bo", SubscriberStatus.PENDING),
        "confirmed@example.org": ("Before", SubscriberStatus.CONFIRMED),  # never changed
        "left@example.org": ("Back", SubscriberStatus.PENDING),
    }


def test_a_batch_over_the_domain_cap_queues_only_what_the_cap_allows(
    each_database: Engine, settings: Settings
) -> None:
    capped = settings.model_copy(update={"confirm_domain_limit": 2})
    batch = [(details(f"reader{n}@example.org"), []) for n in range(4)]

    with session_scope(each_database) as session:
        due = register_signups(
            session, capped, batch, now=NOW, quota=ConfirmationCaps.from_settings(capped)
        )

    assert [confirmation is not None for confirmation in due] == [True, True, False, False]
    with each_database.connect() as connection:
        assert connection.execute(select(QUEUE.c.id)).all().__len__() == 2
        # Every address is on the list; the two over the cap may be sent one later.
        slots = connection.execute(
            select(SUBSCRIBERS.c.email, SUBSCRIBERS.c.confirmation_sent_at).order_by(
                SUBSCRIBERS.c.email
            )
        ).all()
    assert [email for email, _ in slots] == [f"reader{n}@example.org" for n in range(4)]
    assert [sent is not None for _, sent in slots] == [True, True, False, False]


def test_a_batch_stores_every_detail_as_a_sign_up_alone_does(
    each_database: Engine, settings: Settings
) -> None:
    profile = Profile(
        interests="graph neural networks, «weather»",
        digest_mode=DigestMode.TRENDING,
        personal_count=7,
        frequency=Frequency.WEEKLY,
        weekly_day=3,
    )

    def full(email: str, name: str | None) -> SignupDetails:
        return SignupDetails(email=email, name=name, topics=("cs.LG", "cs.CL"), profile=profile)

    caps = ConfirmationCaps.from_settings(settings)
    with session_scope(each_database) as session:
        register_signups(
            session, settings, [(full("alone@example.org", "Zoë"), [])], now=NOW, quota=caps
        )
    with session_scope(each_database) as session:
        batch = [
            full("One@Example.org", "Zoë"),
            full("two@example.net", None),
            details("bare@example.org"),
        ]
        register_signups(session, settings, [(signup, []) for signup in batch], now=NOW, quota=caps)

    with each_database.connect() as connection:
        rows = {row.email: dict(row._mapping) for row in connection.execute(select(SUBSCRIBERS))}
    alone, one, two, bare = (
        rows[email]
        for email in ("alone@example.org", "One@Example.org", "two@example.net", "bare@example.org")
    )
    assert (
        one["mailbox"] == mailbox_of("One@Example.org") and alone["mailbox"] == "alone@example.org"
    )
    assert one["key"] != alone["key"] != two["key"]
    stored = {
        key: value for key, value in alone.items() if key not in ("id", "key", "email", "mailbox")
    }
    assert stored["topics"] == ["cs.LG", "cs.CL"] and stored["interests"] == profile.interests
    assert stored["digest_mode"] == "trending" and stored["frequency"] == "weekly"
    assert (stored["personal_count"], stored["weekly_day"], stored["status"]) == (7, 3, "pending")
    assert stored["created_at"] == stored["confirmation_sent_at"] == NOW
    for row, name in ((one, "Zoë"), (two, None)):
        assert {key: row[key] for key in stored} == {**stored, "name": name}
    # Without a profile, the defaults a sign-up alone gets.
    assert (bare["digest_mode"], bare["personal_count"], bare["frequency"], bare["topics"]) == (
        "personal",
        5,
        "daily",
        [],
    )


def test_a_later_batch_queues_a_waiting_reader_again_in_place(
    each_database: Engine, settings: Settings
) -> None:
    caps = ConfirmationCaps.from_settings(settings)
    later = NOW + dt.timedelta(seconds=settings.confirm_resend_interval_seconds + 1)
    with session_scope(each_database) as session:
        first = [(details(email), []) for email in ("ada@example.org", "cy@example.org")]
        register_signups(session, settings, first, now=NOW, quota=caps)
    with session_scope(each_database) as session:
        again = [(details(email), []) for email in ("ada@example.org", "bo@example.net")]
        due = register_signups(session, settings, again, now=later, quota=caps)

    assert [confirmation.email if confirmation else None for confirmation in due] == [
        "ada@example.org",
        "bo@example.net",
    ]
    with each_database.connect() as connection:
        queued = {
            row.email: (row.claimed_at, row.previous_sent_at, row.attempts)
            for row in connection.execute(
                select(SUBSCRIBERS.c.email, QUEUE.c.claimed_at, QUEUE.c.previous_sent_at)
                .add_columns(QUEUE.c.attempts)
                .join(QUEUE, QUEUE.c.subscriber_id == SUBSCRIBERS.c.id)
            )
        }
    # One row per reader: Ada's was replaced by the new claim, which knows the first.
    assert {
        email: (as_utc(at), sent and as_utc(sent), tries)
        for email, (at, sent, tries) in queued.items()
    } == {
        "ada@example.org": (later, NOW, 0),
        "bo@example.net": (later, None, 0),
        "cy@example.org": (NOW, None, 0),
    }
