"""The Hugging Face Daily Papers API: a pure parser for its JSON array, and a fetcher.

The shape has traps (a recorded response is tests/feeds/hf_daily_papers.json):
`upvotes` and the AI fields live under `paper`, `numComments` and `thumbnail`
at the top level, optional fields are often missing, and summaries carry hard
line breaks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date

import httpx

from newsletter.core.errors import MalformedSourceError
from newsletter.core.urls import web_url
from newsletter.ingest.fetching import DEFAULT_BACKOFF, Backoff, get_with_retries
from newsletter.ingest.parsed import (
    MAX_COUNT,
    PaperSource,
    ParsedPapers,
    RecordCollector,
    canonical_arxiv_id,
    describe_record,
    normalise_whitespace,
    parse_iso_datetime,
)
from newsletter.values import PaperRecord

SOURCE_NAME = "Hugging Face Daily Papers"
PAGE_SIZE = 100
# A day has 20-60 papers; this bound only stops a server that ignores `p`.
MAX_PAGES = 20


def decode_daily_papers(content: bytes, *, origin: str) -> object:
    """The JSON value in a response or file, or MalformedSourceError saying what is wrong."""
    try:
        return json.loads(content)
    except json.JSONDecodeError as error:
        raise MalformedSourceError(
            f"{origin} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except UnicodeDecodeError:
        raise MalformedSourceError(f"{origin} is not valid JSON: it is not UTF-8 text") from None
    except ValueError:  # Python refuses to convert integers of over 4300 digits
        raise MalformedSourceError(
            f"{origin} is not in the Daily Papers shape: it holds a number too long to read"
        ) from None
    except RecursionError:
        # The decoder recurses once per level; the Daily Papers shape is four deep.
        raise MalformedSourceError(
            f"{origin} is not in the Daily Papers shape: its JSON is nested too deeply to read"
        ) from None


def parse_daily_papers(
    payload: object,
    *,
    day: date | None,
    source: PaperSource = PaperSource.HF,
    origin: str = SOURCE_NAME,
) -> ParsedPapers:
    """Papers from a Daily Papers JSON array; records without a usable id or title are skipped.

    `daily_date` is `day` when given, else the UTC date of `submittedOnDailyAt`.
    """
    items = _require_array_of_objects(payload, origin=origin)
    collected = RecordCollector()
    for position, item in enumerate(items, start=1):
        outcome = _parse_item(item, position=position, day=day, source=source)
        if isinstance(outcome, str):
            collected.skip(outcome)
        else:
            collected.add(position, outcome)
    return collected.result()


def _require_array_of_objects(payload: object, *, origin: str) -> list[Mapping[str, object]]:
    """The payload's elements, or MalformedSourceError when it is not an array of objects."""
    if not isinstance(payload, list):
        raise MalformedSourceError(
            f"{origin} is not in the Daily Papers shape: expected a JSON array of papers, "
            f"got {_describe_json(payload)}"
        )
    for position, item in enumerate(payload, start=1):
        if not isinstance(item, Mapping):
            raise MalformedSourceError(
                f"{origin} is not in the Daily Papers shape: element {position} is "
                f"{_describe_json(item)}, not an object"
            )
    return payload


def _parse_item(
    item: Mapping[str, object], *, position: int, day: date | None, source: PaperSource
) -> PaperRecord | str:
    """A record, or the reason it was skipped."""
    nested = item.get("paper")
    paper: Mapping[str, object] = nested if isinstance(nested, Mapping) else {}
    title = _text(paper.get("title")) or _text(item.get("title"))
    label = describe_record(position, title)

    raw_id = paper.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        return f"{label}: no arXiv id"
    arxiv_id = canonical_arxiv_id(raw_id) if isinstance(raw_id, str) else None
    if arxiv_id is None:
        return f"{label}: {raw_id!r} is not an arXiv id"
    if not title:
        return f"{label}: no title (arXiv id {arxiv_id})"

    submitted = parse_iso_datetime(paper.get("submittedOnDailyAt"))
    daily_date = day or (submitted.date() if submitted else None)
    if daily_date is None:
        return f"{label}: no submittedOnDailyAt date, and no day was given"

    return PaperRecord(
        arxiv_id=arxiv_id,
        title=title,
        abstract=_text(paper.get("summary")) or _text(item.get("summary")),
        authors=_author_names(paper.get("authors")),
        published_at=parse_iso_datetime(paper.get("publishedAt"))
        or parse_iso_datetime(item.get("publishedAt")),
        daily_date=daily_date,
        upvotes=_count(paper.get("upvotes")),
        num_comments=_count(item.get("numComments")),
        github_repo=web_url(paper.get("githubRepo")),
        github_stars=_optional_count(paper.get("githubStars")),
        project_page=web_url(paper.get("projectPage")),
        thumbnail=web_url(item.get("thumbnail")),
        ai_summary=_text(paper.get("ai_summary")) or None,
        ai_keywords=_keywords(paper.get("ai_keywords")),
        sources=(source.value,),
    )


def _text(value: object) -> str:
    return normalise_whitespace(value) if isinstance(value, str) else ""


def _count(value: object) -> int:
    return _optional_count(value) or 0


def _optional_count(value: object) -> int | None:
    # bool is an int in Python; `true` is not a count.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def _author_names(value: object) -> tuple[str, ...]:
    """Every author's name; authors marked `hidden` are still listed on the paper."""
    if not isinstance(value, list):
        return ()
    names: list[str] = []
    for author in value:
        raw = author.get("name") if isinstance(author, Mapping) else author
        name = _text(raw)
        if name:
            names.append(name)
    return tuple(names)


def _keywords(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    keywords = (_text(keyword) for keyword in value)
    return tuple(dict.fromkeys(keyword for keyword in keywords if keyword))


def _describe_json(value: object) -> str:
    if isinstance(value, Mapping):
        message = value.get("error")
        if isinstance(message, str) and message.strip():
            return f"a JSON object with error {normalise_whitespace(message)!r}"
        return "a JSON object"
    if value is None:
        return "null"
    kinds = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), "a " + type(value).__name__)


async def fetch_daily_papers(
    client: httpx.AsyncClient,
    *,
    api_url: str,
    day: date,
    retries: int,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> ParsedPapers:
    """The papers Hugging Face listed on `day`, reading further pages while pages come back full."""
    items: list[Mapping[str, object]] = []
    seen_ids: set[object] = set()
    for page in range(MAX_PAGES):
        params: dict[str, str | int] = {"date": day.isoformat(), "limit": PAGE_SIZE}
        if page:
            params["p"] = page
        response = await get_with_retries(
            client,
            api_url,
            source_name=SOURCE_NAME,
            retries=retries,
            params=params,
            backoff=backoff,
            refusal_hints={
                400: f"it rejected the date {day.isoformat()} as invalid",
                404: "no such API endpoint; check NEWSLETTER_HF_API_URL",
            },
        )
        origin = f"{SOURCE_NAME} response from {response.request.url}"
        decoded = decode_daily_papers(response.content, origin=origin)
        batch = _require_array_of_objects(decoded, origin=origin)
        new_ids = {_raw_id(item) for item in batch} - seen_ids
        if page and not new_ids:
            break  # the server ignored `p` and repeated itself
        seen_ids |= new_ids
        items.extend(batch)
        if len(batch) < PAGE_SIZE:
            break
    return parse_daily_papers(items, day=day)


def _raw_id(item: Mapping[str, object]) -> object:
    paper = item.get("paper")
    if isinstance(paper, Mapping):
        raw = paper.get("id")
        return raw if isinstance(raw, str | int | float) else None
    return None
