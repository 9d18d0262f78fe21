"""The preferences page in real headless Chromium: edit the profile, add a library, download
the data, delete it; screenshots at 375 px and 1280 px, light and dark, in the test's tmp dir.

Skipped, with the reason printed, where no Chromium or Playwright can be found.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from newsletter.core.db import session_scope
from newsletter.core.settings import Settings
from newsletter.web.app import create_app
from subscribers.models import ReaderPaper
from subscribers.store import add_subscriber
from subscribers.tokens import make_preferences_token
from tests.support.web import live_server, store_papers, subscriber, web_settings
from tests.test_browser import CHROMIUM_ARGS, _chromium_path, _skip

pytestmark = pytest.mark.browser

DAY = dt.date(2026, 3, 5)
LIBRARY = """@article{vaswani2017,
  title = {Attention {Is} {All} {You} {Need}},
  abstract = {The dominant sequence transduction models are based on recurrent networks.},
  eprint = {1706.03762}, archivePrefix = {arXiv},
}
"""


@pytest.fixture
def preferences_url(settings: Settings, engine: Engine) -> Iterator[str]:
    """A confirmed reader's preferences page under a real uvicorn."""
    store_papers(engine, DAY)
    with session_scope(engine) as session:
        key = add_subscriber(
            session, email="reader@example.org", name="Reader", topics=["LLMs"], confirmed=True
        ).key
    with live_server(create_app(web_settings(settings), engine=engine)) as base_url:
        yield f"{base_url}/preferences/{make_preferences_token(settings.secret_key, key)}"


def test_edit_the_profile_download_and_delete_the_data_in_chromium(
    preferences_url: str, engine: Engine, tmp_path: Path
) -> None:
    executable = _chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip("the playwright package is not installed (pip install -e '.[dev]')")
    library = tmp_path / "library.bib"
    library.write_text(LIBRARY, encoding="utf-8")
    console_errors: list[str] = []
    refused: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 375, "height": 800}, accept_downloads=True
            )
            page = context.new_page()
            page.on(
                "console",
                lambda message: (
                    console_errors.append(message.text) if message.type == "error" else None
                ),
            )
            # The browser asks for /favicon.ico on its own; the site has none.
            page.on(
                "response",
                lambda response: (
                    refused.append(response.url)
                    if response.status >= 400 and not response.url.endswith("/favicon.ico")
                    else None
                ),
            )
            page.goto(preferences_url)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            # The counter is the page's one script, allowed by the CSP.
            assert page.locator("#interests-left").text_content() == "500 of 500 characters left"
            page.get_by_label("What are you working on?").fill("concept erasure in diffusion")
            assert page.locator("#interests-left").text_content() == "472 of 500 characters left"
            page.get_by_label("Papers you already like").fill(
                "2603.05000\nhttps://arxiv.org/abs/2603.05001v1"
            )
            page.get_by_label('How many papers "For you"').select_option("7")
            page.get_by_label("Trending only").check()
            page.get_by_label("Weekly, the best of the week, on").check()
            page.get_by_label("Weekday of the weekly digest").select_option("Wednesday")
            page.get_by_role("button", name="Save").click()
            page.wait_for_selector("text=Your preferences are saved")
            stored = subscriber(engine, "reader@example.org")
            assert stored is not None
            assert (stored.interests, stored.personal_count, stored.digest_mode) == (
                "concept erasure in diffusion",
                7,
                "trending",
            )
            assert (stored.frequency, stored.weekly_day) == ("weekly", 2)

            page.set_input_files("#library", str(library))
            page.get_by_role("button", name="Add these papers").click()
            page.wait_for_selector("text=Your library is read: 1 paper, 1 new")
            with Session(engine) as session:
                judged = session.exec(
                    select(ReaderPaper.arxiv_id, ReaderPaper.source).order_by(col(ReaderPaper.id))
                ).all()
            assert [tuple(row) for row in judged] == [
                ("2603.05000", "pasted"),
                ("2603.05001", "pasted"),
                ("1706.03762", "library"),
            ]
            assert page.evaluate("document.documentElement.scrollWidth") <= 375

            with page.expect_download() as download_info:
                page.get_by_role("link", name="Download my data").click()
            download = download_info.value
            assert download.suggested_filename == "my-data.json"
            saved = tmp_path / "my-data.json"
            download.save_as(saved)
            data = json.loads(saved.read_text(encoding="utf-8"))
            assert data["email"] == "reader@example.org"
            assert data["interests"] == "concept erasure in diffusion"
            assert [paper["source"] for paper in data["papers"]].count("library") == 1

            shots = []
            for width in (375, 1280):
                for scheme in ("light", "dark"):
                    shot = browser.new_page(
                        viewport={"width": width, "height": 900}, color_scheme=scheme
                    )
                    shot.goto(preferences_url)
                    assert shot.evaluate("document.documentElement.scrollWidth") <= width
                    path = tmp_path / f"preferences-{width}-{scheme}.png"
                    shot.screenshot(path=str(path), full_page=True)
                    shots.append(path)
                    shot.close()
            print("screenshots:", *shots, sep="\n  ")

            page.get_by_role("button", name="Delete my data").click()
            # The box is required: the browser itself refuses the form until it is ticked.
            assert subscriber(engine, "reader@example.org") is not None
            page.get_by_label("I understand: delete everything now").check()
            page.get_by_role("button", name="Delete my data").click()
            page.wait_for_selector("text=Your data is deleted")
            assert subscriber(engine, "reader@example.org") is None
            context.close()
        finally:
            browser.close()
    assert refused == []
    assert [error for error in console_errors if "404" not in error] == []
    assert all(path.stat().st_size > 10_000 for path in shots)
