"""The sign-up page and `POST /subscribe`, for HTML forms and JSON clients alike."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, StrictInt, ValidationError
from starlette.background import BackgroundTask

from newsletter.core.clock import utc_now
from newsletter.core.db import session_scope
from newsletter.core.errors import InvalidEmailError, InvalidSubscriberDetailsError
from newsletter.core.settings import Settings
from newsletter.web.context import (
    PagesDep,
    WebContext,
    client_address_of,
    web_context_of,
)
from newsletter.web.profile_input import ProfileFields, checked_profile, pasted_papers
from subscribers import received, store
from subscribers.library import parse_arxiv_ids
from subscribers.models import WEEKDAYS
from subscribers.ratelimit import client_key
from subscribers.signup import SignupDetails, register_signups, validate_name, validate_topics

logger = logging.getLogger(__name__)
router = APIRouter(tags=["sign-up"])

# One answer for every accepted request, whatever the address's history: the
# response must not tell a stranger who is on the list.
CHECK_INBOX = (
    "Thanks! If this address is not subscribed yet, a confirmation link is on its way: "
    "open it to start receiving the digest."
)
HONEYPOT_FIELD = "website"
# When the database cannot take a sign-up: ask the visitor to come back after this.
UNAVAILABLE_RETRY_SECONDS = 60
# How often the app looks for sign-ups another server answered but never recorded.
LEFT_SIGNUPS_CHECK_SECONDS = 60.0
_FIELD_LABELS = {
    "email": "email address",
    "name": "name",
    "topics": "topics",
    "interests": "interests",
    "papers": "papers you like",
    "profile": "digest choices",
}
_PROFILE_KEYS = ("interests", "digest_mode", "personal_count", "frequency", "weekly_day")
_NO_PROFILE: dict[str, Any] = {
    "interests": "",
    "papers": "",
    "digest_mode": "personal",
    "personal_count": 5,
    "frequency": "daily",
    "weekly_day": 0,
}
MAX_FIELD_LENGTH = 1000
# The pasted papers (subscribers.library caps them at 5,000 characters) and the interests.
MAX_PROFILE_FIELD_LENGTH = 6000


class SignupRequest(BaseModel):
    """A JSON sign-up."""

    email: str = Field(
        max_length=MAX_FIELD_LENGTH,
        description="The address to subscribe.",
        json_schema_extra={"format": "email"},
    )
    name: str | None = Field(default=None, max_length=MAX_FIELD_LENGTH)
    topics: list[str] = Field(default_factory=list, max_length=50)
    interests: str | None = Field(
        default=None, max_length=4000, description="What they work on (up to 500 characters)."
    )
    papers: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="arXiv ids or arxiv.org links of papers they like.",
    )
    personal_count: StrictInt | None = Field(default=None, description="1 to 10 (default 5).")
    digest_mode: Literal["personal", "trending"] | None = None
    frequency: Literal["daily", "weekly"] | None = None
    weekly_day: StrictInt | None = Field(default=None, description="0 = Monday … 6 = Sunday")
    website: str = Field(
        default="",
        max_length=MAX_FIELD_LENGTH,
        description="Leave empty: a trap for bots (anything here is silently dropped).",
    )


class SignupAccepted(BaseModel):
    """The answer to every well-formed sign-up, known address or not."""

    status: Literal["check-your-inbox"] = "check-your-inbox"
    message: str = CHECK_INBOX


class SignupProblem(BaseModel):
    """Why a sign-up was refused."""

    detail: str
    field: str | None = None


_ACCEPTED = SignupAccepted().model_dump()
_FORM_SCHEMA = {
    "type": "object",
    "required": ["email"],
    "properties": {
        "email": {"type": "string", "format": "email", "maxLength": MAX_FIELD_LENGTH},
        "name": {"type": "string", "maxLength": MAX_FIELD_LENGTH},
        "topics": {"type": "array", "items": {"type": "string"}},
        "interests": {"type": "string", "maxLength": 500},
        "papers": {"type": "string", "description": "arXiv ids, one per line or comma-separated"},
        "personal_count": {"type": "integer", "minimum": 1, "maximum": 10},
        "digest_mode": {"type": "string", "enum": ["personal", "trending"]},
        "frequency": {"type": "string", "enum": ["daily", "weekly"]},
        "weekly_day": {"type": "integer", "minimum": 0, "maximum": 6},
        HONEYPOT_FIELD: {"type": "string"},
    },
}


@router.get("/", response_class=HTMLResponse, summary="The sign-up page")
def signup_page(pages: PagesDep) -> HTMLResponse:
    """The sign-up form."""
    return pages.constant(
        "signup",
        form={"email": "", "name": "", "topics": [], "profile": _NO_PROFILE},
        weekdays=WEEKDAYS,
        error=None,
        error_field=None,
    )


@router.post(
    "/subscribe",
    status_code=202,
    summary="Sign up (HTML form or JSON)",
    response_model=SignupAccepted,
    responses={
        200: {"description": "Form sign-ups get a page.", "content": {"text/html": {}}},
        413: {"model": SignupProblem, "description": "The body is larger than 16 KiB."},
        415: {"model": SignupProblem},
        422: {"model": SignupProblem},
        429: {"model": SignupProblem, "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": SignupRequest.model_json_schema()},
                "application/x-www-form-urlencoded": {"schema": _FORM_SCHEMA},
            },
        }
    },
)
async def subscribe(request: Request) -> Response:
    """Validate and answer one sign-up; recording it (and queueing its confirmation) comes after."""
    # The public site's busiest route takes what it needs from the app's context
    # itself: FastAPI solves every declared dependency again on every request.
    web = web_context_of(request)
    settings, pages = web.settings, web.pages
    wants_json = _is_json(request)
    form: dict[str, Any]
    if wants_json:
        parsed = await _read_json_signup(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        form = parsed.model_dump()
    elif _is_form(request):
        form = await _read_form_signup(request)
    else:
        return _problem(415, "send the sign-up as application/json or as an HTML form")

    checked = _validate_fields(settings, form)
    if isinstance(checked, tuple):
        field, problem = checked
        message = f"Please check the {_FIELD_LABELS[field]}: {problem}."
        return _refused(wants_json, pages, form, message, field)

    # Only valid sign-ups count against the limit: someone fixing a typo is not
    # locked out, and what is refused above costs no write and no email. A
    # filled-in honeypot counts like any other valid sign-up, so a bot cannot
    # tell the trap from a real field by which of its requests get a 429.
    decision = web.signup_limiter.attempt(client_key(client_address_of(request)))
    if not decision.allowed:
        return _too_many(wants_json, pages, decision.retry_after_seconds)
    # Received before the answer, one insert whatever the address (bots get the
    # ordinary answer, and their row holds only a mark), so an answered sign-up is
    # never lost; recorded after it: a new, pending, confirmed or departed address
    # gets the same answer after the same work, so its timing tells nothing.
    details = None if form.get(HONEYPOT_FIELD) else checked
    try:
        received_id = await web.signup_writer.receive(details)
    except Exception:
        logger.exception("a sign-up could not be received")
        return _unavailable(wants_json, pages)
    answer = _accepted(wants_json, pages)
    answer.background = BackgroundTask(process_signup, web, received_id, details)
    return answer


def _unavailable(wants_json: bool, pages: PagesDep) -> Response:
    message = "We could not take sign-ups just now. Please try again in a minute."
    headers = {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)}
    if wants_json:
        return _problem(503, message, headers=headers)
    return pages.message(
        title="Please try again", message=message, status_code=503, headers=headers
    )


def _too_many(wants_json: bool, pages: PagesDep, retry_after_seconds: int) -> Response:
    minutes = max(1, round(retry_after_seconds / 60))
    message = (
        f"Too many sign-up attempts from your network. Please try again in about "
        f"{minutes} minute{'s' if minutes != 1 else ''}."
    )
    headers = {"Retry-After": str(retry_after_seconds)}
    if wants_json:
        return _problem(429, message, headers=headers)
    return pages.message(
        title="Please wait a little", message=message, status_code=429, headers=headers
    )


def _validate_fields(settings: Settings, form: dict[str, Any]) -> SignupDetails | tuple[str, str]:
    """The checked sign-up, or the first field at fault and what is wrong with it."""
    try:
        email = store.normalise_email(form["email"])
    except InvalidEmailError as error:
        return "email", str(error)
    try:
        name = validate_name(form.get("name"))
    except InvalidSubscriberDetailsError as error:
        return "name", str(error)
    try:
        topics = validate_topics(settings, form.get("topics") or [])
    except InvalidSubscriberDetailsError as error:
        return "topics", str(error)
    fields = ProfileFields(*(form.get(key) for key in _PROFILE_KEYS))
    try:
        profile = None if fields.is_empty() else checked_profile(fields, None)
    except InvalidSubscriberDetailsError as error:
        return ("interests" if "interests" in str(error) else "profile"), str(error)
    papers = form.get("papers") or ""
    try:
        liked_ids = parse_arxiv_ids(papers if isinstance(papers, str) else "\n".join(papers))
    except InvalidSubscriberDetailsError as error:
        return "papers", str(error)
    return SignupDetails(
        email=email, name=name, topics=topics, profile=profile, liked_ids=liked_ids
    )


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


def _is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type in ("application/x-www-form-urlencoded", "multipart/form-data")


async def _read_json_signup(request: Request) -> SignupRequest | JSONResponse:
    try:
        payload = json.loads(await request.body())
    except RecursionError:
        # The decoder recurses per level: a few KB of "[[[[…" exhaust the stack limit.
        return _problem(422, "the request body nests too deeply; send one flat JSON object")
    except ValueError:  # UnicodeDecodeError included
        return _problem(422, "the request body is not valid JSON")
    try:
        return SignupRequest.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        where = f"{field}: " if field else ""
        return _problem(422, f"{where}{first['msg']}", field=field)


async def _read_form_signup(request: Request) -> dict[str, Any]:
    data = await request.form()

    def text(key: str) -> str:
        value = data.get(key)
        return value[:MAX_FIELD_LENGTH] if isinstance(value, str) else ""

    def optional(key: str) -> str | None:
        value = data.get(key)
        return value[:MAX_PROFILE_FIELD_LENGTH] if isinstance(value, str) else None

    return {
        "email": text("email"),
        "name": text("name") or None,
        "topics": [value for value in data.getlist("topics") if isinstance(value, str)][:50],
        "papers": optional("papers") or "",
        **{key: optional(key) for key in _PROFILE_KEYS},
        HONEYPOT_FIELD: text(HONEYPOT_FIELD),
    }


async def process_signup(web: WebContext, received_id: int, details: SignupDetails | None) -> None:
    """Record a received sign-up, and queue its confirmation if one is due (after the answer).

    The sign-ups waiting at the same moment share one transaction
    (`newsletter.web.signup_writer`), which also deletes their received rows. The
    email itself is built and sent by a worker (`newsletter worker`, or the child
    of `newsletter serve`): the queue row commits with the sign-up. If recording
    fails, the received row stays and `record_left_unrecorded` tries again.
    """
    try:
        await web.signup_writer.record(received_id, details)
    except Exception:  # the visitor has their answer; the operator gets the reason
        who = details.email if details is not None else "a honeypot"
        logger.exception("the sign-up of %s could not be recorded yet", who)


def write_signups(
    web: WebContext,
    arrivals: Sequence[SignupDetails | None],
    answered: Sequence[tuple[int, SignupDetails | None]],
) -> list[int]:
    """Record the answered sign-ups and receive the arrivals, in one transaction; their ids.

    What the app's `SignupWriter` runs. Recording deletes each received row.
    """
    if not answered:  # arrivals alone (PostgreSQL's writer): no ORM session needed
        # One statement, atomic by itself: in autocommit it is one round trip to the
        # server rather than three (BEGIN, the insert, COMMIT).
        with web.database.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return received.receive(connection, arrivals, now=utc_now())
    with session_scope(web.database) as session:
        now = utc_now()
        signups = [
            (details, pasted_papers(session, details.liked_ids) if details.liked_ids else [])
            for _, details in answered
            if details is not None  # a honeypot's: nothing to record
        ]
        register_signups(session, web.settings, signups, now=now, quota=web.confirmation_caps)
        connection = session.connection()
        received.forget(connection, [received_id for received_id, _ in answered])
        return received.receive(connection, arrivals, now=now) if arrivals else []


def record_left_unrecorded(
    web: WebContext, *, older_than_seconds: float = received.RECORDED_WITHIN_SECONDS
) -> int:
    """Record sign-ups answered but never recorded (a server stopped between); how many.

    At most one page (`received.left_unrecorded`) per call: the next call, a
    minute later, takes the next, and one that cannot be recorded (logged) does
    not hold back the others.
    """
    with web.database.connect() as connection:
        left = received.left_unrecorded(
            connection, now=utc_now(), older_than_seconds=older_than_seconds
        )
    recorded = 0
    for item in left:
        try:
            write_signups(web, [], [item])
        except Exception:
            logger.exception("a sign-up received earlier could not be recorded")
            continue
        recorded += 1
    if recorded:
        logger.warning("recorded %d sign-ups answered before a server stopped", recorded)
    return recorded


async def record_left_unrecorded_forever(web: WebContext) -> None:
    """`record_left_unrecorded` every LEFT_SIGNUPS_CHECK_SECONDS, until cancelled."""
    while True:
        await asyncio.sleep(LEFT_SIGNUPS_CHECK_SECONDS)
        try:
            await asyncio.to_thread(record_left_unrecorded, web)
        except Exception:
            logger.exception("could not look for sign-ups left unrecorded")


def _accepted(wants_json: bool, pages: PagesDep) -> Response:
    if wants_json:
        return JSONResponse(_ACCEPTED, status_code=202)
    return pages.constant("signup_sent", message=CHECK_INBOX)


def _refused(
    wants_json: bool, pages: PagesDep, form: dict[str, Any], message: str, field: str
) -> Response:
    if wants_json:
        return _problem(422, message, field=field)
    return pages.render(
        "signup",
        status_code=422,
        error=message,
        error_field=field,
        weekdays=WEEKDAYS,
        form={
            "email": form.get("email") or "",
            "name": form.get("name") or "",
            "topics": form.get("topics") or [],
            "profile": _echo_profile(form),
        },
    )


def _echo_profile(form: dict[str, Any]) -> dict[str, Any]:
    """The profile fields as sent, to fill the form again after a refusal."""
    echoed = dict(_NO_PROFILE)
    for key in ("interests", "digest_mode", "frequency"):
        if isinstance(form.get(key), str):
            echoed[key] = form[key]
    for key in ("personal_count", "weekly_day"):
        value = form.get(key)
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            echoed[key] = int(value)
    papers = form.get("papers")
    echoed["papers"] = papers if isinstance(papers, str) else "\n".join(papers or [])
    return echoed


def _problem(
    status_code: int,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        SignupProblem(detail=detail, field=field).model_dump(),
        status_code=status_code,
        headers=headers,
    )
