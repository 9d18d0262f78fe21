"""The suppression list: mailboxes that get no digest until their owner confirms a new sign-up.

The one home of the suppression rules, and the only module that writes the
`suppressions` table:

- A suppression holds a mailbox (`subscribers.addresses.mailbox_of`: case
  folded, `+tag` removed), so `victim+1@` is as blocked as `victim@`.
- The send path never queues a suppressed mailbox, whatever the status of its
  subscriber rows (an operator's `--confirmed`, an import): `not_suppressed` is
  the clause its single INSERT … SELECT uses.
- A hard bounce suppresses (`suppress_subscribers`, called where the ledger
  marks a reader bounced); so can a complaint, an erasure or an operator.
- Only the owner lifts it, by confirming a sign-up whose link was sent after
  the suppression (`lift`, recorded on the row); a lifted row stays as the record.
- A reader who erases their data leaves only a hashed entry (`suppress_erased`):
  `address` holds `sha256:` and the SHA-256 of the mailbox, never the address,
  and every look-up by address (`find_active`, `lift`, `reason_for`) matches
  the hash too. The send path's SQL clause compares clear mailboxes only, so
  `reveal` turns a hashed entry back into a clear one when the operator stores
  that address again (`store.add_subscriber`); a sign-up stays pending, and
  only its owner's confirmation lifts the entry.

Every statement runs on the caller's connection, inside its transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    delete,
    exists,
    func,
    literal,
    select,
    update,
)

from newsletter.core.clock import UtcDateTime
from newsletter.core.db import upsert_insert
from subscribers.addresses import mailbox_of
from subscribers.models import Subscriber, SubscriberStatus, Suppression, SuppressionReason

suppressions = Suppression.__table__  # type: ignore[attr-defined]
subscribers = Subscriber.__table__  # type: ignore[attr-defined]

MAX_NOTE_LENGTH = 500
HASH_PREFIX = "sha256:"


def hashed_mailbox(address: str) -> str:
    """How an erased address is kept: `sha256:` and the hex SHA-256 of its mailbox.

    Unsalted on purpose: the list must recognise the address if it comes back,
    whatever the secret key is by then. It keeps the address out of the
    database, not from someone who already knows it and hashes it.
    """
    return HASH_PREFIX + hashlib.sha256(mailbox_of(address).encode("utf-8")).hexdigest()


def _keys_of(address: str) -> list[str]:
    return [mailbox_of(address), hashed_mailbox(address)]


@dataclass(frozen=True, slots=True)
class ActiveSuppression:
    """Why and since when a mailbox is suppressed."""

    address: str
    reason: SuppressionReason
    created_at: dt.datetime
    note: str | None


def not_suppressed(mailbox: ColumnElement[str]) -> ColumnElement[bool]:
    """SQL: no active suppression holds this mailbox column (for the send path's statements)."""
    return ~exists().where(suppressions.c.address == mailbox, suppressions.c.lifted_at.is_(None))


def _upsert(statement: Any) -> Any:
    # A lifted row is taken over by the new suppression; an active one keeps its first reason.
    return statement.on_conflict_do_update(
        index_elements=[suppressions.c.address],
        set_={
            "reason": statement.excluded.reason,
            "note": statement.excluded.note,
            "created_at": statement.excluded.created_at,
            "lifted_at": None,
        },
        where=suppressions.c.lifted_at.is_not(None),
    )


def suppress_address(
    connection: Connection,
    address: str,
    *,
    reason: SuppressionReason,
    now: dt.datetime,
    note: str | None = None,
) -> None:
    """Suppress the mailbox of an address (a complaint, an erasure, an operator's block)."""
    statement = upsert_insert(connection.dialect.name, suppressions).values(
        address=mailbox_of(address),
        reason=reason.value,
        note=_clip(note),
        created_at=now,
    )
    connection.execute(_upsert(statement))


def suppress_subscribers(
    connection: Connection,
    notes_by_key: Sequence[tuple[str, str]],
    *,
    reason: SuppressionReason,
    now: dt.datetime,
) -> None:
    """Suppress the mailboxes of these subscribers (by link key), each with its note."""
    if not notes_by_key:
        return
    rows = select(
        subscribers.c.mailbox,
        literal(reason.value),
        bindparam("note"),
        literal(now, UtcDateTime()),
    ).where(subscribers.c.key == bindparam("subscriber_key"), subscribers.c.mailbox != "")
    statement = upsert_insert(connection.dialect.name, suppressions).from_select(
        ["address", "reason", "note", "created_at"], rows
    )
    connection.execute(
        _upsert(statement),
        [{"subscriber_key": key, "note": _clip(note)} for key, note in notes_by_key],
    )


def find_active(connection: Connection, address: str) -> ActiveSuppression | None:
    """The active suppression of this address's mailbox, if any."""
    row = connection.execute(
        select(
            suppressions.c.address,
            suppressions.c.reason,
            suppressions.c.created_at,
            suppressions.c.note,
        ).where(suppressions.c.address.in_(_keys_of(address)), suppressions.c.lifted_at.is_(None))
    ).first()
    if row is None:
        return None
    return ActiveSuppression(
        address=row.address,
        reason=SuppressionReason(row.reason),
        created_at=row.created_at,
        note=row.note,
    )


def lift(connection: Connection, address: str, *, now: dt.datetime, why: str) -> bool:
    """Lift the mailbox's suppression, adding to its note why; False when none was active."""
    lifted = connection.execute(
        update(suppressions)
        .where(suppressions.c.address.in_(_keys_of(address)), suppressions.c.lifted_at.is_(None))
        .values(
            lifted_at=now,
            note=func.substr(
                func.coalesce(suppressions.c.note + literal(" | "), literal(""))
                + literal(f"lifted: {why}"),
                1,
                MAX_NOTE_LENGTH,
            ),
        )
    )
    return bool(lifted.rowcount)


def suppress_erased(connection: Connection, address: str, *, now: dt.datetime) -> None:
    """Keep an erased reader's mailbox off the list as a hash only, active from `now`.

    Any clear-text row of that mailbox (an earlier bounce, its note naming the
    address) is deleted first: after an erasure the address is nowhere here.
    """
    connection.execute(delete(suppressions).where(suppressions.c.address == mailbox_of(address)))
    statement = upsert_insert(connection.dialect.name, suppressions).values(
        address=hashed_mailbox(address),
        reason=SuppressionReason.ERASED.value,
        note="the reader erased their data",
        created_at=now,
    )
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=[suppressions.c.address],
            set_={
                "reason": statement.excluded.reason,
                "note": statement.excluded.note,
                "created_at": statement.excluded.created_at,
                "lifted_at": None,
            },
        )
    )


def reveal(connection: Connection, address: str) -> None:
    """Turn the hashed entry of an address stored again into a clear one the send path sees."""
    clear = mailbox_of(address)
    taken = connection.execute(
        select(suppressions.c.id).where(suppressions.c.address == clear)
    ).first()
    if taken is None:
        connection.execute(
            update(suppressions)
            .where(suppressions.c.address == hashed_mailbox(address))
            .values(address=clear)
        )


def reason_for(
    suppressed: Mapping[str, SuppressionReason], address: str
) -> SuppressionReason | None:
    """Why `address` is in `active_reasons`' answer (by mailbox or by hash), or None."""
    for key in _keys_of(address):
        reason = suppressed.get(key)
        if reason is not None:
            return reason
    return None


def active_reasons(connection: Connection) -> dict[str, SuppressionReason]:
    """Every actively suppressed mailbox and why (suppressions are few; this reads them all)."""
    rows = connection.execute(
        select(suppressions.c.address, suppressions.c.reason).where(
            suppressions.c.lifted_at.is_(None)
        )
    ).all()
    return {row.address: SuppressionReason(row.reason) for row in rows}


def count_active(connection: Connection) -> dict[SuppressionReason, int]:
    """How many mailboxes are suppressed for each reason (every reason present)."""
    counts = dict.fromkeys(SuppressionReason, 0)
    rows = connection.execute(
        select(suppressions.c.reason, func.count())
        .where(suppressions.c.lifted_at.is_(None))
        .group_by(suppressions.c.reason)
    ).all()
    for reason, count in rows:
        counts[SuppressionReason(reason)] = count
    return counts


def count_held_back(connection: Connection) -> int:
    """How many confirmed subscribers get no digest because their mailbox is suppressed."""
    return connection.execute(
        select(func.count()).where(
            subscribers.c.status == SubscriberStatus.CONFIRMED.value,
            ~not_suppressed(subscribers.c.mailbox),
        )
    ).scalar_one()


def _clip(note: str | None) -> str | None:
    return None if note is None else " ".join(note.split())[:MAX_NOTE_LENGTH]
