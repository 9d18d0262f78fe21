"""The typed, immutable values that pass between pipeline stages.

ingest → `PaperRecord` → (stored) → rank → `RankedPaper` → render → `RenderedDigest` → send
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class PaperRecord:
    """One paper as a source describes it (and as the database holds it)."""

    arxiv_id: str
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    published_at: dt.datetime | None = None
    daily_date: dt.date | None = None
    upvotes: int = 0
    num_comments: int = 0
    github_repo: str | None = None
    github_stars: int | None = None
    project_page: str | None = None
    thumbnail: str | None = None
    ai_summary: str | None = None
    ai_keywords: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def paper_url(self) -> str:
        """The paper's Hugging Face page."""
        return f"https://huggingface.co/papers/{self.arxiv_id}"

    @property
    def abstract_url(self) -> str:
        """The arXiv abstract page."""
        return f"https://arxiv.org/abs/{self.arxiv_id}"

    @property
    def pdf_url(self) -> str:
        """The arXiv PDF."""
        return f"https://arxiv.org/pdf/{self.arxiv_id}"


@dataclass(frozen=True, slots=True)
class RankedPaper:
    """A paper with its score and 1-based position in the day's digest."""

    paper: PaperRecord
    score: float
    position: int


class PersonalField(StrEnum):
    """Placeholders a rendered digest carries where each recipient's own URL goes.

    They are plain ASCII that survives MJML, HTML escaping and quoted-printable
    unchanged, so the send path fills them into the encoded bytes per recipient.
    """

    UNSUBSCRIBE_URL = "NLPERSONALxUNSUBSCRIBExURL"
    PREFERENCES_URL = "NLPERSONALxPREFERENCESxURL"


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    """One edition rendered once: subject, preheader, HTML and text with placeholders."""

    edition_date: dt.date
    subject: str
    html: str
    text: str
    papers: tuple[RankedPaper, ...] = field(default=())

    def personalised(self, *, unsubscribe_url: str, preferences_url: str) -> tuple[str, str]:
        """HTML and text with the placeholders filled in (URLs HTML-escaped in the HTML)."""
        from html import escape

        html = self.html.replace(
            PersonalField.UNSUBSCRIBE_URL, escape(unsubscribe_url, quote=True)
        ).replace(PersonalField.PREFERENCES_URL, escape(preferences_url, quote=True))
        text = self.text.replace(PersonalField.UNSUBSCRIBE_URL, unsubscribe_url).replace(
            PersonalField.PREFERENCES_URL, preferences_url
        )
        return html, text
