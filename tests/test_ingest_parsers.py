"""The pure parsers: Hugging Face Daily Papers JSON and arXiv listing RSS."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from newsletter.core.errors import IngestError, MalformedSourceError
from newsletter.ingest import (
    PaperSource,
    parse_arxiv_listing,
    parse_daily_papers,
    read_papers_file,
)
from tests.support.feed_server import FEEDS_DIR

DAY = date(2026, 11, 27)
HOSTILE_TITLE = (
    r"<script>alert(1)</script> and {{ 7*7 }}: Auditing Sanitisers in $\mathcal{O}(n \log n)$"
)


def _hf_payload() -> object:
    return json.loads((FEEDS_DIR / "hf_daily_papers.json").read_text(encoding="utf-8"))


def _arxiv_document() -> bytes:
    return (FEEDS_DIR / "arxiv_cs_lg_cs_cl.rss").read_bytes()


# ---- Hugging Face ----------------------------------------------------------------------------


def test_every_trap_field_is_read_from_where_it_really_lives() -> None:
    parsed = parse_daily_papers(_hf_payload(), day=None)
    paper = {record.arxiv_id: record for record in parsed.records}["2611.18342"]

    assert (
        paper.title == "Sparse Mixture-of-Depths Routing for Efficient Long-Context Language Models"
    )
    assert paper.abstract == (
        "Long-context language models spend most of their compute on tokens that barely "
        "change the prediction. We introduce a router that lets each token skip whole blocks "
        "of layers, trained jointly with the model."
    )
    # Hidden authors are still authors; their names are listed with the rest.
    assert paper.authors == ("Mei Lin Zhou", "Tomasz Wróbel", "Priya Raghunathan")
    assert paper.upvotes == 42  # only under `paper`
    assert paper.num_comments == 3  # only at the top level
    assert paper.github_repo == "https://github.com/northlake-ai/mod-routing"
    assert paper.github_stars == 120
    assert paper.project_page == "https://mod-routing.github.io/"
    assert paper.thumbnail == (
        "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2611.18342.png"
    )
    assert (
        paper.ai_summary
        == "A learned router lets tokens skip layers, cutting long-context compute."
    )
    assert paper.ai_keywords == ("mixture-of-depths", "long context", "LLMs")
    assert paper.published_at == datetime(2026, 11, 25, 17, 8, 18, tzinfo=UTC)
    assert paper.daily_date == DAY
    assert paper.sources == ("hf",)


def test_missing_optional_fields_become_empty_not_errors() -> None:
    parsed = parse_daily_papers(_hf_payload(), day=None)
    paper = {record.arxiv_id: record for record in parsed.records}["2611.18407"]

    assert paper.github_repo is None
    assert paper.github_stars is None
    assert paper.project_page is None
    assert paper.ai_summary is None
    assert paper.ai_keywords == ()
    assert paper.upvotes == 5
    assert paper.num_comments == 0


def test_version_suffix_is_dropped_and_unsafe_links_are_not_kept() -> None:
    parsed = parse_daily_papers(_hf_payload(), day=None)
    paper = {record.arxiv_id: record for record in parsed.records}["2611.18555"]

    assert paper.authors == ("Hannah Becker", "Rafael Quintero", "Yuki Sato", "Amara Diallo")
    assert paper.project_page is None  # was a javascript: URL
    assert paper.github_repo == "https://github.com/sablewave/flowse"
    assert paper.github_stars is None
    assert paper.ai_summary is None  # an empty summary is no summary


def test_records_without_a_usable_id_or_title_are_skipped_and_named() -> None:
    parsed = parse_daily_papers(_hf_payload(), day=None)

    assert [record.arxiv_id for record in parsed.records] == [
        "2611.18342",
        "2611.18407",
        "2611.18555",
    ]
    assert parsed.skipped == (
        'record 3 ("A Paper Whose Identifier Went Missing"): no arXiv id',
        "record 4 (\"Community Post Mistaken for a Paper\"): 'hf-internal-00042' is not an "
        "arXiv id",
        "record 5: no title (arXiv id 2611.18999)",
    )


def test_titles_with_markup_latex_and_quotes_are_kept_verbatim() -> None:
    parsed = parse_daily_papers(_hf_payload(), day=None)
    titles = {record.arxiv_id: record.title for record in parsed.records}

    assert titles["2611.18407"] == HOSTILE_TITLE
    assert titles["2611.18555"] == (
        'Flow Matching for Speech Enhancement: Gains at p < 0.05 & "Listener" Tests'
    )


def test_given_day_overrides_the_submission_date() -> None:
    other_day = date(2026, 12, 1)
    parsed = parse_daily_papers(_hf_payload(), day=other_day)
    assert {record.daily_date for record in parsed.records} == {other_day}


def test_without_a_day_or_submission_date_the_record_is_skipped() -> None:
    payload = [{"paper": {"id": "2611.00001", "title": "Undated"}, "numComments": 0}]
    parsed = parse_daily_papers(payload, day=None)
    assert parsed.records == ()
    assert parsed.skipped == (
        'record 1 ("Undated"): no submittedOnDailyAt date, and no day was given',
    )


def test_a_repeated_id_is_kept_once_and_the_repeat_named() -> None:
    element = {"paper": {"id": "2611.00002", "title": "Twice"}, "numComments": 0}
    parsed = parse_daily_papers([element, element], day=DAY)
    assert [record.arxiv_id for record in parsed.records] == ["2611.00002"]
    assert parsed.skipped == ('record 2 ("Twice"): same arXiv id 2611.00002 as record 1',)


@pytest.mark.parametrize(
    ("payload", "described"),
    [
        ({"error": "Invalid date"}, "got a JSON object with error 'Invalid date'"),
        (None, "got null"),
        ("papers", "got a string"),
        ([{"paper": {}}, 7], "element 2 is a number, not an object"),
    ],
)
def test_a_payload_not_an_array_of_objects_is_one_clear_error(
    payload: object, described: str
) -> None:
    with pytest.raises(MalformedSourceError) as raised:
        parse_daily_papers(payload, day=DAY)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("Hugging Face Daily Papers is not in the Daily Papers shape")
    assert described in message


# ---- local file ------------------------------------------------------------------------------


def test_a_file_is_read_like_the_api_but_marked_as_from_a_file() -> None:
    parsed = read_papers_file(FEEDS_DIR / "hf_daily_papers.json", day=None)
    assert len(parsed.records) == 3
    assert {record.sources for record in parsed.records} == {(PaperSource.FILE.value,)}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hf_truncated.json", "is not valid JSON (line "),
        ("hf_not_json.html", "is not valid JSON (line 1, column 1"),
        ("hf_object.json", "expected a JSON array of papers, got a JSON object"),
    ],
)
def test_a_bad_file_is_one_error_naming_the_path(name: str, expected: str) -> None:
    path = FEEDS_DIR / name
    with pytest.raises(MalformedSourceError) as raised:
        read_papers_file(path, day=DAY)
    assert f"papers file {path}" in str(raised.value)
    assert expected in str(raised.value)


def test_a_missing_file_is_an_ingest_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(IngestError, match=r"papers file .*nowhere\.json does not exist"):
        read_papers_file(path, day=DAY)


def test_a_directory_is_not_a_papers_file(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="is a directory"):
        read_papers_file(tmp_path, day=DAY)


# ---- arXiv -----------------------------------------------------------------------------------


def test_arxiv_keeps_new_and_cross_listed_papers_and_drops_replacements() -> None:
    parsed = parse_arxiv_listing(_arxiv_document(), day=None)

    assert [record.arxiv_id for record in parsed.records] == [
        "2611.18342",
        "2611.18407",
        "2611.18555",
    ]
    assert parsed.skipped == ()


def test_arxiv_fields_are_mapped() -> None:
    parsed = parse_arxiv_listing(_arxiv_document(), day=None)
    first = parsed.records[0]

    assert first.title == (
        "Sparse Mixture-of-Depths Routing for Efficient Long-Context Language Models"
    )
    assert first.authors == ("Mei Lin Zhou", "Tomasz Wróbel", "Priya Raghunathan")
    assert first.abstract == (
        "Long-context language models spend most of their compute on tokens that barely "
        "change the prediction. We introduce a router that lets each token skip whole blocks "
        "of layers, trained jointly with the model."
    )
    # Announced at midnight US Eastern on the 27th: that is the paper's day.
    assert first.daily_date == DAY
    assert first.published_at == datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
    assert first.sources == ("arxiv",)
    assert first.upvotes == 0
    assert first.ai_summary is None


def test_arxiv_titles_and_abstracts_come_through_literally() -> None:
    parsed = parse_arxiv_listing(_arxiv_document(), day=None)
    cross = parsed.records[1]

    assert cross.title == (
        "<script>alert(1)</script> and Other Strings: Auditing Prompt Sanitisers for "
        'p < 0.05 & "Quoted" Payloads'
    )
    assert "such as <b>bold</b> or {{ 7*7 }} pass through" in cross.abstract


def test_arxiv_items_from_another_day_are_left_out_in_one_line() -> None:
    parsed = parse_arxiv_listing(_arxiv_document(), day=date(2026, 11, 30))
    assert parsed.records == ()
    assert parsed.skipped == (
        "3 items announced on 2026-11-27, not 2026-11-30: an arXiv listing only holds its "
        "latest announcement day",
    )


def test_a_weekend_listing_is_empty_not_an_error() -> None:
    document = (FEEDS_DIR / "arxiv_weekend_empty.rss").read_bytes()
    assert parse_arxiv_listing(document, day=None).records == ()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("arxiv_truncated.rss", "arXiv listing is not well-formed XML"),
        ("not_rss.xml", "arXiv listing is XML but not an RSS feed"),
        ("hf_not_json.html", "arXiv listing is"),
    ],
)
def test_a_document_that_is_not_an_rss_listing_is_one_clear_error(name: str, expected: str) -> None:
    with pytest.raises(MalformedSourceError) as raised:
        parse_arxiv_listing((FEEDS_DIR / name).read_bytes(), day=None)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)
