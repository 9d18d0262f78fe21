"""The pages in real headless Chromium against a real uvicorn: join, confirm, read, leave.

Debian's `chromium` is driven by Playwright; where no browser can be found the
test is skipped with the reason printed, never silently.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine

from newsletter.core.settings import Settings
from newsletter.delivery.worker import run_worker
from newsletter.web.app import create_app
from subscribers.models import SubscriberStatus
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
    ADMIN_TOKEN,
    confirmation_path,
    confirmation_worker,
    html_text,
    store_papers,
    subscriber,
    web_settings,
)

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DAY = dt.date(2026, 3, 5)


def _skip(reason: str) -> None:
    print(f"SKIPPED browser test: {reason}")
    pytest.skip(reason)


def _chromium_path() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        _skip("no Chromium at /usr/bin/chromium or on PATH (Debian: apt-get install chromium)")
    assert found is not None
    return found


class _ThreadedServer(uvicorn.Server):
    """uvicorn that says when its start-up has ended, so a test can wait for it."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_ended = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.startup_ended.set()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def live_site(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> Iterator[str]:
    """The app under a real uvicorn in a thread; yields its base URL."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    config = web_settings(settings, base_url=base_url)
    server = _ThreadedServer(
        uvicorn.Config(
            create_app(config, engine=engine),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    if not server.startup_ended.wait(timeout=20) or not server.started:
        raise RuntimeError("uvicorn did not start")
    try:
        # Beside it, what `newsletter serve`'s worker child does for sign-ups.
        with confirmation_worker(config, engine):
            yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _wait_for_messages(smtp_server: RecordingSmtpServer, count: int) -> None:
    assert smtp_server.handler.wait_for_messages(count, timeout=30), f"{count} never arrived"


def _send_over_admin(base_url: str, settings: Settings, engine: Engine) -> None:
    """Queue the edition's send over /admin, let a worker send it, and check the ledger."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=base_url, headers=auth, timeout=20) as client:
        started = client.post(f"/admin/editions/{DAY}/send")
        assert started.status_code == 202, started.text
        # A worker sends it; in a thread of its own, since Playwright runs a loop in this one.
        worker = web_settings(settings, base_url=base_url)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: asyncio.run(run_worker(worker, engine))).result(timeout=60)
        status = client.get(started.json()["status_url"]).json()
    assert status["status"] == "sent", status
    assert status["deliveries"]["sent"] == 1, status


def test_join_confirm_and_leave_through_a_sent_digest_in_chromium(
    live_site: str, settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    executable = _chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip("the playwright package is not installed (pip install -e '.[dev]')")
    base_url = live_site

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 375, "height": 740})
            page.goto(base_url + "/")
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            page.get_by_label("Email address").fill("reader@example.org")
            page.get_by_label("Name (optional)").fill("Reader")
            page.get_by_label("LLMs").check()
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_selector("text=Check your inbox")

            # The sign-up queued the confirmation; the worker sends it: wait for it.
            _wait_for_messages(smtp_server, 1)
            assert [m.rcpt_tos for m in smtp_server.messages] == [["reader@example.org"]]
            page.goto(base_url + confirmation_path(smtp_server))
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            stored = subscriber(engine, "reader@example.org")
            assert stored is not None and stored.status == SubscriberStatus.PENDING
            page.get_by_role("button", name="Confirm my subscription").click()
            page.wait_for_selector("text=You are subscribed")
            stored = subscriber(engine, "reader@example.org")
            assert stored is not None and stored.status == SubscriberStatus.CONFIRMED
            assert stored.topics == ["LLMs"] and stored.name == "Reader"

            store_papers(engine, DAY)
            _send_over_admin(base_url, settings, engine)
            digest = smtp_server.messages[-1].message
            assert re.match(rf"<{re.escape(base_url)}/unsubscribe/", digest["List-Unsubscribe"])
            _, digest_html = html_text(digest)

            # Open the digest as a mail client would show it and follow its footer link.
            page.set_content(digest_html)
            with page.expect_navigation():
                page.get_by_role("link", name="Unsubscribe").click()
            assert page.url.startswith(base_url + "/unsubscribe/")
            stored = subscriber(engine, "reader@example.org")
            assert stored is not None and stored.status == SubscriberStatus.CONFIRMED
            page.get_by_role("button", name="Unsubscribe").click()
            page.wait_for_selector("text=You are unsubscribed")
            stored = subscriber(engine, "reader@example.org")
            assert stored is not None and stored.status == SubscriberStatus.UNSUBSCRIBED
        finally:
            browser.close()


def test_the_api_docs_render_in_chromium_without_reaching_any_other_host(live_site: str) -> None:
    executable = _chromium_path()
    try:
        from playwright.sync_api import Route, sync_playwright
    except ImportError:
        _skip("the playwright package is not installed (pip install -e '.[dev]')")
    elsewhere: list[str] = []
    console_errors: list[str] = []

    def only_this_site(route: Route) -> None:
        if route.request.url.startswith(live_site):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_this_site)
            page.on(
                "console",
                lambda message: (
                    console_errors.append(message.text) if message.type == "error" else None
                ),
            )
            page.goto(live_site + "/docs")
            page.wait_for_selector('[data-path="/subscribe"]')
            page.wait_for_selector('[data-path="/admin/editions/{day}/send"]')
        finally:
            browser.close()
    assert elsewhere == []
    assert console_errors == []
