"""Hostile input never sinks a day: a bad record is skipped and named once, the rest kept.

Lone surrogates and NUL in any field, out-of-range numbers, JSON nested past
what the decoder can read, character references naming no character in an
arXiv listing: through the `newsletter` process as an operator runs it, the
Hugging Face API path over HTTP, and the real PostgreSQL where NUL matters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from newsletter.core.db import create_db_engine
from newsletter.core.errors import MalformedSourceError
from newsletter.core.settings import Settings
from newsletter.core.urls import web_url
from newsletter.ingest import PaperSource, ingest_papers, parse_arxiv_listing, parse_daily_papers
from newsletter.ingest.parsed import canonical_arxiv_id, parse_iso_datetime
from newsletter.models import Paper
from tests.support.cli import cli_environment, run_cli
from tests.support.feed_server import FEEDS_DIR, FeedResponse, running_feed_server
from tests.support.postgres import postgres_database_or_skip
from tests.support.smtp_server import RecordingSmtpServer

DAY = "2026-11-20"
HF_PATH = "/api/daily_papers"
GOOD_IDS = ["2611.00001", "2611.00003"]
BAD_ID = "2611.00002"
# Deeper than any JSON decoder's recursion allows, as a whole document and inside a record.
DEEP_DOCUMENT = b"[" * 100_000 + b"]" * 100_000
DEEP_IN_A_RECORD = (
    b'[{"paper": {"id": "2611.00001", "title": "T"}, "extra": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}]"
)


def _item(arxiv_id: str, title: str, **paper_fields: Any) -> dict[str, Any]:
    paper: dict[str, Any] = {
        "id": arxiv_id,
        "title": title,
        "summary": "An abstract.",
        "authors": [{"name": "Ana Uno"}],
        "publishedAt": f"{DAY}T00:00:00.000Z",
        "submittedOnDailyAt": f"{DAY}T08:00:00.000Z",
        "upvotes": 7,
    }
    paper.update(paper_fields)
    return {"paper": paper, "title": title, "numComments": 1}


def _day_with_one_bad_record(**bad_fields: Any) -> list[dict[str, Any]]:
    """Two good records around a bad one (record 2)."""
    bad = _item(BAD_ID, "Bad Paper Two")
    bad["paper"].update(bad_fields)
    return [_item(GOOD_IDS[0], "Good Paper One"), bad, _item(GOOD_IDS[1], "Good Paper Three")]


@contextmanager
def _database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of the given kind, for the length of a `with` block."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'cli.db'}"
        return
    with postgres_database_or_skip() as url:
        yield url


def _write_json(path: Path, payload: object) -> Path:
    # json.dumps writes a lone surrogate as the escape `\ud800`, as a hostile API would.
    path.write_text(json.dumps(payload), encoding="ascii")
    return path


def _stored_ids(database_url: str) -> list[str]:
    engine = create_db_engine(database_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(Paper.arxiv_id).order_by(col(Paper.arxiv_id))))
    finally:
        engine.dispose()


def _assert_one_warning_naming_the_bad_record(stderr: str, field: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr  # logged once, not logged and printed again
    assert lines[0].startswith("WARNING"), stderr
    assert "record 2" in lines[0] and BAD_ID in lines[0] and f"its {field} holds" in lines[0]


# ---- through the CLI -------------------------------------------------------------------------

# SQLite stores NUL but no surrogate; PostgreSQL neither. Either way the record is skipped.
BAD_FIELDS_SQLITE = [
    pytest.param({"title": "Bad \ud800 Two"}, "title", id="surrogate-in-title"),
    pytest.param({"summary": "An \x00 abstract."}, "abstract", id="nul-in-abstract"),
    pytest.param({"authors": [{"name": "Ana"}, {"name": "B\udfffo"}]}, "authors", id="author"),
]
BAD_FIELDS_POSTGRES = [
    pytest.param({"title": "Bad \x00 Two"}, "title", id="nul-in-title"),
    pytest.param({"ai_keywords": ["fine", "\x00"]}, "ai_keywords", id="nul-in-keyword"),
    pytest.param({"ai_summary": "\udbff"}, "ai_summary", id="surrogate-in-ai-summary"),
]


@pytest.mark.parametrize(("bad_fields", "field"), BAD_FIELDS_SQLITE)
def test_a_file_record_with_unstorable_text_is_skipped_once_and_the_rest_stored(
    tmp_path: Path, smtp_server: RecordingSmtpServer, bad_fields: dict[str, Any], field: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    papers = _write_json(tmp_path / "papers.json", _day_with_one_bad_record(**bad_fields))
    env = cli_environment(database_url, smtp_server.port)

    result = run_cli("ingest", "--file", str(papers), "--date", DAY, env=env)

    _assert_one_warning_naming_the_bad_record(result.stderr, field)
    assert "Ingested 2 papers" in result.stdout and "1 skipped" in result.stdout
    assert _stored_ids(database_url) == GOOD_IDS


@pytest.mark.postgres
@pytest.mark.parametrize(("bad_fields", "field"), BAD_FIELDS_POSTGRES)
def test_on_postgresql_a_record_with_nul_or_a_surrogate_is_skipped_and_the_rest_stored(
    tmp_path: Path, smtp_server: RecordingSmtpServer, bad_fields: dict[str, Any], field: str
) -> None:
    papers = _write_json(tmp_path / "papers.json", _day_with_one_bad_record(**bad_fields))
    with postgres_database_or_skip() as database_url:
        env = cli_environment(database_url, smtp_server.port)
        result = run_cli("ingest", "--file", str(papers), "--date", DAY, env=env, check=False)
        assert result.returncode == 0, result.stderr
        _assert_one_warning_naming_the_bad_record(result.stderr, field)
        assert _stored_ids(database_url) == GOOD_IDS


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_run_with_a_bad_record_from_the_api_still_sends_the_day(
    tmp_path: Path, smtp_server: RecordingSmtpServer, backend: str
) -> None:
    day = _day_with_one_bad_record(title="Bad \x00 Two", summary="\ud800")
    with _database(backend, tmp_path) as database_url, running_feed_server() as feeds:
        feeds.serve(HF_PATH, FeedResponse.json(day))
        env = dict(
            cli_environment(database_url, smtp_server.port),
            NEWSLETTER_HF_API_URL=feeds.url(HF_PATH),
        )
        run_cli("subscribers", "add", "ada@example.org", "--confirmed", env=env)
        result = run_cli("run", "--date", DAY, env=env, check=False)

        assert result.returncode == 0, result.stderr
        _assert_one_warning_naming_the_bad_record(result.stderr, "title")
        assert _stored_ids(database_url) == GOOD_IDS
    assert smtp_server.handler.recipients() == ["ada@example.org"]
    text = smtp_server.messages[0].message.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert "Good Paper One" in body and "Good Paper Three" in body and "Bad" not in body


@pytest.mark.parametrize(
    "document", [DEEP_DOCUMENT, DEEP_IN_A_RECORD], ids=["whole-document", "inside-a-record"]
)
def test_a_file_nested_too_deeply_is_one_error_line(
    tmp_path: Path, smtp_server: RecordingSmtpServer, document: bytes
) -> None:
    papers = tmp_path / "deep.json"
    papers.write_bytes(document)
    env = cli_environment(f"sqlite:///{tmp_path / 'cli.db'}", smtp_server.port)

    result = run_cli("ingest", "--file", str(papers), "--date", DAY, env=env, check=False)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert str(papers) in line and "nested too deeply" in line


def test_an_api_response_nested_too_deeply_is_one_error_line_and_nothing_is_sent(
    tmp_path: Path, smtp_server: RecordingSmtpServer
) -> None:
    with running_feed_server() as feeds:
        feeds.serve(HF_PATH, FeedResponse(body=DEEP_DOCUMENT))
        env = dict(
            cli_environment(f"sqlite:///{tmp_path / 'cli.db'}", smtp_server.port),
            NEWSLETTER_HF_API_URL=feeds.url(HF_PATH),
        )
        run_cli("subscribers", "add", "ada@example.org", "--confirmed", env=env)
        result = run_cli("run", "--date", DAY, env=env, check=False)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert feeds.url(HF_PATH) in line and "nested too deeply" in line
    assert smtp_server.messages == []


def test_an_arxiv_listing_naming_a_surrogate_is_one_error_line(
    tmp_path: Path, smtp_server: RecordingSmtpServer
) -> None:
    listing = _arxiv_listing_with(b"Sparse &#xD800; Mixture")
    with running_feed_server() as feeds:
        feeds.serve("/rss/cs.LG+cs.CL", FeedResponse(body=listing, content_type="application/xml"))
        env = dict(
            cli_environment(f"sqlite:///{tmp_path / 'cli.db'}", smtp_server.port),
            NEWSLETTER_ARXIV_FEED_URL=feeds.url("/rss"),
            NEWSLETTER_ARXIV_CATEGORIES="cs.LG,cs.CL",
        )
        result = run_cli(
            "ingest", "--source", "arxiv", "--date", "2026-11-27", env=env, check=False
        )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "is not well-formed XML" in line


# ---- the parsers -----------------------------------------------------------------------------


def _arxiv_listing_with(replacement: bytes) -> bytes:
    listing = (FEEDS_DIR / "arxiv_cs_lg_cs_cl.rss").read_bytes()
    assert b"Sparse Mixture" in listing
    return listing.replace(b"Sparse Mixture", replacement, 1)


@pytest.mark.parametrize(
    "reference", [b"&#0;", b"&#xD800;", b"&#xDFFF;", b"&#x110000;", b"&#99999999999999999999;"]
)
def test_an_arxiv_listing_with_a_reference_to_no_character_is_malformed(reference: bytes) -> None:
    with pytest.raises(MalformedSourceError, match="not well-formed XML"):
        parse_arxiv_listing(_arxiv_listing_with(b"Sparse " + reference + b" Mixture"), day=None)


def test_escaped_references_in_an_arxiv_listing_stay_literal_text() -> None:
    parsed = parse_arxiv_listing(_arxiv_listing_with(b"Sparse &amp;#0; Mixture"), day=None)
    assert parsed.records[0].title.startswith("Sparse &#0; Mixture")


def test_numbers_a_column_cannot_hold_are_treated_as_absent() -> None:
    huge = 2**31
    parsed = parse_daily_papers(
        [_item("2611.00001", "T", upvotes=huge, githubStars=10**30)], day=date(2026, 11, 20)
    )
    (record,) = parsed.records
    assert (record.upvotes, record.github_stars) == (0, None)


def test_an_old_style_id_longer_than_its_column_is_not_an_id() -> None:
    assert canonical_arxiv_id("hep-th/9901001v2") == "hep-th/9901001"
    assert canonical_arxiv_id("a" + "-" * 40 + "/9901001") is None


def test_times_that_leave_the_calendar_in_utc_are_absent() -> None:
    assert parse_iso_datetime("9999-12-31T23:00:00-05:00") is None
    assert parse_iso_datetime("0001-01-01T00:00:00+05:00") is None


def test_links_with_invisible_or_control_characters_are_not_kept() -> None:
    assert web_url("https://example.org/\u202egpj.exe") is None
    assert web_url("https://example.org/\x00") is None
    assert web_url("https://example.org/a%20b") == "https://example.org/a%20b"


def test_a_skipped_record_is_named_with_its_unprintable_characters_escaped() -> None:
    parsed = parse_daily_papers(
        [_item("not-an-id", "Title \x1b[2J with \ud800 and \u202e")], day=date(2026, 11, 20)
    )
    (reason,) = parsed.skipped
    assert reason.isprintable()
    assert r'record 1 ("Title \x1b[2J with \ud800 and \u202e")' in reason


# ---- any JSON in any field -------------------------------------------------------------------

HOSTILE_PIECES = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\udbff", "\x1b[31m", "\u202e", "\x85", "\ufeff", "\u2028", "\t\n"]
)
ANY_TEXT = st.lists(
    st.one_of(HOSTILE_PIECES, st.text(st.characters(exclude_categories=()), max_size=12)),
    max_size=4,
).map("".join)
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(ANY_TEXT, children, max_size=3)
    ),
    max_leaves=6,
)


BIG_INTEGERS = st.integers(min_value=-(2**80), max_value=2**80)


def _mostly(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value of the right type three times in four, else any JSON value at all."""
    return st.integers(0, 3).flatmap(lambda n: ANY_JSON if n == 0 else plausible)


def _link(text: str) -> str:
    return "https://example.org/" + text


HOSTILE_ITEMS = st.fixed_dictionaries(
    {
        "paper": _mostly(
            st.fixed_dictionaries(
                {
                    "id": _mostly(st.sampled_from([BAD_ID, f"{BAD_ID}v2", "hep-th/9901001"])),
                    "title": _mostly(ANY_TEXT.map("Title ".__add__)),
                    "summary": _mostly(ANY_TEXT),
                    "authors": _mostly(st.lists(st.fixed_dictionaries({"name": ANY_TEXT}))),
                    "publishedAt": _mostly(
                        st.sampled_from(["9999-12-31T23:00:00-05:00", "2026-11-19T00:00Z"])
                        | ANY_TEXT
                    ),
                    "upvotes": _mostly(BIG_INTEGERS),
                    "githubRepo": _mostly(ANY_TEXT.map(_link)),
                    "githubStars": _mostly(BIG_INTEGERS),
                    "projectPage": _mostly(ANY_TEXT.map(_link)),
                    "ai_summary": _mostly(ANY_TEXT),
                    "ai_keywords": _mostly(st.lists(ANY_TEXT, max_size=3)),
                }
            )
        ),
        "numComments": _mostly(BIG_INTEGERS),
        "thumbnail": _mostly(ANY_TEXT.map(_link)),
    }
)


@pytest.fixture
def migrated(each_database: Engine) -> Engine:
    """An engine on a migrated database: the settings fixture's SQLite, or PostgreSQL."""
    return each_database


@hypothesis_settings(
    max_examples=120,
    derandomize=True,  # the same examples on every run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile=HOSTILE_ITEMS)
def test_any_json_in_any_field_is_stored_or_skipped_by_name_never_raised(
    settings: Settings, migrated: Engine, tmp_path: Path, hostile: dict[str, object]
) -> None:
    papers = _write_json(tmp_path / "papers.json", [_item(GOOD_IDS[0], "Good"), hostile])

    report = asyncio.run(
        ingest_papers(
            settings, migrated, day=date(2026, 11, 20), source=PaperSource.FILE, file=papers
        )
    )

    assert report.fetched + len(report.skipped) == 2
    assert all(reason.startswith("record 2") and reason.isprintable() for reason in report.skipped)
    with Session(migrated) as session:
        assert session.exec(select(Paper).where(Paper.arxiv_id == GOOD_IDS[0])).one()
