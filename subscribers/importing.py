"""Importing a subscriber list from CSV: checking each row, reporting the ones skipped.

The file is read row by row (the `csv` module over the open file) and written
in batches, each in its own transaction through `subscribers.store`, so an
interrupted import leaves whole batches and a rerun completes it: addresses
already on the list are reported as present and nothing is added twice.

Rules, one per column:

- `email` (required): normalised (`store.normalise_email`); an invalid one, a
  second occurrence in the file (ignoring case) or a suppressed mailbox
  (`subscribers.suppressions`) is skipped and reported.
- `name` (optional): one clean line (`store.clean_name`); a leading `'` that
  a spreadsheet export put before `=`, `+`, `-` or `@` is taken off again.
- `topics` (optional): comma- or semicolon-separated; a topic the list does
  not offer is dropped from the row with a warning, and the row is imported.
- `interests` (optional): the reader's own words on what they work on, one
  line of at most 500 characters; a longer one is dropped from the row with a
  warning, and the row is imported.
- `status` (optional): empty, `pending`, `confirmed` or `subscribed` take the
  import's mode (confirmed with `--confirmed`, else pending: double opt-in);
  `unsubscribed` imports an opt-out as such (and unsubscribes a reader
  already here); `bounced` and `complained` (as an
  export writes them) and anything else skip the row.
- `suppressed` (optional, as the export writes it): a row marked suppressed
  is skipped, so a list moved between installations keeps its blocks.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine

from newsletter.core.clock import utc_now
from newsletter.core.db import session_scope
from newsletter.core.errors import (
    ImportFileError,
    InvalidEmailError,
    InvalidSubscriberDetailsError,
)
from newsletter.core.settings import Settings
from subscribers import store, suppressions
from subscribers.models import SubscriberStatus, SuppressionReason
from subscribers.signup import queue_import_confirmation
from subscribers.store import ImportedSubscriber

BATCH_SIZE = 2000
# What a spreadsheet export puts before a value that would otherwise run as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_TOPIC_SEPARATORS = re.compile(r"[,;]")
_SUBSCRIBING = {"", "pending", "confirmed", "subscribed"}
_PARTIAL = "whole batches before that row were imported; a rerun adds only the rest"
_UNDELIVERABLE = {SubscriberStatus.BOUNCED.value, SubscriberStatus.COMPLAINED.value}


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A row not imported, or imported with a change: where, which address, why."""

    row: int  # as a spreadsheet numbers it: the header is row 1
    address: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What an import did, row by row where something was left out."""

    rows: int = 0
    added: int = 0
    already_present: int = 0
    resubscribed: int = 0
    opted_out: int = 0  # readers here whom the file lists as unsubscribed
    skipped: list[SkippedRow] = field(default_factory=list)
    warnings: list[SkippedRow] = field(default_factory=list)
    # Pending readers to ask for confirmation (new ones, and ones a crashed run never asked).
    confirmation_keys: list[str] = field(default_factory=list)

    def as_dict(self, *, limit: int | None = None) -> dict[str, object]:
        """The report as JSON-ready data, with at most `limit` skipped rows and warnings."""
        return {
            "rows": self.rows,
            "added": self.added,
            "already_present": self.already_present,
            "resubscribed": self.resubscribed,
            "opted_out": self.opted_out,
            "skipped": len(self.skipped),
            "warnings": len(self.warnings),
            "confirmations_due": len(self.confirmation_keys),
            "skipped_rows": [_row_dict(row) for row in self.skipped[:limit]],
            "warning_rows": [_row_dict(row) for row in self.warnings[:limit]],
        }


def _row_dict(row: SkippedRow) -> dict[str, object]:
    return {"row": row.row, "address": row.address, "reason": row.reason}


def import_csv_file(
    engine: Engine,
    path: Path,
    *,
    topics: Iterable[str],
    confirmed: bool,
    force: bool = False,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Import the CSV file at `path` (UTF-8, with or without BOM; any line endings)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return import_csv(
            engine, handle, topics=topics, confirmed=confirmed, force=force, batch_size=batch_size
        )


def import_csv(
    engine: Engine,
    handle: TextIO,
    *,
    topics: Iterable[str],
    confirmed: bool,
    force: bool = False,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Import a CSV list read from `handle`, one transaction per batch; returns the report."""
    report = ImportReport()
    known_topics = {topic.casefold(): topic for topic in topics}
    mode = SubscriberStatus.CONFIRMED if confirmed else SubscriberStatus.PENDING
    with session_scope(engine) as session:
        # Suppressions are few: one read, then a set look-up per row.
        suppressed = suppressions.active_reasons(session.connection())
    seen: set[str] = set()
    batch: dict[str, tuple[int, ImportedSubscriber]] = {}  # by address, unique in the file
    last_row = 1  # the header
    try:
        for number, raw in _rows(handle):
            last_row = number
            report.rows += 1
            checked = _check_row(number, raw, known_topics, mode, suppressed, seen, report)
            if checked is not None:
                batch[checked.email] = (number, checked)
            if len(batch) >= batch_size:
                _write_batch(engine, batch, force=force, report=report)
                batch = {}
    except UnicodeDecodeError:
        raise ImportFileError(
            f"the file is not UTF-8 text after row {last_row}; save it as CSV UTF-8 "
            f"and import it again ({_PARTIAL})"
        ) from None
    except csv.Error as error:  # a field over the csv module's limit, a stray quote at the end
        raise ImportFileError(
            f"the file is not readable as CSV after row {last_row}: {error}; "
            f"fix it and import it again ({_PARTIAL})"
        ) from None
    _write_batch(engine, batch, force=force, report=report)
    report.skipped.sort(key=lambda row: row.row)  # those left unsubscribed come per batch
    return report


def _rows(handle: TextIO) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise ImportFileError("the file is empty; it needs a header row with an `email` column")
    columns = [name.strip().lstrip("\ufeff").casefold() for name in header]
    if "email" not in columns:
        raise ImportFileError(
            "the file has no `email` column; the header row names the columns "
            "(email, and optionally name, topics, status)"
        )
    for number, values in enumerate(reader, start=2):
        if not any(value.strip() for value in values):
            continue  # a blank line is not a row
        yield number, dict(zip(columns, values, strict=False))


def _check_row(
    number: int,
    raw: dict[str, str],
    known_topics: dict[str, str],
    mode: SubscriberStatus,
    suppressed: Mapping[str, SuppressionReason],
    seen: set[str],
    report: ImportReport,
) -> ImportedSubscriber | None:
    given = raw.get("email", "")
    shown = given.strip()[:320]

    def skip(reason: str) -> None:
        report.skipped.append(SkippedRow(number, shown, reason))

    try:
        email = store.normalise_email(unquote_formula(given))
    except InvalidEmailError as error:
        skip(f"invalid address: {error}")
        return None
    status_text = raw.get("status", "").strip().casefold()
    if status_text in _SUBSCRIBING:
        status = mode
    elif status_text == "unsubscribed":
        status = SubscriberStatus.UNSUBSCRIBED
    elif status_text in _UNDELIVERABLE:
        skip(f"status {status_text}: the address bounced or complained elsewhere; not imported")
        return None
    else:
        skip(f"unknown status {status_text[:40]!r} (use pending, confirmed or unsubscribed)")
        return None
    lowered = email.lower()
    if lowered in seen:
        skip("duplicate: the address appears earlier in the file")
        return None
    seen.add(lowered)
    reason = suppressions.reason_for(suppressed, email)
    if reason is not None:
        skip(f"suppressed ({reason}): the mailbox gets nothing until its owner signs up again")
        return None
    marked = raw.get("suppressed", "").strip()
    if marked:  # an export of another list says this mailbox must get nothing
        skip(f"suppressed in the file ({marked[:40]}): not imported")
        return None
    topics: list[str] = []
    for topic in _TOPIC_SEPARATORS.split(raw.get("topics", "")):
        topic = topic.strip()
        if not topic:
            continue
        known = known_topics.get(topic.casefold())
        if known is None:
            report.warnings.append(
                SkippedRow(number, email, f"unknown topic {topic[:40]!r} dropped")
            )
        else:
            topics.append(known)
    # In the list's order, as a sign-up stores them.
    chosen = tuple(topic for topic in known_topics.values() if topic in topics)
    name = store.clean_name(unquote_formula(raw.get("name", "")))
    try:
        interests = store.clean_interests(unquote_formula(raw.get("interests", "")))
    except InvalidSubscriberDetailsError as error:
        report.warnings.append(SkippedRow(number, email, f"{error}; interests dropped"))
        interests = ""
    return ImportedSubscriber(
        email=email, name=name, topics=chosen, status=status, interests=interests
    )


def _write_batch(
    engine: Engine,
    batch: dict[str, tuple[int, ImportedSubscriber]],
    *,
    force: bool,
    report: ImportReport,
) -> None:
    if not batch:
        return
    rows = [row for _, row in batch.values()]
    with session_scope(engine) as session:
        result = store.import_subscribers(session, rows, force=force, now=utc_now())
    report.added += len(result.added)
    report.already_present += len(result.already_present)
    report.resubscribed += len(result.resubscribed)
    report.opted_out += len(result.opted_out)
    report.confirmation_keys.extend(result.pending_keys)
    for email in result.unsubscribed_kept:
        report.skipped.append(
            SkippedRow(
                batch[email][0], email, "unsubscribed earlier: not re-subscribed (use --force)"
            )
        )


def unquote_formula(value: str) -> str:
    """Undo a spreadsheet's neutralising `'` before `=`, `+`, `-`, `@` (see the export)."""
    if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_STARTS:
        return value[1:]
    return value


@dataclass(slots=True)
class ConfirmationsQueued:
    """How the confirmations of an import were queued."""

    queued: int = 0
    not_due: int = 0  # confirmed or left since, or asked within the resend interval


def queue_import_confirmations(
    settings: Settings, engine: Engine, keys: Sequence[str], *, batch_size: int = 500
) -> ConfirmationsQueued:
    """Queue a confirmation email for each pending reader named by `keys`; a worker sends them."""
    outcome = ConfirmationsQueued()
    for start in range(0, len(keys), batch_size):
        with session_scope(engine) as session:
            now = utc_now()
            for key in keys[start : start + batch_size]:
                if queue_import_confirmation(session, settings, key=key, now=now) is None:
                    outcome.not_due += 1
                else:
                    outcome.queued += 1
    return outcome
