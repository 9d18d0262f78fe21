"""What every source parser hands back, and the small text rules they share."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum

from newsletter.core.clock import as_utc
from newsletter.core.text import UNSTORABLE
from newsletter.values import PaperRecord

# Mirrors the widths of the `papers` columns; a longer value would abort the
# whole transaction on PostgreSQL, so parsers drop it instead.
MAX_ARXIV_ID_LENGTH = 32
# The counts are 32-bit integer columns; a larger "count" is not one.
MAX_COUNT = 2**31 - 1

# Characters a supported database refuses: NUL (PostgreSQL's text type cannot
# hold it) and lone surrogates, U+D800-U+DFFF (halves of a UTF-16 pair, not
# characters: no UTF-8 encoder takes them, so SQLite's driver refuses them too).
# A record holding one is skipped, not repaired, like a record without an id:
# neither occurs in real text, so one means the source mangled that record (a
# pair split by truncation, binary data in a field) and we cannot tell what it
# was meant to say. Deleting them quietly would store and mail the mangled text
# as if it were right; skipping names the record, so the operator can report it.
# Other control characters are storable; rendering makes them harmless.

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
    if match is None or len(match.group("id")) > MAX_ARXIV_ID_LENGTH:
        return None
    return match.group("id")


def parse_iso_datetime(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string such as `2026-02-26T17:08:18.000Z`."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        # In UTC, a time at either end of the calendar (year 1 or 9999) leaves it.
        return as_utc(parsed)
    except (ValueError, OverflowError):
        return None


def describe_record(position: int, title: str | None) -> str:
    """How a skipped-record message names the record: `record 3 ("Some title")`.

    Characters a terminal would act on or cannot show (controls, lone
    surrogates, bidirectional overrides) appear as escapes such as `\\x00`.
    """
    if title:
        shown = title if len(title) <= 80 else title[:77] + "..."
        return f'record {position} ("{_printable(shown)}")'
    return f"record {position}"


def _printable(text: str) -> str:
    return "".join(
        character if character.isprintable() else character.encode("unicode_escape").decode()
        for character in text
    )


def unstorable_text(record: PaperRecord) -> str | None:
    """What in the record a supported database refuses (NUL, a lone surrogate), or None."""
    for field in fields(record):
        value = getattr(record, field.name)
        for text in value if isinstance(value, tuple) else (value,):
            found = UNSTORABLE.search(text) if isinstance(text, str) else None
            if found is not None:
                character = found.group()
                why = (
                    "(NUL), which PostgreSQL cannot store"
                    if character == "\x00"
                    else "(a lone surrogate), which is not a character and cannot be stored"
                )
                return f"its {field.name} holds U+{ord(character):04X} {why}"
    return None


class RecordCollector:
    """A source's records in order: the first storable one per arXiv id; the others are skipped.

    Every parser hands its records through `add`, so this is the one place
    source text is checked before it can reach the database.
    """

    def __init__(self) -> None:
        self.records: list[PaperRecord] = []
        self.skipped: list[str] = []
        self._first_position: dict[str, int] = {}

    def skip(self, reason: str) -> None:
        """Note a record left out, with the reason a person reads."""
        self.skipped.append(reason)

    def add(self, position: int, record: PaperRecord) -> None:
        """Keep the record unless it holds unstorable text or an earlier one had its arXiv id."""
        label = describe_record(position, record.title)
        problem = unstorable_text(record)
        if problem is not None:
            self.skip(f"{label}: {problem} (arXiv id {record.arxiv_id})")
            return
        earlier = self._first_position.setdefault(record.arxiv_id, position)
        if earlier != position:
            self.skip(f"{label}: same arXiv id {record.arxiv_id} as record {earlier}")
            return
        self.records.append(record)

    def result(self) -> ParsedPapers:
        """What was kept and what was skipped."""
        return ParsedPapers(records=tuple(self.records), skipped=tuple(self.skipped))
