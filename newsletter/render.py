"""The render stage: ranked papers → one digest email (subject, HTML, text), purely.

Templates are jinja2 and MJML, run through `newsletter.core.templating`.
Per-recipient links stay as `PersonalField` placeholders for the send stage,
written with the link marker the caller passes in (random per rendering).
"""

from __future__ import annotations

import quopri
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import jinja2

from newsletter.core.errors import EditionNotFoundError, RenderError
from newsletter.core.templating import render_email
from newsletter.core.text import single_line
from newsletter.core.urls import web_url
from newsletter.values import PersonalField, RankedPaper, RenderedDigest

TITLE_MAX_CHARS = 250
SUMMARY_MAX_CHARS = 300
AUTHOR_MAX_CHARS = 60
AUTHORS_SHOWN = 3
SUBJECT_TITLE_MAX_CHARS = 60
PREHEADER_MAX_CHARS = 140
THUMBNAIL_ALT_MAX_CHARS = 80
# Only the leading papers get a thumbnail: each image column costs about 1.5 KB of markup.
THUMBNAILS_SHOWN = 3
# Gmail clips a message whose HTML part, as encoded on the wire, exceeds about 102 KB,
# hiding the unsubscribe footer; quoted-printable adds 10% or more to MJML output.
ENCODED_HTML_MAX_BYTES = 100_000

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class PaperCard:
    """One paper as the digest templates show it: every field cleaned and cut to size."""

    position: int
    title: str
    paper_url: str
    authors: str
    stats: str
    summary: str
    abstract_url: str
    pdf_url: str
    code_url: str | None
    thumbnail_url: str | None
    thumbnail_alt: str


def _clean_text(text: str) -> str:
    """Feed text on one line: no control or bidi characters, no runs of whitespace."""
    return single_line(text)


def shorten_text(text: str, max_chars: int) -> str:
    """`text` cut at a word boundary to at most `max_chars` characters, ending in "…" if cut."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    if not text[max_chars - 1].isspace():
        last_space = cut.rfind(" ")
        # One enormous "word" (a URL, a formula) is cut hard rather than dropped whole.
        if last_space > max_chars // 2:
            cut = cut[:last_space]
    return cut.rstrip(" ,;:") + "…"


def format_authors(authors: Sequence[str]) -> str:
    """The first three authors joined by commas, then "et al." when there are more."""
    names: list[str] = []
    for raw_name in authors:
        name = shorten_text(_clean_text(raw_name), AUTHOR_MAX_CHARS)
        if name:
            names.append(name)
        if len(names) > AUTHORS_SHOWN:  # enough to know "et al." is due
            break
    shown = ", ".join(names[:AUTHORS_SHOWN])
    return f"{shown} et al." if len(names) > AUTHORS_SHOWN else shown


def _count(number: int, singular: str, plural: str) -> str:
    return f"{number:,} {singular if number == 1 else plural}"


def _format_stats(upvotes: int, comments: int, stars: int | None) -> str:
    parts = [_count(max(0, upvotes), "upvote", "upvotes")]
    parts.append(_count(max(0, comments), "comment", "comments"))
    if stars:
        parts.append(_count(stars, "GitHub star", "GitHub stars"))
    return " · ".join(parts)


def make_paper_card(ranked: RankedPaper) -> PaperCard:
    """The display form of one ranked paper."""
    paper = ranked.paper
    title = shorten_text(_clean_text(paper.title), TITLE_MAX_CHARS) or paper.arxiv_id
    summary_source = _clean_text(paper.ai_summary or "") or _clean_text(paper.abstract)
    return PaperCard(
        position=ranked.position,
        title=title,
        paper_url=paper.paper_url,
        authors=format_authors(paper.authors),
        stats=_format_stats(paper.upvotes, paper.num_comments, paper.github_stars),
        summary=shorten_text(summary_source, SUMMARY_MAX_CHARS),
        abstract_url=paper.abstract_url,
        pdf_url=paper.pdf_url,
        code_url=web_url(paper.github_repo),
        thumbnail_url=web_url(paper.thumbnail) if ranked.position <= THUMBNAILS_SHOWN else None,
        thumbnail_alt=shorten_text(f"Thumbnail: {title}", THUMBNAIL_ALT_MAX_CHARS),
    )


def format_edition_date(edition_date: date) -> str:
    """The date as readers see it, e.g. "27 Nov 2026" (English whatever the locale)."""
    return f"{edition_date.day} {_MONTHS[edition_date.month - 1]} {edition_date.year}"


def make_subject(list_name: str, edition_date: date, top_title: str) -> str:
    """A one-line subject: "<list> — <date>: <top title, shortened>" with no CR/LF ever."""
    title = shorten_text(_clean_text(top_title), SUBJECT_TITLE_MAX_CHARS)
    subject = f"{_clean_text(list_name)} — {format_edition_date(edition_date)}"
    return f"{subject}: {title}" if title else subject


def encoded_html_size(html: str) -> int:
    """Bytes the HTML part takes as quoted-printable, the size Gmail's clipping counts."""
    return len(quopri.encodestring(html.encode("utf-8")))


def _make_intro(count: int) -> str:
    if count == 1:
        return "The most popular new machine-learning paper, by upvotes, comments and GitHub stars."
    return (
        f"The {count} most popular new machine-learning papers, ranked by upvotes, comments "
        "and GitHub stars."
    )


def render_digest(
    env: jinja2.Environment,
    ranked: Sequence[RankedPaper],
    *,
    edition_date: date,
    base_url: str,
    postal_address: str,
    list_name: str,
    link_marker: str,
) -> RenderedDigest:
    """The day's digest rendered once, with personal links left as placeholders.

    If the HTML would be clipped by Gmail, the lowest-ranked papers are left out
    until it fits (the returned `papers` are the ones shown): a clipped mail hides
    the unsubscribe link, which is worse than a shorter edition.
    """
    if not ranked:
        raise EditionNotFoundError(
            f"no papers to render for {edition_date.isoformat()}; "
            "ingest papers for that day first, or pick a day that has some"
        )
    papers = tuple(sorted(ranked, key=lambda item: item.position))
    cards = tuple(make_paper_card(item) for item in papers)
    date_label = format_edition_date(edition_date)
    subject = make_subject(list_name, edition_date, cards[0].title)
    preheader = shorten_text(
        f"{date_label}: " + " · ".join(card.title for card in cards[:3]), PREHEADER_MAX_CHARS
    )
    context: dict[str, object] = {
        "subject": subject,
        "preheader": preheader,
        "list_name": _clean_text(list_name),
        "edition_date_label": date_label,
        "view_url": f"{base_url.rstrip('/')}/editions/{edition_date.isoformat()}",
        "unsubscribe_url": PersonalField.UNSUBSCRIBE_URL.placeholder(link_marker),
        "preferences_url": PersonalField.PREFERENCES_URL.placeholder(link_marker),
        "postal_address": _clean_text(postal_address),
    }
    shown = len(cards)
    while True:
        context["papers"] = cards[:shown]
        context["intro"] = _make_intro(shown)
        html, text = render_email(env, "digest", context)
        size = encoded_html_size(html)
        if size <= ENCODED_HTML_MAX_BYTES or shown == 1:
            break
        # Jump close to the fitting count in one step rather than re-rendering per paper.
        shown = max(1, min(shown - 1, shown * ENCODED_HTML_MAX_BYTES // size))
    if size > ENCODED_HTML_MAX_BYTES:
        raise RenderError(
            f"the digest HTML is {size} bytes encoded even with one paper, over the "
            f"{ENCODED_HTML_MAX_BYTES}-byte limit; shorten the templates or the postal address"
        )
    return RenderedDigest(
        edition_date=edition_date,
        subject=subject,
        html=html,
        text=text,
        link_marker=link_marker,
        papers=papers[:shown],
    )
