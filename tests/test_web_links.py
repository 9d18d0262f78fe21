"""The links: confirm (GET shows, POST confirms), one-click unsubscribe, preferences; a digest's.

Every link in a digest (trending and personal, HTML and text) is absolute and
https as the public base URL is, and opens: our own pages answer 200 on a
local server, the others are the expected arXiv, Hugging Face and GitHub pages.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine

from newsletter.core.clock import utc_now
from newsletter.core.db import create_db_engine, session_scope, upgrade_schema
from newsletter.core.settings import Settings, load_settings
from newsletter.web.app import create_app
from subscribers.models import SubscriberStatus
from subscribers.store import add_subscriber, find_subscriber
from subscribers.tokens import (
    make_confirm_token,
    make_preferences_token,
    make_unsubscribe_token,
)
from tests.support.cli import CLI_SECRET_KEY
from tests.support.message_kinds import DIGEST_KINDS, SentKinds
from tests.support.sending import insert_subscriber_row
from tests.support.smtp_server import ReceivedMessage, RecordingSmtpServer
from tests.support.web import (
    CLIENT_ADDRESS,
    confirmation_path,
    html_text,
    live_server,
    running_app,
    send_queued_confirmations,
    snapshot,
    subscriber,
    web_settings,
)

PUBLIC_BASE_URL = "https://news.example.org"  # what the `newsletter` test processes use
# Where a digest may send a reader beyond our own pages.
OUTSIDE_PAGES = (
    re.compile(r"https://arxiv\.org/(abs|pdf)/\d{4}\.\d{4,5}(v\d+)?"),
    re.compile(r"https://huggingface\.co/papers/\d{4}\.\d{4,5}"),
    re.compile(r"https://github\.com/[\w.-]+/[\w.-]+"),
)

# A genuine confirmation token of the old scheme, for subscriber key OLD_LINK_KEY under the
# test secret: `URLSafeTimedSerializer(secret, salt="confirm").dumps(key)` of itsdangerous 2.2.
OLD_LINK_KEY = "reader-key-00000"
ITSDANGEROUS_CONFIRM_TOKEN = "InJlYWRlci1rZXktMDAwMDAi.awz9Yg.vnqMidEhKFO_lvwD9V6DJQGuMN4"


def _confirmed(engine: Engine, email: str, topics: list[str] | None = None) -> str:
    """Add a confirmed subscriber and return its key."""
    with session_scope(engine) as session:
        return add_subscriber(session, email=email, topics=topics or [], confirmed=True).key


async def test_confirmation_link_get_changes_nothing_and_post_confirms(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        await client.post("/subscribe", data={"email": "ada@example.org"})
        await send_queued_confirmations(settings, engine)
        path = confirmation_path(smtp_server)
        before = snapshot(engine)
        shown = await client.get(path)
        shown_again = await client.head(path)
        assert snapshot(engine) == before
        confirmed = await client.post(path)
        repeated = await client.post(path)
    assert shown.status_code == 200
    assert '<form method="post">' in shown.text and "Confirm my subscription" in shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert shown_again.status_code in (200, 405)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    assert repeated.status_code == 200 and "already subscribed" in repeated.text
    stored = subscriber(engine, "ada@example.org")
    assert stored is not None
    assert stored.status == SubscriberStatus.CONFIRMED
    assert stored.confirmed_at is not None
    assert stored.confirmed_ip == CLIENT_ADDRESS


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_tampered_and_foreign_tokens_get_a_clear_page(
    settings: Settings, engine: Engine, method: str
) -> None:
    key = _confirmed(engine, "ada@example.org")
    insert_subscriber_row(engine, email="old-link@example.org", key=OLD_LINK_KEY)
    unsubscribe_token = make_unsubscribe_token(settings.secret_key, key)
    forged = make_confirm_token("another-secret", key, issued_at=utc_now())
    good = make_confirm_token(settings.secret_key, key, issued_at=utc_now())
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    async with running_app(web_settings(settings), engine) as (_, client):
        for path in (
            f"/confirm/{tampered}",
            f"/confirm/{forged}",
            f"/confirm/{unsubscribe_token}",
            "/confirm/not-a-token-at-all",
            # What itsdangerous' timed serializer made before the one link scheme.
            f"/confirm/{ITSDANGEROUS_CONFIRM_TOKEN}",
            f"/unsubscribe/{good}",
            f"/preferences/{unsubscribe_token}",
        ):
            answer = await client.request(method, path)
            assert answer.status_code == 400, path
            assert "This link does not work" in answer.text
            assert "may have been altered" in answer.text


async def test_expired_confirmation_link_answers_410(settings: Settings, engine: Engine) -> None:
    with session_scope(engine) as session:
        key = add_subscriber(session, email="late@example.org").key
    three_days_ago = utc_now() - dt.timedelta(days=3)
    old_token = make_confirm_token(settings.secret_key, key, issued_at=three_days_ago)
    short_lived = web_settings(settings, confirm_token_max_age_seconds=24 * 3600)
    async with running_app(short_lived, engine) as (_, client):
        shown = await client.get(f"/confirm/{old_token}")
        posted = await client.post(f"/confirm/{old_token}")
    for answer in (shown, posted):
        assert answer.status_code == 410
        assert "This link has expired" in answer.text and "sign up again" in answer.text
    stored = subscriber(engine, "late@example.org")
    assert stored is not None and stored.status == SubscriberStatus.PENDING


async def test_confirming_after_leaving_does_not_resubscribe(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        await client.post("/subscribe", data={"email": "ada@example.org"})
        await send_queued_confirmations(settings, engine)
        path = confirmation_path(smtp_server)
        with session_scope(engine) as session:
            found = find_subscriber(session, email="ada@example.org")
            assert found is not None
            found.status = SubscriberStatus.UNSUBSCRIBED
        answer = await client.post(path)
    assert answer.status_code == 410 and "no longer applies" in answer.text
    stored = subscriber(engine, "ada@example.org")
    assert stored is not None and stored.status == SubscriberStatus.UNSUBSCRIBED


async def test_one_click_unsubscribe_with_the_rfc_8058_body(
    settings: Settings, engine: Engine
) -> None:
    key = _confirmed(engine, "ada@example.org")
    path = f"/unsubscribe/{make_unsubscribe_token(settings.secret_key, key)}"
    async with running_app(web_settings(settings), engine) as (_, client):
        assert not client.cookies
        first = await client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        second = await client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert not client.cookies
    assert 200 <= first.status_code < 300 and 200 <= second.status_code < 300
    assert "set-cookie" not in first.headers
    assert "You are unsubscribed" in first.text and "ada@example.org" in first.text
    stored = subscriber(engine, "ada@example.org")
    assert stored is not None and stored.status == SubscriberStatus.UNSUBSCRIBED
    left_at = stored.unsubscribed_at
    again = subscriber(engine, "ada@example.org")
    assert again is not None and again.unsubscribed_at == left_at  # the first time counts


async def test_unsubscribe_page_get_shows_a_button_and_changes_nothing(
    settings: Settings, engine: Engine
) -> None:
    key = _confirmed(engine, "ada@example.org")
    path = f"/unsubscribe/{make_unsubscribe_token(settings.secret_key, key)}"
    async with running_app(web_settings(settings), engine) as (_, client):
        before = snapshot(engine)
        page = await client.get(path)
        assert snapshot(engine) == before
        # The page's own button posts the form with no particular body.
        pressed = await client.post(path, data={})
    assert page.status_code == 200
    assert '<form method="post">' in page.text and ">Unsubscribe</button>" in page.text
    assert "/preferences/" in page.text
    assert pressed.status_code == 200
    stored = subscriber(engine, "ada@example.org")
    assert stored is not None and stored.status == SubscriberStatus.UNSUBSCRIBED


async def test_unsubscribing_a_deleted_subscriber_still_answers_2xx(
    settings: Settings, engine: Engine
) -> None:
    token = make_unsubscribe_token(settings.secret_key, "key-of-a-deleted-row")
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200 and "You are unsubscribed" in answer.text


async def test_preferences_change_name_topics_pause_resume_and_leave(
    settings: Settings, engine: Engine
) -> None:
    key = _confirmed(engine, "ada@example.org", topics=["LLMs"])
    path = f"/preferences/{make_preferences_token(settings.secret_key, key)}"

    def current() -> tuple[str | None, list[str], bool, str]:
        stored = subscriber(engine, "ada@example.org")
        assert stored is not None
        return stored.name, stored.topics, stored.paused, stored.status

    async with running_app(web_settings(settings), engine) as (_, client):
        page = await client.get(path)
        assert page.status_code == 200
        assert re.search(r'value="LLMs" checked', page.text)
        saved = await client.post(
            path, data={"action": "save", "name": "Ada L.", "topics": ["Robotics", "Theory"]}
        )
        assert saved.status_code == 200 and "preferences are saved" in saved.text
        assert current() == ("Ada L.", ["Robotics", "Theory"], False, "confirmed")

        refused = await client.post(
            path, data={"action": "save", "name": "<script>x</script>", "topics": ["LLMs"]}
        )
        assert refused.status_code == 422 and "Nothing was changed" in refused.text
        assert "<script>x" not in refused.text
        assert current() == ("Ada L.", ["Robotics", "Theory"], False, "confirmed")

        paused = await client.post(path, data={"action": "pause"})
        assert "Paused" in paused.text and current()[2] is True
        resumed = await client.post(path, data={"action": "resume"})
        assert "Resumed" in resumed.text and current()[2] is False

        bogus = await client.post(path, data={"action": "delete-everything"})
        assert bogus.status_code == 422

        left = await client.post(path, data={"action": "unsubscribe"})
        assert left.status_code == 200 and "You are unsubscribed" in left.text
        assert current()[3] == "unsubscribed"


async def test_token_pages_do_not_leak_the_token(settings: Settings, engine: Engine) -> None:
    key = _confirmed(engine, "ada@example.org")
    async with running_app(web_settings(settings), engine) as (_, client):
        for path in (
            f"/unsubscribe/{make_unsubscribe_token(settings.secret_key, key)}",
            f"/preferences/{make_preferences_token(settings.secret_key, key)}",
            f"/confirm/{make_confirm_token(settings.secret_key, key, issued_at=utc_now())}",
        ):
            answer = await client.get(path)
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert answer.headers["cache-control"] == "no-store"
            assert "noindex" in answer.headers["x-robots-tag"]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import uuid

    psycopg = pytest.importorskip("psycopg")
    name = f"web_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)
    except psycopg.OperationalError as error:
        print(f"SKIPPED PostgreSQL test: {error}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
async def test_sign_up_confirm_and_leave_on_postgresql(
    settings: Settings, smtp_server: RecordingSmtpServer, postgres_url: str
) -> None:
    pg_settings = web_settings(settings, database_url=postgres_url)
    pg_engine = create_db_engine(postgres_url)
    try:
        upgrade_schema(pg_engine)
        async with running_app(pg_settings, pg_engine) as (_, client):
            for _ in range(2):
                answer = await client.post("/subscribe", json={"email": "Ada@Example.org"})
                assert answer.status_code == 202
            await send_queued_confirmations(pg_settings, pg_engine)
            assert smtp_server.handler.recipients() == ["Ada@example.org"]
            confirmed = await client.post(confirmation_path(smtp_server))
            assert "You are subscribed" in confirmed.text
            stored = subscriber(pg_engine, "Ada@example.org")
            assert stored is not None and stored.confirmed_ip == CLIENT_ADDRESS
            token = make_unsubscribe_token(pg_settings.secret_key, stored.key)
            left = await client.post(
                f"/unsubscribe/{token}",
                content=b"List-Unsubscribe=One-Click",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert left.status_code == 200
        stored = subscriber(pg_engine, "Ada@example.org")
        assert stored is not None and stored.status == SubscriberStatus.UNSUBSCRIBED
    finally:
        pg_engine.dispose()


def _digest_links(message: ReceivedMessage) -> list[str]:
    """Every link of a digest: the HTML part's hrefs and the text part's URLs."""
    text, markup = html_text(message.message)
    hrefs = [html.unescape(href) for href in re.findall(r'href="([^"]*)"', markup)]
    return hrefs + re.findall(r"https?://[^\s<>]+", text)


@pytest.mark.timeout(300)  # the first one sends every kind of message with `newsletter`
@pytest.mark.parametrize("kind", DIGEST_KINDS)
def test_every_link_in_a_digest_is_absolute_https_and_opens(
    every_message_kind: SentKinds, kind: str
) -> None:
    links = _digest_links(every_message_kind.messages[kind])
    assert len(links) > 20
    for link in links:
        parts = urlsplit(link)
        assert parts.scheme == "https" and parts.netloc, link
    own = sorted({link for link in links if link.startswith(PUBLIC_BASE_URL + "/")})
    outside = sorted(set(links) - set(own))
    assert [link for link in outside if not any(p.fullmatch(link) for p in OUTSIDE_PAGES)] == []
    assert {urlsplit(link).netloc for link in outside} == {
        "arxiv.org",
        "huggingface.co",
        "github.com",
    }
    settings = load_settings(
        _env_file=None,
        database_url=every_message_kind.database_url,
        secret_key=CLI_SECRET_KEY,
        base_url=PUBLIC_BASE_URL,
    )
    engine = create_db_engine(every_message_kind.database_url)
    try:
        with live_server(create_app(settings, engine=engine)) as site:
            answers = {
                link: httpx.get(site + link.removeprefix(PUBLIC_BASE_URL)).status_code
                for link in own
            }
    finally:
        engine.dispose()
    opened = Counter(urlsplit(link).path.split("/")[1] for link in own)
    statuses = set(answers.values())
    print(f"{kind}: {len(set(links))} distinct links; our pages {dict(opened)} answered {statuses}")
    assert answers and set(answers.values()) == {200}, answers
    assert {"unsubscribe", "preferences"} <= set(opened)
    if kind == "digest-personal":
        # "View in browser" opens the reader's own copy, not the public edition.
        assert {"feedback", "view"} <= set(opened)
    else:
        assert "editions" in opened
