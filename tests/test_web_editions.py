"""Reading on the web: one edition, the archive and the Atom feed; drafts stay private."""

from __future__ import annotations

import datetime as dt
from xml.etree import ElementTree as ET

from sqlalchemy import Engine, event
from sqlmodel import Session, select

from newsletter.core.settings import Settings
from newsletter.editions.content import prepare_edition
from newsletter.models import Edition, EditionStatus, Paper
from newsletter.render import RANKING_LINE
from newsletter.web.edition_pages import EditionPage, EditionPageCache
from tests.support.web import running_app, store_papers, web_settings

ATOM = "{http://www.w3.org/2005/Atom}"
SENT_DAY = dt.date(2026, 3, 5)
DRAFT_DAY = dt.date(2026, 3, 6)
# What belongs to an email and never to the edition on the web or in a feed.
EMAIL_LEFTOVERS = ("View in your browser", "You are receiving this", "Unsubscribe", "NLPERSONAL")


def _store_editions(settings: Settings, engine: Engine) -> None:
    """A sent edition and a draft, prepared from stored papers as `newsletter send` does."""
    for day in (SENT_DAY, DRAFT_DAY):
        store_papers(engine, day)
        prepare_edition(settings, engine, day=day)
    now = dt.datetime(2026, 3, 5, 7, tzinfo=dt.UTC)
    with Session(engine) as session:
        edition = session.exec(select(Edition).where(Edition.date == SENT_DAY)).one()
        edition.status = EditionStatus.SENT
        edition.send_started_at = now
        edition.rendered_at = now
        session.add(edition)
        session.commit()


async def test_a_sent_edition_reads_in_the_browser_as_a_page_not_an_email(
    settings: Settings, engine: Engine
) -> None:
    _store_editions(settings, engine)
    async with running_app(web_settings(settings), engine) as (_, client):
        page = await client.get(f"/editions/{SENT_DAY}")
    assert page.status_code == 200
    assert "<h1>Daily ML Papers: 5 Mar 2026</h1>" in page.text
    titles = [f"Paper {n} on &lt;attention&gt; &amp; scaling" for n in (2, 1, 0)]
    positions = [page.text.index(f'">{title}</a></h2>') for title in titles]
    assert positions == sorted(positions)  # the edition's order: most upvoted first
    assert RANKING_LINE.replace("'", "&#39;") in page.text
    for leftover in EMAIL_LEFTOVERS:
        assert leftover not in page.text
    # Links to the site itself are relative: no host fixed at send time beside the server's.
    assert "news.example.org" not in page.text and "localhost" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_drafts_missing_days_and_bad_dates_are_404_pages(
    settings: Settings, engine: Engine
) -> None:
    _store_editions(settings, engine)
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
    _store_editions(settings, engine)
    async with running_app(web_settings(settings), engine) as (_, client):
        archive = await client.get("/editions")
        feed = await client.get("/editions/feed.xml")
    assert archive.status_code == 200
    assert f'href="/editions/{SENT_DAY}"' in archive.text
    item = archive.text.split(f'href="/editions/{SENT_DAY}"', 1)[1].split("</li>", 1)[0]
    assert item == ">5 Mar 2026</a>: Paper 2 on &lt;attention&gt; &amp; scaling + 2 more"
    assert str(DRAFT_DAY) not in archive.text
    assert feed.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(feed.content)
    assert root.tag == f"{ATOM}feed"
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 1
    entry = entries[0]
    assert entry.findtext(f"{ATOM}title") == "Paper 2 on <attention> & scaling + 2 more"
    link = entry.find(f"{ATOM}link")
    assert link is not None
    assert link.get("href") == f"https://news.example.org/editions/{SENT_DAY}"
    assert entry.findtext(f"{ATOM}updated") == "2026-03-05T07:00:00Z"
    content = entry.find(f"{ATOM}content")
    assert content is not None and content.get("type") == "html"
    # The edition's papers with links a feed reader can follow, and no email footer.
    html = content.text or ""
    assert '<a href="https://huggingface.co/papers/2603.05002">' in html
    assert "Paper 2 on &lt;attention&gt; &amp; scaling" in html
    for leftover in EMAIL_LEFTOVERS:
        assert leftover not in html


async def test_empty_archive_invites_to_subscribe(settings: Settings, engine: Engine) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        archive = await client.get("/editions")
        feed = await client.get("/editions/feed.xml")
    assert archive.status_code == 200 and "No edition has gone out yet" in archive.text
    assert ET.fromstring(feed.content).findall(f"{ATOM}entry") == []


async def test_an_edition_page_is_built_once_and_rebuilt_when_the_edition_is_rendered_again(
    settings: Settings, engine: Engine
) -> None:
    _store_editions(settings, engine)
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

        with Session(engine) as session:  # a paper corrected, then the edition rendered again
            paper = session.exec(select(Paper).where(Paper.arxiv_id == "2603.05002")).one()
            paper.title = "Paper 2, corrected"
            edition = session.exec(select(Edition).where(Edition.date == SENT_DAY)).one()
            edition.rendered_at = dt.datetime(2026, 3, 5, 8, tzinfo=dt.UTC)
            session.add_all([paper, edition])
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

    assert "Paper 2 on &lt;attention&gt;" in first.text
    assert still_cached.content == first.content  # for at most the recheck time
    assert "Paper 2, corrected" in rendered_again.text
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
