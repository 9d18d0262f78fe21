"""A local JSON file in the Hugging Face Daily Papers shape (the bundled sample day is one)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from newsletter.core.errors import IngestError
from newsletter.ingest.huggingface import decode_daily_papers, parse_daily_papers
from newsletter.ingest.parsed import PaperSource, ParsedPapers


def read_papers_file(path: Path, *, day: date | None) -> ParsedPapers:
    """Papers from a Daily Papers JSON file; `day`, when given, overrides each paper's date."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise IngestError(f"papers file {path} does not exist") from None
    except IsADirectoryError:
        raise IngestError(f"papers file {path} is a directory, not a JSON file") from None
    except OSError as error:
        raise IngestError(f"cannot read papers file {path}: {error.strerror}") from None
    origin = f"papers file {path}"
    payload = decode_daily_papers(content, origin=origin)
    return parse_daily_papers(payload, day=day, source=PaperSource.FILE, origin=origin)
