"""What is stored about a reader: shown on the preferences page, downloaded as JSON, erased.

After "Delete my data" the address is nowhere in the database (every table is
dumped and searched), the ledger keeps its rows under a hash, and the hashed
suppression still stops an import and is matched when the owner signs up again.
"""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine, select, text

from newsletter.core.clock import utc_now
from newsletter.core.db import create_db_engine, session_scope, upgrade_schema
from newsletter.core.settings import Settings
from newsletter.models import Delivery, DeliveryStatus, FeedbackRecord, Selection
from newsletter.privacy import erase_reader
from newsletter.web.app import create_app
from subscribers import received, suppressions
from subscribers.importing import import_csv
from subscribers.models import (
    JudgementSource,
    ReceivedSignup,
    Subscriber,
    SuppressionReason,
    Verdict,
)
from subscribers.signup import SignupDetails
from subscribers.store import JudgedPaper, add_subscriber, save_judged_papers
from subscribers.tokens import make_preferences_token
from tests.support.cli import run_cli
from tests.support.postgres import postgres_database_or_skip
from tests.support.sending import make_edition
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
    confirmation_path,
    live_server,
    running_app,
    send_queued_confirmations,
    subscriber,
    web_settings,
)

ADDRESS = "Ada.Lovelace+news@example.org"
MAILBOX = "ada.lovelace@example.org"
DAY = dt.date(2026, 3, 5)
PICK = {
    "arxiv_id": "2603.00001",
    "score": 0.42,
    "why": "matches your interest in “concept erasure”",
}


@pytest.fixture
def site(settings: Settings, engine: Engine) -> Iterator[str]:
    """A real uvicorn serving the app on the test database."""
    with live_server(create_app(web_settings(settings), engine=engine)) as base_url:
        yield base_url


@pytest.fixture
def reader(settings: Settings, engine: Engine) -> str:
    """A confirmed reader with a profile, judged papers, two ledger rows and a bounce event."""
    sent_edition = make_edition(engine, DAY)
    queued_edition = make_edition(engine, DAY + dt.timedelta(days=1))
    with session_scope(engine) as session:
        subscriber = add_subscriber(
            session,
            email=ADDRESS,
            name="Ada",
            topics=["LLMs"],
            interests="concept erasure",
            confirmed=True,
        )
        assert subscriber.id is not None
        save_judged_papers(
            session,
            subscriber_id=subscriber.id,
            papers=[
                JudgedPaper(
                    "2401.01234", "Erasing concepts", "", Verdict.LIKED, JudgementSource.PASTED
                ),
                JudgedPaper(
                    None, "A workshop paper", "abs", Verdict.LIKED, JudgementSource.LIBRARY
                ),
            ],
            now=utc_now(),
        )
        # The sent digest carried their own "For you" (a stored selection).
        selection = Selection(edition_id=sent_edition, fingerprint="f" * 64, picks=[PICK])
        session.add(selection)
        session.flush()
        for edition_id, status, selection_id in (
            (sent_edition, DeliveryStatus.SENT, selection.id),
            (queued_edition, DeliveryStatus.QUEUED, None),
        ):
            session.add(
                Delivery(
                    edition_id=edition_id,
                    subscriber_id=subscriber.id,
                    email=ADDRESS,
                    name="Ada",
                    subscriber_key=subscriber.key,
                    status=status,
                    last_error=f"451 try later for <{ADDRESS}>",
                    selection_id=selection_id,
                )
            )
        session.add(
            FeedbackRecord(
                dedupe_key="k1",
                kind="soft_bounce",
                source="dsn",
                address=MAILBOX,
                subscriber_id=subscriber.id,
                reason=f"mailbox {MAILBOX} full",
                occurred_at=utc_now(),
            )
        )
        key = subscriber.key
    return f"/preferences/{make_preferences_token(settings.secret_key, key)}"


def _database_dump(settings: Settings) -> str:
    path = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return "\n".join(connection.iterdump()).lower()


def test_the_page_shows_everything_stored_and_the_download_holds_it(site: str, reader: str) -> None:
    with httpx.Client(base_url=site) as client:
        page = client.get(reader)
        download = client.get(f"{reader}/data")
    assert page.status_code == 200
    for shown in ("What we store about you", ADDRESS.lower(), "concept erasure", "LLMs"):
        assert shown.lower() in page.text.lower()
    assert "Erasing concepts" in page.text and "pasted" in page.text and "library" in page.text
    assert "Download my data" in page.text and "Delete my data" in page.text
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/json"
    assert download.headers["content-disposition"] == 'attachment; filename="my-data.json"'
    assert download.headers["cache-control"] == "no-store"
    data = download.json()
    assert data["email"].lower() == ADDRESS.lower()
    assert (data["name"], data["status"], data["interests"]) == (
        "Ada",
        "confirmed",
        "concept erasure",
    )
    assert data["confirmed_at"] is not None and data["topics"] == ["LLMs"]
    assert {(p["title"], p["source"], p["verdict"]) for p in data["papers"]} == {
        ("Erasing concepts", "pasted", "liked"),
        ("A workshop paper", "library", "liked"),
    }
    assert [d["edition"] for d in data["deliveries"]] == ["2026-03-05", "2026-03-06"]
    # Which papers each delivery carried: its "For you" (the queued one, nothing yet).
    assert [d["selection"] for d in data["deliveries"]] == [
        {
            "for_you": [{"arxiv_id": "2603.00001", "why": PICK["why"]}],
            "trending_this_week": None,
        },
        None,
    ]


def test_erasure_needs_the_box_ticked(site: str, reader: str, settings: Settings) -> None:
    with httpx.Client(base_url=site) as client:
        answer = client.post(f"{reader}/erase", data={})
        still = client.get(reader)
    assert answer.status_code == 422 and "Nothing was deleted" in answer.text
    assert still.status_code == 200
    assert MAILBOX.split("@")[0] in _database_dump(settings)


def test_erasure_leaves_no_address_and_a_hashed_suppression(
    site: str, reader: str, settings: Settings, engine: Engine
) -> None:
    with httpx.Client(base_url=site) as client:
        answer = client.post(f"{reader}/erase", data={"confirm": "yes"})
        gone = client.get(reader)
        api_gone = client.get(f"/api{reader}")
    assert answer.status_code == 200 and "Your data is deleted" in answer.text
    assert gone.status_code == 400 and api_gone.status_code == 400

    dump = _database_dump(settings)
    assert "ada.lovelace" not in dump and "example.org" not in dump
    assert "erasing concepts" not in dump and "concept erasure" not in dump
    hashed = suppressions.hashed_mailbox(ADDRESS)
    assert hashed == suppressions.hashed_mailbox(MAILBOX)  # one entry per mailbox
    with engine.connect() as connection:
        ledger = connection.execute(
            select(Delivery.__table__).order_by(Delivery.__table__.c.id)  # type: ignore[attr-defined]
        ).all()
        events = connection.execute(select(FeedbackRecord.__table__)).all()  # type: ignore[attr-defined]
        active = suppressions.find_active(connection, ADDRESS)
    # The ledger keeps its rows (the counts of past editions stay), without the reader.
    assert [(row.email, row.name, row.subscriber_id, row.subscriber_key) for row in ledger] == [
        (hashed, None, None, None)
    ] * 2
    assert [row.status for row in ledger] == ["sent", "skipped"]  # the queued one is not sent
    assert [(row.address, row.reason, row.subscriber_id) for row in events] == [(hashed, "", None)]
    assert active is not None and active.reason is SuppressionReason.ERASED
    assert active.address == hashed


def test_an_erased_address_is_skipped_by_an_import_and_revealed_when_the_operator_adds_it(
    site: str, reader: str, settings: Settings, engine: Engine
) -> None:
    with httpx.Client(base_url=site) as client:
        client.post(f"{reader}/erase", data={"confirm": "yes"})
    report = import_csv(
        engine, io.StringIO(f"email\n{ADDRESS}\n"), topics=settings.topics, confirmed=True
    )
    assert report.added == 0
    assert "suppressed (erased)" in str(report.skipped)
    with session_scope(engine) as session:
        add_subscriber(session, email=MAILBOX, confirmed=True)
    with engine.connect() as connection:
        # Stored again by the operator: the entry is clear, so the send path's SQL sees it.
        held = suppressions.count_held_back(connection)
        active = suppressions.find_active(connection, MAILBOX)
    assert held == 1
    assert active is not None and active.address == MAILBOX


def test_the_api_erases_too(site: str, reader: str, settings: Settings) -> None:
    with httpx.Client(base_url=site) as client:
        answer = client.delete(f"/api{reader}")
    assert answer.status_code == 204
    assert "ada.lovelace" not in _database_dump(settings)


async def test_an_erased_reader_who_signs_up_again_is_pending_until_they_confirm(
    settings: Settings, engine: Engine, reader: str, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        erased = await client.post(f"{reader}/erase", data={"confirm": "yes"})
        assert erased.status_code == 200
        await client.post("/subscribe", data={"email": ADDRESS})
        with engine.connect() as connection:
            assert suppressions.find_active(connection, ADDRESS) is not None
        await send_queued_confirmations(web_settings(settings), engine)
        confirmed = await client.post(confirmation_path(smtp_server))
    assert confirmed.status_code == 200
    with engine.connect() as connection:
        # The owner's click lifts the hashed entry, as it lifts a clear one.
        assert suppressions.find_active(connection, ADDRESS) is None
        assert suppressions.count_held_back(connection) == 0
    back = subscriber(engine, ADDRESS)
    assert back is not None and back.status == "confirmed"


def test_the_operator_erases_a_reader_from_the_command_line(cli_env: dict[str, str]) -> None:
    run_cli("db", "upgrade", env=cli_env)
    run_cli("subscribers", "add", ADDRESS, "--interests", "concept erasure", env=cli_env)
    erased = run_cli("subscribers", "erase", "ada.lovelace+news@example.org", env=cli_env)
    missing = run_cli("subscribers", "erase", "nobody@example.org", env=cli_env, check=False)
    assert "erased (a hash stays on the suppression list)" in erased.stdout
    assert missing.returncode != 0 and "no subscriber" in missing.stderr + missing.stdout
    path = cli_env["NEWSLETTER_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        dump = "\n".join(connection.iterdump()).lower()
        suppressed = connection.execute("SELECT address, reason FROM suppressions").fetchall()
    assert "ada.lovelace" not in dump and "concept erasure" not in dump
    assert suppressed == [(suppressions.hashed_mailbox(ADDRESS), "erased")]


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


def test_erasure_replaces_a_clear_suppression_with_the_hash_on_both_databases(
    any_engine: Engine,
) -> None:
    engine = any_engine
    edition_id = make_edition(engine, DAY)
    with session_scope(engine) as session:
        reader = add_subscriber(session, email=ADDRESS, confirmed=True)
        assert reader.id is not None
        session.add(
            Delivery(edition_id=edition_id, subscriber_id=reader.id, email=ADDRESS, name="Ada")
        )
        save_judged_papers(
            session,
            subscriber_id=reader.id,
            papers=[JudgedPaper("2401.01234", "T", "", Verdict.DISLIKED, JudgementSource.EMAIL)],
            now=utc_now(),
        )
        suppressions.suppress_address(
            session.connection(),
            ADDRESS,
            reason=SuppressionReason.BOUNCED,
            now=utc_now(),
            note=f"550 no such user {ADDRESS}",
        )
        # A sign-up of theirs answered but not recorded (a server stopped), and someone else's.
        received.receive(
            session.connection(),
            [SignupDetails(ADDRESS, "Ada", ()), SignupDetails("other@example.org", None, ())],
            now=utc_now(),
        )
    with session_scope(engine) as session:
        found = session.get(Subscriber, reader.id)
        assert found is not None
        erase_reader(session, found, now=utc_now())
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT address, reason, note, lifted_at FROM suppressions")
        ).all()
        ledger = connection.execute(text("SELECT email, name, status FROM deliveries")).all()
        left = connection.execute(
            text("SELECT (SELECT count(*) FROM subscribers) + (SELECT count(*) FROM reader_papers)")
        ).scalar_one()
        still_received = (
            connection.execute(
                select(ReceivedSignup.details)  # type: ignore[call-overload]
            )
            .scalars()
            .all()
        )
    hashed = suppressions.hashed_mailbox(ADDRESS)
    assert [tuple(row) for row in rows] == [
        (hashed, "erased", "the reader erased their data", None)
    ]
    assert [tuple(row) for row in ledger] == [(hashed, None, "skipped")]
    assert left == 0
    assert [details["email"] for details in still_received] == ["other@example.org"]
