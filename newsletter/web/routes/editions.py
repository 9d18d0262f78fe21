"""Reading on the web: one edition in the browser, the list of past ones, an Atom feed.

`/editions/{day}` is the public archive: the trending edition. `/view/{token}`
(the "View in browser" link of a personal digest) is one reader's own copy of
one day, rebuilt from the selection the ledger recorded for their delivery; the
signed token is its only credential, as for unsubscribing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from newsletter.core.errors import InvalidTokenError, SubscriberNotFoundError
from newsletter.core.text import single_line, xml_text
from newsletter.editions.content import (
    PUBLIC_STATUSES,
    edition_stamp,
    list_editions,
    stored_ranking,
)
from newsletter.editions.personal import delivered_digest
from newsletter.models import Edition, EditionStatus
from newsletter.render import RANKING_LINE, format_edition_date, make_paper_card
from newsletter.web.context import EngineDep, PagesDep, SettingsDep, web_context_of
from newsletter.web.edition_pages import EditionPage
from newsletter.web.pages import PRIVATE_PAGE_HEADERS, PageRenderer
from subscribers.tokens import read_view_token

router = APIRouter(tags=["editions"])

ARCHIVE_SIZE = 60
FEED_SIZE = 30
# A reader's own copy is the email's HTML: inline styles and remote images, never scripts.
EMAIL_COPY_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; font-src https:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_ATOM = "http://www.w3.org/2005/Atom"


def is_public(edition: Edition) -> bool:
    """Whether the edition has gone (or is going) out, so anyone may read it."""
    return EditionStatus(edition.status) in PUBLIC_STATUSES


async def _public_editions(engine: EngineDep, limit: int) -> list[Edition]:
    # Over-fetch a little: a few drafts or cancelled days may sit among the newest.
    editions = await run_in_threadpool(list_editions, engine, limit + 10)
    return [edition for edition in editions if is_public(edition)][:limit]


@router.get("/editions", response_class=HTMLResponse, summary="Past editions")
async def archive(engine: EngineDep, pages: PagesDep) -> HTMLResponse:
    """The newest editions that went out, newest first."""
    editions = await _public_editions(engine, ARCHIVE_SIZE)
    return pages.render(
        "editions",
        editions=[
            {
                "date": edition.date.isoformat(),
                "label": format_edition_date(edition.date),
                "subject": edition.subject,
            }
            for edition in editions
        ],
    )


@router.get(
    "/editions/feed.xml",
    summary="Atom feed of past editions",
    response_class=Response,
    responses={200: {"content": {"application/atom+xml": {}}}},
)
async def feed(engine: EngineDep, settings: SettingsDep, pages: PagesDep) -> Response:
    """An Atom feed of the newest editions that went out."""
    editions = await _public_editions(engine, FEED_SIZE)

    def render_papers(edition: Edition) -> str:
        assert edition.id is not None
        return pages.fragment("_edition_papers", **_edition_context(engine, edition.id))

    document = await run_in_threadpool(
        build_atom_feed,
        editions,
        base_url=settings.base_url,
        title=settings.list_name,
        render_papers=render_papers,
    )
    return Response(document, media_type="application/atom+xml")


def _edition_context(engine: Engine, edition_id: int) -> dict[str, Any]:
    """What the edition's page and its feed entry show: its papers as cards."""
    with Session(engine) as session:
        cards = [make_paper_card(item) for item in stored_ranking(session, edition_id)]
    return {"cards": cards, "ranking_line": RANKING_LINE}


def build_atom_feed(
    editions: list[Edition],
    *,
    base_url: str,
    title: str,
    render_papers: Callable[[Edition], str],
) -> bytes:
    """The Atom document for these editions (newest first); `render_papers` writes each entry."""
    ET.register_namespace("", _ATOM)

    def add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        # ElementTree escapes markup but writes any character it is given; a
        # control character or lone surrogate would make the feed unreadable.
        element = ET.SubElement(parent, f"{{{_ATOM}}}{tag}", attrs)
        element.text = None if text is None else xml_text(text)
        return element

    root = ET.Element(f"{{{_ATOM}}}feed")
    add(root, "title", single_line(title))
    add(root, "id", f"{base_url}/editions")
    add(root, "link", rel="alternate", href=f"{base_url}/editions")
    add(root, "link", rel="self", href=f"{base_url}/editions/feed.xml")
    stamps = [_updated(edition) for edition in editions]
    add(root, "updated", _atom_time(max(stamps, default=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))))
    add(add(root, "author"), "name", single_line(title))
    for edition, stamp in zip(editions, stamps, strict=True):
        url = f"{base_url}/editions/{edition.date.isoformat()}"
        entry = add(root, "entry")
        add(entry, "title", single_line(edition.subject) or format_edition_date(edition.date))
        add(entry, "id", url)
        add(entry, "link", rel="alternate", type="text/html", href=url)
        add(entry, "updated", _atom_time(stamp))
        # The edition itself, with links a feed reader can follow; no email footer.
        add(entry, "content", render_papers(edition), type="html")
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def _updated(edition: Edition) -> dt.datetime:
    return edition.send_started_at or edition.rendered_at or edition.created_at


def _atom_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@router.get("/editions/{day}", response_class=HTMLResponse, summary="One edition in the browser")
async def show_edition(day: str, request: Request) -> Response:
    """The day's edition as a web page: its papers in its order, without the email's trimmings.

    Built once per rendering of the edition and served from memory
    (`newsletter.web.edition_pages`), which reads the edition's status again
    at most every couple of seconds.
    """
    # Read often and cheap to answer: its collaborators come from the app's context
    # itself, since FastAPI solves every declared dependency again on every request.
    web = web_context_of(request)
    engine, pages = web.database, web.pages
    try:
        edition_date = dt.date.fromisoformat(day)
    except ValueError:
        return pages.message(
            title="No such edition",
            message=f"{day[:40]!r} is not a date; edition addresses look like "
            f"/editions/{dt.date.today().isoformat()}.",
            status_code=404,
            link_text="See the past editions",
            link_url="/editions",
        )
    cache = web.edition_pages
    page = cache.fresh(edition_date)
    if page is None:
        stamp = await run_in_threadpool(edition_stamp, engine, edition_date)
        if stamp is None or stamp.status not in PUBLIC_STATUSES:
            cache.forget(edition_date)
            return _no_edition(pages, edition_date)
        if stamp.rendered_at is None:
            return _no_edition(pages, edition_date)
        page = cache.checked(edition_date, stamp.id, stamp.rendered_at)
        if page is None:
            context = await run_in_threadpool(_edition_context, engine, stamp.id)
            body = pages.render(
                "edition", date_label=format_edition_date(edition_date), **context
            ).body
            page = EditionPage(stamp.id, stamp.rendered_at, bytes(body))
            cache.put(edition_date, page)
    return Response(page.body, media_type="text/html")


@router.get(
    "/view/{token}", response_class=HTMLResponse, summary="A reader's own copy of an edition"
)
async def show_own_copy(
    token: str, engine: EngineDep, settings: SettingsDep, pages: PagesDep
) -> Response:
    """The digest this reader was sent that day, their "For you" included, with their links.

    A reader whose delivery was the trending edition is sent to the public page.
    A token that is altered, or names no delivery, gets the same 404 page.
    """
    try:
        key, day = read_view_token(settings.secret_key, token)
        own = await run_in_threadpool(
            delivered_digest, settings, engine, day=day, subscriber_key=key
        )
    except (InvalidTokenError, SubscriberNotFoundError):
        return pages.message(
            title="This link does not work",
            message="There is no digest at this address; the link may have been cut or altered.",
            status_code=404,
            private=True,
            link_text="See the past editions",
            link_url="/editions",
        )
    if own is None:
        return RedirectResponse(f"/editions/{day.isoformat()}", status_code=303)
    html, _ = own
    return HTMLResponse(
        html, headers={**PRIVATE_PAGE_HEADERS, "Content-Security-Policy": EMAIL_COPY_CSP}
    )


def _no_edition(pages: PageRenderer, day: dt.date) -> Response:
    return pages.message(
        title="No such edition",
        message=f"No digest went out on {day.isoformat()}.",
        status_code=404,
        link_text="See the past editions",
        link_url="/editions",
    )
