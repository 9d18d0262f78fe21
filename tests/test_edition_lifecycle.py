"""The edition lifecycle: one table of transitions, refused moves explained, races settled."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select

from newsletter.core.errors import DeliveryError
from newsletter.editions.lifecycle import (
    TRANSITIONS,
    EditionEvent,
    apply_event,
    next_status,
    statuses_allowing,
)
from newsletter.models import Edition, EditionStatus
from tests.support.sending import DAY, make_edition

editions = Edition.__table__  # type: ignore[attr-defined]


def test_every_move_is_either_in_the_table_or_refused_with_a_reason() -> None:
    for status in EditionStatus:
        for event in EditionEvent:
            if (status, event) in TRANSITIONS:
                assert next_status(status, event) is TRANSITIONS[(status, event)]
            else:
                with pytest.raises(DeliveryError, match=f"cannot {event.value}") as refused:
                    next_status(status, event, edition="the edition of 2026-03-02")
                assert "the edition of 2026-03-02: it " in str(refused.value)


def test_sent_and_cancelled_are_final() -> None:
    for (status, _event), after in TRANSITIONS.items():
        if status in (EditionStatus.SENT, EditionStatus.CANCELLED):
            assert after is status, "a finished edition never starts again"
    assert statuses_allowing(EditionEvent.START) == {EditionStatus.DRAFT}
    assert statuses_allowing(EditionEvent.FINISH) == {EditionStatus.SENDING}


def test_of_two_racing_starts_exactly_one_moves_the_edition(engine: Engine) -> None:
    edition_id = make_edition(engine)
    now = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)
    with engine.begin() as connection:
        first = apply_event(
            connection, edition_id=edition_id, event=EditionEvent.START, send_started_at=now
        )
        second = apply_event(
            connection, edition_id=edition_id, event=EditionEvent.START, send_started_at=now
        )
        status = connection.execute(
            select(editions.c.status).where(editions.c.date == DAY)
        ).scalar_one()
    assert (first, second) == (True, False)
    assert status == EditionStatus.SENDING.value
