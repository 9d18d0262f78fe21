"""Double opt-in: `GET` shows a button and changes nothing; `POST` confirms."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from newsletter.core.clock import utc_now
from newsletter.core.errors import ExpiredTokenError, InvalidTokenError
from newsletter.editions.content import first_digest_note, latest_public_edition
from newsletter.web.context import ClientAddressDep, EngineDep, PagesDep, SessionDep, SettingsDep
from newsletter.web.pages import PageRenderer
from subscribers.signup import ConfirmOutcome, confirm_subscription, inspect_confirmation
from subscribers.tokens import preferences_url

router = APIRouter(tags=["confirmation"])


def link_problem_page(pages: PageRenderer, error: InvalidTokenError) -> HTMLResponse:
    """The page for a forged, damaged or expired link: 410 when expired, else 400."""
    expired = isinstance(error, ExpiredTokenError)
    return pages.message(
        title="This link has expired" if expired else "This link does not work",
        message=f"Sorry, {error}.",
        status_code=410 if expired else 400,
        private=True,
        link_text="Go to the sign-up page",
        link_url="/",
    )


@router.get("/confirm/{token}", response_class=HTMLResponse, summary="The confirm button")
def show_confirmation(
    token: str, session: SessionDep, settings: SettingsDep, pages: PagesDep
) -> HTMLResponse:
    """A page with the confirm button (mail scanners prefetch links, so no change here)."""
    try:
        subscriber, outcome = inspect_confirmation(session, settings, token, now=utc_now())
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    return _confirmation_page(pages, subscriber.email, outcome)


@router.post("/confirm/{token}", response_class=HTMLResponse, summary="Confirm a subscription")
def confirm(
    token: str,
    session: SessionDep,
    engine: EngineDep,
    settings: SettingsDep,
    pages: PagesDep,
    client_address: ClientAddressDep,
) -> HTMLResponse:
    """Confirm the address, recording the time and the client's address (and queue a welcome)."""
    try:
        subscriber, outcome = confirm_subscription(
            session, settings, token, now=utc_now(), client_address=client_address
        )
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    session.commit()
    if outcome is not ConfirmOutcome.CONFIRMED:
        return _confirmation_page(pages, subscriber.email, outcome)
    # Not a dead end: what comes next, their preferences, and something to read now.
    latest = latest_public_edition(engine)
    return _confirmation_page(
        pages,
        subscriber.email,
        outcome,
        first_digest=first_digest_note(latest, timezone=settings.timezone),
        latest_edition_url=None if latest is None else f"/editions/{latest.day.isoformat()}",
        preferences_url=preferences_url("", settings.secret_key, subscriber.key),
    )


def _confirmation_page(
    pages: PageRenderer, email: str, outcome: ConfirmOutcome, **after_confirming: Any
) -> HTMLResponse:
    return pages.render(
        "confirm",
        status_code=410 if outcome is ConfirmOutcome.NO_LONGER_VALID else 200,
        private=True,
        email=email,
        outcome=outcome.value,
        **after_confirming,
    )
