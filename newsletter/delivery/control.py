"""The operator's controls of a send: start, pause, resume, cancel, retry the failed rows.

Each is one short transaction on the ledger that returns at once; none sends
anything. Workers (`worker.run_worker`, `newsletter worker`) notice the change
and do the sending, so a web request or a CLI command can call these safely
(from a thread: they are synchronous database calls).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from newsletter.core.clock import utc_now
from newsletter.core.errors import EditionNotFoundError
from newsletter.core.settings import Settings
from newsletter.delivery import ledger
from newsletter.delivery.breaker import reset_breaker
from newsletter.delivery.ledger import clean_error_text
from newsletter.delivery.selections import PreparedSelections, rank_readers, store_selections
from newsletter.editions.lifecycle import EditionEvent, apply_event, next_status
from newsletter.models import Edition, EditionStatus

__all__ = [
    "CANCELLED_BY_OPERATOR",
    "cancel_edition",
    "load_edition",
    "load_rendered_edition",
    "pause_edition",
    "picks_if_draft",
    "resume_edition",
    "retry_failed",
    "start_edition",
    "start_with_selections",
]

CANCELLED_BY_OPERATOR = "cancelled by operator"


def load_edition(connection: Connection, edition_date: dt.date, *, lock: bool = False) -> Edition:
    """The edition of that day (row-locked when asked), or EditionNotFoundError."""
    statement = select(ledger.editions).where(ledger.editions.c.date == edition_date)
    if lock:
        statement = statement.with_for_update()
    row = connection.execute(statement).mappings().one_or_none()
    if row is None:
        raise EditionNotFoundError(
            f"no edition exists for {edition_date.isoformat()}; "
            f"run `newsletter preview --date {edition_date.isoformat()} --out FILE` "
            "or `newsletter send` to prepare it"
        )
    return Edition.model_validate(dict(row))


def load_rendered_edition(connection: Connection, edition_date: dt.date) -> Edition:
    """The edition of that day with its digest, or EditionNotFoundError when it has none."""
    edition = load_edition(connection, edition_date)
    if not edition.html and not edition.text:
        raise EditionNotFoundError(
            f"the edition of {edition_date.isoformat()} has not been rendered; "
            f"run `newsletter preview --date {edition_date.isoformat()} --out FILE` "
            "or `newsletter send` to prepare it"
        )
    return edition


def start_edition(
    engine: Engine, edition_date: dt.date, *, settings: Settings | None = None
) -> int | None:
    """Fix the audience of a draft edition and mark it sending; returns how many rows it queued.

    With `settings`, the personal readers are ranked first, a batch at a time
    into a temporary file (`selections.rank_readers`); the transaction then
    stores each batch's distinct selections (`selections.store_selections`)
    and queues the audience with them; without, everyone gets the trending
    digest.
    Returns None when the edition was no longer a draft (another caller
    started it first, or it was sent or cancelled). Workers pick it up.
    """
    picks = picks_if_draft(engine, edition_date, settings)
    with engine.begin() as connection:
        edition = load_rendered_edition(connection, edition_date)
        assert edition.id is not None
        return start_with_selections(connection, edition_id=edition.id, picks=picks, now=utc_now())


def start_with_selections(
    connection: Connection,
    *,
    edition_id: int,
    picks: Iterable[PreparedSelections],
    now: dt.datetime,
) -> int | None:
    """In the caller's transaction: start the draft, store `picks` (`picks_if_draft`), queue.

    How many rows it queued; None when the edition was no longer a draft.
    """
    return ledger.start_sending(
        connection,
        edition_id=edition_id,
        now=now,
        selections=lambda c: store_selections(c, edition_id=edition_id, picks=picks, now=now),
    )


def picks_if_draft(
    engine: Engine,
    edition_date: dt.date,
    settings: Settings | None,
    *,
    ranking_processes: int = 1,
) -> Iterable[PreparedSelections]:
    """The day's selections, batch by batch, when the edition is still a draft.

    A started edition keeps its own (none here). Call it before the start's
    transaction: it counts the corpus (a write) and ranks every reader
    (`rank_readers`, in `ranking_processes` forked processes: only from a
    caller that runs no thread); the start then reads the batches back.
    """
    if settings is None:
        return ()
    with engine.connect() as connection:
        if load_rendered_edition(connection, edition_date).status is not EditionStatus.DRAFT:
            return ()
    return rank_readers(settings, engine, day=edition_date, processes=ranking_processes)


def pause_edition(engine: Engine, edition_date: dt.date, *, reason: str) -> None:
    """Pause a sending edition; running workers stop within a batch and `resume` continues."""
    with engine.begin() as connection:
        edition = load_edition(connection, edition_date, lock=True)
        next_status(edition.status, EditionEvent.PAUSE, edition=_label(edition_date))
        assert edition.id is not None
        apply_event(
            connection,
            edition_id=edition.id,
            event=EditionEvent.PAUSE,
            reason=clean_error_text(reason),
        )


def resume_edition(engine: Engine, edition_date: dt.date) -> None:
    """Let a paused edition send again (a no-op for one already sending)."""
    with engine.begin() as connection:
        edition = load_edition(connection, edition_date, lock=True)
        next_status(edition.status, EditionEvent.RESUME, edition=_label(edition_date))
        assert edition.id is not None
        apply_event(connection, edition_id=edition.id, event=EditionEvent.RESUME)
        reset_breaker(connection, edition_id=edition.id)  # the failures that paused it are past


def retry_failed(engine: Engine, edition_date: dt.date) -> int:
    """Queue a finished edition's failed rows again and mark it sending; how many were queued.

    Each row keeps its Message-ID; its attempts start again from zero.
    """
    with engine.begin() as connection:
        edition = load_edition(connection, edition_date, lock=True)
        next_status(edition.status, EditionEvent.RETRY_FAILED, edition=_label(edition_date))
        assert edition.id is not None
        apply_event(
            connection,
            edition_id=edition.id,
            event=EditionEvent.RETRY_FAILED,
            send_finished_at=None,
        )
        reset_breaker(connection, edition_id=edition.id)
        return ledger.requeue_failed(connection, edition_id=edition.id)


def cancel_edition(engine: Engine, edition_date: dt.date) -> None:
    """Cancel an edition: nobody else receives it; every queued row ends `failed`."""
    now = utc_now()
    with engine.begin() as connection:
        edition = load_edition(connection, edition_date, lock=True)
        next_status(edition.status, EditionEvent.CANCEL, edition=_label(edition_date))
        assert edition.id is not None
        if edition.status is not EditionStatus.CANCELLED:
            apply_event(
                connection,
                edition_id=edition.id,
                event=EditionEvent.CANCEL,
                reason=CANCELLED_BY_OPERATOR,
                send_finished_at=now,
            )
        ledger.fail_queued(connection, edition_id=edition.id, reason=CANCELLED_BY_OPERATOR, now=now)


def _label(edition_date: dt.date) -> str:
    return f"the edition of {edition_date.isoformat()}"
