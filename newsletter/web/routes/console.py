"""The operator's console under `/admin/console`: server-rendered pages, no build step.

Signing in with `NEWSLETTER_ADMIN_TOKEN` gives a signed session cookie
(`web.console_session`); every form carries the session's CSRF token, checked
before anything changes. Like the JSON API beside it (`routes/admin.py`), the
console never sends a digest: "send" fixes the audience in the ledger and a
worker (`newsletter worker`, or the child of `newsletter serve`) sends. Only a
test copy goes out from here, as the JSON API's test-send does. The buttons
that reach readers (send, resume, retry) and cancel ask on a page of their
own first, which works without JavaScript; the one script polls a send's
progress.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import StreamingResponse

from newsletter.core import eventloop
from newsletter.core.clock import utc_now
from newsletter.core.db import session_scope
from newsletter.core.errors import (
    DeliveryError,
    EditionNotFoundError,
    ImportFileError,
    IngestError,
    InvalidEmailError,
)
from newsletter.delivery.control import (
    cancel_edition,
    pause_edition,
    resume_edition,
    retry_failed,
    start_edition,
)
from newsletter.delivery.ledger import audience_addresses
from newsletter.delivery.one_copy import send_test_copy
from newsletter.delivery.stats import EditionStats, edition_stats, list_edition_stats
from newsletter.editions.content import (
    edition_ranking,
    get_edition,
    list_editions,
    prepare_edition,
    preview_version,
)
from newsletter.editions.lifecycle import EditionEvent, next_status
from newsletter.ingest import PaperSource, ingest_papers, load_papers_for_day
from newsletter.models import DeliveryStatus, EditionStatus
from newsletter.privacy import reader_record
from newsletter.web.body_limit import CONSOLE_IMPORT_PATH
from newsletter.web.console_session import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SESSION_LIFETIME,
    SIGN_IN_COOKIE,
    ConsoleSession,
    admin_token_matches,
    csrf_token,
    csrf_token_matches,
    new_session_cookie,
    new_sign_in_nonce,
    read_session_cookie,
    sign_in_nonce_matches,
)
from newsletter.web.context import EngineDep, SettingsDep, WebContext, WebDep
from newsletter.web.pages import PRIVATE_PAGE_HEADERS
from newsletter.web.routes.admin import import_spooled, spool_upload
from subscribers import store, suppressions
from subscribers.exporting import ExportFormat, iter_export
from subscribers.importing import queue_import_confirmations
from subscribers.listing import readers_page
from subscribers.models import Subscriber, SubscriberStatus, SuppressionReason

CONSOLE = "/admin/console"
# The console's pages poll their own JSON and frame their own preview; nothing else.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
# The digest preview: shown in the console's sandboxed frame only, no script, the
# digest's own images (thumbnails are https URLs of Hugging Face).
PREVIEW_CSP = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'self'"
)
_PAGE_HEADERS = {**PRIVATE_PAGE_HEADERS, "Content-Security-Policy": CONSOLE_CSP}
TOP_PAPERS = 10
SIGN_IN_MINUTES = 30

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Operator:
    """A signed-in operator: the session and the CSRF token its forms carry."""

    session: ConsoleSession
    csrf: str


def _operator(request: Request, settings: SettingsDep) -> Operator:
    if not settings.admin_token:
        raise HTTPException(status_code=404, detail="Not Found")
    session = read_session_cookie(
        settings.secret_key, request.cookies.get(SESSION_COOKIE), now=utc_now()
    )
    if session is None:
        raise HTTPException(
            status_code=303,
            detail="Sign in first.",
            headers={"Location": f"{CONSOLE}/sign-in", **PRIVATE_PAGE_HEADERS},
        )
    return Operator(session=session, csrf=csrf_token(settings.secret_key, session))


OperatorDep = Annotated[Operator, Depends(_operator)]


async def _checked_form(request: Request, operator: OperatorDep, settings: SettingsDep) -> FormData:
    """The posted form, once its CSRF token has been checked against the session."""
    form = await request.form(max_files=1, max_fields=20)
    given = form.get("csrf")
    if not isinstance(given, str) or not csrf_token_matches(
        settings.secret_key, operator.session, given
    ):
        raise HTTPException(
            status_code=403,
            detail="This form did not come from your console session (or the session changed). "
            "Reload the page and try again.",
        )
    return form


CheckedFormDep = Annotated[FormData, Depends(_checked_form)]


def _page(
    web: WebContext,
    template: str,
    operator: Operator | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    return web.pages.render(
        f"console/{template}",
        status_code=status_code,
        headers=_PAGE_HEADERS,
        csrf=operator.csrf if operator else "",
        signed_in=operator is not None,
        console=CONSOLE,
        **context,
    )


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=PRIVATE_PAGE_HEADERS)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# --- signing in and out -----------------------------------------------------------------


@router.get("/admin")
def console_entry() -> RedirectResponse:
    """The console's address: its editions page (or the sign-in page first)."""
    return _see_other(f"{CONSOLE}/")


def _sign_in_page(
    web: WebContext, *, status_code: int = 200, error: str | None = None, notice: str | None = None
) -> HTMLResponse:
    nonce = new_sign_in_nonce()
    response = _page(
        web, "sign_in", None, status_code=status_code, nonce=nonce, error=error, notice=notice
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        nonce,
        max_age=SIGN_IN_MINUTES * 60,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=web.settings.base_url.startswith("https://"),
    )
    return response


@router.get(f"{CONSOLE}/sign-in")
def sign_in_form(web: WebDep, signed_out: bool = False) -> HTMLResponse:
    """The sign-in form (admin token)."""
    if not web.settings.admin_token:
        raise HTTPException(status_code=404, detail="Not Found")
    return _sign_in_page(web, notice="You are signed out." if signed_out else None)


@router.post(f"{CONSOLE}/sign-in")
async def sign_in(request: Request, web: WebDep) -> Response:
    """Check the admin token; on success, set the session cookie and open the console."""
    settings = web.settings
    if not settings.admin_token:
        raise HTTPException(status_code=404, detail="Not Found")
    form = await request.form(max_files=0, max_fields=5)
    if not sign_in_nonce_matches(_text(form, "nonce"), request.cookies.get(SIGN_IN_COOKIE)):
        return _sign_in_page(
            web,
            status_code=403,
            error="The sign-in form expired or did not come from this site. Try again.",
        )
    if not admin_token_matches(_text(form, "token"), settings.admin_token):
        return _sign_in_page(web, status_code=401, error="That is not the admin token.")
    response = _see_other(f"{CONSOLE}/")
    response.set_cookie(
        SESSION_COOKIE,
        new_session_cookie(settings.secret_key, now=utc_now()),
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=settings.base_url.startswith("https://"),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)
    return response


@router.post(f"{CONSOLE}/sign-out")
def sign_out(form: CheckedFormDep) -> RedirectResponse:
    """End the session: the cookie is removed (it would also expire on its own)."""
    response = _see_other(f"{CONSOLE}/sign-in?signed_out=true")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- editions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pace:
    """How fast a send goes and how long the rest will take, from the ledger's counts."""

    done: int
    waiting: int
    per_second: float | None
    seconds_left: float | None


def pace_of(stats: EditionStats, *, now: dt.datetime) -> Pace:
    """Rows done per second since the send started, and the time the waiting ones will take."""
    waiting = stats.deliveries[DeliveryStatus.QUEUED]
    done = sum(
        count for status, count in stats.deliveries.items() if status is not DeliveryStatus.QUEUED
    )
    if stats.send_started_at is None:
        return Pace(done=done, waiting=waiting, per_second=None, seconds_left=None)
    elapsed = ((stats.send_finished_at or now) - stats.send_started_at).total_seconds()
    per_second = done / elapsed if elapsed > 0 and done else None
    seconds_left = (
        waiting / per_second if per_second and waiting else (0.0 if not waiting else None)
    )
    return Pace(done=done, waiting=waiting, per_second=per_second, seconds_left=seconds_left)


def progress_of(stats: EditionStats, *, now: dt.datetime) -> dict[str, Any]:
    """What the progress panel shows, as JSON values."""
    pace = pace_of(stats, now=now)
    counts = stats.deliveries
    return {
        "status": str(stats.status),
        "status_reason": stats.status_reason,
        "readers": sum(counts.values()),
        "sent": counts[DeliveryStatus.SENT],
        "failed": counts[DeliveryStatus.FAILED],
        "bounced": counts[DeliveryStatus.BOUNCED],
        "complained": counts[DeliveryStatus.COMPLAINED],
        "skipped": counts[DeliveryStatus.SKIPPED],
        "waiting": pace.waiting,
        "test_sends": stats.test_sends,
        "rate": "–" if pace.per_second is None else f"{pace.per_second:.1f} per second",
        "time_left": _duration(pace.seconds_left),
        "running": stats.status is EditionStatus.SENDING,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, seconds_part = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {seconds_part} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@router.get(f"{CONSOLE}/")
def editions_page(operator: OperatorDep, web: WebDep) -> HTMLResponse:
    """The latest editions: date, subject, status and counts."""
    subjects = {edition.date: edition.subject for edition in list_editions(web.database)}
    now = utc_now()
    rows = [
        {
            "stats": stats,
            "subject": subjects.get(stats.edition_date, ""),
            **progress_of(stats, now=now),
        }
        for stats in list_edition_stats(web.database)
    ]
    return _page(web, "editions", operator, rows=rows, today=now.date().isoformat())


@router.get(f"{CONSOLE}/day")
def open_day(operator: OperatorDep, day: dt.date) -> RedirectResponse:
    """The "open a day" form's target: that day's edition page."""
    return _see_other(f"{CONSOLE}/editions/{day.isoformat()}")


_RUNNING_NEWS = ("send", "resume", "retry-failed")
_DONE = {
    "prepared": "The edition is prepared. Look it over, send yourself a test copy, then send it.",
    "test-sent": "The test copy was accepted by the relay.",
    "send": "The send is queued: a worker is sending it now.",
    "pause": "Paused: workers stop within a batch.",
    "resume": "Resumed: workers continue the send.",
    "retry-failed": "The failed readers are queued again.",
    "cancel": "Cancelled: nobody else receives this edition.",
}


@dataclass(frozen=True)
class Action:
    """A button of the edition page: the event it applies, and whether it asks first."""

    name: str
    label: str
    event: EditionEvent
    asks_first: bool
    question: str


ACTIONS = {
    action.name: action
    for action in (
        Action(
            "send",
            "Send to readers",
            EditionEvent.START,
            True,
            "Send this edition to every confirmed reader?",
        ),
        Action("pause", "Pause", EditionEvent.PAUSE, False, ""),
        Action(
            "resume",
            "Resume",
            EditionEvent.RESUME,
            True,
            "Resume sending to the readers still waiting?",
        ),
        Action(
            "retry-failed",
            "Retry failed",
            EditionEvent.RETRY_FAILED,
            True,
            "Send again to the readers whose delivery failed?",
        ),
        Action(
            "cancel",
            "Cancel",
            EditionEvent.CANCEL,
            True,
            "Cancel this edition? Nobody else will receive it.",
        ),
    )
}


def _allowed_actions(status: EditionStatus) -> list[Action]:
    """The buttons that would change this status (resuming a running send would not)."""
    allowed = []
    for action in ACTIONS.values():
        try:
            after = next_status(status, action.event)
        except DeliveryError:
            continue
        if after is not status:
            allowed.append(action)
    return allowed


def _edition_page(
    web: WebContext,
    operator: Operator,
    day: dt.date,
    *,
    done: str | None = None,
    error: str | None = None,
    status_code: int = 200,
    test_address: str = "",
) -> HTMLResponse:
    edition = get_edition(web.database, day)
    if edition is None or not (edition.html or edition.text):
        with session_scope(web.database) as session:
            papers = len(load_papers_for_day(session, day))
        return _page(
            web,
            "unprepared",
            operator,
            status_code=404 if not papers else status_code,
            day=day.isoformat(),
            papers=papers,
            error=error,
        )
    assert edition.id is not None
    stats = edition_stats(web.database, day)
    progress = progress_of(stats, now=utc_now())
    _, text = preview_version(edition, web.settings)
    return _page(
        web,
        "edition",
        operator,
        status_code=status_code,
        day=day.isoformat(),
        edition=edition,
        text=text,
        html_bytes=len(edition.html.encode("utf-8")),
        text_bytes=len(edition.text.encode("utf-8")),
        ranking=edition_ranking(web.database, edition.id, limit=TOP_PAPERS),
        progress=progress,
        actions=_allowed_actions(stats.status),
        # "Queued" is news only while the send runs; a reload after the end says nothing.
        done=None if done in _RUNNING_NEWS and not progress["running"] else _DONE.get(done or ""),
        error=error,
        test_address=test_address,
    )


@router.get(f"{CONSOLE}/editions/{{day}}")
def edition_page(
    day: dt.date, operator: OperatorDep, web: WebDep, done: str | None = None
) -> HTMLResponse:
    """One edition: subject, size, preview, top papers, the send's progress and the buttons."""
    return _edition_page(web, operator, day, done=done)


@router.get(f"{CONSOLE}/editions/{{day}}/preview")
def edition_preview(day: dt.date, operator: OperatorDep, web: WebDep) -> HTMLResponse:
    """The digest's HTML as a reader gets it, for the edition page's sandboxed frame."""
    edition = get_edition(web.database, day)
    if edition is None or not edition.html:
        raise HTTPException(status_code=404, detail="There is no prepared edition for that day.")
    html, _ = preview_version(edition, web.settings)
    return HTMLResponse(
        html,
        headers={
            **PRIVATE_PAGE_HEADERS,
            "Content-Security-Policy": PREVIEW_CSP,
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


@router.get(f"{CONSOLE}/editions/{{day}}/progress")
def edition_progress(day: dt.date, operator: OperatorDep, engine: EngineDep) -> JSONResponse:
    """The send's counts, rate and time left, for the page's script to show without reloading."""
    try:
        stats = edition_stats(engine, day)
    except EditionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    return JSONResponse(progress_of(stats, now=utc_now()), headers={"Cache-Control": "no-store"})


@router.post(f"{CONSOLE}/editions/{{day}}/prepare")
def prepare(day: dt.date, form: CheckedFormDep, operator: OperatorDep, web: WebDep) -> Response:
    """Rank and render the day's stored papers into its edition."""
    try:
        prepare_edition(web.settings, web.database, day=day)
    except EditionNotFoundError as error:
        return _edition_page(web, operator, day, error=str(error), status_code=404)
    return _see_other(f"{CONSOLE}/editions/{day.isoformat()}?done=prepared")


@router.post(f"{CONSOLE}/editions/{{day}}/test-send")
async def test_send(
    day: dt.date, form: CheckedFormDep, operator: OperatorDep, web: WebDep
) -> Response:
    """One copy, marked as a test, to the address given; sent now (it reaches no reader)."""
    raw = _text(form, "email")
    try:
        address = store.normalise_email(raw)
        # Its database work runs in threads; only the SMTP conversation is on the loop.
        delivery = await send_test_copy(web.settings, web.database, edition_date=day, email=address)
        sent = delivery.status == DeliveryStatus.SENT
        problem, status_code = (None if sent else f"{delivery.last_error or delivery.status}"), 502
    except InvalidEmailError as error:
        problem, status_code = str(error), 422
    except (EditionNotFoundError, DeliveryError) as error:
        problem, status_code = str(error), 502
    if problem is not None:
        return await run_in_threadpool(
            _edition_page,
            web,
            operator,
            day,
            error=f"Test copy not sent: {problem}",
            status_code=status_code,
            test_address=raw,
        )
    return _see_other(f"{CONSOLE}/editions/{day.isoformat()}?done=test-sent")


def _audience_size(web: WebContext, day: dt.date) -> int:
    with web.database.connect() as connection:
        count, _ = audience_addresses(connection, day=day, limit=0)
    return count


@router.get(f"{CONSOLE}/editions/{{day}}/confirm/{{name}}")
def confirm_action(day: dt.date, name: str, operator: OperatorDep, web: WebDep) -> HTMLResponse:
    """The question a button that reaches readers (or cancels) asks before it acts."""
    action = ACTIONS.get(name)
    if action is None or not action.asks_first:
        raise HTTPException(status_code=404, detail="There is no such action.")
    try:
        stats = edition_stats(web.database, day)
    except EditionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    counts = stats.deliveries
    reach = {
        "send": f"about {_audience_size(web, day)} readers (confirmed, not paused or suppressed)",
        "resume": f"{counts[DeliveryStatus.QUEUED]} readers still waiting",
        "retry-failed": f"{counts[DeliveryStatus.FAILED]} readers whose delivery failed",
        "cancel": f"{counts[DeliveryStatus.QUEUED]} readers still waiting will not receive it",
    }[name]
    return _page(web, "confirm", operator, day=day.isoformat(), action=action, reach=reach)


@router.post(f"{CONSOLE}/editions/{{day}}/{{name}}")
def apply_action(
    day: dt.date, name: str, form: CheckedFormDep, operator: OperatorDep, web: WebDep
) -> Response:
    """Send, pause, resume, retry-failed or cancel: the ledger changes, workers do the rest."""
    action = ACTIONS.get(name)
    if action is None:
        raise HTTPException(status_code=404, detail="There is no such action.")
    if action.asks_first and _text(form, "confirmed") != "yes":
        return _see_other(f"{CONSOLE}/editions/{day.isoformat()}/confirm/{name}")
    engine = web.database
    try:
        if name == "send":
            # What was previewed is what goes out: the stored rendering, not a fresh one.
            if start_edition(engine, day, settings=web.settings) is None:
                status = edition_stats(engine, day).status
                raise DeliveryError(
                    f"the edition is {status.value} already; it was not started again"
                )
        elif name == "pause":
            pause_edition(engine, day, reason="paused by operator in the console")
        elif name == "resume":
            resume_edition(engine, day)
        elif name == "retry-failed":
            retry_failed(engine, day)
        else:
            cancel_edition(engine, day)
    except EditionNotFoundError as error:
        return _edition_page(web, operator, day, error=str(error), status_code=404)
    except DeliveryError as error:
        return _edition_page(web, operator, day, error=f"Not done: {error}", status_code=409)
    return _see_other(f"{CONSOLE}/editions/{day.isoformat()}?done={name}")


# --- readers ----------------------------------------------------------------------------


@router.get(f"{CONSOLE}/readers")
def readers_list(
    operator: OperatorDep,
    web: WebDep,
    q: Annotated[str, Query(max_length=320)] = "",
    status: Annotated[str, Query(max_length=32)] = "",
    after: Annotated[str | None, Query(max_length=320)] = None,
) -> HTMLResponse:
    """Readers in address order: search by the start of the address, filter by status."""
    statuses = [choice.value for choice in SubscriberStatus]
    if status and status not in statuses:
        raise HTTPException(status_code=422, detail=f"There is no reader status {status!r}.")
    wanted = SubscriberStatus(status) if status else None
    with session_scope(web.database) as session:
        counts = store.count_by_status(session)
        page = readers_page(session.connection(), search=q, status=wanted, after=after or None)
    return _page(
        web,
        "readers",
        operator,
        readers=page,
        q=q,
        status=status,
        statuses=statuses,
        counts={s.value: counts.get(s, 0) for s in SubscriberStatus},
        after=after or "",
    )


def _reader_or_404(session: Session, reader_id: int) -> Subscriber:
    subscriber = session.get(Subscriber, reader_id)
    if subscriber is None:
        raise HTTPException(status_code=404, detail="There is no reader with that number.")
    return subscriber


def _reader_page(
    web: WebContext, operator: Operator, reader_id: int, *, done: str | None = None
) -> HTMLResponse:
    with session_scope(web.database) as session:
        subscriber = _reader_or_404(session, reader_id)
        record = reader_record(session, subscriber)
        suppression = suppressions.find_active(session.connection(), subscriber.email)
    return _page(
        web,
        "reader",
        operator,
        reader_id=reader_id,
        record=record,
        suppression=suppression,
        done=done,
    )


@router.get(f"{CONSOLE}/readers/{{reader_id}}")
def reader_page(
    reader_id: int, operator: OperatorDep, web: WebDep, done: str | None = None
) -> HTMLResponse:
    """One reader: status history, deliveries, topics, interests; unsubscribe and suppress."""
    notices = {
        "unsubscribed": "Unsubscribed.",
        "suppressed": "Suppressed: no digest reaches this mailbox.",
    }
    return _reader_page(web, operator, reader_id, done=notices.get(done or ""))


@router.post(f"{CONSOLE}/readers/{{reader_id}}/unsubscribe")
def unsubscribe_reader(reader_id: int, form: CheckedFormDep, web: WebDep) -> RedirectResponse:
    """Unsubscribe the reader, as their own unsubscribe link would."""
    with session_scope(web.database) as session:
        subscriber = _reader_or_404(session, reader_id)
        store.mark_unsubscribed(subscriber)
    return _see_other(f"{CONSOLE}/readers/{reader_id}?done=unsubscribed")


@router.post(f"{CONSOLE}/readers/{{reader_id}}/suppress")
def suppress_reader(reader_id: int, form: CheckedFormDep, web: WebDep) -> RedirectResponse:
    """Put the reader's mailbox on the suppression list: no digest reaches it."""
    with session_scope(web.database) as session:
        subscriber = _reader_or_404(session, reader_id)
        suppressions.suppress_address(
            session.connection(),
            subscriber.email,
            reason=SuppressionReason.OPERATOR,
            now=utc_now(),
            note="suppressed by operator in the console",
        )
    return _see_other(f"{CONSOLE}/readers/{reader_id}?done=suppressed")


@router.get(f"{CONSOLE}/readers-export.csv")
def export_readers(operator: OperatorDep, engine: EngineDep) -> StreamingResponse:
    """Every reader as CSV, streamed (the same file as `newsletter subscribers export`)."""
    return StreamingResponse(
        iter_export(engine, ExportFormat.CSV),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="subscribers.csv"',
            **PRIVATE_PAGE_HEADERS,
        },
    )


@router.post(CONSOLE_IMPORT_PATH)
async def import_readers(
    request: Request, form: CheckedFormDep, operator: OperatorDep, web: WebDep
) -> HTMLResponse:
    """Import a CSV list (the JSON API's import); show what was added and what was left out."""
    confirmed = _text(form, "confirmed") == "yes"
    with tempfile.TemporaryFile() as spool:
        await spool_upload(request, spool)
        spool.seek(0)
        try:
            report = await run_in_threadpool(import_spooled, web, spool, confirmed, False)
        except ImportFileError as error:
            return _page(web, "import", operator, status_code=422, report=None, error=str(error))
    if report.confirmation_keys:
        await run_in_threadpool(
            queue_import_confirmations, web.settings, web.database, report.confirmation_keys
        )
    return _page(web, "import", operator, report=report.as_dict(limit=200), error=None)


# --- ingest -----------------------------------------------------------------------------

_SOURCES = {
    PaperSource.HF.value: "Hugging Face Daily Papers",
    PaperSource.ARXIV.value: "arXiv listing",
}


@router.get(f"{CONSOLE}/ingest")
def ingest_form(operator: OperatorDep, web: WebDep) -> HTMLResponse:
    """Fetch a day's papers now: the day and the source."""
    return _page(
        web,
        "ingest",
        operator,
        sources=_SOURCES,
        day=utc_now().date().isoformat(),
        source="hf",
        report=None,
        papers=[],
        error=None,
    )


@router.post(f"{CONSOLE}/ingest")
async def ingest_now(form: CheckedFormDep, operator: OperatorDep, web: WebDep) -> HTMLResponse:
    """Fetch and store the day's papers; show what came in and what was skipped, and why."""
    raw_day, raw_source = _text(form, "day"), _text(form, "source")
    context: dict[str, Any] = {
        "sources": _SOURCES,
        "day": raw_day,
        "source": raw_source,
        "report": None,
        "papers": [],
    }
    try:
        day = dt.date.fromisoformat(raw_day)
    except ValueError:
        return _page(
            web, "ingest", operator, status_code=422, error="Give the day as YYYY-MM-DD.", **context
        )
    if raw_source not in _SOURCES:
        return _page(
            web,
            "ingest",
            operator,
            status_code=422,
            error="Choose Hugging Face or arXiv.",
            **context,
        )
    try:
        # Ingest writes to the database between its awaits: it gets a loop of its own, off this one.
        report = await asyncio.to_thread(
            eventloop.run,
            ingest_papers(web.settings, web.database, day=day, source=PaperSource(raw_source)),
        )
    except IngestError as error:
        return _page(web, "ingest", operator, status_code=502, error=str(error), **context)

    def stored() -> list[Any]:
        with session_scope(web.database) as session:
            return list(load_papers_for_day(session, day))

    context.update(report=report, papers=await run_in_threadpool(stored))
    return _page(web, "ingest", operator, error=None, **context)


@router.get(f"{CONSOLE}/console.js")
def console_script(web: WebDep) -> Response:
    """The edition page's one script: it polls a running send's progress."""
    return web.pages.asset("console/console.js", media_type="text/javascript")
