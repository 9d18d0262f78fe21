"""The store's judged-paper functions on SQLite and PostgreSQL, a race between two requests too."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session, select

from subscribers import store
from subscribers.models import JudgementSource, ReaderPaper, Subscriber, Verdict

PAPER = "2611.00014"


@pytest.fixture
def database(each_database: Engine) -> Engine:
    """A migrated database of each kind."""
    return each_database


def _reader(engine: Engine) -> int:
    with Session(engine) as session:
        row = Subscriber(email="ada@example.org")
        session.add(row)
        session.commit()
        assert row.id is not None
        return row.id


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    with Session(engine) as session:
        rows = session.exec(select(ReaderPaper)).all()
        return [(r.paper_key, r.verdict, r.source, r.title) for r in rows]


def _record(session: Session, reader: int, verdict: Verdict, source: JudgementSource) -> Any:
    return store.record_judgement(
        session,
        subscriber_id=reader,
        paper_key=PAPER,
        arxiv_id=PAPER,
        title="Concept erasure",
        abstract="Abstract.",
        verdict=verdict,
        source=source,
    )


def test_record_replace_restore_flip_remove(database: Engine) -> None:
    reader = _reader(database)
    with Session(database) as session:
        assert _record(session, reader, Verdict.LIKED, JudgementSource.PASTED) is None
        session.commit()
        previous = _record(session, reader, Verdict.DISLIKED, JudgementSource.EMAIL)
        session.commit()
        assert previous == store.Judgement(Verdict.LIKED, JudgementSource.PASTED)
        assert _rows(database) == [(PAPER, "disliked", "email", "Concept erasure")]

        store.restore_judgement(session, subscriber_id=reader, paper_key=PAPER, previous=previous)
        session.commit()
        assert _rows(database) == [(PAPER, "liked", "pasted", "Concept erasure")]

        flipped = store.flip_judgement(session, subscriber_id=reader, paper_key=PAPER)
        session.commit()
        assert flipped is not None and _rows(database) == [
            (PAPER, "disliked", "pasted", "Concept erasure")
        ]
        assert store.flip_judgement(session, subscriber_id=reader, paper_key="nope") is None

        assert store.remove_judgement(session, subscriber_id=reader, paper_key=PAPER)
        session.commit()
        assert not store.remove_judgement(session, subscriber_id=reader, paper_key=PAPER)
        assert _rows(database) == []
        # Undoing a first judgement removes it; restoring what is gone does nothing.
        _record(session, reader, Verdict.LIKED, JudgementSource.EMAIL)
        store.restore_judgement(session, subscriber_id=reader, paper_key=PAPER, previous=None)
        store.restore_judgement(session, subscriber_id=reader, paper_key=PAPER, previous=None)
        session.commit()
        assert _rows(database) == []


def test_two_requests_recording_the_same_paper_at_once_leave_one_row(database: Engine) -> None:
    reader = _reader(database)
    raced = False

    def insert_first(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Just before this request's INSERT, another request stores the same paper.
        nonlocal raced
        if not raced and statement.lstrip().upper().startswith("INSERT INTO READER_PAPERS"):
            raced = True
            with database.connect() as other:
                other.execute(
                    text(
                        "INSERT INTO reader_papers (subscriber_id, paper_key, arxiv_id, title, "
                        "abstract, verdict, source, created_at, updated_at) VALUES (:s, :k, :k, "
                        "'Concept erasure', '', 'liked', 'email', CURRENT_TIMESTAMP, "
                        "CURRENT_TIMESTAMP)"
                    ),
                    {"s": reader, "k": PAPER},
                )
                other.commit()

    event.listen(database, "before_cursor_execute", insert_first)
    try:
        with Session(database) as session:
            previous = _record(session, reader, Verdict.DISLIKED, JudgementSource.EMAIL)
            session.commit()
    finally:
        event.remove(database, "before_cursor_execute", insert_first)
    assert raced
    assert previous == store.Judgement(Verdict.LIKED, JudgementSource.EMAIL)
    assert _rows(database) == [(PAPER, "disliked", "email", "Concept erasure")]
    with Session(database) as session:
        listed = store.list_judgements(session, subscriber_id=reader)
        assert [r.paper_key for r in listed] == [PAPER]
