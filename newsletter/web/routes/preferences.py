"""The preferences page behind a digest's footer link: name, topics, pause, resume, leave."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from newsletter.core.errors import InvalidSubscriberDetailsError, InvalidTokenError
from newsletter.web.context import PagesDep, SessionDep, SettingsDep
from newsletter.web.pages import PageRenderer
from newsletter.web.routes.confirm import link_problem_page
from newsletter.web.routes.feedback import judged_papers
from subscribers.models import Subscriber, SubscriberStatus
from subscribers.signup import PreferencesAction, change_preferences, subscriber_for_preferences

router = APIRouter(tags=["preferences"])

_DONE = {
    PreferencesAction.SAVE: "Your preferences are saved.",
    PreferencesAction.PAUSE: "Paused: no digests until you resume.",
    PreferencesAction.RESUME: "Resumed: the next digest will reach you.",
    PreferencesAction.UNSUBSCRIBE: "You are unsubscribed and will receive no more digests.",
}


@router.get("/preferences/{token}", response_class=HTMLResponse, summary="The preferences page")
def show_preferences(
    token: str, session: SessionDep, settings: SettingsDep, pages: PagesDep
) -> HTMLResponse:
    """The subscriber's current name, topics and status, with the buttons to change them."""
    try:
        subscriber = subscriber_for_preferences(session, settings, token)
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    return _preferences_page(pages, subscriber, session=session, token=token)


@router.post("/preferences/{token}", response_class=HTMLResponse, summary="Change preferences")
def change(
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    pages: PagesDep,
    action: Annotated[PreferencesAction, Form()] = PreferencesAction.SAVE,
    name: Annotated[str, Form(max_length=1000)] = "",
    topics: Annotated[list[str], Form(max_length=50)] = [],  # noqa: B006 (FastAPI copies defaults)
) -> HTMLResponse:
    """Apply the button that was pressed and show the page again with what changed."""
    try:
        subscriber = change_preferences(
            session, settings, token, action=action, name=name, topics=topics
        )
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    except InvalidSubscriberDetailsError as error:
        session.rollback()
        current = subscriber_for_preferences(session, settings, token)
        return _preferences_page(
            pages,
            current,
            session=session,
            token=token,
            error=f"Nothing was changed: {error}.",
            status_code=422,
        )
    session.commit()
    return _preferences_page(pages, subscriber, session=session, token=token, notice=_DONE[action])


def _preferences_page(
    pages: PageRenderer,
    subscriber: Subscriber,
    *,
    session: Session,
    token: str,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return pages.render(
        "preferences",
        status_code=status_code,
        private=True,
        email=subscriber.email,
        name=subscriber.name or "",
        chosen=set(subscriber.topics),
        status=SubscriberStatus(subscriber.status).value,
        paused=subscriber.paused,
        notice=notice,
        error=error,
        # The papers they liked and disliked (templates/pages/_judged_papers.html.j2).
        judged=judged_papers(session, subscriber),
        papers_action=f"/preferences/{token}/papers",
    )
