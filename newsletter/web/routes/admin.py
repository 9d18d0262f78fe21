"""Operator endpoints under `/admin`, behind `Authorization: Bearer <NEWSLETTER_ADMIN_TOKEN>`.

These only change the ledger and answer; the sending is done by workers
(`newsletter worker --forever`, or the one `newsletter serve` starts), so any
number of server processes agree on what a send is doing. Handlers that only
touch the database are plain functions, which FastAPI runs in its threadpool:
the event loop never waits on the database.
"""

from __future__ import annotations

import datetime as dt
import hmac
import io
import tempfile
from collections.abc import Callable
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from newsletter.core.db import session_scope
from newsletter.core.errors import (
    DeliveryError,
    EditionNotFoundError,
    ImportFileError,
    InvalidEmailError,
)
from newsletter.delivery.control import (
    cancel_edition,
    pause_edition,
    resume_edition,
    retry_failed,
    start_edition,
)
from newsletter.delivery.one_copy import send_test_copy
from newsletter.delivery.stats import EditionStats, edition_stats
from newsletter.editions.content import prepare_edition
from newsletter.models import EditionStatus
from newsletter.web.body_limit import IMPORT_PATH
from newsletter.web.context import EngineDep, SettingsDep, WebContext, WebDep
from subscribers import confirmation_queue, store, suppressions
from subscribers.exporting import ExportFormat, iter_export
from subscribers.importing import ImportReport, import_csv, queue_import_confirmations

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


class EditionStatsOut(BaseModel):
    """An edition as the ledger has it: status, deliveries by status, test sends, unsubscribes."""

    edition_date: dt.date
    status: str
    status_reason: str | None
    deliveries: dict[str, int]
    soft_bounces: int = 0  # rows with a soft bounce reported since (they stay `sent`)
    test_sends: int
    unsubscribed_since: int
    send_started_at: dt.datetime | None
    send_finished_at: dt.datetime | None


class SendStarted(EditionStatsOut):
    """The answer to a send or resume: the edition now, and the URL to follow it at."""

    status_url: str


class SendRefused(SendStarted):
    """A send that cannot start (already sending, paused, sent or cancelled), and why."""

    detail: str


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
    confirmations_queued: int = Field(
        description="Confirmation emails waiting for a worker (due now or retrying later)."
    )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No edition (or no papers) for that date."}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    409: {"model": Problem, "description": "The edition is not in a state that allows this."},
}


def _stats_out(stats: EditionStats) -> dict[str, Any]:
    return {
        "edition_date": stats.edition_date,
        "status": str(stats.status),
        "status_reason": stats.status_reason,
        "deliveries": {str(status): count for status, count in stats.deliveries.items()},
        "soft_bounces": stats.soft_bounces,
        "test_sends": stats.test_sends,
        "unsubscribed_since": stats.unsubscribed_since,
        "send_started_at": stats.send_started_at,
        "send_finished_at": stats.send_finished_at,
    }


def _status_url(request: Request, day: dt.date) -> str:
    return str(request.url_for("edition_status", day=day.isoformat()))


def _read_stats(engine: EngineDep, day: dt.date) -> EditionStats:
    try:
        return edition_stats(engine, day)
    except EditionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None


def _change(change: Callable[..., object], engine: EngineDep, day: dt.date, **options: Any) -> None:
    try:
        change(engine, day, **options)
    except EditionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except DeliveryError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None


def _accepted(request: Request, stats: EditionStats) -> JSONResponse:
    status_url = _status_url(request, stats.edition_date)
    body = SendStarted(**_stats_out(stats), status_url=status_url)
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202, headers={"Location": status_url}
    )


def _why_not_started(stats: EditionStats) -> str:
    day = stats.edition_date.isoformat()
    return {
        EditionStatus.DRAFT: f"the edition of {day} is still a draft",
        EditionStatus.SENDING: f"the edition of {day} is being sent already",
        EditionStatus.PAUSED: (
            f"the edition of {day} is paused ({stats.status_reason or 'no reason given'}); "
            f"POST /admin/editions/{day}/resume continues it"
        ),
        EditionStatus.SENT: f"the edition of {day} has been sent already",
        EditionStatus.FINISHED_WITH_FAILURES: (
            f"the edition of {day} has been sent already, and some readers were not reached"
        ),
        EditionStatus.CANCELLED: f"the edition of {day} was cancelled; it cannot be sent",
    }[stats.status]


@router.post(
    "/editions/{day}/send",
    status_code=202,
    response_model=SendStarted,
    responses={
        **_NOT_FOUND,
        409: {"model": SendRefused, "description": "Already sending, paused, sent or cancelled."},
    },
    summary="Queue an edition for every confirmed subscriber; workers send it",
)
def send(day: dt.date, request: Request, web: WebDep) -> JSONResponse:
    """Prepare the edition if needed, fix its audience and mark it sending; answers at once."""
    try:
        prepare_edition(web.settings, web.database, day=day)
        queued = start_edition(web.database, day, settings=web.settings)
    except EditionNotFoundError as error:
        return JSONResponse({"detail": str(error)}, status_code=404)
    stats = _read_stats(web.database, day)
    if queued is not None:
        return _accepted(request, stats)
    status_url = _status_url(request, day)
    refused = SendRefused(
        **_stats_out(stats), status_url=status_url, detail=_why_not_started(stats)
    )
    return JSONResponse(
        refused.model_dump(mode="json"), status_code=409, headers={"Location": status_url}
    )


@router.get(
    "/editions/{day}",
    name="edition_status",
    response_model=EditionStatsOut,
    responses=_NOT_FOUND,
    summary="The edition's status, deliveries by status and unsubscribes since it went out",
)
def edition_status(day: dt.date, engine: EngineDep) -> EditionStatsOut:
    """The edition's ledger, as every server process and worker sees it."""
    return EditionStatsOut(**_stats_out(_read_stats(engine, day)))


@router.post(
    "/editions/{day}/test-send",
    response_model=TestSendOut,
    responses={**_NOT_FOUND, 422: {"model": Problem}, 502: {"model": Problem}},
    summary="Send one copy, marked as a test, to one address",
)
async def test_send(
    day: dt.date, request_body: TestSendRequest, settings: SettingsDep, web: WebDep
) -> TestSendOut:
    """One copy of the edition to one address, sent now; it counts as a test, not a delivery."""
    try:
        address = store.normalise_email(request_body.email)
    except InvalidEmailError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    try:
        await run_in_threadpool(prepare_edition, settings, web.database, day=day)
        # Its database work runs in threads; only the SMTP conversation is on the loop.
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


@router.post(
    "/editions/{day}/pause",
    response_model=EditionStatsOut,
    responses=_CONFLICT,
    summary="Pause a send; workers stop within a batch",
)
def pause(day: dt.date, engine: EngineDep) -> EditionStatsOut:
    """Pause the edition; `/resume` continues it."""
    _change(pause_edition, engine, day, reason="paused by operator over HTTP")
    return edition_status(day, engine)


@router.post(
    "/editions/{day}/resume",
    status_code=202,
    response_model=SendStarted,
    responses=_CONFLICT,
    summary="Resume a paused send; workers continue it",
)
def resume(day: dt.date, request: Request, engine: EngineDep) -> JSONResponse:
    """Mark the edition sending again (a no-op when it is); answers at once."""
    _change(resume_edition, engine, day)
    return _accepted(request, _read_stats(engine, day))


@router.post(
    "/editions/{day}/retry-failed",
    status_code=202,
    response_model=SendStarted,
    responses=_CONFLICT,
    summary="Queue again the failed readers of an edition that finished with failures",
)
def retry_failed_readers(day: dt.date, request: Request, engine: EngineDep) -> JSONResponse:
    """Queue the failed rows again (not bounced, left or suppressed) and mark it sending."""
    _change(retry_failed, engine, day)
    return _accepted(request, _read_stats(engine, day))


@router.post(
    "/editions/{day}/cancel",
    response_model=EditionStatsOut,
    responses=_CONFLICT,
    summary="Cancel an edition: nobody else receives it",
)
def cancel(day: dt.date, engine: EngineDep) -> EditionStatsOut:
    """Cancel the edition; every row still queued ends failed."""
    _change(cancel_edition, engine, day)
    return edition_status(day, engine)


@router.get("/subscribers", response_model=SubscriberCounts, summary="Subscribers by status")
def subscriber_counts(engine: EngineDep) -> SubscriberCounts:
    """Subscribers by status; suppressed mailboxes by reason, and the confirmed ones held back."""
    with session_scope(engine) as session:
        counts = store.count_by_status(session)
        suppressed = suppressions.count_active(session.connection())
        held_back = suppressions.count_held_back(session.connection())
        queued = confirmation_queue.count_waiting(session.connection())
    return SubscriberCounts(
        counts={status.value: count for status, count in counts.items()},
        total=sum(counts.values()),
        suppressed={reason.value: count for reason, count in suppressed.items()},
        confirmed_but_suppressed=held_back,
        confirmations_queued=queued,
    )


# How many skipped rows and warnings the import's answer lists (the counts cover them all).
REPORT_ROWS_SHOWN = 1000
_UPLOAD_CHUNK = 1024 * 1024


class ImportRowOut(BaseModel):
    """A row left out of an import (or imported with a change): where, which address, why."""

    row: int
    address: str
    reason: str


class ImportReportOut(BaseModel):
    """What an import did; the row lists hold the first 1,000 of each."""

    rows: int
    added: int
    already_present: int
    resubscribed: int
    opted_out: int = Field(description="Readers here whom the list names as unsubscribed.")
    skipped: int
    warnings: int
    confirmations_due: int = Field(
        description="Pending readers who are being sent a confirmation email."
    )
    skipped_rows: list[ImportRowOut]
    warning_rows: list[ImportRowOut]


@router.post(
    IMPORT_PATH.removeprefix(router.prefix),
    response_model=ImportReportOut,
    responses={
        413: {"model": Problem, "description": "Larger than NEWSLETTER_IMPORT_MAX_BYTES."},
        415: {"model": Problem},
        422: {"model": Problem, "description": "No `email` column, or not UTF-8 text."},
    },
    summary="Import subscribers from CSV (multipart field `file`, or a text/csv body)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            },
        }
    },
)
async def import_subscribers(
    request: Request,
    web: WebDep,
    confirmed: Annotated[
        bool, Query(description="They agreed elsewhere: import them confirmed.")
    ] = False,
    force: Annotated[
        bool, Query(description="Re-subscribe addresses that unsubscribed earlier.")
    ] = False,
) -> ImportReportOut:
    """Import a CSV list as `newsletter subscribers import` does; confirmations are queued.

    The body is spooled to a temporary file as it arrives (never held whole in
    memory) and imported in the threadpool. The bearer token is checked before
    the first byte is read.
    """
    with tempfile.TemporaryFile() as spool:
        await spool_upload(request, spool)
        spool.seek(0)
        try:
            report = await run_in_threadpool(import_spooled, web, spool, confirmed, force)
        except ImportFileError as error:
            raise HTTPException(status_code=422, detail=str(error)) from None
    if report.confirmation_keys:
        # Queued now (a worker sends them); the answer waits for that commit, not for any email.
        await run_in_threadpool(
            queue_import_confirmations, web.settings, web.database, report.confirmation_keys
        )
    return ImportReportOut.model_validate(report.as_dict(limit=REPORT_ROWS_SHOWN))


async def spool_upload(request: Request, spool: IO[bytes]) -> None:
    """Write the uploaded list (multipart `file`, or a CSV body) to `spool` as it arrives."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        # Starlette spools each uploaded file to disk past 1 MB.
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(status_code=422, detail="upload the CSV as the form field `file`")
        while chunk := await upload.read(_UPLOAD_CHUNK):
            await run_in_threadpool(spool.write, chunk)
        await upload.close()
    elif content_type in ("text/csv", "text/plain", "application/csv"):
        async for chunk in request.stream():
            await run_in_threadpool(spool.write, chunk)
    else:
        raise HTTPException(
            status_code=415, detail="send the list as text/csv, or as multipart/form-data `file`"
        )


def import_spooled(web: WebContext, spool: IO[bytes], confirmed: bool, force: bool) -> ImportReport:
    """Import the spooled CSV list (UTF-8, a BOM allowed) as `subscribers import` does."""
    text = io.TextIOWrapper(spool, encoding="utf-8-sig", newline="")
    try:
        return import_csv(
            web.database, text, topics=web.settings.topics, confirmed=confirmed, force=force
        )
    finally:
        text.detach()  # the spool is closed by its owner


@router.get(
    "/subscribers/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
    summary="Export every subscriber as CSV or JSON, streamed",
)
def export_subscribers(
    engine: EngineDep,
    export_format: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.CSV,
) -> StreamingResponse:
    """Every reader with status, topics, timestamps and suppression, read in batches."""
    media_type = (
        "application/json" if export_format is ExportFormat.JSON else "text/csv; charset=utf-8"
    )
    filename = f"subscribers.{export_format.value}"
    return StreamingResponse(
        iter_export(engine, export_format),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
