"""The digest as a mail client shows it with images blocked (Outlook's default), in Chromium.

The digest is made the way an operator makes it (`newsletter ingest --file`,
then `newsletter preview`); every image request is refused, as a client that
blocks remote images does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_cli
from tests.test_browser import CHROMIUM_ARGS, _chromium_path, _skip

pytestmark = pytest.mark.browser

DAY = "2026-11-20"


def _record(number: int, upvotes: int) -> dict[str, Any]:
    arxiv_id = f"2611.{number:05d}"
    title = f"Paper number {number} on sparse attention"
    return {
        "paper": {
            "id": arxiv_id,
            "authors": [{"name": "Ana Uno"}, {"name": "Bo Dos"}],
            "publishedAt": f"{DAY}T06:00:00.000Z",
            "submittedOnDailyAt": f"{DAY}T08:00:00.000Z",
            "title": title,
            "summary": "We study sparse attention at scale.",
            "upvotes": upvotes,
        },
        "title": title,
        "numComments": 1,
        "thumbnail": f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{arxiv_id}.png",
    }


def test_with_images_blocked_cards_keep_their_text_where_it_is_without_any_alt_text(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    executable = _chromium_path()
    try:
        from playwright.sync_api import Route, sync_playwright
    except ImportError:
        _skip("the playwright package is not installed (pip install -e '.[dev]')")
    papers = tmp_path / "papers.json"
    papers.write_text(json.dumps([_record(n, 100 - n) for n in range(1, 6)]), encoding="utf-8")
    run_cli("ingest", "--file", str(papers), "--date", DAY, env=cli_env)
    out = tmp_path / "digest.html"
    run_cli("preview", "--date", DAY, "--out", str(out), env=cli_env)
    html = out.read_text(encoding="utf-8")
    assert html.count("cdn-thumbnails.huggingface.co") == 3  # the leading papers have one

    blocked: list[str] = []

    def block_images(route: Route) -> None:
        blocked.append(route.request.url)
        route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 900})
            page.route("**/*.png", block_images)
            page.set_content(html)
            titles = page.locator("h2 a")
            assert titles.count() == 5
            lefts = [titles.nth(i).bounding_box()["x"] for i in range(5)]  # type: ignore[index]
            widths = [
                page.locator("h2").nth(i).bounding_box()["width"]  # type: ignore[index]
                for i in range(5)
            ]
            visible = page.inner_text("body")
        finally:
            browser.close()
    assert len(blocked) == 3
    # A card with a (blocked) thumbnail sets its text exactly as one without: no
    # empty image column pushes it aside or narrows it.
    assert lefts[:3] == [lefts[4]] * 3, lefts
    assert widths[:3] == [widths[4]] * 3, widths
    # Decorative images say nothing: no alt text repeats the title.
    assert "Thumbnail" not in visible
    assert visible.count("Paper number 1 on sparse attention") == 1
