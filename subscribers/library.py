"""Papers a reader brings to their profile: pasted arXiv ids and a BibTeX export, checked.

Both arrive from a form or the JSON API, so both are hostile until read here:
an id is accepted only in the shapes arXiv gives them (bare, `arXiv:`-prefixed,
or an arxiv.org abstract, PDF or HTML URL), and a BibTeX file only within a
size, an entry count and a brace depth, as UTF-8. Every refusal is an
`InvalidSubscriberDetailsError` whose message says what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bibtexparser.entrypoint import parse_string

from newsletter.core.errors import InvalidSubscriberDetailsError
from newsletter.core.text import single_line

MAX_PASTED_PAPERS = 50
MAX_PASTE_LENGTH = 5000
# A Zotero export of a few hundred papers with abstracts is well under this.
MAX_LIBRARY_BYTES = 1024 * 1024
MAX_LIBRARY_ENTRIES = 500
# Real titles nest braces two or three deep ({{B}ERT}); a file nesting deeper is
# not a library, and the parser's work grows with the depth.
MAX_BRACE_DEPTH = 16
MAX_TITLE_LENGTH = 500
MAX_ABSTRACT_LENGTH = 5000

# New-style ids (YYMM.NNNN or YYMM.NNNNN) and old archive/NNNNNNN ones, with an
# optional version (the same shapes the ingest accepts).
_ARXIV_ID = re.compile(
    r"(?P<id>\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d{1,3})?", re.ASCII
)
_ARXIV_URL = re.compile(
    r"https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf|html)/(?P<rest>[^?#]+?)(?:\.pdf)?/?"
    r"(?:[?#].*)?",
    re.ASCII | re.IGNORECASE,
)
_SEPARATORS = re.compile(r"[\s,;]+")
_ARXIV_DOI = re.compile(r"10\.48550/arxiv\.(?P<rest>.+)", re.IGNORECASE)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+\*?|\\.")


@dataclass(frozen=True, slots=True)
class LibraryPaper:
    """One paper of a reader's BibTeX library: its title, abstract and arXiv id if it has one."""

    title: str
    abstract: str
    arxiv_id: str | None


def arxiv_id_of(raw: str) -> str | None:
    """The arXiv id (no version) that `raw` names, bare, `arXiv:`-prefixed or as a URL."""
    text = raw.strip()
    url = _ARXIV_URL.fullmatch(text)
    if url is not None:
        text = url.group("rest")
    elif text.lower().startswith("arxiv:"):
        text = text[len("arxiv:") :]
    match = _ARXIV_ID.fullmatch(text)
    return None if match is None else match.group("id")


def parse_arxiv_ids(text: str) -> tuple[str, ...]:
    """The arXiv ids pasted one per line or separated by commas, deduplicated, in order.

    A token that is not an arXiv id or arxiv.org URL is refused by name, so the
    reader sees which line to fix.
    """
    if len(text) > MAX_PASTE_LENGTH:
        raise InvalidSubscriberDetailsError(
            f"the pasted papers are limited to {MAX_PASTE_LENGTH} characters"
        )
    ids: list[str] = []
    for token in _SEPARATORS.split(text):
        if not token:
            continue
        found = arxiv_id_of(token)
        if found is None:
            shown = single_line(token)[:60]
            raise InvalidSubscriberDetailsError(
                f"{shown!r} is not an arXiv id (like 2401.01234) or an arxiv.org link"
            )
        if found not in ids:
            ids.append(found)
    if len(ids) > MAX_PASTED_PAPERS:
        raise InvalidSubscriberDetailsError(
            f"paste at most {MAX_PASTED_PAPERS} papers at a time ({len(ids)} given)"
        )
    return tuple(ids)


def read_bibtex(data: bytes) -> tuple[LibraryPaper, ...]:
    """The papers with a title in a BibTeX export, or a refusal saying what is wrong with it."""
    if len(data) > MAX_LIBRARY_BYTES:
        raise InvalidSubscriberDetailsError(
            f"the BibTeX file is larger than {MAX_LIBRARY_BYTES // 1024} KiB; "
            "export a smaller collection"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidSubscriberDetailsError(
            "the BibTeX file is not UTF-8 text; export it as UTF-8 (Zotero does by default)"
        ) from None
    if "\x00" in text:
        raise InvalidSubscriberDetailsError("the file holds binary data, not BibTeX")
    _check_depth(text)
    if text.count("@") > MAX_LIBRARY_ENTRIES * 4:
        raise InvalidSubscriberDetailsError(_too_many_entries())
    try:
        library = parse_string(text)
    except Exception:  # the parser's own errors vary by input; every one means "unreadable"
        raise InvalidSubscriberDetailsError("the file could not be read as BibTeX") from None
    entries = library.entries
    if len(entries) > MAX_LIBRARY_ENTRIES:
        raise InvalidSubscriberDetailsError(_too_many_entries())
    papers: list[LibraryPaper] = []
    for entry in entries:
        fields = {key.lower(): value for key, value in entry.fields_dict.items()}
        title = _field_text(fields.get("title"), MAX_TITLE_LENGTH)
        if not title:
            continue
        papers.append(
            LibraryPaper(
                title=title,
                abstract=_field_text(fields.get("abstract"), MAX_ABSTRACT_LENGTH),
                arxiv_id=_entry_arxiv_id(fields),
            )
        )
    if not papers:
        raise InvalidSubscriberDetailsError(
            "the file holds no BibTeX entry with a title; export your library as BibTeX"
        )
    return tuple(papers)


def _too_many_entries() -> str:
    return f"the BibTeX file holds more than {MAX_LIBRARY_ENTRIES} entries; export fewer"


def _check_depth(text: str) -> None:
    depth = 0
    for character in text:
        if character == "{":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                raise InvalidSubscriberDetailsError(
                    f"the BibTeX file nests braces more than {MAX_BRACE_DEPTH} deep"
                )
        elif character == "}" and depth:
            depth -= 1


def _field_text(field: object, limit: int) -> str:
    value = getattr(field, "value", None)
    if not isinstance(value, str):
        return ""
    plain = _LATEX_COMMAND.sub(" ", value).replace("{", "").replace("}", "")
    return single_line(plain)[:limit].rstrip()


def _entry_arxiv_id(fields: Mapping[str, object]) -> str | None:
    eprint_type = _field_text(fields.get("archiveprefix") or fields.get("eprinttype"), 40)
    candidates = [_field_text(fields.get("arxivid"), 100), _field_text(fields.get("url"), 300)]
    if eprint_type.lower() == "arxiv" or not eprint_type:
        candidates.insert(0, _field_text(fields.get("eprint"), 100))
    doi = _ARXIV_DOI.fullmatch(_field_text(fields.get("doi"), 200))
    if doi is not None:
        candidates.append(doi.group("rest"))
    for candidate in candidates:
        found = arxiv_id_of(candidate) if candidate else None
        if found is not None:
            return found
    return None
