"""The ingest stage: papers in from Hugging Face, arXiv or a local file, stored once per id.

`ingest_papers` fetches and parses everything first and only then writes, in
one transaction, so a bad response or file leaves the database untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
from sqlalchemy import Engine

from newsletter.core.db import session_scope
from newsletter.core.errors import IngestError
from newsletter.core.settings import Settings
from newsletter.ingest.arxiv import fetch_arxiv_listing, parse_arxiv_listing
from newsletter.ingest.fetching import DEFAULT_BACKOFF, USER_AGENT, Backoff
from newsletter.ingest.file import read_papers_file
from newsletter.ingest.huggingface import fetch_daily_papers, parse_daily_papers
from newsletter.ingest.parsed import PaperSource, ParsedPapers
from newsletter.ingest.store import UpsertCounts, load_papers_for_day, upsert_papers

__all__ = [
    "USER_AGENT",
    "Backoff",
    "IngestReport",
    "PaperSource",
    "ParsedPapers",
    "UpsertCounts",
    "fetch_arxiv_listing",
    "fetch_daily_papers",
    "ingest_papers",
    "load_papers_for_day",
    "parse_arxiv_listing",
    "parse_daily_papers",
    "read_papers_file",
    "upsert_papers",
]

logger = logging.getLogger("newsletter.ingest")


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one ingest run did: papers read, rows inserted and updated, records skipped."""

    source: PaperSource
    day: date
    fetched: int
    inserted: int
    updated: int
    skipped: tuple[str, ...] = ()


async def ingest_papers(
    settings: Settings,
    engine: Engine,
    *,
    day: date | None,
    source: PaperSource,
    file: Path | None = None,
    http_client: httpx.AsyncClient | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> IngestReport:
    """Read the day's papers from `source` and store them; nothing is written if reading fails.

    A file may leave `day` out: its records' own day is taken when they agree.
    """
    if source is PaperSource.FILE:
        if file is None:
            raise IngestError("the file source needs a path to a Daily Papers JSON file")
        parsed = read_papers_file(file, day=day)
    elif day is None:
        raise IngestError(f"fetching from {source.value} needs the day to fetch")
    elif file is not None:
        raise IngestError(f"a papers file is only read with the file source, not {source}")
    elif http_client is not None:
        parsed = await _fetch(settings, http_client, day=day, source=source, backoff=backoff)
    else:
        async with httpx.AsyncClient(
            timeout=settings.http_timeout_seconds,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=True,
        ) as client:
            parsed = await _fetch(settings, client, day=day, source=source, backoff=backoff)

    for reason in parsed.skipped:
        logger.warning("skipped from %s: %s", source.value, reason)
    if file is not None:
        day = _day_of_file(parsed, file, given=day)
    assert day is not None  # checked above for the sources that fetch
    with session_scope(engine) as session:
        counts = upsert_papers(session, parsed.records)
    logger.info(
        "ingested %d papers for %s from %s: %d new, %d updated, %d skipped",
        len(parsed.records),
        day.isoformat(),
        source.value,
        counts.inserted,
        counts.updated,
        len(parsed.skipped),
    )
    return IngestReport(
        source=source,
        day=day,
        fetched=len(parsed.records),
        inserted=counts.inserted,
        updated=counts.updated,
        skipped=parsed.skipped,
    )


def _day_of_file(parsed: ParsedPapers, file: Path, *, given: date | None) -> date:
    """The day a file's papers go under: the one given, else the one all its records name."""
    if not parsed.records:
        # Nothing to store is a mistake worth an exit status, not "0 papers ingested".
        raise IngestError(
            f"papers file {file} has no usable record ({len(parsed.skipped)} skipped); "
            "nothing was stored"
        )
    if given is not None:
        return given
    days = sorted({record.daily_date for record in parsed.records if record.daily_date})
    if len(days) != 1:
        listed = ", ".join(day.isoformat() for day in days[:5])
        raise IngestError(
            f"the papers in {file} are from {len(days)} days ({listed}): "
            "give --date YYYY-MM-DD to file them under one"
        )
    return days[0]


async def _fetch(
    settings: Settings,
    client: httpx.AsyncClient,
    *,
    day: date,
    source: PaperSource,
    backoff: Backoff,
) -> ParsedPapers:
    if source is PaperSource.HF:
        return await fetch_daily_papers(
            client,
            api_url=settings.hf_api_url,
            day=day,
            retries=settings.http_retries,
            backoff=backoff,
        )
    return await fetch_arxiv_listing(
        client,
        feed_url=settings.arxiv_feed_url,
        categories=settings.arxiv_categories,
        day=day,
        retries=settings.http_retries,
        backoff=backoff,
    )
