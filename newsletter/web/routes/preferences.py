"""The preferences page behind a digest's footer link: name, topics, the personal digest's
profile, pause, resume, leave; what is stored, its JSON download and its erasure; and the
same profile over JSON at `/api/preferences/{token}`."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, StrictInt
from sqlmodel import Session

from newsletter.core.clock import utc_now
from newsletter.core.errors import InvalidSubscriberDetailsError, InvalidTokenError
from newsletter.core.settings import Settings
from newsletter.privacy import erase_reader, reader_record
from newsletter.web.context import PagesDep, SessionDep, SettingsDep
from newsletter.web.pages import PRIVATE_PAGE_HEADERS, PageRenderer
from newsletter.web.profile_input import (
    ProfileFields,
    checked_profile,
    library_papers,
    pasted_papers,
)
from newsletter.web.routes.confirm import link_problem_page
from newsletter.web.routes.feedback import judged_papers
from subscribers import store
from subscribers.library import MAX_LIBRARY_BYTES, read_bibtex
from subscribers.models import (
    WEEKDAYS,
    DigestMode,
    Frequency,
    JudgementSource,
    Subscriber,
    SubscriberStatus,
    Verdict,
)
from subscribers.signup import (
    PreferencesAction,
    change_preferences,
    subscriber_for_preferences,
    validate_name,
    validate_topics,
)

router = APIRouter(tags=["preferences"])

_DONE = {
    PreferencesAction.SAVE: "Your preferences are saved.",
    PreferencesAction.PAUSE: "Paused: no digests until you resume.",
    PreferencesAction.RESUME: "Resumed: the next digest will reach you.",
    PreferencesAction.UNSUBSCRIBE: "You are unsubscribed and will receive no more digests.",
}
# Which form field an error message is about, for aria-invalid.
_FIELD_WORDS = (
    ("interests", "interests"),
    ("arXiv", "papers"),
    ("pasted", "papers"),
    ("papers", "personal_count"),
    ("weekday", "weekly_day"),
    ("weekly", "weekly_day"),
    ("topic", "topics"),
    ("name", "name"),
)


def _field_of(message: str) -> str | None:
    return next((field for word, field in _FIELD_WORDS if word in message), None)


@router.get("/preferences/{token}", response_class=HTMLResponse, summary="The preferences page")
def show_preferences(
    token: str, session: SessionDep, settings: SettingsDep, pages: PagesDep
) -> HTMLResponse:
    """The subscriber's name, topics, profile and status, what is stored, and the buttons."""
    try:
        subscriber = subscriber_for_preferences(session, settings, token)
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    return _preferences_page(pages, session, token, subscriber)


@router.post("/preferences/{token}", response_class=HTMLResponse, summary="Change preferences")
def change(
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    pages: PagesDep,
    action: Annotated[PreferencesAction, Form()] = PreferencesAction.SAVE,
    name: Annotated[str, Form(max_length=1000)] = "",
    topics: Annotated[list[str], Form(max_length=50)] = [],  # noqa: B006 (FastAPI copies defaults)
    interests: Annotated[str | None, Form(max_length=4000)] = None,
    papers: Annotated[str, Form(max_length=8000)] = "",
    digest_mode: Annotated[str | None, Form(max_length=40)] = None,
    personal_count: Annotated[str | None, Form(max_length=40)] = None,
    frequency: Annotated[str | None, Form(max_length=40)] = None,
    weekly_day: Annotated[str | None, Form(max_length=40)] = None,
) -> HTMLResponse:
    """Apply the button that was pressed and show the page again with what changed."""
    fields = ProfileFields(interests, digest_mode, personal_count, frequency, weekly_day)
    try:
        current = subscriber_for_preferences(session, settings, token)
        profile = None
        liked: list[store.JudgedPaper] = []
        if action is PreferencesAction.SAVE:
            profile = None if fields.is_empty() else checked_profile(fields, current)
            liked = pasted_papers(session, papers)
        subscriber = change_preferences(
            session,
            settings,
            token,
            action=action,
            name=name,
            topics=topics,
            profile=profile,
            liked=liked,
        )
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    except InvalidSubscriberDetailsError as error:
        session.rollback()
        current = subscriber_for_preferences(session, settings, token)
        # The reader's own input comes back, so fixing one field does not mean retyping all.
        typed = {"interests": interests, "papers": papers}
        return _preferences_page(
            pages,
            session,
            token,
            current,
            error=f"Nothing was changed: {error}.",
            error_field=_field_of(str(error)),
            typed=typed,
            status_code=422,
        )
    session.commit()
    notice = _DONE[action]
    if liked:
        notice += f" {len(liked)} paper{'s' if len(liked) != 1 else ''} added to what you like."
    return _preferences_page(pages, session, token, subscriber, notice=notice)


@router.post(
    "/preferences/{token}/library",
    response_class=HTMLResponse,
    summary="Add a BibTeX library to the liked papers",
)
def upload_library(
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    pages: PagesDep,
    library: Annotated[UploadFile | None, File()] = None,
) -> HTMLResponse:
    """Read an uploaded BibTeX export; its titles and abstracts become liked `library` papers."""
    try:
        subscriber = subscriber_for_preferences(session, settings, token)
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    try:
        if library is None or not library.filename:
            raise InvalidSubscriberDetailsError("choose a BibTeX file (.bib) to upload")
        entries = read_bibtex(library.file.read(MAX_LIBRARY_BYTES + 1))
        assert subscriber.id is not None
        added = store.save_judged_papers(
            session, subscriber_id=subscriber.id, papers=library_papers(entries), now=utc_now()
        )
    except InvalidSubscriberDetailsError as error:
        session.rollback()
        return _preferences_page(
            pages,
            session,
            token,
            subscriber_for_preferences(session, settings, token),
            error=f"Nothing was added: {error}.",
            error_field="library",
            status_code=422,
        )
    session.commit()
    notice = (
        f"Your library is read: {len(entries)} paper{'s' if len(entries) != 1 else ''}, "
        f"{added} new to your profile."
    )
    return _preferences_page(pages, session, token, subscriber, notice=notice)


@router.get(
    "/preferences/{token}/data",
    summary="Download everything stored about the reader (JSON)",
    responses={200: {"content": {"application/json": {}}}},
)
def download_data(
    token: str, session: SessionDep, settings: SettingsDep, pages: PagesDep
) -> Response:
    """Everything stored about the reader as a JSON file."""
    try:
        subscriber = subscriber_for_preferences(session, settings, token)
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    body = json.dumps(reader_record(session, subscriber), ensure_ascii=False, indent=2)
    return Response(
        body,
        media_type="application/json",
        headers={
            **PRIVATE_PAGE_HEADERS,
            "Content-Disposition": 'attachment; filename="my-data.json"',
        },
    )


@router.post(
    "/preferences/{token}/erase", response_class=HTMLResponse, summary="Delete the reader's data"
)
def erase(
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    pages: PagesDep,
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> HTMLResponse:
    """Erase the reader once the confirmation box is ticked; the link stops working."""
    try:
        subscriber = subscriber_for_preferences(session, settings, token)
    except InvalidTokenError as error:
        return link_problem_page(pages, error)
    if confirm != "yes":
        return _preferences_page(
            pages,
            session,
            token,
            subscriber,
            error="Nothing was deleted: tick the box to confirm that everything should go.",
            status_code=422,
        )
    erase_reader(session, subscriber, now=utc_now())
    session.commit()
    return pages.message(
        title="Your data is deleted",
        message=(
            "Your subscription, profile and judged papers are erased. Your address is kept "
            "only as a hash on our do-not-send list, so no digest reaches it unless you sign "
            "up again."
        ),
        status_code=200,
        private=True,
        link_text="Go to the sign-up page",
        link_url="/",
    )


@router.get("/assets/profile.js", include_in_schema=False)
def profile_script(pages: PagesDep) -> Response:
    """The interests counter of the sign-up and preferences forms."""
    return pages.asset("profile.js", media_type="text/javascript")


def _preferences_page(
    pages: PageRenderer,
    session: Session,
    token: str,
    subscriber: Subscriber,
    *,
    notice: str | None = None,
    error: str | None = None,
    error_field: str | None = None,
    typed: dict[str, str | None] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    typed = typed or {}
    interests = typed.get("interests")
    return pages.render(
        "preferences",
        status_code=status_code,
        private=True,
        base=f"/preferences/{token}",
        email=subscriber.email,
        name=subscriber.name or "",
        chosen=set(subscriber.topics),
        status=SubscriberStatus(subscriber.status).value,
        paused=subscriber.paused,
        profile={
            "interests": interests if interests is not None else subscriber.interests,
            "papers": typed.get("papers") or "",
            "digest_mode": str(subscriber.digest_mode),
            "personal_count": subscriber.personal_count,
            "frequency": str(subscriber.frequency),
            "weekly_day": subscriber.weekly_day,
        },
        weekdays=WEEKDAYS,
        record=reader_record(session, subscriber),
        # The papers they liked and disliked, to remove or flip (_judged_papers.html.j2).
        judged=judged_papers(session, subscriber),
        papers_action=f"/preferences/{token}/papers",
        notice=notice,
        error=error,
        error_field=error_field,
    )


# The JSON API: the same token, the same rules.


class JudgedPaperOut(BaseModel):
    """A paper the reader judged."""

    arxiv_id: str | None
    title: str
    verdict: Literal["liked", "disliked"]
    source: Literal["pasted", "library", "email"]
    updated_at: str


class PreferencesOut(BaseModel):
    """The reader's preferences and profile."""

    email: str
    name: str | None
    status: str
    paused: bool
    topics: list[str]
    interests: str
    digest_mode: Literal["personal", "trending"]
    personal_count: int
    frequency: Literal["daily", "weekly"]
    weekly_day: int = Field(description="0 = Monday … 6 = Sunday")
    papers: list[JudgedPaperOut]


class PreferencesIn(BaseModel):
    """A change of preferences: fields left out keep their value."""

    name: str | None = Field(default=None, max_length=1000)
    topics: list[str] | None = Field(default=None, max_length=50)
    interests: str | None = Field(default=None, max_length=4000)
    digest_mode: str | None = Field(default=None, max_length=40)
    personal_count: StrictInt | None = None
    frequency: str | None = Field(default=None, max_length=40)
    weekly_day: StrictInt | None = None
    papers: list[str] | None = Field(
        default=None,
        max_length=50,
        description="arXiv ids or arxiv.org links to add to the liked papers",
    )


class ApiProblem(BaseModel):
    """Why a request was refused."""

    detail: str


_API_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ApiProblem, "description": "The link's token is forged or unknown."},
    422: {"model": ApiProblem},
}


@router.get(
    "/api/preferences/{token}",
    response_model=PreferencesOut,
    responses=_API_RESPONSES,
    summary="The reader's preferences (JSON)",
)
def api_show(token: str, session: SessionDep, settings: SettingsDep) -> Response:
    """The preferences and profile behind a preferences link."""
    try:
        subscriber = subscriber_for_preferences(session, settings, token)
    except InvalidTokenError as error:
        return _api_problem(400, str(error))
    return _api_preferences(session, subscriber)


@router.put(
    "/api/preferences/{token}",
    response_model=PreferencesOut,
    responses=_API_RESPONSES,
    summary="Change the reader's preferences (JSON)",
)
def api_change(
    token: str, change: PreferencesIn, session: SessionDep, settings: SettingsDep
) -> Response:
    """Apply the fields given (the others keep their value) and answer the new preferences."""
    try:
        subscriber = subscriber_for_preferences(session, settings, token)
    except InvalidTokenError as error:
        return _api_problem(400, str(error))
    try:
        _apply(session, settings, subscriber, change)
    except InvalidSubscriberDetailsError as error:
        session.rollback()
        return _api_problem(422, str(error))
    session.commit()
    return _api_preferences(session, subscriber)


@router.delete(
    "/api/preferences/{token}",
    status_code=204,
    responses=_API_RESPONSES,
    summary="Delete the reader's data",
)
def api_erase(token: str, session: SessionDep, settings: SettingsDep) -> Response:
    """Erase the reader, as "Delete my data" does."""
    try:
        subscriber = subscriber_for_preferences(session, settings, token)
    except InvalidTokenError as error:
        return _api_problem(400, str(error))
    erase_reader(session, subscriber, now=utc_now())
    session.commit()
    return Response(status_code=204, headers=PRIVATE_PAGE_HEADERS)


def _apply(
    session: Session, settings: Settings, subscriber: Subscriber, change: PreferencesIn
) -> None:
    name = validate_name(change.name) if change.name is not None else subscriber.name
    topics = (
        validate_topics(settings, change.topics)
        if change.topics is not None
        else tuple(subscriber.topics)
    )
    fields = ProfileFields(
        change.interests,
        change.digest_mode,
        change.personal_count,
        change.frequency,
        change.weekly_day,
    )
    profile = checked_profile(fields, subscriber)
    liked = pasted_papers(session, change.papers or [])
    store.update_details(subscriber, name=name, topics=topics)
    store.update_profile(subscriber, profile=profile)
    if liked:
        assert subscriber.id is not None
        store.save_judged_papers(session, subscriber_id=subscriber.id, papers=liked, now=utc_now())
    session.flush()


def _api_preferences(session: Session, subscriber: Subscriber) -> JSONResponse:
    assert subscriber.id is not None
    body = PreferencesOut(
        email=subscriber.email,
        name=subscriber.name,
        status=str(subscriber.status),
        paused=subscriber.paused,
        topics=list(subscriber.topics),
        interests=subscriber.interests,
        digest_mode=DigestMode(subscriber.digest_mode).value,
        personal_count=subscriber.personal_count,
        frequency=Frequency(subscriber.frequency).value,
        weekly_day=subscriber.weekly_day,
        papers=[
            JudgedPaperOut(
                arxiv_id=paper.arxiv_id,
                title=paper.title,
                verdict=Verdict(paper.verdict).value,
                source=JudgementSource(paper.source).value,
                updated_at=paper.updated_at.isoformat(),
            )
            for paper in store.list_judgements(session, subscriber_id=subscriber.id)
        ],
    )
    return JSONResponse(body.model_dump(), headers=PRIVATE_PAGE_HEADERS)


def _api_problem(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse(
        ApiProblem(detail=detail).model_dump(),
        status_code=status_code,
        headers=PRIVATE_PAGE_HEADERS,
    )
