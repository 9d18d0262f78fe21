"""Personal selections streamed from ranking to sending: one batch of readers held at a time.

The send's start ranks the readers batch by batch before its transaction (into
a temporary file), then stores each batch's distinct selections (a selection
two batches share stays one row); a worker reads only the selections its
claimed rows point at. With
the batch size made small, ten readers span several batches, and what they
receive must be exactly what one ranking of all of them gives.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select, update
from sqlmodel import Session

from newsletter.core.db import create_db_engine, try_begin_write, upgrade_schema
from newsletter.core.settings import Settings, load_settings
from newsletter.delivery import ledger
from newsletter.delivery import selections as delivery_selections
from newsletter.delivery.control import start_edition
from newsletter.delivery.ledger import deliveries
from newsletter.delivery.selections import (
    PersonalDigests,
    PreparedSelections,
    selections,
    store_selections,
)
from newsletter.delivery.worker import prepare_send, send_edition
from newsletter.editions import personal
from newsletter.editions.content import prepare_edition
from newsletter.editions.personal import (
    ReaderSelection,
    SelectionBatch,
    edition_selections,
    papers,
    personal_picks,
)
from newsletter.relevance import Pick
from subscribers.store import add_subscriber
from tests.support.postgres import postgres_database_or_skip
from tests.support.relevance_corpus import store_labelled_papers
from tests.support.smtp_server import RecordingSmtpServer

DAY = dt.date(2026, 11, 5)


# Four profiles over ten readers, in id order: batches of three put readers
# with the same profile (hence the same selection) in different batches.
PROFILES: list[tuple[list[str], str]] = [
    (["Robotics"], "legged locomotion, sim-to-real"),
    ([], "speech recognition for low-resource languages"),
    ([], "concept erasure and unlearning in diffusion models"),
    (["Robotics"], ""),
]
READERS = [(f"reader{n}@example.org", *PROFILES[n % len(PROFILES)]) for n in range(10)]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Settings]]:
    """The labelled papers, the ten readers and one without a profile, on each database."""
    urls: AbstractContextManager[str] = (
        nullcontext(f"sqlite:///{tmp_path / 'streamed.db'}")
        if request.param == "sqlite"
        else postgres_database_or_skip()
    )
    with urls as url, _readers_stored(url, also_plain=True) as engine:
        yield engine, _settings(url, smtp_port=25)


@contextmanager
def _readers_stored(url: str, *, also_plain: bool) -> Iterator[Engine]:
    engine = create_db_engine(url)
    try:
        upgrade_schema(engine)
        store_labelled_papers(engine)
        with Session(engine) as session:
            for address, topics, interests in READERS:
                add_subscriber(
                    session, email=address, topics=topics, interests=interests, confirmed=True
                )
            if also_plain:
                add_subscriber(session, email="plain@example.org", confirmed=True)
            session.commit()
        yield engine
    finally:
        engine.dispose()


def _settings(url: str, *, smtp_port: int, **overrides: object) -> Settings:
    return load_settings(
        _env_file=None,
        database_url=url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        secret_key="test-secret-key-0123456789",
        base_url="https://news.example.org",
        from_address="Daily ML Papers <digest@news.example.org>",
        send_retry_base_seconds=0.0,
        **overrides,
    )


def _reader_ids(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(personal.subscribers.c.email, personal.subscribers.c.id))
        return {str(email): int(reader) for email, reader in rows}


def _stored(engine: Engine) -> tuple[dict[str, int | None], dict[int, list[tuple[str, str]]]]:
    """Each queued reader's selection id, and each stored selection's (paper, why) picks."""
    with engine.connect() as connection:
        rows = dict(connection.execute(select(deliveries.c.email, deliveries.c.selection_id)).all())
        picks = {
            int(selection_id): [(str(p["arxiv_id"]), str(p["why"])) for p in stored_picks]
            for selection_id, stored_picks in connection.execute(
                select(selections.c.id, selections.c.picks)
            )
        }
    return rows, picks


def _one_ranking_of_everyone(
    engine: Engine, settings: Settings
) -> dict[str, list[tuple[str, str]]]:
    """Each profiled reader's (paper, why) picks when every reader is ranked in one batch."""
    ids = _reader_ids(engine)
    one_pass = personal_picks(settings, engine, day=DAY, subscriber_ids=sorted(ids.values()))
    return {
        address: [(p.arxiv_id, p.why) for p in one_pass[reader]]
        for address, reader in ids.items()
        if reader in one_pass
    }


def test_the_start_ranks_before_it_locks_then_stores_batch_by_batch_a_shared_selection_once(
    database: tuple[Engine, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, settings = database
    # What one ranking of every reader at once (a single batch) gives each of them.
    expected = _one_ranking_of_everyone(engine, settings)
    assert "plain@example.org" not in expected and len(expected) == len(READERS)
    distinct = {tuple(picks) for picks in expected.values()}
    assert 1 < len(distinct) < len(READERS) and all(expected.values())

    # Batches of three readers; the order of ranking and storing is recorded,
    # and while each batch is ranked another writer must not be kept waiting.
    monkeypatch.setattr(personal, "READERS_PER_BATCH", 3)
    events: list[tuple[str, frozenset[int]]] = []
    load_readers = personal.load_readers
    store_batch = delivery_selections.store_selection_batch
    edition_row = select(personal.editions.c.id).where(personal.editions.c.date == DAY)

    def ranking(connection: Connection, subscriber_ids: Sequence[int], **kwargs: object) -> object:
        events.append(("ranked", frozenset(subscriber_ids)))
        with engine.connect() as other:
            if other.dialect.name == "sqlite":
                assert try_begin_write(other), "the start holds SQLite's write lock while ranking"
            else:  # the start's transaction locks the edition's row
                other.execute(edition_row.with_for_update(nowait=True)).one()
            other.rollback()
        return load_readers(connection, subscriber_ids, **kwargs)  # type: ignore[arg-type]

    def storing(
        connection: Connection, *, batch: PreparedSelections, **kwargs: object
    ) -> dict[int, int]:
        events.append(("stored", frozenset(reader for reader, _ in batch.readers)))
        return store_batch(connection, batch=batch, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(personal, "load_readers", ranking)
    monkeypatch.setattr(delivery_selections, "store_selection_batch", storing)
    prepare_edition(settings, engine, day=DAY)
    assert start_edition(engine, DAY, settings=settings) == len(READERS) + 1

    # Every batch ranked before the start's transaction, then stored one by one.
    assert [kind for kind, _ in events] == ["ranked"] * 4 + ["stored"] * 4
    assert [len(readers) for _, readers in events] == [3, 3, 3, 1] * 2
    assert [readers for _, readers in events[:4]] == [readers for _, readers in events[4:]]

    rows, stored = _stored(engine)
    # Every reader's row points at exactly the picks one ranking gives them.
    assert {address: stored[_id(rows[address])] for address in expected} == expected
    assert rows["plain@example.org"] is None
    # A selection met in several batches is stored once.
    assert len(stored) == len(distinct)
    assert rows["reader0@example.org"] == rows["reader4@example.org"] == rows["reader8@example.org"]


def test_readers_ranked_in_two_processes_get_what_one_process_gives_them(
    database: tuple[Engine, Settings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `newsletter send` ranks on as many processes as will send: the pages of
    # readers go to forked children, and every reader must get what ranking
    # everyone in one process gives, stored as one process would store it.
    engine, settings = database
    expected = _one_ranking_of_everyone(engine, settings)
    monkeypatch.setattr(personal, "READERS_PER_BATCH", 3)
    rankers = tmp_path / "rankers"  # a child's memory is its own: each writes its pid here
    load_readers = personal.load_readers

    def ranking(connection: Connection, subscriber_ids: Sequence[int], **kwargs: object) -> object:
        with rankers.open("a") as log:
            log.write(f"{os.getpid()} {len(subscriber_ids)}\n")
        return load_readers(connection, subscriber_ids, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(personal, "load_readers", ranking)
    prepare_edition(settings, engine, day=DAY)
    begun = prepare_send(engine, edition_date=DAY, settings=settings, ranking_processes=2)

    assert begun.queued == len(READERS) + 1
    ranked = [line.split() for line in rankers.read_text().splitlines()]
    # Four pages of daily readers, none ranked by this process.
    assert sorted(int(size) for _, size in ranked) == [1, 3, 3, 3]
    assert str(os.getpid()) not in {pid for pid, _ in ranked}
    rows, stored = _stored(engine)
    assert {address: stored[_id(rows[address])] for address in expected} == expected
    assert rows["plain@example.org"] is None
    assert len(stored) == len({tuple(picks) for picks in expected.values()})
    # The engine this process holds still works after the children let go of theirs.
    with engine.connect() as connection:
        assert connection.execute(select(deliveries.c.id)).all()


async def test_a_worker_reads_only_the_selections_its_rows_point_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    with _readers_stored(url, also_plain=False) as engine, RecordingSmtpServer() as server:
        settings = _settings(url, smtp_port=server.port, send_batch_size=2)
        prepare_edition(settings, engine, day=DAY)
        start_edition(engine, DAY, settings=settings)
        rows, stored = _stored(engine)
        assert len(stored) == len(PROFILES)
        with engine.connect() as connection:
            titles = dict(connection.execute(select(papers.c.arxiv_id, papers.c.title)).all())

        # Two selections kept read, one digest kept compiled: fewer than the edition has.
        monkeypatch.setattr(delivery_selections, "SELECTIONS_KEPT", 2)
        monkeypatch.setattr(delivery_selections, "COMPILED_KEPT", 1)
        asked: list[set[int] | None] = []
        load_selections = delivery_selections.load_selections

        def reading(
            connection: Connection, *, edition_id: int, selection_ids: Collection[int] | None = None
        ) -> dict[int, ReaderSelection]:
            asked.append(None if selection_ids is None else set(selection_ids))
            return load_selections(connection, edition_id=edition_id, selection_ids=selection_ids)

        monkeypatch.setattr(delivery_selections, "load_selections", reading)
        held: list[PersonalDigests] = []
        load = PersonalDigests.load

        def loading(*args: Any, **kwargs: Any) -> PersonalDigests | None:
            digests = load(*args, **kwargs)
            held.extend([digests] if digests is not None else [])
            return digests

        monkeypatch.setattr(PersonalDigests, "load", loading)
        report = await send_edition(settings, engine, edition_date=DAY)
        assert report.sent == len(READERS)
        received = {m.rcpt_tos[0]: m for m in server.messages}

    # Never every selection of the edition: only those of a claimed batch (two rows).
    assert asked and None not in asked
    assert all(ids and len(ids) <= 2 for ids in asked)
    [digests] = held
    assert len(digests.selections) <= 2 and len(digests.compiled) <= 1
    # And still every reader got their own selection's papers, in order.
    for address, selection_id in rows.items():
        text = received[address].message.get_body(("plain",))
        assert text is not None
        body = str(text.get_content())
        shown = [body.index(titles[arxiv_id]) for arxiv_id, _ in stored[_id(selection_id)]]
        assert shown and shown == sorted(shown)


def _id(selection_id: int | None) -> int:
    assert selection_id is not None
    return selection_id


def test_weekly_readers_ranked_in_several_batches_get_what_one_batch_gives_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'weekly.db'}"
    with _readers_stored(url, also_plain=True) as engine:
        with engine.begin() as connection:  # everyone weekly, on the edition's weekday
            connection.execute(
                update(personal.subscribers).values(frequency="weekly", weekly_day=DAY.weekday())
            )
        settings = _settings(url, smtp_port=25)

        def everyone(batches: Iterable[SelectionBatch]) -> dict[int, ReaderSelection]:
            return {reader: chosen for batch in batches for reader, chosen in batch.items()}

        one_batch = everyone(edition_selections(settings, engine, day=DAY))
        monkeypatch.setattr(personal, "READERS_PER_BATCH", 3)
        batches = list(edition_selections(settings, engine, day=DAY))
        ids = _reader_ids(engine)

    assert [len(batch) for batch in batches] == [3, 3, 3, 2]
    assert everyone(batches) == one_batch and len(one_batch) == len(READERS) + 1
    # The reader without a profile: the week's trending alone; the others "For you" too.
    plain = one_batch[ids["plain@example.org"]]
    assert not plain.for_you and plain.week_trending
    assert all(
        chosen.for_you and chosen.picks and chosen.week_trending
        for reader, chosen in one_batch.items()
        if reader != ids["plain@example.org"]
    )


def test_a_reader_in_two_batches_keeps_the_first_selection(
    database: tuple[Engine, Settings],
) -> None:
    # On PostgreSQL a reader can turn from daily to weekly between the daily and the
    # weekly batches of one start: the start must still succeed, with one row each.
    engine, settings = database
    ids = _reader_ids(engine)
    first, second = ids["reader0@example.org"], ids["reader1@example.org"]
    edition = prepare_edition(settings, engine, day=DAY)
    assert edition.id is not None
    edition_id, now = edition.id, dt.datetime.now(dt.UTC)
    daily = ReaderSelection((Pick("2611.00001", 0.5, "matches your interest in robots"),))
    weekly = ReaderSelection((), for_you=False, week_trending=("2611.00002",))
    with engine.begin() as connection:
        queued = ledger.start_sending(
            connection,
            edition_id=edition_id,
            now=now,
            selections=lambda c: store_selections(
                c,
                edition_id=edition_id,
                picks=[
                    PreparedSelections.of({first: daily}),
                    PreparedSelections.of({first: weekly, second: weekly}),
                ],
                now=now,
            ),
        )
    assert queued == len(READERS) + 1
    rows, stored = _stored(engine)
    assert stored[_id(rows["reader0@example.org"])] == [
        ("2611.00001", "matches your interest in robots")
    ]
    assert stored[_id(rows["reader1@example.org"])] == []
    assert len(stored) == 2
