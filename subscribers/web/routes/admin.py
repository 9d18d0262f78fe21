"""Operator endpoints under `/admin`, behind `Authorization: Bearer <NEWSLETTER_ADMIN_TOKEN>`."""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import asdict, is_dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from newsletter.db import session_scope
from newsletter.editions import prepare_edition
from newsletter.errors import DeliveryError, EditionNotFoundError, InvalidEmailError
from newsletter.send.engine import cancel_edition, pause_edition, resume_edition, send_test_copy
from newsletter.send.stats import edition_stats
from subscribers import store, suppressions
from subscribers.web.context import EngineDep, SettingsDep, WebContext, WebDep
from subscribers.web.jobs import SendJob

_bearer = HTTPBearer(auto_error=False, description="NEWSLETTER_ADMIN_TOKEN")


def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """404 for all of /admin without a configured token; 401 unless the bearer token matches."""
    if not settings.admin_token:
        raise HTTPException(status_code=404, detail="Not Found")
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), settings.admin_token.encode()):
        raise HTTPException(
            status_code=401,
            detail="a valid `Authorization: Bearer <NEWSLETTER_ADMIN_TOKEN>` header is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class SendJobOut(BaseModel):
    """A send started over HTTP, as this process knows it."""

    state: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    error: str | None = None
    report: dict[str, Any] | None = None


class SendStarted(BaseModel):
    """The answer to a send trigger."""

    edition_date: dt.date
    status_url: str
    job: SendJobOut


class EditionStatsOut(BaseModel):
    """An edition's ledger: deliveries by status, test sends, unsubscribes since it went out."""

    edition_date: dt.date
    status: str
    status_reason: str | None
    deliveries: dict[str, int]
    test_sends: int
    unsubscribed_since: int
    send_started_at: dt.datetime | None
    send_finished_at: dt.datetime | None
    job: SendJobOut | None = None


class TestSendRequest(BaseModel):
    """Where to send one test copy."""

    email: str = Field(max_length=1000, json_schema_extra={"format": "email"})


class TestSendOut(BaseModel):
    """How the test copy went."""

    edition_date: dt.date
    email: str
    status: str
    is_test: bool
    message_id: str | None
    error: str | None


class SubscriberCounts(BaseModel):
    """How many subscribers stand in each status, and what the suppression list holds back."""

    counts: dict[str, int]
    total: int
    suppressed: dict[str, int] = Field(
        description="Mailboxes on the suppression list, by reason: they get no digest."
    )
    confirmed_but_suppressed: int = Field(
        description="Confirmed subscribers whose mailbox is suppressed, so not sent to."
    )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No edition (or no papers) for that date."}
}


def _job_out(job: SendJob) -> SendJobOut:
    result = job.result
    report = asdict(result) if is_dataclass(result) and not isinstance(result, type) else None
    return SendJobOut(
        state=job.state.value,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        report=report,
    )


def _status_url(request: Request, day: dt.date) -> str:
    return str(request.url_for("edition_status", day=day.isoformat()))


def _start_send(
    request: Request, web: WebContext, day: dt.date, *, conflict_status: int
) -> JSONResponse:
    """Start the edition's send here (unless one runs) and answer 202 with its status URL."""
    job, started = web.send_jobs.start(day)
    status_url = _status_url(request, day)
    body = SendStarted(edition_date=day, status_url=status_url, job=_job_out(job))
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=202 if started else conflict_status,
        headers={"Location": status_url},
    )


@router.post(
    "/editions/{day}/send",
    status_code=202,
    response_model=SendStarted,
    responses={**_NOT_FOUND, 409: {"model": SendStarted, "description": "Already sending."}},
    summary="Send an edition to every confirmed subscriber, in the background",
)
async def send(day: dt.date, request: Request, web: WebDep) -> JSONResponse:
    """Prepare the edition if needed and start sending; answers at once with a status URL."""
    try:
        await run_in_threadpool(prepare_edition, web.settings, web.database, day=day)
    except EditionNotFoundError as error:
        return JSONResponse({"detail": str(error)}, status_code=404)
    return _start_send(request, web, day, conflict_status=409)


@router.get(
    "/editions/{day}",
    name="edition_status",
    response_model=EditionStatsOut,
    responses=_NOT_FOUND,
    summary="Deliveries by status and unsubscribes since the edition went out",
)
async def edition_status(day: dt.date, engine: EngineDep, web: WebDep) -> EditionStatsOut:
    """The edition's ledger counts, and the state of a send started here."""
    try:
        stats = await run_in_threadpool(edition_stats, engine, day)
    except EditionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    return EditionStatsOut(
        edition_date=day,
        status=str(stats.status),
        status_reason=stats.status_reason,
        deliveries={str(status): count for status, count in stats.deliveries.items()},
        test_sends=stats.test_sends,
        unsubscribed_since=stats.unsubscribed_since,
        send_started_at=stats.send_started_at,
        send_finished_at=stats.send_finished_at,
        job=_job_out(job) if (job := web.send_jobs.get(day)) else None,
    )


@router.post(
    "/editions/{day}/test-send",
    response_model=TestSendOut,
    responses={**_NOT_FOUND, 422: {"model": Problem}, 502: {"model": Problem}},
    summary="Send one copy, marked as a test, to one address",
)
async def test_send(
    day: dt.date, request_body: TestSendRequest, settings: SettingsDep, web: WebDep
) -> TestSendOut:
    """One copy of the edition to one address; it counts as a test, not a delivery."""
    try:
        address = store.normalise_email(request_body.email)
    except InvalidEmailError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    try:
        await run_in_threadpool(prepare_edition, settings, web.database, day=day)
        delivery = await send_test_copy(settings, web.database, edition_date=day, email=address)
    except EditionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except DeliveryError as error:
        raise HTTPException(status_code=502, detail=str(error)) from None
    return TestSendOut(
        edition_date=day,
        email=delivery.email,
        status=str(delivery.status),
        is_test=delivery.is_test,
        message_id=delivery.message_id,
        error=delivery.last_error,
    )


_CONFLICT: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    409: {"model": Problem, "description": "The edition is not in a state that allows this."},
}


@router.post(
    "/editions/{day}/pause",
    response_model=EditionStatsOut,
    responses=_CONFLICT,
    summary="Pause a running send; running workers stop within a batch",
)
async def pause(day: dt.date, engine: EngineDep, web: WebDep) -> EditionStatsOut:
    """Pause the edition; `/resume` continues it."""
    await _change_edition(pause_edition, engine, day, reason="paused by operator over HTTP")
    return await edition_status(day, engine, web)


@router.post(
    "/editions/{day}/resume",
    status_code=202,
    response_model=SendStarted,
    responses=_CONFLICT,
    summary="Resume a paused send and continue it in the background",
)
async def resume(day: dt.date, request: Request, engine: EngineDep, web: WebDep) -> JSONResponse:
    """Mark the edition sending again and start working its queue here."""
    await _change_edition(resume_edition, engine, day)
    # Already running here: the answer reports that job.
    return _start_send(request, web, day, conflict_status=202)


@router.post(
    "/editions/{day}/cancel",
    response_model=EditionStatsOut,
    responses=_CONFLICT,
    summary="Cancel an edition: nobody else receives it",
)
async def cancel(day: dt.date, engine: EngineDep, web: WebDep) -> EditionStatsOut:
    """Cancel the edition; every row still queued ends failed."""
    await _change_edition(cancel_edition, engine, day)
    return await edition_status(day, engine, web)


async def _change_edition(change: Any, engine: Any, day: dt.date, **options: Any) -> None:
    try:
        await run_in_threadpool(change, engine, day, **options)
    except EditionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except DeliveryError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None


@router.get("/subscribers", response_model=SubscriberCounts, summary="Subscribers by status")
def subscriber_counts(engine: EngineDep) -> SubscriberCounts:
    """Subscribers by status; suppressed mailboxes by reason, and the confirmed ones held back."""
    with session_scope(engine) as session:
        counts = store.count_by_status(session)
        suppressed = suppressions.count_active(session.connection())
        held_back = suppressions.count_held_back(session.connection())
    return SubscriberCounts(
        counts={status.value: count for status, count in counts.items()},
        total=sum(counts.values()),
        suppressed={reason.value: count for reason, count in suppressed.items()},
        confirmed_but_suppressed=held_back,
    )
