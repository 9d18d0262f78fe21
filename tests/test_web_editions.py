"""Reading on the web: one edition, the archive and the Atom feed; drafts stay private."""

from __future__ import annotations

import datetime as dt
from xml.etree import ElementTree as ET

from sqlalchemy import Engine, event
from sqlmodel import Session, select

from newsletter.core.settings import Settings
from newsletter.models import Edition, EditionStatus
from newsletter.values import PersonalField
from newsletter.web.edition_pages import EditionPage, EditionPageCache
from tests.support.web import running_app, web_settings

LINK_MARKER = "5e7d0c1b9a8f4e3d2c1b0a9f8e7d6c5b"
UNSUBSCRIBE = PersonalField.UNSUBSCRIBE_URL.placeholder(LINK_MARKER)
PREFERENCES = PersonalField.PREFERENCES_URL.placeholder(LINK_MARKER)

ATOM = "{http://www.w3.org/2005/Atom}"
SENT_DAY = dt.date(2026, 3, 5)
DRAFT_DAY = dt.date(2026, 3, 6)


def _store_editions(engine: Engine) -> None:
    html = (
        '<!doctype html><html lang="en"><body><h1>Top papers</h1>'
        f'<a href="{UNSUBSCRIBE}">Unsubscribe</a> '
        f'<a href="{PREFERENCES}">Manage preferences</a></body></html>'
    )
    text = f"Top papers\nUnsubscribe: {UNSUBSCRIBE}\n"
    now = dt.datetime(2026, 3, 5, 7, tzinfo=dt.UTC)
    with Session(engine) as session:
        session.add(
            Edition(
                date=SENT_DAY,
                status=EditionStatus.SENT,
                subject="Daily ML Papers: Attention & <friends>",
                html=html,
                text=text,
                link_marker=LINK_MARKER,
                rendered_at=now,
                send_started_at=now,
            )
        )
        session.add(
            Edition(
                date=DRAFT_DAY,
                status=EditionStatus.DRAFT,
                subject="Not yet",
                html=html,
                link_marker=LINK_MARKER,
            )
        )
        session.commit()


async def test_a_sent_edition_reads_in_the_browser_without_personal_links(
    settings: Settings, engine: Engine
) -> None:
    _store_editions(engine)
    async with running_app(web_settings(settings), engine) as (_, client):
        page = await client.get(f"/editions/{SENT_DAY}")
    assert page.status_code == 200
    assert "<h1>Top papers</h1>" in page.text
    assert "NLPERSONAL" not in page.text
    assert "/unsubscribe/" not in page.text and "/preferences/" not in page.text
    assert 'href="https://news.example.org/#unsubscribe"' in page.text
    assert "script-src" not in page.headers["content-security-policy"]


async def test_drafts_missing_days_and_bad_dates_are_404_pages(
    settings: Settings, engine: Engine
) -> None:
    _store_editions(engine)
    async with running_app(web_settings(settings), engine) as (_, client):
        draft = await client.get(f"/editions/{DRAFT_DAY}")
        missing = await client.get("/editions/2020-01-01")
        impossible = await client.get("/editions/2026-02-30")
        words = await client.get("/editions/<script>")
    for answer in (draft, missing, impossible, words):
        assert answer.status_code == 404
        assert "No such edition" in answer.text
        assert "<script>" not in answer.text
    assert "No digest went out on 2020-01-01" in missing.text
    assert "is not a date" in impossible.text


async def test_archive_and_atom_feed_list_only_sent_editions(
    settings: Settings, engine: Engine
) -> None:
    _store_editions(engine)
    async with running_app(web_settings(settings), engine) as (_, client):
        archive = await client.get("/editions")
        feed = await client.get("/editions/feed.xml")
    assert archive.status_code == 200
    assert f'href="/editions/{SENT_DAY}"' in archive.text
    assert "Attention &amp; &lt;friends&gt;" in archive.text
    assert str(DRAFT_DAY) not in archive.text
    assert feed.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(feed.content)
    assert root.tag == f"{ATOM}feed"
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 1
    entry = entries[0]
    assert entry.findtext(f"{ATOM}title") == "Daily ML Papers: Attention & <friends>"
    link = entry.find(f"{ATOM}link")
    assert link is not None
    assert link.get("href") == f"https://news.example.org/editions/{SENT_DAY}"
    assert entry.findtext(f"{ATOM}updated") == "2026-03-05T07:00:00Z"
    content = entry.findtext(f"{ATOM}content") or ""
    assert "NLPERSONAL" not in content and "Top papers" in content


async def test_empty_archive_invites_to_subscribe(settings: Settings, engine: Engine) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        archive = await client.get("/editions")
        feed = await client.get("/editions/feed.xml")
    assert archive.status_code == 200 and "No edition has gone out yet" in archive.text
    assert ET.fromstring(feed.content).findall(f"{ATOM}entry") == []


async def test_an_edition_page_is_built_once_and_rebuilt_when_the_edition_is_rendered_again(
    settings: Settings, engine: Engine
) -> None:
    _store_editions(engine)
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    now = [0.0]
    async with running_app(web_settings(settings), engine) as (app, client):
        app.state.web.edition_pages = EditionPageCache(recheck_seconds=2, clock=lambda: now[0])
        first = await client.get(f"/editions/{SENT_DAY}")
        event.listen(engine, "before_cursor_execute", record)
        try:
            again = await client.get(f"/editions/{SENT_DAY}")  # within the recheck time
            assert statements == []  # served from memory, no query at all
            now[0] = 2.5
            checked = await client.get(f"/editions/{SENT_DAY}")
        finally:
            event.remove(engine, "before_cursor_execute", record)
        # Past the recheck time: the status is read again, not the stored HTML.
        assert len(statements) == 1 and "editions.html" not in statements[0]
        assert again.content == checked.content == first.content
        assert again.headers["content-security-policy"] == first.headers["content-security-policy"]

        with Session(engine) as session:  # what a new rendering stores
            edition = session.exec(select(Edition).where(Edition.date == SENT_DAY)).one()
            edition.html = edition.html.replace("Top papers", "Top papers, corrected")
            edition.rendered_at = dt.datetime(2026, 3, 5, 8, tzinfo=dt.UTC)
            session.add(edition)
            session.commit()
        still_cached = await client.get(f"/editions/{SENT_DAY}")
        now[0] = 5.0
        rendered_again = await client.get(f"/editions/{SENT_DAY}")

        with Session(engine) as session:  # withdrawn: no longer public
            edition = session.exec(select(Edition).where(Edition.date == SENT_DAY)).one()
            edition.status = EditionStatus.CANCELLED
            session.add(edition)
            session.commit()
        now[0] = 7.5
        withdrawn = await client.get(f"/editions/{SENT_DAY}")

    assert "<h1>Top papers</h1>" in first.text
    assert still_cached.content == first.content  # for at most the recheck time
    assert "<h1>Top papers, corrected</h1>" in rendered_again.text
    assert withdrawn.status_code == 404


def test_the_page_cache_keeps_the_most_recently_read_pages() -> None:
    cache = EditionPageCache(max_pages=2)
    stamp = dt.datetime(2026, 3, 5, 7, tzinfo=dt.UTC)
    days = [dt.date(2026, 3, n) for n in (1, 2, 3)]
    for n, day in enumerate(days[:2], start=1):
        cache.put(day, EditionPage(n, stamp, f"page {n}".encode()))
    assert cache.fresh(days[0]) is not None  # day 1 is now the most recently read
    cache.put(days[2], EditionPage(3, stamp, b"page 3"))
    assert [cache.fresh(day) is not None for day in days] == [True, False, True]
    assert cache.checked(days[0], 1, stamp + dt.timedelta(seconds=1)) is None  # re-rendered
    assert cache.fresh(days[0]) is None and len(cache) == 1
