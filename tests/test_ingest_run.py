"""`ingest_papers` end to end, and the bundled sample day."""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from newsletter.core.errors import IngestError, MalformedSourceError, SourceUnavailableError
from newsletter.core.settings import Settings
from newsletter.ingest import Backoff, IngestReport, PaperSource, ingest_papers
from newsletter.ingest import load_papers_for_day as load_day
from newsletter.models import Paper
from newsletter.sample_data import (
    SAMPLE_DAY,
    generate_daily_papers,
    sample_day_path,
)
from newsletter.sample_data.make_sample_day import render_sample_day
from tests.support.feed_server import FEEDS_DIR, FeedResponse, FeedServer, RecordedRequest

DAY = date(2026, 11, 27)
FAST = Backoff(base_seconds=0.001)
# Real titles hold "<", "&", quotes and LaTeX: the sample day has some.
TRICKY_SAMPLE_TITLES = (
    "Is Your Gain Significant? Re-Testing 300 Leaderboard Claims at p < 0.05",
    'Don\'t Trust the "Judge": Position Bias & Self-Preference in LLM-as-a-Judge',
    r"Sorting-Based Sparse Attention in $\mathcal{O}(n \log n)$ Time",
)
# Markup and template syntax: generated days for tests carry them, the demo's day never.
HOSTILE_TITLES = (
    "Prompt Templates Are Code: Why {{ 7*7 }} Still Evaluates in Agent Frameworks",
    "<script>alert(1)</script> in the Wild: Do Code LLMs Write XSS-Safe Web Pages?",
)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def remote_settings(settings: Settings, feed_server: FeedServer) -> Settings:
    return settings.model_copy(
        update={
            "hf_api_url": feed_server.url("/api/daily_papers"),
            "arxiv_feed_url": feed_server.url("/rss"),
            "arxiv_categories": ["cs.LG", "cs.CL"],
            "http_retries": 2,
        }
    )


def _paper_count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Paper)).one()


async def test_the_sample_day_ingests_as_a_full_day(settings: Settings, engine: Engine) -> None:
    report = await ingest_papers(
        settings, engine, day=SAMPLE_DAY, source=PaperSource.FILE, file=sample_day_path()
    )

    assert report == IngestReport(
        source=PaperSource.FILE, day=SAMPLE_DAY, fetched=36, inserted=36, updated=0, skipped=()
    )
    with Session(engine) as session:
        papers = load_day(session, SAMPLE_DAY)
    assert len(papers) >= 30
    titles = {paper.title for paper in papers}
    for tricky in TRICKY_SAMPLE_TITLES:
        assert tricky in titles
    for hostile in HOSTILE_TITLES:
        assert hostile not in titles
    assert all(paper.sources == ("file",) for paper in papers)


async def test_ingesting_the_same_day_again_updates_instead_of_duplicating(
    settings: Settings, engine: Engine
) -> None:
    for _ in range(2):
        report = await ingest_papers(
            settings, engine, day=SAMPLE_DAY, source=PaperSource.FILE, file=sample_day_path()
        )
    assert (report.inserted, report.updated) == (0, 36)
    assert _paper_count(engine) == 36


async def test_skipped_records_are_logged_and_reported(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="newsletter.ingest")
    report = await ingest_papers(
        settings,
        engine,
        day=DAY,
        source=PaperSource.FILE,
        file=FEEDS_DIR / "hf_daily_papers.json",
    )

    assert (report.fetched, report.inserted) == (3, 3)
    assert len(report.skipped) == 3
    logged = [r.getMessage() for r in caplog.records if r.name == "newsletter.ingest"]
    assert logged == [f"skipped from file: {reason}" for reason in report.skipped]
    assert 'record 3 ("A Paper Whose Identifier Went Missing"): no arXiv id' in report.skipped


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("hf_truncated.json", MalformedSourceError),
        ("hf_object.json", MalformedSourceError),
        ("hf_not_json.html", MalformedSourceError),
        ("does_not_exist.json", IngestError),
    ],
)
async def test_a_bad_file_writes_nothing(
    settings: Settings, engine: Engine, name: str, error: type[Exception]
) -> None:
    with pytest.raises(error, match=name):
        await ingest_papers(
            settings, engine, day=DAY, source=PaperSource.FILE, file=FEEDS_DIR / name
        )
    assert _paper_count(engine) == 0


async def test_the_file_source_needs_a_file_and_only_it_takes_one(
    settings: Settings, engine: Engine
) -> None:
    with pytest.raises(IngestError, match="needs a path"):
        await ingest_papers(settings, engine, day=DAY, source=PaperSource.FILE)
    with pytest.raises(IngestError, match="only read with the file source"):
        await ingest_papers(
            settings, engine, day=DAY, source=PaperSource.HF, file=sample_day_path()
        )


async def test_hf_and_arxiv_for_the_same_papers_end_as_one_row_each(
    remote_settings: Settings, engine: Engine, feed_server: FeedServer
) -> None:
    feed_server.serve("/api/daily_papers", FeedResponse.feed_file("hf_daily_papers.json"))
    feed_server.serve("/rss/cs.LG+cs.CL", FeedResponse.feed_file("arxiv_cs_lg_cs_cl.rss"))

    hf = await ingest_papers(remote_settings, engine, day=DAY, source=PaperSource.HF, backoff=FAST)
    arxiv = await ingest_papers(
        remote_settings, engine, day=DAY, source=PaperSource.ARXIV, backoff=FAST
    )

    assert (hf.inserted, hf.updated) == (3, 0)
    assert (arxiv.inserted, arxiv.updated) == (0, 3)
    with Session(engine) as session:
        papers = load_day(session, DAY)
    assert [(p.arxiv_id, p.sources) for p in papers] == [
        ("2611.18342", ("hf", "arxiv")),
        ("2611.18407", ("hf", "arxiv")),
        ("2611.18555", ("hf", "arxiv")),
    ]
    (request,) = feed_server.requests("/rss/cs.LG+cs.CL")
    assert "paper-newsletter" in request.headers["user-agent"]


async def test_a_failure_on_a_later_page_writes_nothing(
    remote_settings: Settings, engine: Engine, feed_server: FeedServer
) -> None:
    first_page = generate_daily_papers(DAY, 100, seed=11)

    def pages(request: RecordedRequest) -> FeedResponse:
        if "p" in request.query:
            return FeedResponse(503, b"upstream timeout")
        return FeedResponse.json(first_page)

    feed_server.serve("/api/daily_papers", pages)
    with pytest.raises(SourceUnavailableError):
        await ingest_papers(remote_settings, engine, day=DAY, source=PaperSource.HF, backoff=FAST)
    assert _paper_count(engine) == 0


async def test_a_malformed_response_writes_nothing(
    remote_settings: Settings, engine: Engine, feed_server: FeedServer
) -> None:
    feed_server.serve("/rss/cs.LG+cs.CL", FeedResponse.feed_file("arxiv_truncated.rss"))
    with pytest.raises(MalformedSourceError, match="not well-formed XML"):
        await ingest_papers(
            remote_settings, engine, day=DAY, source=PaperSource.ARXIV, backoff=FAST
        )
    assert _paper_count(engine) == 0


async def test_a_given_client_is_used_and_left_open(
    remote_settings: Settings, engine: Engine, feed_server: FeedServer
) -> None:
    feed_server.serve("/api/daily_papers", FeedResponse.feed_file("hf_daily_papers.json"))
    async with httpx.AsyncClient() as client:
        report = await ingest_papers(
            remote_settings, engine, day=DAY, source=PaperSource.HF, http_client=client
        )
        assert not client.is_closed
    assert report.inserted == 3


# ---- the bundled sample day ------------------------------------------------------------------


def test_the_committed_sample_file_is_what_the_generator_writes() -> None:
    assert sample_day_path().read_text(encoding="utf-8") == render_sample_day()


def test_the_sample_day_looks_like_a_real_day() -> None:
    papers = json.loads(sample_day_path().read_text(encoding="utf-8"))
    upvotes = [element["paper"]["upvotes"] for element in papers]
    assert len(papers) == 36
    assert 4 <= statistics.median(upvotes) <= 9
    assert 120 <= max(upvotes) <= 150
    with_links = [e for e in papers if "githubRepo" in e["paper"] or "projectPage" in e["paper"]]
    assert 12 <= len(with_links) <= 28
    assert any(author["hidden"] for e in papers for author in e["paper"]["authors"])
    assert any("ai_summary" not in e["paper"] for e in papers)
    assert all("upvotes" not in e and "numComments" not in e["paper"] for e in papers)
    assert all("\n" in e["paper"]["summary"] for e in papers)


def test_each_sample_paper_tells_one_story_in_its_title_abstract_and_summary() -> None:
    papers = [element["paper"] for element in json.loads(sample_day_path().read_text("utf-8"))]
    assert len({paper["title"].rsplit(": ", 1)[-1] for paper in papers}) == len(papers)
    named = [paper for paper in papers if "ai_summary" in paper and ": " in paper["title"]]
    assert len(named) >= 10
    for paper in named:
        name = paper["title"].split(": ", 1)[0]
        # The method the title names is the one the abstract and the summary describe.
        assert name in paper["summary"].replace("\n", " "), paper["title"]
        assert paper["ai_summary"].startswith(f"{name} "), paper["title"]
    topics = {paper["ai_keywords"][-1] for paper in papers if "ai_keywords" in paper}
    assert topics == {
        "LLMs",
        "Diffusion",
        "Computer vision",
        "Robotics",
        "Reinforcement learning",
        "Speech and audio",
        "Theory",
    }


def test_generated_days_for_tests_keep_the_hostile_titles() -> None:
    titles = {element["paper"]["title"] for element in generate_daily_papers(DAY, 36, seed=1)}
    for hostile in HOSTILE_TITLES:
        assert hostile in titles


def test_generated_days_are_deterministic_and_scale() -> None:
    large = generate_daily_papers(date(2026, 12, 1), 1_000, seed=5)
    assert large == generate_daily_papers(date(2026, 12, 1), 1_000, seed=5)
    assert large != generate_daily_papers(date(2026, 12, 1), 1_000, seed=6)
    assert len({element["paper"]["id"] for element in large}) == 1_000
    assert {e["paper"]["submittedOnDailyAt"][:10] for e in large} == {"2026-12-01"}


def test_the_sample_file_ships_inside_the_package() -> None:
    assert sample_day_path().parent == Path(__file__).parents[1] / "newsletter" / "sample_data"
    assert sample_day_path().is_file()
