"""Writing papers: one row per arXiv id, however many sources and runs describe it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import TypeVar

from sqlalchemy import insert
from sqlmodel import Session, col, select

from newsletter.core.clock import utc_now
from newsletter.ingest.parsed import PaperSource
from newsletter.models import Paper
from newsletter.values import PaperRecord

# Sources in the Daily Papers shape: they carry community counts and the day
# a paper was featured, which outrank what a bare arXiv listing says.
_DAILY_LIST_SOURCES = frozenset({PaperSource.HF.value, PaperSource.FILE.value})
_T = TypeVar("_T", date, datetime)
# Keeps each IN (...) list well under every database's bound-parameter limit.
_LOOKUP_CHUNK = 500


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """How many papers were new rows and how many refreshed existing ones."""

    inserted: int
    updated: int


def merge_paper_records(stored: PaperRecord, incoming: PaperRecord) -> PaperRecord:
    """One record from two descriptions of the same paper, keeping the richer value of each field.

    Text and links: a present incoming value wins, an absent one never erases.
    Counts: refreshed only by sources that report them (an arXiv listing says
    nothing about upvotes). The daily date and publication time stay with the
    first source that set them, unless a Daily Papers source names them (an
    arXiv listing only knows its announcement time).
    """
    from_daily_list = not _DAILY_LIST_SOURCES.isdisjoint(incoming.sources)

    def first_or_daily_list(kept: _T | None, offered: _T | None) -> _T | None:
        if kept is None or (from_daily_list and offered is not None):
            return offered if offered is not None else kept
        return kept

    return replace(
        stored,
        title=incoming.title or stored.title,
        abstract=incoming.abstract or stored.abstract,
        authors=incoming.authors or stored.authors,
        published_at=first_or_daily_list(stored.published_at, incoming.published_at),
        daily_date=first_or_daily_list(stored.daily_date, incoming.daily_date),
        upvotes=incoming.upvotes if from_daily_list else stored.upvotes,
        num_comments=incoming.num_comments if from_daily_list else stored.num_comments,
        github_repo=incoming.github_repo or stored.github_repo,
        github_stars=(
            incoming.github_stars if incoming.github_stars is not None else stored.github_stars
        ),
        project_page=incoming.project_page or stored.project_page,
        thumbnail=incoming.thumbnail or stored.thumbnail,
        ai_summary=incoming.ai_summary or stored.ai_summary,
        ai_keywords=incoming.ai_keywords or stored.ai_keywords,
        sources=tuple(dict.fromkeys((*stored.sources, *incoming.sources))),
    )


def merge_batch(records: Iterable[PaperRecord]) -> dict[str, PaperRecord]:
    """The records keyed by arXiv id, duplicates merged in order of arrival."""
    merged: dict[str, PaperRecord] = {}
    for record in records:
        earlier = merged.get(record.arxiv_id)
        merged[record.arxiv_id] = (
            record if earlier is None else merge_paper_records(earlier, record)
        )
    return merged


def upsert_papers(session: Session, records: Sequence[PaperRecord]) -> UpsertCounts:
    """Insert new papers and refresh known ones; flushes, and leaves the commit to the caller."""
    incoming = merge_batch(records)
    existing = _rows_by_arxiv_id(session, list(incoming))
    now = utc_now()
    new_rows: list[dict[str, object]] = []
    for arxiv_id, record in incoming.items():
        row = existing.get(arxiv_id)
        if row is None:
            new_rows.append(_row_values(record, now=now))
        else:
            _copy_into_row(row, merge_paper_records(record_from_row(row), record), now=now)
            session.add(row)
    session.flush()
    if new_rows:
        # One multi-row INSERT: building an ORM object per paper is several
        # times slower on the large days benchmarks generate.
        session.execute(insert(Paper), new_rows)
    return UpsertCounts(inserted=len(new_rows), updated=len(incoming) - len(new_rows))


def load_papers_for_day(session: Session, day: date) -> tuple[PaperRecord, ...]:
    """The stored papers whose daily date is `day`, ordered by arXiv id."""
    statement = select(Paper).where(Paper.daily_date == day).order_by(col(Paper.arxiv_id))
    return tuple(record_from_row(row) for row in session.exec(statement))


def record_from_row(row: Paper) -> PaperRecord:
    """The immutable value a stored paper row describes."""
    return PaperRecord(
        arxiv_id=row.arxiv_id,
        title=row.title,
        abstract=row.abstract,
        authors=tuple(row.authors),
        published_at=row.published_at,
        daily_date=row.daily_date,
        upvotes=row.upvotes,
        num_comments=row.num_comments,
        github_repo=row.github_repo,
        github_stars=row.github_stars,
        project_page=row.project_page,
        thumbnail=row.thumbnail,
        ai_summary=row.ai_summary,
        ai_keywords=tuple(row.ai_keywords),
        sources=tuple(row.sources),
    )


def _rows_by_arxiv_id(session: Session, arxiv_ids: list[str]) -> dict[str, Paper]:
    rows: dict[str, Paper] = {}
    for start in range(0, len(arxiv_ids), _LOOKUP_CHUNK):
        chunk = arxiv_ids[start : start + _LOOKUP_CHUNK]
        statement = select(Paper).where(col(Paper.arxiv_id).in_(chunk))
        rows.update((row.arxiv_id, row) for row in session.exec(statement))
    return rows


def _row_values(record: PaperRecord, *, now: datetime) -> dict[str, object]:
    return {
        "arxiv_id": record.arxiv_id,
        "title": record.title,
        "abstract": record.abstract,
        "authors": list(record.authors),
        "published_at": record.published_at,
        "daily_date": record.daily_date,
        "upvotes": record.upvotes,
        "num_comments": record.num_comments,
        "github_repo": record.github_repo,
        "github_stars": record.github_stars,
        "project_page": record.project_page,
        "thumbnail": record.thumbnail,
        "ai_summary": record.ai_summary,
        "ai_keywords": list(record.ai_keywords),
        "sources": list(record.sources),
        "created_at": now,
        "updated_at": now,
    }


def _copy_into_row(row: Paper, record: PaperRecord, *, now: datetime) -> None:
    # Fresh lists for the JSON columns, so SQLAlchemy sees them change.
    for name, value in _row_values(record, now=now).items():
        if name != "created_at":
            setattr(row, name, value)
