"""An accessibility checker's opinion: axe-core in Debian's Chromium, on every page and email.

axe-core comes from npm (package.json at the repository's root; `make setup`
runs `npm ci`) and is injected by Playwright into each page: every web page a
reader can reach, the operator's console (signed in with the admin token), and
the HTML of every kind of email shown as a page, each in
light and in dark mode (`prefers-color-scheme`). No violation may be serious or
critical; the others are printed. Without Chromium or axe-core the test skips
with the reason printed, except in CI, where it fails.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from newsletter.core.db import create_db_engine
from newsletter.core.settings import load_settings
from newsletter.web.app import create_app
from subscribers.tokens import make_confirm_token, make_preferences_token, make_unsubscribe_token
from tests.support import REPO_ROOT
from tests.support.cli import CLI_SECRET_KEY
from tests.support.message_kinds import DAY, RECIPIENTS, SentKinds, subscriber_key
from tests.support.outside_tools import missing_tool
from tests.support.web import ADMIN_TOKEN, html_text, live_server

# A browser, a live server and (once per run) every message kind sent by `newsletter`.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

AXE = REPO_ROOT / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
COLOR_SCHEMES = ("light", "dark")
BLOCKING = {"serious", "critical"}
# The operator's console, each page opened after signing in with the admin token.
CONSOLE_PAGES = [
    "/admin/console/sign-in",
    "/admin/console/",
    f"/admin/console/editions/{DAY.isoformat()}",
    "/admin/console/readers",
    "/admin/console/readers/1",
    "/admin/console/ingest",
]


@dataclass(frozen=True)
class Violation:
    """One axe rule broken on one page in one colour scheme."""

    page: str
    scheme: str
    rule: str
    impact: str
    help: str
    targets: list[str]

    def __str__(self) -> str:
        where = ", ".join(self.targets[:3]) + (" …" if len(self.targets) > 3 else "")
        return f"{self.impact:8} {self.rule} on {self.page} ({self.scheme}): {self.help} [{where}]"


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright."""
    if not AXE.exists():
        missing_tool(
            "accessibility check",
            f"no {AXE.relative_to(REPO_ROOT)}: run `make setup` (npm ci) with npm installed",
        )
    if not CHROMIUM.exists():
        missing_tool(
            "accessibility check",
            "no Chromium at /usr/bin/chromium (Debian: apt-get install chromium)",
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_tool(
            "accessibility check",
            "the playwright package is not installed (pip install -e '.[dev]')",
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _axe_violations(page: Any, name: str, scheme: str) -> list[Violation]:
    """Run axe-core on the page as it is now."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        Violation(
            page=name,
            scheme=scheme,
            rule=item["id"],
            impact=item["impact"] or "unknown",
            help=item["help"],
            targets=[json.dumps(node["target"]) for node in item["nodes"]],
        )
        for item in found
    ]


def _check_everywhere(
    browser: Any, *, origin: str | None, visits: dict[str, Callable[[Any], None]]
) -> list[Violation]:
    """Open each page in each colour scheme (no request leaves `origin`) and run axe on it."""
    violations: list[Violation] = []
    for scheme in COLOR_SCHEMES:
        context = browser.new_context(
            color_scheme=scheme,
            bypass_csp=True,  # the pages' CSP (rightly) refuses the injected axe script
        )
        context.route(
            "**/*",
            lambda route: (
                route.continue_()
                if origin and route.request.url.startswith(origin)
                else route.abort()
            ),
        )
        try:
            for name, visit in visits.items():
                page = context.new_page()
                visit(page)
                violations += _axe_violations(page, name, scheme)
                page.close()
        finally:
            context.close()
    return violations


def _report(what: str, count: int, violations: list[Violation]) -> list[Violation]:
    """Print every violation; return the serious and critical ones."""
    blocking = [v for v in violations if v.impact in BLOCKING]
    print(
        f"axe-core on {count} {what} x {len(COLOR_SCHEMES)} colour schemes: "
        f"{len(blocking)} serious or critical, {len(violations) - len(blocking)} minor or moderate"
    )
    for violation in violations:
        print(f"  {violation}")
    return blocking


def test_every_web_page_passes_axe_in_light_and_dark(
    browser: Any, every_message_kind: SentKinds
) -> None:
    sent = every_message_kind
    reader = subscriber_key(sent.database_url, RECIPIENTS["digest-personal"])
    newcomer = subscriber_key(sent.database_url, RECIPIENTS["confirmation"])
    now = dt.datetime.now(dt.UTC)
    personal_text, _ = html_text(sent.messages["digest-personal"].message)
    feedback = re.search(r"More like this: \S+?(/feedback/\S+)", personal_text)
    assert feedback is not None, personal_text
    paths = {
        "sign-up": "/",
        "confirm": f"/confirm/{make_confirm_token(CLI_SECRET_KEY, newcomer, issued_at=now)}",
        "preferences": f"/preferences/{make_preferences_token(CLI_SECRET_KEY, reader)}",
        "unsubscribe": f"/unsubscribe/{make_unsubscribe_token(CLI_SECRET_KEY, reader)}",
        "feedback": feedback.group(1),
        "editions": "/editions",
        "edition": f"/editions/{DAY.isoformat()}",
        "a broken link": "/confirm/not-a-token",
    }
    settings = load_settings(
        _env_file=None,
        database_url=sent.database_url,
        secret_key=CLI_SECRET_KEY,
        base_url="https://news.example.org",
        admin_token=ADMIN_TOKEN,
    )
    engine = create_db_engine(sent.database_url)
    try:
        with live_server(create_app(settings, engine=engine)) as site:

            def opens(path: str) -> Callable[[Any], None]:
                def visit(page: Any) -> None:
                    answer = page.goto(site + path)
                    assert answer is not None and answer.status < 500, (path, answer)

                return visit

            def opens_console(path: str) -> Callable[[Any], None]:
                def visit(page: Any) -> None:
                    if not page.context.cookies():
                        page.goto(site + "/admin/console/sign-in")
                        page.get_by_label("Admin token").fill(ADMIN_TOKEN)
                        page.get_by_role("button", name="Sign in").click()
                        page.wait_for_url(site + "/admin/console/")
                    answer = page.goto(site + path)
                    assert answer is not None and answer.status == 200, (path, answer)

                return visit

            def signs_up(page: Any) -> None:
                page.goto(site + "/")
                page.get_by_label("Email address").fill("axe@example.org")
                page.get_by_role("button", name="Subscribe").click()
                page.wait_for_selector("text=Check your inbox")

            visits = {name: opens(path) for name, path in paths.items()}
            visits["sign-up sent"] = signs_up
            visits |= {f"console {path}": opens_console(path) for path in CONSOLE_PAGES}
            violations = _check_everywhere(browser, origin=site, visits=visits)
    finally:
        engine.dispose()
    assert _report("web pages", len(visits), violations) == []


def test_every_email_passes_axe_in_light_and_dark(
    browser: Any, every_message_kind: SentKinds
) -> None:
    htmls = {kind: html_text(m.message)[1] for kind, m in every_message_kind.messages.items()}
    for kind, html in htmls.items():
        # What a screen reader announces first, and how a client labels the message.
        assert re.search(r'<html lang="en"', html), kind
        title = re.search(r"<title>([^<]+)</title>", html)
        assert title is not None and len(title.group(1).split()) >= 3, kind
        tables = re.findall(r"<table\b[^>]*>", html)
        assert tables and all('role="presentation"' in table for table in tables), kind
        assert all(" alt=" in image for image in re.findall(r"<img\b[^>]*>", html)), kind

    def shows(html: str) -> Callable[[Any], None]:
        def visit(page: Any) -> None:
            page.set_content(html)

        return visit

    visits = {f"{kind} email": shows(html) for kind, html in htmls.items()}
    violations = _check_everywhere(browser, origin=None, visits=visits)
    assert _report("emails", len(visits), violations) == []


def test_the_check_sees_low_contrast_text_and_an_image_without_alt(browser: Any) -> None:
    # A page that breaks two serious rules: the check must report both, in both schemes.
    bad = (
        '<!doctype html><html lang="en"><head><title>A bad page for the check</title></head>'
        '<body><p style="color:#c8c8c8;background:#ffffff">Pale text on white</p>'
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" width="20" height="20">'
        "</body></html>"
    )

    def shows(page: Any) -> None:
        page.set_content(bad)

    violations = _check_everywhere(browser, origin=None, visits={"bad page": shows})
    found = {(v.rule, v.scheme) for v in violations if v.impact in BLOCKING}
    assert {("color-contrast", s) for s in COLOR_SCHEMES} <= found
    assert {("image-alt", s) for s in COLOR_SCHEMES} <= found
