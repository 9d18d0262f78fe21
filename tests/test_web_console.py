"""The operator's console: signing in, its session cookie, CSRF, and each page's work."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from newsletter.core.clock import utc_now
from newsletter.core.settings import Settings
from newsletter.web.console_session import (
    SESSION_COOKIE,
    new_session_cookie,
    read_session_cookie,
)
from subscribers.models import SubscriberStatus
from tests.support.console import CONSOLE, hidden_value, sign_in, signed_in_csrf
from tests.support.feed_server import FeedResponse, FeedServer
from tests.support.sending import edition_status, make_edition, seed_subscribers
from tests.support.web import ADMIN_TOKEN, running_app, store_papers, subscriber, web_settings

DAY = dt.date(2026, 3, 6)
SECRET = "test-secret-key-0123456789"


async def test_the_right_token_signs_in_with_a_strict_httponly_cookie_that_expires(
    settings: Settings, engine: Engine
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        before = await client.get(f"{CONSOLE}/")
        assert before.status_code == 303 and before.headers["location"] == f"{CONSOLE}/sign-in"
        answer = await sign_in(client)
        assert answer.status_code == 303 and answer.headers["location"] == f"{CONSOLE}/"
        cookie = next(
            value
            for name, value in answer.headers.multi_items()
            if name == "set-cookie" and value.startswith(f"{SESSION_COOKIE}=")
        )
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "secure", "max-age", "path"} <= attributes
        assert "samesite=strict" in cookie.lower() and "path=/admin" in cookie.lower()
        page = await client.get(f"{CONSOLE}/")
    assert page.status_code == 200
    assert "No edition yet" in page.text and "Sign out" in page.text


async def test_a_wrong_token_is_refused_and_gives_no_session(
    settings: Settings, engine: Engine
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await sign_in(client, token=ADMIN_TOKEN + "x")
        assert answer.status_code == 401
        assert "That is not the admin token." in answer.text
        assert SESSION_COOKIE not in client.cookies
        still_out = await client.get(f"{CONSOLE}/readers")
    assert still_out.status_code == 303


async def test_signing_in_without_the_forms_nonce_is_refused(
    settings: Settings, engine: Engine
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        forged = await client.post(f"{CONSOLE}/sign-in", data={"token": ADMIN_TOKEN})
        own_nonce = await client.post(
            f"{CONSOLE}/sign-in", data={"token": ADMIN_TOKEN, "nonce": "a-nonce-of-the-attacker"}
        )
    assert forged.status_code == 403 and own_nonce.status_code == 403
    assert "did not come from this site" in forged.text
    assert SESSION_COOKIE not in client.cookies


async def test_the_console_is_404_without_a_configured_admin_token(
    settings: Settings, engine: Engine
) -> None:
    async with running_app(web_settings(settings, admin_token=None), engine) as (_, client):
        form = await client.get(f"{CONSOLE}/sign-in")
        page = await client.get(f"{CONSOLE}/")
    assert form.status_code == 404 and page.status_code == 404


def test_an_altered_or_expired_session_cookie_is_not_a_session() -> None:
    now = dt.datetime(2026, 3, 6, 12, tzinfo=dt.UTC)
    cookie = new_session_cookie(SECRET, now=now)
    assert read_session_cookie(SECRET, cookie, now=now) is not None
    session_id, expires, mac = cookie.split(".")
    later = str(int(expires) + 3600)
    assert read_session_cookie(SECRET, f"{session_id}.{later}.{mac}", now=now) is None
    assert read_session_cookie(SECRET, cookie, now=now + dt.timedelta(hours=8)) is None
    assert read_session_cookie(SECRET + "x", cookie, now=now) is None
    assert read_session_cookie(SECRET, "", now=now) is None
    assert read_session_cookie(SECRET, cookie + "A", now=now) is None


@pytest.mark.parametrize("kind", ["altered", "expired", "other secret"])
async def test_the_console_refuses_an_altered_or_expired_cookie(
    settings: Settings, engine: Engine, kind: str
) -> None:
    now = utc_now()
    cookie = {
        "altered": new_session_cookie(SECRET, now=now)[:-2] + "AA",
        "expired": new_session_cookie(SECRET, now=now - dt.timedelta(hours=9)),
        "other secret": new_session_cookie("another-secret-key-0123456789", now=now),
    }[kind]
    async with running_app(web_settings(settings), engine) as (_, client):
        client.cookies.set(SESSION_COOKIE, cookie, domain="news.example.org", path="/admin")
        page = await client.get(f"{CONSOLE}/readers")
        progress = await client.get(f"{CONSOLE}/editions/{DAY}/progress")
    assert page.status_code == 303 and page.headers["location"] == f"{CONSOLE}/sign-in"
    assert progress.status_code == 303


@pytest.mark.parametrize("token", [None, "", "forged-token", "other session"])
async def test_a_post_without_the_sessions_csrf_token_changes_nothing(
    settings: Settings, engine: Engine, token: str | None
) -> None:
    make_edition(engine, DAY)
    seed_subscribers(engine, 2)
    app_settings = web_settings(settings)
    async with running_app(app_settings, engine) as (_, other):
        other_csrf = await signed_in_csrf(other)
    async with running_app(app_settings, engine) as (_, client):
        await signed_in_csrf(client)
        csrf = other_csrf if token == "other session" else token
        data = {"confirmed": "yes"} | ({} if csrf is None else {"csrf": csrf})
        refused = await client.post(f"{CONSOLE}/editions/{DAY}/send", data=data)
        unsubscribe = await client.post(f"{CONSOLE}/readers/1/unsubscribe", data=data)
    assert refused.status_code == 403 and unsubscribe.status_code == 403
    assert "Reload the page and try again" in refused.text
    assert "Back to the console" in refused.text
    assert edition_status(engine, DAY)[0] == "draft"
    stored = subscriber(engine, "reader00000@example.org")
    assert stored is not None and stored.status == SubscriberStatus.CONFIRMED


async def test_sign_out_ends_the_session(settings: Settings, engine: Engine) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        csrf = await signed_in_csrf(client)
        out = await client.post(f"{CONSOLE}/sign-out", data={"csrf": csrf})
        assert out.status_code == 303
        page = await client.get(out.headers["location"])
        assert "You are signed out." in page.text
        after = await client.get(f"{CONSOLE}/")
    assert after.status_code == 303


async def test_send_asks_first_then_queues_the_audience_and_progress_follows(
    settings: Settings, engine: Engine
) -> None:
    make_edition(engine, DAY)
    seed_subscribers(engine, 3)
    async with running_app(web_settings(settings), engine) as (_, client):
        csrf = await signed_in_csrf(client)
        edition = await client.get(f"{CONSOLE}/editions/{DAY}")
        assert "Papers of the day" in edition.text and "Send to readers" in edition.text
        unconfirmed = await client.post(f"{CONSOLE}/editions/{DAY}/send", data={"csrf": csrf})
        assert unconfirmed.status_code == 303
        question = await client.get(unconfirmed.headers["location"])
        assert "Send this edition to every confirmed reader?" in question.text
        assert "about 3 readers (confirmed, not paused or suppressed)" in question.text
        assert edition_status(engine, DAY)[0] == "draft"
        confirmed = await client.post(
            f"{CONSOLE}/editions/{DAY}/send", data=dict(hidden_fields(question.text))
        )
        assert confirmed.status_code == 303
        page = await client.get(confirmed.headers["location"])
        progress = (await client.get(f"{CONSOLE}/editions/{DAY}/progress")).json()
        paused = await client.post(f"{CONSOLE}/editions/{DAY}/pause", data={"csrf": csrf})
        after_pause = await client.get(paused.headers["location"])
    assert "The send is queued" in page.text
    assert progress["status"] == "sending" and progress["waiting"] == 3
    assert progress["readers"] == 3 and progress["running"] is True
    assert "Paused: workers stop within a batch." in after_pause.text
    assert edition_status(engine, DAY)[0] == "paused"


def hidden_fields(html: str) -> list[tuple[str, str]]:
    """Every hidden field of the page's forms (the confirmation page has one form)."""
    return re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)


async def test_an_action_the_status_does_not_allow_says_why(
    settings: Settings, engine: Engine
) -> None:
    make_edition(engine, DAY)
    async with running_app(web_settings(settings), engine) as (_, client):
        csrf = await signed_in_csrf(client)
        answer = await client.post(f"{CONSOLE}/editions/{DAY}/pause", data={"csrf": csrf})
    assert answer.status_code == 409
    assert "only a running send can be paused" in answer.text


async def test_a_bad_test_address_is_refused_on_the_page(
    settings: Settings, engine: Engine
) -> None:
    make_edition(engine, DAY)
    async with running_app(web_settings(settings), engine) as (_, client):
        csrf = await signed_in_csrf(client)
        answer = await client.post(
            f"{CONSOLE}/editions/{DAY}/test-send", data={"csrf": csrf, "email": "not an address"}
        )
    assert answer.status_code == 422
    assert "Test copy not sent" in answer.text and 'value="not an address"' in answer.text


async def test_a_day_without_an_edition_can_be_prepared_from_its_papers(
    settings: Settings, engine: Engine
) -> None:
    store_papers(engine, DAY)
    async with running_app(web_settings(settings), engine) as (_, client):
        csrf = await signed_in_csrf(client)
        before = await client.get(f"{CONSOLE}/editions/{DAY}")
        assert "3 papers are stored for this day" in before.text
        prepared = await client.post(f"{CONSOLE}/editions/{DAY}/prepare", data={"csrf": csrf})
        page = await client.get(prepared.headers["location"])
        preview = await client.get(f"{CONSOLE}/editions/{DAY}/preview")
    assert "The edition is prepared" in page.text
    assert "Paper 2 on &lt;attention&gt; &amp; scaling" in page.text  # top papers, escaped
    assert 'sandbox src="/admin/console/editions/2026-03-06/preview"' in page.text
    assert preview.status_code == 200 and "sandbox" in preview.headers["content-security-policy"]
    assert preview.headers["x-frame-options"] == "SAMEORIGIN"


def _addresses(html: str) -> list[str]:
    return re.findall(r'<a href="/admin/console/readers/\d+">([^<]+)</a>', html)


def _next_link(html: str) -> str | None:
    match = re.search(r'<a href="([^"]+)" rel="next">', html)
    return match.group(1).replace("&amp;", "&") if match else None


async def test_readers_page_by_keyset_through_every_reader_once(
    settings: Settings, engine: Engine
) -> None:
    confirmed = seed_subscribers(engine, 120, prefix="c")
    pending = seed_subscribers(engine, 30, status=SubscriberStatus.PENDING, prefix="p")
    async with running_app(web_settings(settings), engine) as (_, client):
        await signed_in_csrf(client)
        seen: list[str] = []
        url: str | None = f"{CONSOLE}/readers"
        while url is not None:
            page = await client.get(url)
            assert page.status_code == 200
            seen += _addresses(page.text)
            url = _next_link(page.text)
        only_pending = await client.get(f"{CONSOLE}/readers", params={"status": "pending"})
        search = await client.get(f"{CONSOLE}/readers", params={"q": "C0011"})
        nothing = await client.get(f"{CONSOLE}/readers", params={"q": "c%"})
        bad_status = await client.get(f"{CONSOLE}/readers", params={"status": "vip"})
    assert seen == sorted(confirmed + pending)
    assert _addresses(only_pending.text) == pending
    assert _addresses(search.text) == [f"c0011{i}@example.org" for i in range(10)]
    assert _addresses(nothing.text) == [] and "No reader matches." in nothing.text
    assert bad_status.status_code == 422


async def test_a_readers_page_shows_the_record_and_unsubscribes_and_suppresses(
    settings: Settings, engine: Engine
) -> None:
    seed_subscribers(engine, 1)
    async with running_app(web_settings(settings), engine) as (_, client):
        csrf = await signed_in_csrf(client)
        page = await client.get(f"{CONSOLE}/readers/1")
        assert "reader00000@example.org" in page.text and "Signed up:" in page.text
        left = await client.post(f"{CONSOLE}/readers/1/unsubscribe", data={"csrf": csrf})
        assert "Unsubscribed." in (await client.get(left.headers["location"])).text
        blocked = await client.post(f"{CONSOLE}/readers/1/suppress", data={"csrf": csrf})
        after = await client.get(blocked.headers["location"])
        missing = await client.get(f"{CONSOLE}/readers/999")
    assert "Suppressed: no digest reaches this mailbox." in after.text
    assert "yes: operator" in after.text
    stored = subscriber(engine, "reader00000@example.org")
    assert stored is not None and stored.status == SubscriberStatus.UNSUBSCRIBED
    assert missing.status_code == 404


async def test_import_upload_reports_what_was_left_out_and_export_downloads(
    settings: Settings, engine: Engine
) -> None:
    csv_text = "email,name\nnew@example.org,New\nnot-an-address,Bad\n"
    async with running_app(web_settings(settings), engine) as (_, client):
        csrf = await signed_in_csrf(client)
        report = await client.post(
            f"{CONSOLE}/readers/import",
            data={"csrf": csrf, "confirmed": "yes"},
            files={"file": ("list.csv", csv_text.encode(), "text/csv")},
        )
        export = await client.get(f"{CONSOLE}/readers-export.csv")
        not_csv = await client.post(
            f"{CONSOLE}/readers/import",
            data={"csrf": csrf},
            files={"file": ("list.csv", b"\xff\xfe\x00bad", "text/csv")},
        )
    assert report.status_code == 200, report.text
    assert re.search(r"<dt>Added</dt><dd>1</dd>", report.text)
    assert "not-an-address" in report.text and "Skipped rows" in report.text
    assert export.headers["content-disposition"] == 'attachment; filename="subscribers.csv"'
    assert "new@example.org" in export.text
    assert not_csv.status_code == 422 and "Nothing was imported" in not_csv.text


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


async def test_ingest_fetches_a_day_and_says_what_was_skipped_and_why(
    settings: Settings, engine: Engine, feed_server: FeedServer
) -> None:
    feed_server.serve("/api/daily_papers", FeedResponse.feed_file("hf_daily_papers.json"))
    remote = web_settings(settings, hf_api_url=feed_server.url("/api/daily_papers"))
    async with running_app(remote, engine) as (_, client):
        csrf = await signed_in_csrf(client)
        page = await client.post(
            f"{CONSOLE}/ingest", data={"csrf": csrf, "day": "2026-11-27", "source": "hf"}
        )
        bad_day = await client.post(
            f"{CONSOLE}/ingest", data={"csrf": csrf, "day": "yesterday", "source": "hf"}
        )
    assert page.status_code == 200, page.text
    assert "3 papers read for 2026-11-27: 3 new, 0 updated, 3 skipped." in page.text
    assert "record 3 (&#34;A Paper Whose Identifier Went Missing&#34;): no arXiv id" in page.text
    assert "record 5: no title (arXiv id 2611.18999)" in page.text
    assert "Sparse Mixture-of-Depths Routing" in page.text
    assert bad_day.status_code == 422 and "YYYY-MM-DD" in bad_day.text


async def test_metrics_count_the_ledger_and_the_audience(
    settings: Settings, engine: Engine
) -> None:
    make_edition(engine, DAY)
    seed_subscribers(engine, 4)
    seed_subscribers(engine, 1, status=SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    async with running_app(web_settings(settings), engine) as (_, client):
        csrf = await signed_in_csrf(client)
        await client.post(f"{CONSOLE}/editions/{DAY}/send", data={"csrf": csrf, "confirmed": "yes"})
        metrics = await client.get("/metrics")
        health = await client.get("/healthz")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert 'newsletter_deliveries{status="queued"} 4.0' in text
    assert 'newsletter_deliveries{status="sent"} 0.0' in text
    assert "newsletter_signups 5.0" in text and "newsletter_unsubscribes 1.0" in text
    assert 'newsletter_feedback_events{kind="complaint"} 0.0' in text
    finished = "newsletter_edition_send_finished_timestamp_seconds"
    assert f'{finished}{{edition="2026-03-06",status="sending"}} 0.0' in text
    assert "newsletter_send_rate_per_second 0.0" in text
    assert health.status_code == 200 and health.json() == {"status": "ok", "database": "ok"}


async def test_healthz_is_503_when_the_database_does_not_answer(
    settings: Settings, tmp_path: Path
) -> None:
    unreachable = create_engine(f"sqlite:///{tmp_path / 'no-such-directory' / 'x.db'}")
    async with running_app(web_settings(settings), unreachable) as (_, client):
        answer = await client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["database"] == "unreachable"


async def test_progress_is_json_and_the_csrf_field_is_on_every_form(
    settings: Settings, engine: Engine
) -> None:
    make_edition(engine, DAY)
    seed_subscribers(engine, 1)
    async with running_app(web_settings(settings), engine) as (_, client):
        csrf = await signed_in_csrf(client)
        pages = [
            await client.get(f"{CONSOLE}/{path}")
            for path in ("", f"editions/{DAY}", "readers", "readers/1", "ingest")
        ]
    for page in pages:
        assert page.status_code == 200
        forms = re.findall(r'<form method="post".*?</form>', page.text, flags=re.S)
        assert forms, page.url
        for form in forms:
            assert hidden_value(form, "csrf") == csrf
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
