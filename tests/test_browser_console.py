"""The console in real headless Chromium against a real uvicorn: sign in, test-send, send, watch.

A worker (the real `run_worker`, in a thread) sends while the edition page
shows the progress it polls; the counts must reach the end without a reload.
Every console page is photographed at 1280 and 375 px (and the edition page
in dark mode too) into `artifacts/console/`, which git ignores.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from newsletter.core.settings import Settings
from newsletter.delivery.worker import run_worker
from newsletter.web.app import create_app
from tests.support.feed_server import FeedResponse, FeedServer
from tests.support.sending import edition_status, ledger_rows, seed_subscribers
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import ADMIN_TOKEN, live_server, store_papers, web_settings
from tests.test_browser import CHROMIUM_ARGS, _chromium_path, _skip

pytestmark = pytest.mark.browser

DAY = dt.date(2026, 3, 5)
READERS = 5
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "console"
WIDTHS = (1280, 375)
NEXT_FRAME = "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def console_site(
    settings: Settings, engine: Engine, feed_server: FeedServer
) -> Iterator[tuple[str, Settings]]:
    """The app under a real uvicorn in a thread; yields its base URL and its settings."""
    configured: list[Settings] = []

    def app_at(base_url: str) -> FastAPI:
        hf_api_url = feed_server.url("/api/daily_papers")
        configured.append(web_settings(settings, base_url=base_url, hf_api_url=hf_api_url))
        return create_app(configured[0], engine=engine)

    with live_server(app_at) as base_url:
        yield base_url, configured[0]


def _photograph(page: Any, name: str) -> None:
    """The page at each width (its full length), and that it never scrolls sideways."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (name, width)
        # A viewport as tall as the page: Chromium paints no frame that is off screen.
        height = page.evaluate("document.documentElement.scrollHeight")
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate(NEXT_FRAME)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"))
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})


def test_sign_in_test_send_send_and_watch_the_progress_reach_the_end_in_chromium(
    console_site: tuple[str, Settings],
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    feed_server: FeedServer,
) -> None:
    executable = _chromium_path()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _skip("the playwright package is not installed (pip install -e '.[dev]')")
    base_url, config = console_site
    console = base_url + "/admin/console"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    store_papers(engine, DAY, count=4)
    readers = seed_subscribers(engine, READERS)
    feed_server.serve("/api/daily_papers", FeedResponse.feed_file("hf_daily_papers.json"))
    worker: Future[Any] | None = None

    with sync_playwright() as playwright, ThreadPoolExecutor(1) as pool:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(base_url + "/admin")
            assert page.url == console + "/sign-in"
            _photograph(page, "sign-in")
            page.get_by_label("Admin token").fill("not the token")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_have_text("That is not the admin token.")
            page.get_by_label("Admin token").fill(ADMIN_TOKEN)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Editions")).to_be_visible()
            cookie = next(c for c in page.context.cookies() if c["name"] == "console_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

            # Open the day, prepare its edition and send a test copy to the operator.
            page.get_by_label("Open the edition of a day").fill(DAY.isoformat())
            page.get_by_role("button", name="Open").click()
            page.get_by_role("button", name="Prepare the edition").click()
            expect(page.get_by_role("status").first).to_contain_text("The edition is prepared")
            page.get_by_label("Send a test copy to").fill("operator@example.org")
            page.get_by_role("button", name="Send test copy").click()
            expect(page.get_by_role("status").first).to_have_text(
                "The test copy was accepted by the relay."
            )
            assert smtp_server.handler.wait_for_messages(1, timeout=30)
            assert [m.rcpt_tos for m in smtp_server.messages] == [["operator@example.org"]]
            assert smtp_server.messages[0].message["Subject"].startswith("[TEST]")
            expect(page.locator('[data-field="test_sends"]')).to_have_text("1")
            frame = page.frame_locator("iframe.preview")
            expect(
                frame.get_by_role("link", name="Paper 3 on <attention> & scaling")
            ).to_be_visible()
            _photograph(page, "edition-draft")

            # Send: the button asks first, on a page of its own.
            page.get_by_role("link", name="Send to readers…").click()
            expect(page.get_by_role("heading", level=1)).to_have_text(
                "Send this edition to every confirmed reader?"
            )
            _photograph(page, "confirm-send")
            page.get_by_role("button", name="Yes, send to readers").click()
            expect(page.get_by_role("status").first).to_have_text(
                "The send is queued: a worker is sending it now."
            )
            expect(page.locator('[data-field="waiting"]')).to_have_text(str(READERS))
            assert smtp_server.handler.wait_for_messages(1, timeout=1)  # only the test copy
            page.evaluate("window.loadedOnce = true")

            # The worker sends now; the page follows it without reloading.
            worker = pool.submit(lambda: asyncio.run(run_worker(config, engine)))
            expect(page.locator('[data-field="status"]')).to_have_text("sent", timeout=60_000)
            expect(page.locator('[data-field="sent"]')).to_have_text(str(READERS))
            expect(page.locator('[data-field="waiting"]')).to_have_text("0")
            expect(page.locator('[data-field="failed"]')).to_have_text("0")
            expect(page.locator('[data-field="time_left"]')).to_have_text("0 s")
            expect(page.get_by_text("The send has ended.")).to_be_visible()
            assert page.evaluate("window.loadedOnce") is True  # updated in place
            report = worker.result(timeout=60)
            assert report.sent == READERS
            _photograph(page, "edition-sent")
            dark = page.context.new_page()  # the same session cookie
            dark.emulate_media(color_scheme="dark")
            dark.goto(page.url)
            dark.set_viewport_size(
                {"width": 1280, "height": dark.evaluate("document.documentElement.scrollHeight")}
            )
            dark.evaluate(NEXT_FRAME)
            dark.screenshot(path=str(ARTIFACTS / "edition-sent-dark-1280.png"))
            dark.close()

            page.get_by_role("link", name="Editions").click()
            row = page.get_by_role("row").filter(has_text=DAY.isoformat())
            expect(row).to_contain_text("sent")
            _photograph(page, "editions")

            # Readers: search, open one, suppress their mailbox.
            page.get_by_role("link", name="Readers", exact=True).click()
            page.get_by_label("Address starts with").fill("reader00003")
            page.get_by_role("button", name="Search").click()
            expect(page.get_by_role("link", name=readers[3])).to_be_visible()
            _photograph(page, "readers")
            page.get_by_role("link", name=readers[3]).click()
            expect(page.get_by_role("row").filter(has_text=DAY.isoformat())).to_contain_text("sent")
            page.get_by_role("button", name="Suppress the mailbox").click()
            expect(page.get_by_role("status").first).to_have_text(
                "Suppressed: no digest reaches this mailbox."
            )
            _photograph(page, "reader")

            # Import a list with one bad row; the report says which and why.
            page.get_by_role("link", name="Readers", exact=True).click()
            page.get_by_label("CSV file").set_input_files(
                {
                    "name": "list.csv",
                    "mimeType": "text/csv",
                    "buffer": b"email,name\nnew@example.org,New\nnot-an-address,Bad\n",
                }
            )
            page.get_by_role("button", name="Import").click()
            expect(page.get_by_role("region", name="Skipped rows")).to_contain_text(
                "not-an-address"
            )
            _photograph(page, "import")

            # Ingest: fetch a day from the (local) Hugging Face feed.
            page.get_by_role("link", name="Ingest").click()
            page.get_by_label("Day").fill("2026-11-27")
            page.get_by_label("Hugging Face Daily Papers").check()
            page.get_by_role("button", name="Fetch now").click()
            expect(page.get_by_role("status").first).to_contain_text("3 new, 0 updated, 3 skipped")
            _photograph(page, "ingest")

            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("status").first).to_have_text("You are signed out.")
        finally:
            browser.close()

    rows = ledger_rows(engine, DAY)
    assert sorted(row.email for row in rows if not row.is_test) == readers
    assert {row.status for row in rows} == {"sent"}
    assert edition_status(engine, DAY)[0] == "sent"
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages[1:]) == readers
