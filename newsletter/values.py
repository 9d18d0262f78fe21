"""The typed, immutable values that pass between pipeline stages.

ingest → `PaperRecord` → (stored) → rank → `RankedPaper` → render → `RenderedDigest` → send
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from html import escape


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
    """The links a rendered digest leaves open for each recipient's own URL.

    A rendering writes each as `placeholder(link_marker)`: plain ASCII that
    survives MJML, HTML escaping and quoted-printable unchanged, so the send
    path fills it into the encoded bytes per recipient. The marker is random
    per rendering (`new_link_marker`), so text from a feed cannot hold a
    placeholder and only the template's own link positions are ever filled.
    """

    UNSUBSCRIBE_URL = "UNSUBSCRIBE"
    PREFERENCES_URL = "PREFERENCES"
    VIEW_URL = "VIEW"  # a personal digest's "View in browser": the reader's own copy

    def placeholder(self, link_marker: str) -> str:
        """This link's placeholder in a rendering made with `link_marker`."""
        # With an empty marker this is the fixed text of renderings made before
        # markers existed, so editions stored then still send.
        return f"NLPERSONAL{link_marker}x{self.value}xURL"


def new_link_marker() -> str:
    """A fresh, unguessable marker for one rendering's personal-link placeholders."""
    return secrets.token_hex(16)


def fill_personal_links(
    html: str,
    text: str,
    *,
    link_marker: str,
    unsubscribe_url: str,
    preferences_url: str,
    view_url: str = "",
) -> tuple[str, str]:
    """HTML and text with the rendering's placeholders filled (URLs HTML-escaped in the HTML).

    `view_url` fills a personal digest's "View in browser" (the trending one has none).
    """
    links = {
        PersonalField.UNSUBSCRIBE_URL: unsubscribe_url,
        PersonalField.PREFERENCES_URL: preferences_url,
        PersonalField.VIEW_URL: view_url,
    }
    for personal_field, url in links.items():
        placeholder = personal_field.placeholder(link_marker)
        html = html.replace(placeholder, escape(url, quote=True))
        text = text.replace(placeholder, url)
    return html, text


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    """One edition rendered once: subject, HTML and text with personal-link placeholders."""

    edition_date: dt.date
    subject: str
    html: str
    text: str
    link_marker: str
    papers: tuple[RankedPaper, ...] = field(default=())

    def personalised(self, *, unsubscribe_url: str, preferences_url: str) -> tuple[str, str]:
        """HTML and text with the placeholders filled in (URLs HTML-escaped in the HTML)."""
        return fill_personal_links(
            self.html,
            self.text,
            link_marker=self.link_marker,
            unsubscribe_url=unsubscribe_url,
            preferences_url=preferences_url,
        )
