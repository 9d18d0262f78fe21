"""Bounces and complaints: VERP envelope senders, reading reports, recording them."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from newsletter.core.clock import utc_now
from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.core.errors import InvalidTokenError
from newsletter.core.settings import Settings, load_settings
from newsletter.delivery.feedback import (
    FeedbackEvent,
    FeedbackKind,
    FeedbackSummary,
    events_from_message,
    record_feedback,
)
from newsletter.delivery.feedback.recording import feedback_events
from newsletter.delivery.ledger import deliveries, editions, finish_editions, subscribers
from newsletter.delivery.stats import edition_stats
from newsletter.delivery.verp import EnvelopeSenders, verp_delivery_id
from newsletter.delivery.worker import send_edition, send_test_copy
from newsletter.models import DeliveryStatus, EditionStatus
from subscribers.models import SubscriberStatus
from subscribers.suppressions import find_active
from subscribers.tokens import make_bounce_token, read_bounce_token
from tests.support.postgres import postgres_database_or_skip
from tests.support.sending import DAY, ledger_rows, make_edition, seed_subscribers
from tests.support.smtp_server import RecordingSmtpServer

DATA = Path(__file__).parent / "data" / "bounces"
BOUNCE_ADDRESS = "bounces@bounces.example.org"
NOW = dt.datetime(2026, 11, 30, 6, 30, tzinfo=dt.UTC)
VERP = re.compile(r"bounces\+([0-9a-z]+-[a-z2-7]{16})@bounces\.example\.org")


def report(name: str, *, bounce_to: str, recipient: str, message_id: str) -> bytes:
    """A report from tests/data/bounces with its placeholders filled in."""
    raw = (DATA / name).read_bytes()
    for placeholder, value in (
        (b"%%BOUNCE_TO%%", bounce_to),
        (b"%%RECIPIENT%%", recipient),
        (b"%%MESSAGE_ID%%", message_id),
    ):
        raw = raw.replace(placeholder, value.encode("ascii"))
    return raw


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Engine]:
    """The migrated database: the test's SQLite file, then a PostgreSQL one."""
    url = settings.database_url
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            url = stack.enter_context(postgres_database_or_skip())
        engine = create_db_engine(url)
        stack.callback(engine.dispose)
        upgrade_schema(engine)
        yield engine


@pytest.fixture
def bouncing(settings: Settings) -> Settings:
    """The test settings with a bounce address: digests get VERP envelope senders."""
    return load_settings(**{**settings.model_dump(), "bounce_address": BOUNCE_ADDRESS})


def parse(raw: bytes, settings: Settings, *, to: str = BOUNCE_ADDRESS) -> list[FeedbackEvent]:
    return events_from_message(raw, envelope_recipients=[to], settings=settings, now=NOW)


# ---- VERP ----------------------------------------------------------------------------------


def test_a_bounce_token_is_short_lower_case_and_signed() -> None:
    token = make_bounce_token("secret-one", 123_456_789)
    assert len(token) <= 24 and token == token.lower()
    assert read_bounce_token("secret-one", token) == 123_456_789
    # A mail server that folds the case of the address does not break it.
    assert read_bounce_token("secret-one", token.upper()) == 123_456_789
    with pytest.raises(InvalidTokenError):
        read_bounce_token("secret-two", token)
    forged = f"{make_bounce_token('secret-one', 7).split('-')[0][:-1]}8-{token.split('-')[1]}"
    with pytest.raises(InvalidTokenError):
        read_bounce_token("secret-one", forged)


def test_a_bounce_address_with_a_tag_or_without_a_domain_is_refused() -> None:
    for bad in ("bounces+x@example.org", "bounces", "bounces@"):
        with pytest.raises(ValueError, match="NEWSLETTER_BOUNCE_ADDRESS"):
            load_settings(_env_file=None, bounce_address=bad)


async def test_each_digest_goes_out_with_its_own_verp_envelope_sender(
    bouncing: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 3)
    make_edition(engine)
    await send_edition(bouncing, engine, edition_date=DAY)
    rows = {row.email: row.id for row in ledger_rows(engine)}
    assert len(smtp_server.messages) == 3
    for arrived in smtp_server.messages:
        assert VERP.fullmatch(arrived.mail_from), arrived.mail_from
        [recipient] = arrived.rcpt_tos
        # The envelope sender names this reader's ledger row, under the secret key.
        assert verp_delivery_id(bouncing, arrived.mail_from) == rows[recipient]
    assert len({arrived.mail_from for arrived in smtp_server.messages}) == 3


async def test_a_test_copy_carries_the_verp_sender_of_its_own_row(
    bouncing: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    make_edition(engine)
    row = await send_test_copy(bouncing, engine, edition_date=DAY, email="editor@example.org")
    [arrived] = smtp_server.messages
    assert verp_delivery_id(bouncing, arrived.mail_from) == row.id


async def test_without_a_bounce_address_the_envelope_sender_is_the_from_address(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 1)
    make_edition(engine)
    await send_edition(settings, engine, edition_date=DAY)
    assert [m.mail_from for m in smtp_server.messages] == ["digest@news.example.org"]
    assert not EnvelopeSenders(settings).verp


# ---- reading reports -----------------------------------------------------------------------

# file, kind, source, words the reason must hold
REPORTS = [
    ("postfix.eml", FeedbackKind.HARD_BOUNCE, "dsn", "550 5.1.1"),
    ("sendmail.eml", FeedbackKind.HARD_BOUNCE, "dsn", "User unknown"),
    ("gmail.eml", FeedbackKind.HARD_BOUNCE, "dsn", "5.1.1 The email account"),
    ("exchange.eml", FeedbackKind.HARD_BOUNCE, "dsn", "5.1.10 RESOLVER.ADR.RecipientNotFound"),
    ("exim.eml", FeedbackKind.HARD_BOUNCE, "bounce-text", "550 5.1.1"),
    ("qmail.eml", FeedbackKind.HARD_BOUNCE, "bounce-text", "no such user here"),
    ("postfix_delayed.eml", FeedbackKind.SOFT_BOUNCE, "dsn", "4.4.1"),
    ("quota_soft.eml", FeedbackKind.SOFT_BOUNCE, "dsn", "4.2.2 <reader@example.org>: Mailbox full"),
    ("arf_yahoo.eml", FeedbackKind.COMPLAINT, "arf", "abuse (Yahoo!-Mail-Feedback/2.0)"),
    ("jmrp_legacy.eml", FeedbackKind.COMPLAINT, "jmrp", "Microsoft JMRP"),
]


@pytest.mark.parametrize(("name", "kind", "source", "reason"), REPORTS)
def test_reports_of_each_mail_server_are_read_into_events(
    bouncing: Settings, name: str, kind: FeedbackKind, source: str, reason: str
) -> None:
    verp = EnvelopeSenders(bouncing).for_delivery(42)
    message_id = "<20261130.42.digest@news.example.org>"
    raw = report(name, bounce_to=verp, recipient="reader@example.org", message_id=message_id)
    [event] = parse(raw, bouncing, to=verp)
    assert (event.kind, event.source, event.address) == (kind, source, "reader@example.org")
    assert reason in event.reason and "\n" not in event.reason
    assert event.delivery_id == 42
    assert event.message_id == message_id
    assert event.occurred_at == NOW


def test_a_complaint_with_the_recipient_redacted_names_our_message(bouncing: Settings) -> None:
    message_id = "<20261130.42.digest@news.example.org>"
    raw = report(
        "arf_microsoft.eml", bounce_to=BOUNCE_ADDRESS, recipient="x", message_id=message_id
    )
    [event] = parse(raw, bouncing)
    assert event.kind is FeedbackKind.COMPLAINT
    assert (event.address, event.delivery_id, event.message_id) == ("", None, message_id)
    assert "Microsoft JMRP" in event.reason


def test_a_report_sent_to_the_plain_bounce_address_still_finds_the_token_in_its_headers(
    bouncing: Settings,
) -> None:
    verp = EnvelopeSenders(bouncing).for_delivery(7)
    raw = report("postfix.eml", bounce_to=verp, recipient="r@example.org", message_id="<a@b>")
    [event] = parse(raw, bouncing, to=BOUNCE_ADDRESS)
    assert event.delivery_id == 7
    assert event.message_id is None  # not one of ours: another domain


def hostile_reports(settings: Settings) -> dict[str, tuple[bytes, str]]:
    good = EnvelopeSenders(settings).for_delivery(42)
    forged = good.replace(good.split("-")[1][:4], "aaaa")
    postfix = report("postfix.eml", bounce_to=good, recipient="r@example.org", message_id="<a@b>")
    nested = (
        b"Content-Type: multipart/mixed; boundary=b\n\n"
        + b"--b\nContent-Type: multipart/mixed; boundary=b\n\n" * 5000
    )
    many_parts = (
        b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\n\nx\n" * 5000 + b"--b--\n"
    )
    return {
        "empty": (b"", BOUNCE_ADDRESS),
        "garbage": (bytes(range(256)) * 50, BOUNCE_ADDRESS),
        "header soup": (
            b"\x00:\xff\r\n\r\n" * 1000 + b"Content-Type: multipart/report",
            BOUNCE_ADDRESS,
        ),
        "deep nesting": (nested, BOUNCE_ADDRESS),
        "thousands of parts": (many_parts, BOUNCE_ADDRESS),
        "forged token": (postfix, forged),
        "auto-reply": (
            report("auto_reply.eml", bounce_to=good, recipient="r@example.org", message_id=""),
            good,
        ),
        "report naming only us": (
            report(
                "postfix.eml",
                bounce_to=BOUNCE_ADDRESS,
                recipient=BOUNCE_ADDRESS,
                message_id="<x@y>",
            ),
            BOUNCE_ADDRESS,
        ),
    }


def test_hostile_or_malformed_reports_yield_nothing_and_never_raise(
    bouncing: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    for what, (raw, to) in hostile_reports(bouncing).items():
        assert parse(raw, bouncing, to=to) == [], what
    assert "does not verify (forged?)" in caplog.text
    assert caplog.text.count("unrecognised report") == len(hostile_reports(bouncing))


def test_a_delivered_notice_is_no_event(bouncing: Settings) -> None:
    raw = (
        report(
            "postfix.eml", bounce_to=BOUNCE_ADDRESS, recipient="r@example.org", message_id="<a@b>"
        )
        .replace(b"Action: failed", b"Action: delivered")
        .replace(b"Status: 5.1.1", b"Status: 2.0.0")
    )
    assert parse(raw, bouncing) == []


# ---- recording -----------------------------------------------------------------------------


def sent_rows(engine: Engine, count: int, *, days: int = 1) -> list[tuple[int, str, str]]:
    """`count` readers with a sent row in each of `days` editions: (row, address, Message-ID)."""
    addresses = seed_subscribers(engine, count)
    rows = []
    with engine.begin() as connection:
        readers = {
            row.email: row
            for row in connection.execute(
                select(subscribers.c.id, subscribers.c.email, subscribers.c.key)
            )
        }
        for day in range(days):
            edition_id = connection.execute(
                insert(editions)
                .values(
                    date=DAY + dt.timedelta(days=day),
                    status=EditionStatus.SENT.value,
                    subject="Papers",
                    html="",
                    text="",
                    created_at=utc_now(),
                )
                .returning(editions.c.id)
            ).scalar_one()
            for address in addresses:
                row_id = connection.execute(
                    insert(deliveries)
                    .values(
                        edition_id=edition_id,
                        subscriber_id=readers[address].id,
                        email=address,
                        subscriber_key=readers[address].key,
                        status=DeliveryStatus.SENT.value,
                        created_at=utc_now(),
                        updated_at=utc_now(),
                    )
                    .returning(deliveries.c.id)
                ).scalar_one()
                message_id = f"<{DAY:%Y%m%d}.{row_id}.digest@news.example.org>"
                connection.execute(
                    deliveries.update()
                    .where(deliveries.c.id == row_id)
                    .values(message_id=message_id)
                )
                rows.append((row_id, address, message_id))
    return rows


def row_status(engine: Engine, row_id: int) -> tuple[str, str | None]:
    with engine.connect() as connection:
        status, error = connection.execute(
            select(deliveries.c.status, deliveries.c.last_error).where(deliveries.c.id == row_id)
        ).one()
    return status, error


def reader_status(engine: Engine, address: str) -> SubscriberStatus:
    with engine.connect() as connection:
        return SubscriberStatus(
            connection.execute(
                select(subscribers.c.status).where(subscribers.c.email == address)
            ).scalar_one()
        )


def suppression(engine: Engine, address: str) -> str | None:
    with engine.connect() as connection:
        active = find_active(connection, address)
    return active.reason.value if active else None


def event(kind: FeedbackKind, **fields: object) -> FeedbackEvent:
    values: dict[str, object] = {
        "address": "",
        "reason": "550 5.1.1 gone",
        "source": "dsn",
        "occurred_at": NOW,
    } | fields
    return FeedbackEvent(kind=kind, **values)  # type: ignore[arg-type]


def test_a_hard_bounce_bounces_the_reader_row_and_mailbox_once(
    bouncing: Settings, engine: Engine
) -> None:
    [(row_id, address, message_id), (other_row, other, _)] = sent_rows(engine, 2)
    verp = EnvelopeSenders(bouncing).for_delivery(row_id)
    raw = report("postfix.eml", bounce_to=verp, recipient=address, message_id=message_id)
    events = parse(raw, bouncing, to=verp)
    first = record_feedback(engine, events, settings=bouncing, now=NOW)
    assert first == FeedbackSummary(recorded=1, bounced=1)
    assert reader_status(engine, address) is SubscriberStatus.BOUNCED
    assert suppression(engine, address) == "bounced"
    status, error = row_status(engine, row_id)
    assert status == "bounced" and error is not None and "550 5.1.1" in error
    # The same report again changes nothing.
    again = record_feedback(engine, parse(raw, bouncing, to=verp), settings=bouncing, now=NOW)
    assert again == FeedbackSummary(duplicates=1)
    with engine.connect() as connection:
        assert len(connection.execute(select(feedback_events)).all()) == 1
    # The other reader is untouched.
    assert reader_status(engine, other) is SubscriberStatus.CONFIRMED
    assert row_status(engine, other_row)[0] == "sent"
    stats = edition_stats(engine, DAY)
    assert stats.deliveries[DeliveryStatus.BOUNCED] == 1
    assert stats.deliveries[DeliveryStatus.SENT] == 1


def test_a_complaint_unsubscribes_as_complained_and_suppresses(
    bouncing: Settings, engine: Engine
) -> None:
    [(row_id, address, message_id)] = sent_rows(engine, 1)
    raw = report(
        "arf_microsoft.eml", bounce_to=BOUNCE_ADDRESS, recipient="x", message_id=message_id
    )
    summary = record_feedback(engine, parse(raw, bouncing), settings=bouncing, now=NOW)
    assert summary == FeedbackSummary(recorded=1, complained=1)
    assert reader_status(engine, address) is SubscriberStatus.COMPLAINED
    assert suppression(engine, address) == "complained"
    assert row_status(engine, row_id)[0] == "complained"
    assert edition_stats(engine, DAY).deliveries[DeliveryStatus.COMPLAINED] == 1


def test_a_quoted_message_id_of_another_reader_does_not_match_their_row(
    bouncing: Settings, engine: Engine
) -> None:
    [(row_id, address, message_id), (_, other, _)] = sent_rows(engine, 2)
    forged = event(FeedbackKind.HARD_BOUNCE, address=other, message_id=message_id)
    record_feedback(engine, [forged], settings=bouncing, now=NOW)
    # Matched by its address instead: the other reader's own row, not the quoted one.
    assert row_status(engine, row_id)[0] == "sent"
    assert reader_status(engine, address) is SubscriberStatus.CONFIRMED
    assert reader_status(engine, other) is SubscriberStatus.BOUNCED


def test_events_about_unknown_deliveries_or_addresses_are_counted_only(
    bouncing: Settings, engine: Engine
) -> None:
    sent_rows(engine, 1)
    summary = record_feedback(
        engine,
        [
            event(FeedbackKind.HARD_BOUNCE, address="stranger@example.net"),
            event(FeedbackKind.HARD_BOUNCE, address="x@example.net", delivery_id=999_999),
            event(FeedbackKind.COMPLAINT, message_id="<20260302.999999.digest@news.example.org>"),
        ],
        settings=bouncing,
        now=NOW,
    )
    assert summary == FeedbackSummary(unknown=3)
    assert suppression(engine, "stranger@example.net") is None
    with engine.connect() as connection:
        assert connection.execute(select(feedback_events)).all() == []


def test_soft_bounces_bounce_a_reader_at_the_limit_within_the_window(
    bouncing: Settings, engine: Engine
) -> None:
    # Three editions, two readers; the limit is 3 soft bounces in 14 days.
    rows = sent_rows(engine, 2, days=3)
    steady = [row for row in rows if row[1].endswith("00000@example.org")]
    spread = [row for row in rows if row[1].endswith("00001@example.org")]

    def soft(row: tuple[int, str, str], days: int) -> FeedbackSummary:
        when = NOW + dt.timedelta(days=days)
        bounce = event(
            FeedbackKind.SOFT_BOUNCE, address=row[1], delivery_id=row[0], occurred_at=when
        )
        return record_feedback(engine, [bounce], settings=bouncing, now=when)

    assert soft(steady[0], 0) == FeedbackSummary(recorded=1)
    assert soft(steady[1], 5) == FeedbackSummary(recorded=1)
    assert reader_status(engine, steady[0][1]) is SubscriberStatus.CONFIRMED
    assert soft(steady[2], 10) == FeedbackSummary(recorded=1, bounced=1)
    assert reader_status(engine, steady[0][1]) is SubscriberStatus.BOUNCED
    assert suppression(engine, steady[0][1]) == "bounced"
    # Soft bounces leave the rows sent; the edition's stats count them.
    assert row_status(engine, steady[2][0])[0] == "sent"
    assert edition_stats(engine, DAY).soft_bounces == 1

    # 0, 10 and 20 days: never three within 14.
    for row, days in zip(spread, (0, 10, 20), strict=True):
        assert soft(row, days) == FeedbackSummary(recorded=1)
    assert reader_status(engine, spread[0][1]) is SubscriberStatus.CONFIRMED
    assert suppression(engine, spread[0][1]) is None
    # The same soft bounce delivered again is not counted twice.
    assert soft(spread[2], 20) == FeedbackSummary(duplicates=1)


def test_a_complaint_counts_as_reached_when_the_edition_finishes(
    bouncing: Settings, engine: Engine
) -> None:
    [(row_id, _, _), _] = sent_rows(engine, 2)
    record_feedback(
        engine,
        [event(FeedbackKind.COMPLAINT, delivery_id=row_id, reason="complaint: abuse")],
        settings=bouncing,
        now=NOW,
    )
    with engine.begin() as connection:
        connection.execute(editions.update().values(status=EditionStatus.SENDING.value))
        assert finish_editions(connection, edition_id=None, now=NOW) == 1
    assert edition_stats(engine, DAY).status is EditionStatus.SENT


def test_a_bounced_confirmation_email_is_matched_by_address(
    bouncing: Settings, engine: Engine
) -> None:
    # Confirmation emails carry the plain bounce address: no token, no ledger row.
    [address] = seed_subscribers(engine, 1, status=SubscriberStatus.PENDING)
    raw = report("exim.eml", bounce_to=BOUNCE_ADDRESS, recipient=address, message_id="<c@x>")
    [bounce] = parse(raw, bouncing)
    assert bounce.delivery_id is None
    summary = record_feedback(engine, [bounce], settings=bouncing, now=NOW)
    assert summary == FeedbackSummary(recorded=1, bounced=1)
    assert reader_status(engine, address) is SubscriberStatus.BOUNCED
    assert suppression(engine, address) == "bounced"
    again = record_feedback(engine, parse(raw, bouncing), settings=bouncing, now=NOW)
    assert again == FeedbackSummary(duplicates=1)


def test_events_from_outside_with_oversized_fields_are_clipped_not_errors(
    bouncing: Settings, engine: Engine
) -> None:
    [(row_id, address, _)] = sent_rows(engine, 1)
    strange = FeedbackEvent(
        kind=FeedbackKind.HARD_BOUNCE,
        address=address,
        reason="550 gone\r\nX-Injected: yes " + "x" * 10_000,
        source="a-source-name-longer-than-sixteen",
        occurred_at=NOW.replace(tzinfo=None),
        delivery_id=row_id,
        message_id="<" + "m" * 1000 + "@news.example.org>",
    )
    huge_address = event(FeedbackKind.HARD_BOUNCE, address="a" * 400 + "@example.org")
    summary = record_feedback(engine, [strange, huge_address], settings=bouncing, now=NOW)
    assert summary == FeedbackSummary(recorded=1, bounced=1, unknown=1)
    with engine.connect() as connection:
        [stored] = connection.execute(select(feedback_events)).all()
    assert "\n" not in stored.reason and len(stored.reason) <= 500
    assert stored.message_id is None and stored.occurred_at == NOW
