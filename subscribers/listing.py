"""Pages of readers for the console: search by address, filter by status, keyset paging.

Readers are listed in address order (lower-cased, the order of the unique
index `ix_subscribers_email_lower`). A page ends with the address it stopped
at; the next page starts after it (`after`), so page 20,000 of a million
readers costs what page 1 costs: an index range scan, never an OFFSET.
Filtered by status, the composite index `ix_subscribers_status_email_lower`
keeps the same order. A search is by the start of the address (what one types
of it), a range of the same index.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Select, func, select

from subscribers.models import Subscriber, SubscriberStatus

subscribers = Subscriber.__table__  # type: ignore[attr-defined]
PAGE_SIZE = 50
# Past every character an address holds: the end of a prefix's index range.
_AFTER_EVERY_CHARACTER = "\U0010ffff"


@dataclass(frozen=True, slots=True)
class ReaderRow:
    """One reader as the list shows them."""

    id: int
    email: str
    name: str | None
    status: SubscriberStatus
    paused: bool
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ReaderPage:
    """A page of readers and where the next one starts (None: this is the last)."""

    readers: list[ReaderRow]
    next_after: str | None


def readers_query(
    *,
    search: str = "",
    status: SubscriberStatus | None = None,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> Select[tuple[int, str, str | None, str, bool, dt.datetime]]:
    """The statement of one page (one row more than `limit`, to tell whether more follow)."""
    address = func.lower(subscribers.c.email)
    statement = select(
        subscribers.c.id,
        subscribers.c.email,
        subscribers.c.name,
        subscribers.c.status,
        subscribers.c.paused,
        subscribers.c.created_at,
    )
    if status is not None:
        statement = statement.where(subscribers.c.status == status.value)
    prefix = search.strip().lower()
    if prefix:
        statement = statement.where(
            address >= prefix,
            address < prefix + _AFTER_EVERY_CHARACTER,
            # The range narrows the index scan; this keeps the match exact under any collation.
            address.startswith(prefix, autoescape=True),
        )
    if after is not None:
        statement = statement.where(address > after)
    return statement.order_by(address).limit(limit + 1)


def readers_page(
    connection: Connection,
    *,
    search: str = "",
    status: SubscriberStatus | None = None,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> ReaderPage:
    """One page of readers in address order, starting after the address `after`."""
    rows = connection.execute(
        readers_query(search=search, status=status, after=after, limit=limit)
    ).all()
    readers = [
        ReaderRow(
            id=row.id,
            email=row.email,
            name=row.name,
            status=SubscriberStatus(row.status),
            paused=bool(row.paused),
            created_at=row.created_at,
        )
        for row in rows[:limit]
    ]
    next_after = readers[-1].email.lower() if len(rows) > limit else None
    return ReaderPage(readers=readers, next_after=next_after)
