"""The suppression list: bounced and complained mailboxes get nothing until their owner confirms."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from newsletter.core.clock import utc_now
from newsletter.core.db import _alembic_config, create_db_engine, session_scope, upgrade_schema
from newsletter.core.settings import Settings
from newsletter.delivery.worker import send_edition, start_edition
from newsletter.models import DeliveryStatus
from subscribers import suppressions
from subscribers.addresses import domain_of, mailbox_of
from subscribers.models import SubscriberStatus, SuppressionReason
from subscribers.store import add_subscriber, mark_bounced
from subscribers.tokens import make_confirm_token
from tests.support.cli import run_cli
from tests.support.postgres import postgres_database_or_skip
from tests.support.sending import DAY, ledger_rows, make_edition, received, seed_subscribers
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
    ADMIN_TOKEN,
    confirmation_path,
    running_app,
    send_queued_confirmations,
    subscriber,
    web_settings,
)

AN_HOUR_AGO = dt.timedelta(hours=-1)


@pytest.fixture(params=["sqlite", "postgres"])
def any_engine(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Engine]:
    """The migrated test database on SQLite, then on the real PostgreSQL."""
    if request.param == "sqlite":
        yield engine
        return
    with postgres_database_or_skip() as url:
        postgres = create_db_engine(url)
        try:
            upgrade_schema(postgres)
            yield postgres
        finally:
            postgres.dispose()


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("Ada@Example.org", "ada@example.org"),
        ("ada+news@example.org", "ada@example.org"),
        ("ada+a+b@example.org", "ada@example.org"),
        ("+only@example.org", "+only@example.org"),
        ("A.Lovelace+x@GMail.com", "alovelace@gmail.com"),
        ("a.lovelace@googlemail.com", "alovelace@gmail.com"),
        ("a.lovelace@example.org", "a.lovelace@example.org"),  # dots matter elsewhere
    ],
)
def test_the_mailbox_of_an_address(address: str, mailbox: str) -> None:
    assert mailbox_of(address) == mailbox
    assert domain_of(address) == mailbox.rpartition("@")[2]


async def test_a_hard_bounce_suppresses_the_mailbox_with_every_tag_and_the_next_edition_skips_it(
    settings: Settings, any_engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    engine = any_engine
    readers = seed_subscribers(engine, 3)
    tagged, other_tag = "gone+a@example.org", "Gone+b@example.org"
    with session_scope(engine) as session:
        for address in (tagged, other_tag):
            add_subscriber(session, email=address, confirmed=True)
    # Two tags of one mailbox bounce in the same batch: one suppression.
    smtp_server.handler.fault = lambda stage, rcpt, n: (
        "550 5.1.1 no such user" if stage == "rcpt" and rcpt.lower().startswith("gone") else None
    )
    make_edition(engine)
    report = await send_edition(settings, engine, edition_date=DAY)
    assert report.bounced == 2

    with engine.connect() as connection:
        active = suppressions.find_active(connection, "GONE+whatever@example.org")
    assert active is not None and active.reason is SuppressionReason.BOUNCED
    assert active.address == "gone@example.org"
    assert active.note is not None and "550" in active.note and "no such user" in active.note

    # An operator puts them back as confirmed (and adds another tag): still nothing goes out.
    smtp_server.handler.fault = None
    with session_scope(engine) as session:
        add_subscriber(session, email=tagged, confirmed=True)
        add_subscriber(session, email="gone+new@example.org", confirmed=True)
    second_day = DAY + dt.timedelta(days=1)
    make_edition(engine, second_day)
    before = received(smtp_server)
    await send_edition(settings, engine, edition_date=second_day)
    after = received(smtp_server) - before
    assert after == Counter(readers)
    queued = {row.email for row in ledger_rows(engine, second_day)}
    assert queued == set(readers)
    assert other_tag not in queued


async def test_a_mailbox_suppressed_while_its_edition_is_sent_is_skipped(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    readers = seed_subscribers(engine, 3)
    make_edition(engine)
    assert start_edition(engine, DAY) == 3
    with engine.begin() as connection:
        suppressions.suppress_address(
            connection, readers[1], reason=SuppressionReason.COMPLAINED, now=utc_now()
        )
    await send_edition(settings, engine, edition_date=DAY)
    assert received(smtp_server) == Counter([readers[0], readers[2]])
    skipped = next(row for row in ledger_rows(engine) if row.email == readers[1])
    assert skipped.status is DeliveryStatus.SKIPPED


def test_a_lifted_suppression_can_be_renewed(any_engine: Engine) -> None:
    now = utc_now()
    with any_engine.begin() as connection:
        suppressions.suppress_address(
            connection, "Ada@example.org", reason=SuppressionReason.OPERATOR, now=now, note="x"
        )
        # An active suppression keeps its first reason.
        suppressions.suppress_address(
            connection, "ada+2@example.org", reason=SuppressionReason.BOUNCED, now=now
        )
        assert suppressions.lift(connection, "ada@example.org", now=now, why="owner confirmed")
        assert not suppressions.lift(connection, "ada@example.org", now=now, why="again")
        assert suppressions.find_active(connection, "ada@example.org") is None
        suppressions.suppress_address(
            connection, "ada@example.org", reason=SuppressionReason.COMPLAINED, now=now
        )
        renewed = suppressions.find_active(connection, "ada@example.org")
        rows = connection.execute(text("SELECT count(*) FROM suppressions")).scalar_one()
    assert renewed is not None and renewed.reason is SuppressionReason.COMPLAINED
    assert rows == 1


async def test_a_stranger_s_sign_up_sends_one_confirmation_and_only_the_owner_s_click_lifts_it(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    with session_scope(engine) as session:
        key = add_subscriber(session, email="ada@example.org", confirmed=True).key
    with engine.begin() as connection:
        mark_bounced(connection, bounces=[(key, "550 5.1.1 gone")], now=utc_now() + AN_HOUR_AGO)
    with session_scope(engine) as session:  # the operator forces another tag back in
        add_subscriber(session, email="ada+ops@example.org", confirmed=True)

    async with running_app(web_settings(settings), engine) as (_, client):
        signed_up = await client.post("/subscribe", json={"email": "Ada@example.org"})
        assert signed_up.status_code == 202
        await send_queued_confirmations(settings, engine)
        assert smtp_server.handler.recipients() == ["ada@example.org"]
        stored = subscriber(engine, "ada@example.org")
        assert stored is not None and stored.status == SubscriberStatus.PENDING
        counts = await client.get(
            "/admin/subscribers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert counts.json()["suppressed"]["bounced"] == 1
        assert counts.json()["confirmed_but_suppressed"] == 1  # ada+ops

        make_edition(engine)
        await send_edition(settings, engine, edition_date=DAY)
        assert ledger_rows(engine) == []  # nobody on this mailbox gets the digest

        confirmed = await client.post(confirmation_path(smtp_server))
        assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text

    with engine.connect() as connection:
        assert suppressions.find_active(connection, "ada@example.org") is None
        note, lifted_at = connection.execute(
            text("SELECT note, lifted_at FROM suppressions WHERE address = 'ada@example.org'")
        ).one()
    assert lifted_at is not None
    assert "lifted: ada@example.org confirmed a new sign-up from 203.0.113.7" in note
    second_day = DAY + dt.timedelta(days=1)
    make_edition(engine, second_day)
    await send_edition(settings, engine, edition_date=second_day)
    assert {row.email for row in ledger_rows(engine, second_day)} == {
        "ada@example.org",
        "ada+ops@example.org",
    }


async def test_a_link_sent_before_the_suppression_does_not_lift_it(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    with session_scope(engine) as session:
        key = add_subscriber(session, email="old@example.org").key  # pending, link already out
    old_link = f"/confirm/{make_confirm_token(settings.secret_key, key, issued_at=utc_now())}"
    with engine.begin() as connection:
        # The suppression came after that link (a complaint about another tag, an hour on).
        suppressions.suppress_address(
            connection,
            "old+x@example.org",
            reason=SuppressionReason.COMPLAINED,
            now=utc_now() - AN_HOUR_AGO,
        )
    async with running_app(web_settings(settings), engine) as (_, client):
        shown = await client.get(old_link)
        pressed = await client.post(old_link)
    assert shown.status_code == 410 and pressed.status_code == 410
    stored = subscriber(engine, "old@example.org")
    assert stored is not None and stored.status == SubscriberStatus.PENDING
    with engine.connect() as connection:
        assert suppressions.find_active(connection, "old@example.org") is not None


async def test_a_confirmed_reader_whose_mailbox_was_suppressed_can_confirm_again(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    with session_scope(engine) as session:
        add_subscriber(session, email="grace@example.org", topics=["Theory"], confirmed=True)
    with engine.begin() as connection:
        suppressions.suppress_address(
            connection,
            "grace+spam@example.org",
            reason=SuppressionReason.COMPLAINED,
            now=utc_now() + AN_HOUR_AGO,
        )
    async with running_app(web_settings(settings), engine) as (_, client):
        await client.post("/subscribe", json={"email": "grace@example.org"})
        await send_queued_confirmations(settings, engine)
        assert smtp_server.handler.recipients() == ["grace@example.org"]
        assert (await client.post(confirmation_path(smtp_server))).status_code == 200
    stored = subscriber(engine, "grace@example.org")
    assert stored is not None and stored.status == SubscriberStatus.CONFIRMED
    with engine.connect() as connection:
        assert suppressions.find_active(connection, "grace@example.org") is None


def test_subscribers_list_shows_why_a_reader_gets_nothing(
    cli_env: dict[str, str],
) -> None:
    run_cli("subscribers", "add", "kept@example.org", "--confirmed", env=cli_env)
    run_cli("subscribers", "add", "Blocked+x@example.org", "--confirmed", env=cli_env)
    engine = create_db_engine(cli_env["NEWSLETTER_DATABASE_URL"])
    try:
        with engine.begin() as connection:
            suppressions.suppress_address(
                connection, "blocked@example.org", reason=SuppressionReason.OPERATOR, now=utc_now()
            )
    finally:
        engine.dispose()
    listed = json.loads(run_cli("subscribers", "list", "--json", env=cli_env).stdout)
    assert {row["email"]: row["suppressed"] for row in listed} == {
        "kept@example.org": None,
        "Blocked+x@example.org": "operator",
    }
    table = run_cli("subscribers", "list", env=cli_env).stdout
    assert "suppressed" in table and "operator" in table


def test_the_migration_fills_mailboxes_and_suppresses_who_already_bounced_or_complained(
    any_engine: Engine,
) -> None:
    engine = any_engine
    config = _alembic_config(engine)
    command.downgrade(config, "0002")
    when = utc_now().replace(tzinfo=None)  # naive UTC, as the schema stores it
    rows = [
        ("Ada+x@Example.org", "bounced"),
        ("ada@example.org", "complained"),
        ("grace@example.org", "confirmed"),
        ("g.race+news@gmail.com", "bounced"),
    ]
    with engine.begin() as connection:
        for n, (email, status) in enumerate(rows):
            connection.execute(
                text(
                    "INSERT INTO subscribers (email, status, key, topics, paused, created_at, "
                    "updated_at) VALUES (:email, :status, :key, '[]', false, :when, :when)"
                ),
                {"email": email, "status": status, "key": f"key-{n}", "when": when},
            )
    command.upgrade(config, "head")
    with engine.connect() as connection:
        mailboxes = dict(connection.execute(text("SELECT email, mailbox FROM subscribers")).all())
        blocked = dict(connection.execute(text("SELECT address, reason FROM suppressions")).all())
    assert mailboxes == {
        "Ada+x@Example.org": "ada@example.org",
        "ada@example.org": "ada@example.org",
        "grace@example.org": "grace@example.org",
        "g.race+news@gmail.com": "grace@gmail.com",
    }
    # One row per mailbox; a complaint outweighs a bounce of the same mailbox.
    assert blocked == {"ada@example.org": "complained", "grace@gmail.com": "bounced"}
    # The unique index on lower(email) survived the upgrade.
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (email, mailbox, status, key, topics, paused, "
                "created_at, updated_at) VALUES ('GRACE@example.org', 'grace@example.org', "
                "'pending', 'key-dup', '[]', false, :when, :when)"
            ),
            {"when": when},
        )
    command.downgrade(config, "0002")
    command.upgrade(config, "head")
