"""Storing papers: one row per arXiv id, counts refreshed, sources merged; SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Engine, func, text
from sqlmodel import Session, select

from newsletter.core.db import create_db_engine, session_scope, upgrade_schema
from newsletter.ingest import load_papers_for_day, parse_arxiv_listing, upsert_papers
from newsletter.ingest.file import read_papers_file
from newsletter.models import Paper
from newsletter.values import PaperRecord
from tests.support.feed_server import FEEDS_DIR

DAY = date(2026, 11, 27)
POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own on the shared PostgreSQL server, dropped at the end."""
    import psycopg

    name = f"ingest_tests_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_engine(request: pytest.FixtureRequest, database_url: str) -> Iterator[Engine]:
    """A migrated, empty database: SQLite in tmp, or the shared PostgreSQL server."""
    on_sqlite = request.param == "sqlite"
    url = database_url if on_sqlite else request.getfixturevalue("postgres_url")
    engine = create_db_engine(url)
    upgrade_schema(engine)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM papers"))
    yield engine
    engine.dispose()


def _hf_records() -> tuple[PaperRecord, ...]:
    parsed = read_papers_file(FEEDS_DIR / "hf_daily_papers.json", day=None)
    return tuple(replace(record, sources=("hf",)) for record in parsed.records)


def _arxiv_records() -> tuple[PaperRecord, ...]:
    document = (FEEDS_DIR / "arxiv_cs_lg_cs_cl.rss").read_bytes()
    return parse_arxiv_listing(document, day=None).records


def _row_count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Paper)).one()


def _stored(engine: Engine, arxiv_id: str) -> PaperRecord:
    with Session(engine) as session:
        (record,) = [r for r in load_papers_for_day(session, DAY) if r.arxiv_id == arxiv_id]
    return record


def test_first_ingest_inserts_and_the_stored_papers_read_back_the_same(
    store_engine: Engine,
) -> None:
    records = _hf_records()
    with session_scope(store_engine) as session:
        counts = upsert_papers(session, records)

    assert (counts.inserted, counts.updated) == (3, 0)
    with Session(store_engine) as session:
        assert load_papers_for_day(session, DAY) == tuple(
            sorted(records, key=lambda record: record.arxiv_id)
        )


def test_a_second_ingest_refreshes_counts_without_duplicating(store_engine: Engine) -> None:
    records = _hf_records()
    with session_scope(store_engine) as session:
        upsert_papers(session, records)
    later = tuple(
        replace(record, upvotes=record.upvotes + 10, num_comments=4, github_stars=500)
        for record in records
    )
    with session_scope(store_engine) as session:
        counts = upsert_papers(session, later)

    assert (counts.inserted, counts.updated) == (0, 3)
    assert _row_count(store_engine) == 3
    refreshed = _stored(store_engine, "2611.18342")
    assert (refreshed.upvotes, refreshed.num_comments, refreshed.github_stars) == (52, 4, 500)
    assert refreshed.sources == ("hf",)


def test_hf_then_arxiv_is_one_row_with_both_sources_and_hf_fields_kept(
    store_engine: Engine,
) -> None:
    with session_scope(store_engine) as session:
        upsert_papers(session, _hf_records())
    with session_scope(store_engine) as session:
        counts = upsert_papers(session, _arxiv_records())

    assert (counts.inserted, counts.updated) == (0, 3)
    assert _row_count(store_engine) == 3
    paper = _stored(store_engine, "2611.18342")
    assert paper.sources == ("hf", "arxiv")
    assert paper.upvotes == 42  # an arXiv listing knows nothing of upvotes
    assert paper.num_comments == 3
    assert paper.ai_summary == (
        "A learned router lets tokens skip layers, cutting long-context compute."
    )
    assert paper.ai_keywords == ("mixture-of-depths", "long context", "LLMs")
    assert paper.github_repo == "https://github.com/northlake-ai/mod-routing"
    assert paper.github_stars == 120
    assert paper.project_page == "https://mod-routing.github.io/"
    assert paper.published_at == datetime(2026, 11, 25, 17, 8, 18, tzinfo=UTC)
    assert paper.daily_date == DAY


def test_arxiv_then_hf_takes_the_hf_day_and_counts(store_engine: Engine) -> None:
    arxiv_day = date(2026, 11, 26)
    with session_scope(store_engine) as session:
        upsert_papers(
            session, [replace(record, daily_date=arxiv_day) for record in _arxiv_records()]
        )
    with session_scope(store_engine) as session:
        upsert_papers(session, _hf_records())

    paper = _stored(store_engine, "2611.18555")
    assert paper.sources == ("arxiv", "hf")
    assert paper.daily_date == DAY  # Daily Papers names the day it was featured
    assert paper.published_at == datetime(2026, 11, 26, 15, 45, tzinfo=UTC)
    assert paper.upvotes == 7
    with Session(store_engine) as session:
        assert load_papers_for_day(session, arxiv_day) == ()


def test_a_later_arxiv_listing_does_not_move_a_paper_to_another_day(
    store_engine: Engine,
) -> None:
    with session_scope(store_engine) as session:
        upsert_papers(session, _hf_records())
    moved = [replace(record, daily_date=date(2026, 11, 30)) for record in _arxiv_records()]
    with session_scope(store_engine) as session:
        upsert_papers(session, moved)
    assert _stored(store_engine, "2611.18407").daily_date == DAY


def test_duplicates_inside_one_batch_become_one_merged_row(store_engine: Engine) -> None:
    hf = {record.arxiv_id: record for record in _hf_records()}
    arxiv = {record.arxiv_id: record for record in _arxiv_records()}
    batch = [hf["2611.18342"], arxiv["2611.18342"], hf["2611.18342"]]
    with session_scope(store_engine) as session:
        counts = upsert_papers(session, batch)

    assert (counts.inserted, counts.updated) == (1, 0)
    paper = _stored(store_engine, "2611.18342")
    assert paper.sources == ("hf", "arxiv")
    assert paper.upvotes == 42


def test_hostile_titles_are_stored_verbatim(store_engine: Engine) -> None:
    hf_records = _hf_records()
    with session_scope(store_engine) as session:
        upsert_papers(session, hf_records)
    with Session(store_engine) as session:
        stored_titles = {r.arxiv_id: r.title for r in load_papers_for_day(session, DAY)}
    assert stored_titles == {record.arxiv_id: record.title for record in hf_records}
    assert "<script>alert(1)</script> and {{ 7*7 }}" in stored_titles["2611.18407"]
    assert r"$\mathcal{O}(n \log n)$" in stored_titles["2611.18407"]


def test_papers_of_other_days_are_not_loaded(store_engine: Engine) -> None:
    records = _hf_records()
    other = replace(records[0], arxiv_id="2611.00007", daily_date=date(2026, 11, 28))
    with session_scope(store_engine) as session:
        upsert_papers(session, [*records, other])
    with Session(store_engine) as session:
        assert [r.arxiv_id for r in load_papers_for_day(session, DAY)] == [
            "2611.18342",
            "2611.18407",
            "2611.18555",
        ]
        assert [r.arxiv_id for r in load_papers_for_day(session, date(2026, 11, 28))] == [
            "2611.00007"
        ]
