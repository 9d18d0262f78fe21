"""Leaving: the RFC 8058 one-click `POST`, and a `GET` page with a button."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from newsletter.core.errors import InvalidTokenError
from newsletter.core.settings import Settings
from newsletter.web.context import PagesDep, SessionDep, SettingsDep
from newsletter.web.routes.confirm import link_problem_page
from subscribers.models import SubscriberStatus
from subscribers.signup import subscriber_for_unsubscribe, unsubscribe
from subscribers.tokens import make_preferences_token

router = APIRouter(tags=["unsubscribe"])


@router.get("/unsubscribe/{token}", response_class=HTMLResponse, summary="The unsubscribe button")
def show_unsubscribe(
    token: str, session: SessionDep, settings: SettingsDep, pages: PagesDep
) -> HTMLResponse:
    """A page with the unsubscribe button; a GET never unsubscribes (scanners prefetch links)."""
    try:
        subscriber = subscriber_for_unsubscribe(session, settings, token)
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    return pages.render(
        "unsubscribe",
        private=True,
        email=subscriber.email,
        done=False,
        already=subscriber.status == SubscriberStatus.UNSUBSCRIBED,
        preferences_path=_preferences_path(settings, subscriber.key),
    )


@router.post(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    summary="Unsubscribe (RFC 8058 one-click)",
    description=(
        "Mail clients POST `List-Unsubscribe=One-Click` here with no cookies; any body "
        "(or none) unsubscribes. Idempotent."
    ),
)
def unsubscribe_now(
    token: str, session: SessionDep, settings: SettingsDep, pages: PagesDep
) -> HTMLResponse:
    """Unsubscribe the link's subscriber and say so."""
    try:
        subscriber = unsubscribe(session, settings, token)
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    session.commit()
    return pages.render(
        "unsubscribe",
        private=True,
        email=subscriber.email if subscriber else None,
        done=True,
        already=False,
        preferences_path=_preferences_path(settings, subscriber.key) if subscriber else None,
    )


def _preferences_path(settings: Settings, subscriber_key: str) -> str:
    return f"/preferences/{make_preferences_token(settings.secret_key, subscriber_key)}"
