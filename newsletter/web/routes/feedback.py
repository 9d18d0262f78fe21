"""Feedback from a digest ("More like this", "Less like this") and the judged papers listed.

The link in the email carries a signed token naming the reader, the paper and
the choice (`subscribers.tokens.feedback_url`); the token is the only
credential, as for unsubscribing. Mail scanners open every link of a message,
so `GET /feedback/{token}` only shows the paper and a button and records
nothing; `POST` records the verdict (a `reader_papers` row, source `email`)
and `POST …/undo` puts back what was there before. No cookie is set, so there
is no session for another site to ride; the pages' CSP allows forms to post
to this site only.

A token that is malformed, altered, for a reader who is gone or a paper that
is not stored gets the same 404 page: a guess learns nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, select

from newsletter.core.errors import InvalidTokenError
from newsletter.core.settings import Settings
from newsletter.models import Paper
from newsletter.web.context import PagesDep, SessionDep, SettingsDep
from newsletter.web.pages import PageRenderer
from newsletter.web.routes.confirm import link_problem_page
from subscribers import store
from subscribers.models import JudgementSource, ReaderPaper, Subscriber, Verdict
from subscribers.signup import subscriber_for_preferences
from subscribers.tokens import preferences_url, read_feedback_token

router = APIRouter(tags=["feedback"])

# Authors shown before "et al.".
SHOWN_AUTHORS = 6
_VERDICT_OF = {"more": Verdict.LIKED, "less": Verdict.DISLIKED}
# What the undo button puts back: nothing, or a verdict and where it came from.
_PREVIOUS = re.compile(r"none|(liked|disliked):(pasted|library|email)")
_MAX_PAPER_KEY = 80


@dataclass(frozen=True, slots=True)
class _Link:
    subscriber: Subscriber
    subscriber_id: int  # the stored row's id, checked once when the link is opened
    paper: Paper
    choice: str  # "more" or "less"


def _open_link(session: Session, settings: Settings, token: str) -> _Link | None:
    """The reader, paper and choice a feedback token names; None for any link that does not work."""
    try:
        key, arxiv_id, choice = read_feedback_token(settings.secret_key, token)
    except InvalidTokenError:
        return None
    subscriber = store.find_subscriber_by_key(session, key=key)
    if subscriber is None or subscriber.id is None:
        return None
    paper = session.exec(select(Paper).where(Paper.arxiv_id == arxiv_id)).first()
    if paper is None:
        return None
    return _Link(subscriber, subscriber.id, paper, choice)


def _not_found(pages: PageRenderer) -> HTMLResponse:
    return pages.message(
        title="This link does not work",
        message="There is no paper to give feedback on at this address; "
        "the link may have been cut or altered.",
        status_code=404,
        private=True,
        link_text="Go to the sign-up page",
        link_url="/",
    )


def _page(
    pages: PageRenderer,
    settings: Settings,
    link: _Link,
    token: str,
    *,
    state: Literal["ask", "done", "undone"],
    current: ReaderPaper | None = None,
    previous: str = "none",
) -> HTMLResponse:
    authors = [str(a) for a in link.paper.authors]
    return pages.render(
        "feedback",
        private=True,
        state=state,
        choice=link.choice,
        title=link.paper.title,
        authors=authors[:SHOWN_AUTHORS],
        more_authors=max(0, len(authors) - SHOWN_AUTHORS),
        arxiv_url=f"https://arxiv.org/abs/{link.paper.arxiv_id}",
        current=Verdict(current.verdict).value if current is not None else None,
        previous=previous,
        form_path=f"/feedback/{token}",
        preferences_url=preferences_url(
            settings.base_url, settings.secret_key, link.subscriber.key
        ),
    )


@router.get("/feedback/{token}", response_class=HTMLResponse, summary="The feedback button")
def show_feedback(
    token: str, session: SessionDep, settings: SettingsDep, pages: PagesDep
) -> HTMLResponse:
    """The paper and the button; records nothing (mail scanners prefetch every link)."""
    link = _open_link(session, settings, token)
    if link is None:
        return _not_found(pages)
    current = store.find_judgement(
        session, subscriber_id=link.subscriber_id, paper_key=link.paper.arxiv_id
    )
    return _page(pages, settings, link, token, state="ask", current=current)


@router.post("/feedback/{token}", response_class=HTMLResponse, summary="Record feedback")
def record_feedback(
    token: str, session: SessionDep, settings: SettingsDep, pages: PagesDep
) -> HTMLResponse:
    """Record "more" (liked) or "less" (disliked) for the link's paper; idempotent."""
    link = _open_link(session, settings, token)
    if link is None:
        return _not_found(pages)
    before = store.record_judgement(
        session,
        subscriber_id=link.subscriber_id,
        paper_key=link.paper.arxiv_id,
        arxiv_id=link.paper.arxiv_id,
        title=link.paper.title,
        abstract=link.paper.abstract or link.paper.ai_summary or "",
        verdict=_VERDICT_OF[link.choice],
        source=JudgementSource.EMAIL,
    )
    session.commit()
    previous = "none" if before is None else f"{before.verdict.value}:{before.source.value}"
    return _page(pages, settings, link, token, state="done", previous=previous)


@router.post("/feedback/{token}/undo", response_class=HTMLResponse, summary="Undo feedback")
def undo_feedback(
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    pages: PagesDep,
    previous: Annotated[str, Form(max_length=32)] = "none",
) -> HTMLResponse:
    """Put back what the reader had said before (`previous`: "none" removes the row)."""
    link = _open_link(session, settings, token)
    if link is None:
        return _not_found(pages)
    match = _PREVIOUS.fullmatch(previous)
    if match is None:
        return pages.message(
            title="That did not work",
            message="The undo button's form was altered; nothing was changed.",
            status_code=422,
            private=True,
        )
    restored = (
        None
        if previous == "none"
        else store.Judgement(Verdict(match.group(1)), JudgementSource(match.group(2)))
    )
    current = store.find_judgement(
        session, subscriber_id=link.subscriber_id, paper_key=link.paper.arxiv_id
    )
    # Undo only what this link recorded: a verdict changed since (another tab, the
    # preferences page) stays as it is, and the page shows it.
    undone = (
        current is not None
        and Verdict(current.verdict) is _VERDICT_OF[link.choice]
        and JudgementSource(current.source) is JudgementSource.EMAIL
    )
    if undone:
        store.restore_judgement(
            session,
            subscriber_id=link.subscriber_id,
            paper_key=link.paper.arxiv_id,
            previous=restored,
        )
        session.commit()
        current = store.find_judgement(
            session, subscriber_id=link.subscriber_id, paper_key=link.paper.arxiv_id
        )
    return _page(pages, settings, link, token, state="undone" if undone else "ask", current=current)


def judged_papers(session: Session, subscriber: Subscriber) -> list[dict[str, str | None]]:
    """The reader's judged papers as the preferences page lists them."""
    if subscriber.id is None:
        return []
    return [
        {
            "paper_key": row.paper_key,
            "title": row.title or row.arxiv_id or row.paper_key,
            "arxiv_url": f"https://arxiv.org/abs/{row.arxiv_id}" if row.arxiv_id else None,
            "verdict": Verdict(row.verdict).value,
            "source": JudgementSource(row.source).value,
        }
        for row in store.list_judgements(session, subscriber_id=subscriber.id)
    ]


@router.post(
    "/preferences/{token}/papers",
    response_class=HTMLResponse,
    summary="Remove or flip a judged paper",
)
def change_judged_paper(
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    pages: PagesDep,
    paper_key: Annotated[str, Form(max_length=_MAX_PAPER_KEY)],
    action: Annotated[Literal["remove", "flip"], Form()],
) -> Response:
    """Forget a liked or disliked paper, or turn one into the other; back to the page."""
    try:
        subscriber = subscriber_for_preferences(session, settings, token)
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    assert subscriber.id is not None
    if action == "remove":
        store.remove_judgement(session, subscriber_id=subscriber.id, paper_key=paper_key)
    else:
        store.flip_judgement(session, subscriber_id=subscriber.id, paper_key=paper_key)
    session.commit()
    # Post/redirect/get: reloading the page does not repeat the change.
    return RedirectResponse(f"/preferences/{token}#your-papers", status_code=303)
