"""Exporting the subscriber list as CSV or JSON, streamed in batches.

Every reader with their address, name, status, topics, timestamps and, when
their mailbox is suppressed, why. CSV values a spreadsheet would run as a
formula (starting with `=`, `+`, `-`, `@`) get a leading `'`, which the import
takes off again (`subscribers.importing.unquote_formula`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, select

from newsletter.core.db import session_scope
from subscribers import suppressions
from subscribers.importing import FORMULA_STARTS
from subscribers.models import Subscriber

COLUMNS = (
    "email",
    "name",
    "status",
    "topics",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "suppressed",
)
BATCH_SIZE = 2000
CHUNK_SIZE = 64 * 1024  # characters per piece written or sent


class ExportFormat(StrEnum):
    """The formats a list is exported in."""

    CSV = "csv"
    JSON = "json"


def iter_export_records(
    engine: Engine, *, batch_size: int = BATCH_SIZE
) -> Iterator[dict[str, object]]:
    """Every subscriber as a plain record, in id order, read a batch at a time."""
    table = Subscriber.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        connection = session.connection()
        suppressed = suppressions.active_reasons(connection)
        last_id = 0
        while True:
            rows = connection.execute(
                select(
                    table.c.id,
                    table.c.email,
                    table.c.mailbox,
                    table.c.name,
                    table.c.status,
                    table.c.topics,
                    table.c.created_at,
                    table.c.confirmed_at,
                    table.c.unsubscribed_at,
                )
                .where(table.c.id > last_id)
                .order_by(table.c.id)
                .limit(batch_size)
            ).all()
            if not rows:
                return
            for row in rows:
                reason = suppressions.reason_for(suppressed, row.mailbox)
                yield {
                    "email": row.email,
                    "name": row.name,
                    "status": row.status,
                    "topics": list(row.topics or []),
                    "created_at": _iso(row.created_at),
                    "confirmed_at": _iso(row.confirmed_at),
                    "unsubscribed_at": _iso(row.unsubscribed_at),
                    "suppressed": str(reason) if reason is not None else None,
                }
            last_id = rows[-1].id


def iter_export(engine: Engine, export_format: ExportFormat) -> Iterator[str]:
    """The export as text chunks (a header or `[`, then one chunk per record)."""
    records = iter_export_records(engine)
    if export_format is ExportFormat.JSON:
        yield from _json_chunks(records)
    else:
        yield from _csv_chunks(records)


def _json_chunks(records: Iterator[dict[str, object]]) -> Iterator[str]:
    parts = ["["]
    size = 0
    separator = "\n"
    for record in records:
        part = separator + json.dumps(record, ensure_ascii=False)
        parts.append(part)
        size += len(part)
        separator = ",\n"
        if size > CHUNK_SIZE:
            yield "".join(parts)
            parts, size = [], 0
    parts.append("\n]\n")
    yield "".join(parts)


def _csv_chunks(records: Iterator[dict[str, object]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for record in records:
        topics = record["topics"]
        assert isinstance(topics, list)
        writer.writerow(
            [
                neutralise_formula(_text(record[column]))
                if column != "topics"
                else neutralise_formula(";".join(topics))
                for column in COLUMNS
            ]
        )
        if buffer.tell() > CHUNK_SIZE:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def neutralise_formula(value: str) -> str:
    """The value with a leading `'` when a spreadsheet would run it as a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
