"""What every source parser hands back, and the small text rules they share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from newsletter.values import PaperRecord

# Mirrors the widths of the `papers` columns; a longer value would abort the
# whole transaction on PostgreSQL, so parsers drop it instead.
MAX_URL_LENGTH = 500
MAX_ARXIV_ID_LENGTH = 32

# New-style ids (0704.0001 onwards: YYMM.NNNN, YYMM.NNNNN since 2015) and the
# old archive/NNNNNNN form, each with an optional version suffix.
_ARXIV_ID = re.compile(
    r"^(?P<id>\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7})(?P<version>v\d+)?$"
)


class PaperSource(StrEnum):
    """Where papers come from; the value is what a paper's `sources` list records."""

    HF = "hf"
    ARXIV = "arxiv"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class ParsedPapers:
    """The papers a source yielded, and one human-readable reason per record it skipped."""

    records: tuple[PaperRecord, ...]
    skipped: tuple[str, ...] = ()


def normalise_whitespace(text: str) -> str:
    """The text with every run of whitespace (hard line breaks included) made one space."""
    return " ".join(text.split())


def canonical_arxiv_id(raw: str) -> str | None:
    """The arXiv id without its version suffix, or None when `raw` is not an arXiv id."""
    match = _ARXIV_ID.match(raw.strip())
    if match is None:
        return None
    return match.group("id")


def clean_url(value: object) -> str | None:
    """An http(s) URL that fits the database column, or None for anything else."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    # A `javascript:` or `data:` link would become a live link in the email.
    if not url.lower().startswith(("https://", "http://")):
        return None
    if len(url) > MAX_URL_LENGTH or any(character.isspace() for character in url):
        return None
    return url


def parse_iso_datetime(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string such as `2026-02-26T17:08:18.000Z`."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def describe_record(position: int, title: str | None) -> str:
    """How a skipped-record message names the record: `record 3 ("Some title")`."""
    if title:
        shown = title if len(title) <= 80 else title[:77] + "..."
        return f'record {position} ("{shown}")'
    return f"record {position}"


class RecordCollector:
    """A source's records in order: the first per arXiv id; the others are named as skipped."""

    def __init__(self) -> None:
        self.records: list[PaperRecord] = []
        self.skipped: list[str] = []
        self._first_position: dict[str, int] = {}

    def skip(self, reason: str) -> None:
        """Note a record left out, with the reason a person reads."""
        self.skipped.append(reason)

    def add(self, position: int, record: PaperRecord) -> None:
        """Keep the record unless an earlier one had the same arXiv id."""
        earlier = self._first_position.setdefault(record.arxiv_id, position)
        if earlier != position:
            label = describe_record(position, record.title)
            self.skip(f"{label}: same arXiv id {record.arxiv_id} as record {earlier}")
            return
        self.records.append(record)

    def result(self) -> ParsedPapers:
        """What was kept and what was skipped."""
        return ParsedPapers(records=tuple(self.records), skipped=tuple(self.skipped))
