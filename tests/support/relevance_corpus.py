"""The labelled relevance set (tests/data/relevance) stored as an ingest would store it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.models import Paper

DATA = Path(__file__).resolve().parent.parent / "data" / "relevance"
# Invented papers over six days, each with the subtopics it is about.
PAPER_ROWS = [json.loads(line) for line in (DATA / "papers.jsonl").read_text().splitlines() if line]
SUBTOPICS = {row["arxiv_id"]: set(row["subtopics"]) for row in PAPER_ROWS}


def store_labelled_papers(engine: Engine) -> None:
    """Insert the 240 papers into a migrated database."""
    with engine.begin() as connection:
        connection.execute(
            Paper.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "arxiv_id": row["arxiv_id"],
                    "title": row["title"],
                    "abstract": row["abstract"],
                    "authors": [],
                    "ai_keywords": row["keywords"],
                    "sources": ["test"],
                    "daily_date": dt.date.fromisoformat(row["day"]),
                    "upvotes": row["upvotes"],
                    "num_comments": 0,
                    "created_at": dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                    "updated_at": dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                }
                for row in PAPER_ROWS
            ],
        )


@contextmanager
def labelled_database(url: str) -> Iterator[tuple[Engine, str]]:
    """The database at `url` migrated and holding the labelled papers; (its engine, the url)."""
    engine = create_db_engine(url)
    upgrade_schema(engine)
    store_labelled_papers(engine)
    try:
        yield engine, url
    finally:
        engine.dispose()
