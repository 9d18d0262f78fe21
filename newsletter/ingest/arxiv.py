"""arXiv listing RSS feeds (`rss.arxiv.org/rss/cs.LG+cs.CL`): a pure parser and a fetcher.

A daily digest wants the day's new papers, so `new` and `cross` announcements
are kept and `replace`/`replace-cross` (revised old papers) are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime

import feedparser
import httpx

from newsletter.core.errors import ConfigurationError, MalformedSourceError
from newsletter.ingest.fetching import DEFAULT_BACKOFF, Backoff, get_with_retries
from newsletter.ingest.parsed import (
    PaperSource,
    ParsedPapers,
    RecordCollector,
    canonical_arxiv_id,
    describe_record,
    normalise_whitespace,
)
from newsletter.values import PaperRecord

SOURCE_NAME = "arXiv listing"
KEPT_ANNOUNCE_TYPES = frozenset({"new", "cross"})
_GUID_PREFIX = "oai:arXiv.org:"
_ABSTRACT_PAGE = re.compile(r"arxiv\.org/abs/(?P<id>[^?#]+)$")
_ANNOUNCE_TYPE = re.compile(r"Announce Type:\s*(?P<type>[\w-]+)")
_CATEGORY = re.compile(r"^[A-Za-z-]+(?:\.[A-Za-z-]+)?$")


def parse_arxiv_listing(
    document: bytes, *, day: date | None, origin: str = SOURCE_NAME
) -> ParsedPapers:
    """New and cross-listed papers from an arXiv RSS listing.

    `daily_date` is each item's announcement date (its pubDate, in arXiv's own
    time zone). When `day` is given, items announced on another day are left
    out and counted in one skipped line: a listing only holds the latest day.
    """
    try:
        feed = feedparser.parse(document, sanitize_html=False, resolve_relative_uris=False)
    except (ValueError, OverflowError):
        # After the XML parser rejects a document feedparser retries with a lenient
        # one, which crashes on references such as `&#xD800;` that name no character.
        raise MalformedSourceError(
            f"{origin} is not well-formed XML (a character reference names no character)"
        ) from None
    problem = feed.get("bozo_exception")
    if feed.get("bozo") and not isinstance(problem, feedparser.CharacterEncodingOverride):
        raise MalformedSourceError(f"{origin} is not well-formed XML ({problem})")
    if not str(feed.get("version", "")).startswith("rss"):
        raise MalformedSourceError(f"{origin} is XML but not an RSS feed")
    channel_date = _announcement_datetime(feed.feed.get("published"))

    collected = RecordCollector()
    other_days: dict[date, int] = {}
    for position, entry in enumerate(feed.entries, start=1):
        announce_type = _announce_type(entry)
        if announce_type is not None and announce_type not in KEPT_ANNOUNCE_TYPES:
            continue
        outcome = _parse_entry(entry, position=position, channel_date=channel_date, day=day)
        if isinstance(outcome, str):
            collected.skip(outcome)
        elif day is not None and outcome.daily_date is not None and outcome.daily_date != day:
            other_days[outcome.daily_date] = other_days.get(outcome.daily_date, 0) + 1
        else:
            collected.add(position, outcome)
    for other_day, count in sorted(other_days.items()):
        collected.skip(
            f"{count} item{'s' if count != 1 else ''} announced on {other_day.isoformat()}, "
            f"not {day}: an arXiv listing only holds its latest announcement day"
        )
    return collected.result()


def _announce_type(entry: Mapping[str, object]) -> str | None:
    declared = entry.get("arxiv_announce_type")
    if isinstance(declared, str) and declared.strip():
        return declared.strip().lower()
    match = _ANNOUNCE_TYPE.search(str(entry.get("summary", "")))
    return match.group("type").lower() if match else None


def _parse_entry(
    entry: Mapping[str, object],
    *,
    position: int,
    channel_date: datetime | None,
    day: date | None,
) -> PaperRecord | str:
    """A record, or the reason the item was skipped."""
    title = normalise_whitespace(str(entry.get("title", "")))
    label = describe_record(position, title)
    arxiv_id = _arxiv_id(entry)
    if arxiv_id is None:
        return f"{label}: no arXiv id in its guid {entry.get('id')!r} or link"
    if not title:
        return f"{label}: no title (arXiv id {arxiv_id})"
    announced = _announcement_datetime(entry.get("published")) or channel_date
    daily_date = announced.date() if announced else day
    if daily_date is None:
        return f"{label}: no announcement date, and no day was given"
    return PaperRecord(
        arxiv_id=arxiv_id,
        title=title,
        abstract=_abstract(str(entry.get("summary", ""))),
        authors=_authors(entry.get("author")),
        published_at=announced.astimezone(UTC) if announced else None,
        daily_date=daily_date,
        sources=(PaperSource.ARXIV.value,),
    )


def _arxiv_id(entry: Mapping[str, object]) -> str | None:
    guid = str(entry.get("id", "")).strip()
    if guid.startswith(_GUID_PREFIX):
        found = canonical_arxiv_id(guid.removeprefix(_GUID_PREFIX))
        if found:
            return found
    link = _ABSTRACT_PAGE.search(str(entry.get("link", "")).strip())
    return canonical_arxiv_id(link.group("id")) if link else None


def _abstract(description: str) -> str:
    """The text after `Abstract:`; the description starts with an `arXiv:ID Announce Type` line."""
    _, marker, abstract = description.partition("Abstract:")
    return normalise_whitespace(abstract if marker else description)


def _authors(creator: object) -> tuple[str, ...]:
    """Names from `dc:creator`, which holds every author in one comma-separated string."""
    if not isinstance(creator, str):
        return ()
    names = (normalise_whitespace(name) for name in creator.split(","))
    cleaned = (name.removeprefix("and ").strip() for name in names)
    return tuple(name for name in cleaned if name)


def _announcement_datetime(value: object) -> datetime | None:
    """The RSS date as arXiv wrote it (US Eastern), so `.date()` is the announcement day."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
        aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        aware.astimezone(UTC)  # a time at the calendar's end leaves it in UTC
    except (TypeError, ValueError, OverflowError):
        return None
    return aware


def listing_url(feed_url: str, categories: Sequence[str]) -> str:
    """The feed for several categories at once: `{feed_url}/cs.LG+cs.CL`."""
    cleaned = [category.strip() for category in categories if category.strip()]
    if not cleaned:
        raise ConfigurationError("NEWSLETTER_ARXIV_CATEGORIES is empty; name at least one")
    bad = [category for category in cleaned if not _CATEGORY.match(category)]
    if bad:
        raise ConfigurationError(
            f"NEWSLETTER_ARXIV_CATEGORIES has entries that are not arXiv categories: "
            f"{', '.join(repr(category) for category in bad)} (expected e.g. cs.LG)"
        )
    return f"{feed_url.rstrip('/')}/{'+'.join(cleaned)}"


async def fetch_arxiv_listing(
    client: httpx.AsyncClient,
    *,
    feed_url: str,
    categories: Sequence[str],
    day: date | None,
    retries: int,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> ParsedPapers:
    """The new and cross-listed papers in today's arXiv listing for `categories`."""
    url = listing_url(feed_url, categories)
    response = await get_with_retries(
        client,
        url,
        source_name=SOURCE_NAME,
        retries=retries,
        backoff=backoff,
        refusal_hints={404: "no such listing; check NEWSLETTER_ARXIV_CATEGORIES"},
    )
    return parse_arxiv_listing(
        response.content, day=day, origin=f"{SOURCE_NAME} response from {url}"
    )
