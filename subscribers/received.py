"""Sign-ups as they were answered: each written before its answer, deleted as it is recorded.

A sign-up's answer waits for one row of `received_signups`: the same insert
whatever the address, and no look-up, so the answer's timing cannot tell a
stranger whether an address is new, pending, confirmed or gone. Recording it
(`signup.register_signup`: look-ups, a reopen, the confirmation's slot and
queue row) runs after the answer and deletes the row in its own transaction.
A row left by a crash between the two is recorded later
(`left_unrecorded`, by the web app at start-up and every minute), so an
answered sign-up is never lost; recording one twice is harmless (the second
finds the address pending and its confirmation slot taken).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from subscribers import store
from subscribers.models import DigestMode, Frequency, ReceivedSignup
from subscribers.signup import SignupDetails

__all__ = ["forget", "forget_address", "left_unrecorded", "receive"]

received_signups = ReceivedSignup.__table__  # type: ignore[attr-defined]

# A row older than this was not recorded by the process that answered it (which
# records within milliseconds): another may record it.
RECORDED_WITHIN_SECONDS = 60


def receive(
    connection: Connection, batch: Sequence[SignupDetails | None], *, now: dt.datetime
) -> list[int]:
    """Write each sign-up (None: a filled-in honeypot, kept as a bare mark); their ids, in order.

    One statement for the batch, whatever the addresses: nothing here looks at them.
    """
    rows = [{"details": _values(details), "received_at": now} for details in batch]
    result = connection.execute(
        insert(received_signups).returning(received_signups.c.id, sort_by_parameter_order=True),
        rows,
    )
    return [int(row_id) for row_id in result.scalars()]


def forget(connection: Connection, ids: Sequence[int]) -> None:
    """Delete rows whose sign-ups are recorded (in the recording's transaction)."""
    if ids:
        connection.execute(delete(received_signups).where(received_signups.c.id.in_(ids)))


def forget_address(connection: Connection, email: str) -> int:
    """Delete any row still holding this address (its owner is being erased); how many.

    The table holds only sign-ups of the last moments (or a stopped server's),
    so reading it whole is cheap and needs no dialect's JSON operators.
    """
    ids = [
        int(row.id)
        for row in connection.execute(select(received_signups.c.id, received_signups.c.details))
        if isinstance(row.details, dict) and row.details.get("email") == email
    ]
    forget(connection, ids)
    return len(ids)


def left_unrecorded(
    connection: Connection,
    *,
    now: dt.datetime,
    older_than_seconds: float = RECORDED_WITHIN_SECONDS,
    limit: int = 500,
) -> list[tuple[int, SignupDetails | None]]:
    """Rows received before `older_than_seconds` ago, oldest first (None: a honeypot's mark)."""
    cutoff = now - dt.timedelta(seconds=older_than_seconds)
    rows = connection.execute(
        select(received_signups.c.id, received_signups.c.details)
        .where(received_signups.c.received_at < cutoff)
        .order_by(received_signups.c.received_at, received_signups.c.id)
        .limit(limit)
    )
    return [(int(row.id), _details(row.details)) for row in rows]


def _values(details: SignupDetails | None) -> dict[str, object]:
    if details is None:
        return {"trap": True}  # nothing of a bot's input is kept
    profile = details.profile
    return {
        "email": details.email,
        "name": details.name,
        "topics": list(details.topics),
        "liked_ids": list(details.liked_ids),
        "profile": None
        if profile is None
        else {
            "interests": profile.interests,
            "digest_mode": profile.digest_mode.value,
            "personal_count": profile.personal_count,
            "frequency": profile.frequency.value,
            "weekly_day": profile.weekly_day,
        },
    }


def _details(values: dict[str, object]) -> SignupDetails | None:
    if values.get("trap"):
        return None
    profile = values.get("profile")
    assert isinstance(profile, dict | None)
    name = values.get("name")
    return SignupDetails(
        email=str(values["email"]),
        name=None if name is None else str(name),
        topics=tuple(map(str, values.get("topics") or ())),  # type: ignore[call-overload]
        profile=None
        if profile is None
        else store.Profile(
            interests=str(profile["interests"]),
            digest_mode=DigestMode(profile["digest_mode"]),
            personal_count=int(profile["personal_count"]),
            frequency=Frequency(profile["frequency"]),
            weekly_day=int(profile["weekly_day"]),
        ),
        liked_ids=tuple(map(str, values.get("liked_ids") or ())),  # type: ignore[call-overload]
    )
