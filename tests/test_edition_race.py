"""Two processes preparing the same new day at once both succeed and share one edition.

Each "process" is a thread with its own engine (its own connections). A
barrier holds both right after their first look for the day's edition, so
both have seen that it does not exist yet before either creates it: the race
`newsletter send` and `newsletter preview` (or two cron hosts) can run into.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func
from sqlmodel import Session, col, select

from newsletter.core.db import create_db_engine, session_scope, upgrade_schema
from newsletter.core.settings import Settings
from newsletter.editions.content import prepare_edition
from newsletter.ingest import read_papers_file, upsert_papers
from newsletter.models import Edition, EditionPaper, EditionStatus
from newsletter.sample_data import SAMPLE_DAY, sample_day_path
from tests.support.postgres import postgres_database_or_skip

PREPARERS = 2


@contextmanager
def _database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'race.db'}"
        return
    with postgres_database_or_skip() as url:
        yield url


def _meet_after_first_edition_lookup(engine: Engine, barrier: threading.Barrier) -> None:
    """Make the engine's first SELECT on `editions` wait until every preparer has made its own."""
    met = threading.Event()

    @event.listens_for(engine, "after_cursor_execute")
    def meet(*args: Any) -> None:
        statement = str(args[2])
        if met.is_set() or not statement.lstrip().upper().startswith("SELECT"):
            return
        if "FROM editions" in statement:
            met.set()
            barrier.wait()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_preparers_of_a_new_day_both_succeed_and_share_one_edition(
    settings: Settings, tmp_path: Path, backend: str
) -> None:
    with _database_url(backend, tmp_path) as database_url:
        setup = create_db_engine(database_url)
        upgrade_schema(setup)
        with session_scope(setup) as session:
            upsert_papers(session, read_papers_file(sample_day_path(), day=SAMPLE_DAY).records)

        barrier = threading.Barrier(PREPARERS, timeout=60)
        engines = [create_db_engine(database_url) for _ in range(PREPARERS)]
        for engine in engines:
            _meet_after_first_edition_lookup(engine, barrier)
        try:
            with ThreadPoolExecutor(PREPARERS) as pool:
                futures = [
                    pool.submit(prepare_edition, settings, engine, day=SAMPLE_DAY)
                    for engine in engines
                ]
                editions = [future.result(timeout=120) for future in futures]
        finally:
            for engine in engines:
                engine.dispose()

        try:
            assert len({edition.id for edition in editions}) == 1
            assert editions[0].status == EditionStatus.DRAFT
            with Session(setup) as session:
                days = session.exec(select(Edition.date)).all()
                ranked = session.exec(
                    select(func.count())
                    .select_from(EditionPaper)
                    .where(col(EditionPaper.edition_id) == editions[0].id)
                ).one()
            assert days == [date(2026, 11, 27)]
            assert ranked == settings.top_n
        finally:
            setup.dispose()
