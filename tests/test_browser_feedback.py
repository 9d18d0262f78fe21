"""A feedback link in real headless Chromium: open it, press the button, see it saved, undo.

Without JavaScript (the pages need none), then screenshots of the page at
375 and 1280 px wide, light and dark, kept in the test's tmp dir.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter.core.settings import Settings
from newsletter.models import Paper
from newsletter.web.app import create_app
from subscribers.models import ReaderPaper, Subscriber, SubscriberStatus
from subscribers.tokens import feedback_url, preferences_url
from tests.support.web import live_server, web_settings
from tests.test_browser import CHROMIUM_ARGS, _chromium_path, _skip

pytestmark = pytest.mark.browser

DAY = dt.date(2026, 3, 5)
PAPER = "2603.05001"


@pytest.fixture
def site(settings: Settings, engine: Engine) -> Iterator[tuple[str, str]]:
    """A real uvicorn, a stored paper and reader; the base URL and the reader's key."""
    with Session(engine, expire_on_commit=False) as session:
        session.add(
            Paper(
                arxiv_id=PAPER,
                title="Walking Before Running: Sim-to-Real Quadruped Locomotion "
                "with Curriculum-Shaped Rewards on Uneven Terrain",
                abstract="We train quadrupeds in simulation and transfer to hardware.",
                authors=["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra"],
                daily_date=DAY,
                upvotes=12,
                sources=["hf"],
            )
        )
        reader = Subscriber(email="reader@example.org", status=SubscriberStatus.CONFIRMED)
        session.add(reader)
        session.commit()
    with live_server(create_app(web_settings(settings), engine=engine)) as base_url:
        yield base_url, reader.key


def _verdicts(engine: Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        return [(r.paper_key, r.verdict, r.source) for r in session.exec(select(ReaderPaper))]


def test_feedback_link_button_confirmation_and_undo_in_chromium(
    site: tuple[str, str], settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    executable = _chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip("the playwright package is not installed (pip install -e '.[dev]')")
    base_url, key = site
    url = feedback_url(base_url, settings.secret_key, key, PAPER, "more")
    shots: list[Path] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            # The whole flow with scripts off: a plain HTML form is all it needs.
            context = browser.new_context(
                viewport={"width": 375, "height": 740}, java_script_enabled=False
            )
            page = context.new_page()
            page.goto(url)
            assert page.get_by_role("heading", name="More like this?").is_visible()
            assert page.get_by_role("link", name="Read it on arXiv").get_attribute("href") == (
                f"https://arxiv.org/abs/{PAPER}"
            )
            assert _verdicts(engine) == []  # opening the link recorded nothing

            page.get_by_role("button", name="More like this").click()
            page.wait_for_selector("text=Thanks: more papers like this")
            assert page.get_by_role("status").inner_text().startswith("Saved.")
            assert _verdicts(engine) == [(PAPER, "liked", "email")]

            page.get_by_role("button", name="Undo").click()
            page.wait_for_selector("h1:has-text('Undone')")
            assert "Nothing is recorded for this paper." in page.get_by_role("status").inner_text()
            assert _verdicts(engine) == []
            context.close()

            # The keyboard reaches the button, with a visible focus ring.
            context = browser.new_context(viewport={"width": 375, "height": 740})
            page = context.new_page()
            page.goto(url)
            for _ in range(10):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.tagName") == "BUTTON":
                    break
            assert page.evaluate("document.activeElement.textContent.trim()") == "More like this"
            outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline == "solid"
            context.close()

            for width in (375, 1280):
                for scheme in ("light", "dark"):
                    context = browser.new_context(
                        viewport={"width": width, "height": 800},
                        color_scheme=scheme,  # type: ignore[arg-type]
                    )
                    page = context.new_page()
                    page.goto(url)
                    # No sideways scrolling, even with a long title on a phone.
                    assert page.evaluate("document.documentElement.scrollWidth") <= width
                    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
                    assert background == (
                        "rgb(255, 255, 255)" if scheme == "light" else "rgb(15, 18, 22)"
                    )
                    shot = tmp_path / f"feedback-{width}-{scheme}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    page.get_by_role("button", name="More like this").click()
                    page.wait_for_selector("text=Thanks: more papers like this")
                    done = tmp_path / f"feedback-done-{width}-{scheme}.png"
                    page.screenshot(path=str(done), full_page=True)
                    shots += [shot, done]
                    context.close()

            # The preferences page lists the paper; flip it, then remove it, with scripts off.
            for scheme in ("light", "dark"):
                context = browser.new_context(
                    viewport={"width": 375, "height": 800},
                    color_scheme=scheme,  # type: ignore[arg-type]
                    java_script_enabled=False,
                )
                page = context.new_page()
                page.goto(preferences_url(base_url, settings.secret_key, key))
                shot = tmp_path / f"preferences-375-{scheme}.png"
                page.locator("#your-papers").screenshot(path=str(shot))
                shots.append(shot)
                context.close()
            page = browser.new_page(viewport={"width": 375, "height": 800})
            page.goto(preferences_url(base_url, settings.secret_key, key))
            page.get_by_role("button", name="Change to less like this").click()
            page.wait_for_selector("text=Less like this:")
            assert _verdicts(engine) == [(PAPER, "disliked", "email")]
            page.get_by_role("button", name="Remove").click()
            page.wait_for_selector("text=None yet.")
            assert _verdicts(engine) == []
        finally:
            browser.close()
    assert all(shot.stat().st_size > 1000 for shot in shots)
    print("screenshots:", *shots)
