"""The render stage: ranked papers → one digest email (subject, HTML, text), purely.

Templates are jinja2 and MJML, run through `newsletter.core.templating`.
Per-recipient links stay as `PersonalField` placeholders for the send stage,
written with the link marker the caller passes in (random per rendering).
"""

from __future__ import annotations

import quopri
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from html import escape

import jinja2

from newsletter.core.errors import EditionNotFoundError, RenderError
from newsletter.core.templating import render_email
from newsletter.core.text import single_line
from newsletter.core.urls import web_url
from newsletter.values import (
    PaperRecord,
    PersonalField,
    RankedPaper,
    RenderedDigest,
    fill_personal_links,
)

TITLE_MAX_CHARS = 250
SUMMARY_MAX_CHARS = 300
AUTHOR_MAX_CHARS = 60
AUTHORS_SHOWN = 3
# Inboxes show about 60 characters of a subject on a phone; the list's name is
# already the sender's display name and the date is the message's, so neither repeats.
SUBJECT_MAX_CHARS = 60
PREHEADER_MAX_CHARS = 140
# Only the leading papers get a thumbnail: each image column costs about 1.5 KB of markup.
THUMBNAILS_SHOWN = 3
# Gmail clips a message whose HTML part, as encoded on the wire, exceeds about 102 KB,
# hiding the unsubscribe footer; quoted-printable adds 10% or more to MJML output.
ENCODED_HTML_MAX_BYTES = 100_000
# Blocks filled in for their place in a personal digest, kept per edition (a few KB each):
# more than the places an edition's papers take in its selections, as a rule.
FILLED_BLOCKS_KEPT = 8192

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class PaperCard:
    """One paper as the digest templates show it: every field cleaned and cut to size."""

    position: int
    title: str
    paper_url: str
    authors: str  # the first names, then how many in all: "A, B, C et al. (7 authors)"
    stats: str
    summary: str
    abstract_url: str
    pdf_url: str
    code_url: str | None
    # Decorative (the title beside it says everything): shown with alt="".
    thumbnail_url: str | None


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


def byline(authors: Sequence[str]) -> str:
    """The first three authors, then how many there are in all when more than one."""
    named = sum(1 for name in authors if _clean_text(name))
    shown = format_authors(authors)
    return f"{shown} ({_count(named, 'author', 'authors')})" if named > 1 else shown


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
        authors=byline(paper.authors),
        stats=_format_stats(paper.upvotes, paper.num_comments, paper.github_stars),
        summary=shorten_text(summary_source, SUMMARY_MAX_CHARS),
        abstract_url=paper.abstract_url,
        pdf_url=paper.pdf_url,
        code_url=web_url(paper.github_repo),
        thumbnail_url=web_url(paper.thumbnail) if ranked.position <= THUMBNAILS_SHOWN else None,
    )


def format_edition_date(edition_date: date) -> str:
    """The date as readers see it, e.g. "27 Nov 2026" (English whatever the locale)."""
    return f"{edition_date.day} {_MONTHS[edition_date.month - 1]} {edition_date.year}"


def make_subject(top_title: str, paper_count: int) -> str:
    """A one-line subject of at most 60 characters: the top title first, then "+ N more"."""
    more = f" + {paper_count - 1} more" if paper_count > 1 else ""
    title = shorten_text(_clean_text(top_title), SUBJECT_MAX_CHARS - len(more))
    return f"{title}{more}"


def encoded_html_size(html: str) -> int:
    """Bytes the HTML part takes as quoted-printable, the size Gmail's clipping counts."""
    return len(quopri.encodestring(html.encode("utf-8")))


# How the day's list is ordered, in a reader's words (the formula is in rank.py).
RANKING_LINE = (
    "How they are ranked: Hugging Face upvotes count most, comments less, the code's "
    "GitHub stars least. All were featured on Hugging Face the same day, so none is "
    "pushed down for having appeared on arXiv earlier."
)


def _make_intro(count: int) -> str:
    if count == 1:
        return "Today's most popular new machine-learning paper on Hugging Face."
    return f"Today's {count} most popular new machine-learning papers on Hugging Face."


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
    preheader = shorten_text(
        f"{date_label}: " + " · ".join(card.title for card in cards[:3]), PREHEADER_MAX_CHARS
    )
    context: dict[str, object] = {
        "preheader": preheader,
        "list_name": _clean_text(list_name),
        "edition_date_label": date_label,
        "view_url": f"{base_url.rstrip('/')}/editions/{edition_date.isoformat()}",
        "unsubscribe_url": PersonalField.UNSUBSCRIBE_URL.placeholder(link_marker),
        "preferences_url": PersonalField.PREFERENCES_URL.placeholder(link_marker),
        "postal_address": _clean_text(postal_address),
        "ranking_line": RANKING_LINE,
    }
    shown = len(cards)
    while True:
        subject = make_subject(cards[0].title, shown)
        context["subject"] = subject
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


# --- personal digests: blocks rendered once per edition, joined per selection ---

WHY_MAX_CHARS = 160
# Room left in the HTML part for what each reader's slots add: two feedback URLs per
# paper (base URL, a 64-character key, the paper, the MAC), HTML-escaped.
FEEDBACK_URL_ALLOWANCE = 2 * 200
NOTHING_FOR_YOU = (
    "Nothing today matched your interests closely enough to recommend; "
    "here is what is popular instead."
)


def feedback_placeholder(link_marker: str, index: int | str, verdict: str) -> str:
    """The placeholder of one paper's "more/less like this" link (index within the selection)."""
    return f"NLPERSONAL{link_marker}xFB{index}x{verdict.upper()}xURL"


def _block_marker(link_marker: str, name: str) -> str:
    return f"NLBLOCK{link_marker}Z{name}Z"


@dataclass(frozen=True, slots=True)
class _PaperEntry:
    plain: PaperCard  # the "For you" card: no thumbnail
    trending: PaperCard  # the "Trending today" card: a thumbnail for the edition's leaders


@dataclass(frozen=True, slots=True)
class PaperBlocks:
    """One paper's two renderings, HTML and text: in "For you" and in "Trending today"."""

    for_you_html: str
    for_you_text: str
    trending_html: str
    trending_text: str
    # Each HTML block's quoted-printable size with its placeholders: more than
    # it takes filled in (a placeholder is longer than a position or a link index).
    for_you_size: int = 0
    trending_size: int = 0


@dataclass(frozen=True, slots=True)
class PersonalDigest:
    """One selection's digest: HTML and text with slots, and the papers whose links it carries.

    Each part is given as units, whole lines each (every unit ends with a line
    end): the blocks the edition's selections share are the same units (the
    same objects) in every digest that shows them, so the send stage encodes
    each once; only the reader's own lines (why lines) are new per selection.
    `feedback_papers[i]` is the paper of the placeholders
    `feedback_placeholder(link_marker, i, "more" | "less")`.
    """

    subject: str
    html_units: tuple[str, ...]
    text_units: tuple[str, ...]
    link_marker: str
    feedback_papers: tuple[str, ...]
    shown: tuple[str, ...]  # every paper shown, "For you" first

    @property
    def html(self) -> str:
        """The HTML part, placeholders and all."""
        return "".join(self.html_units)

    @property
    def text(self) -> str:
        """The plain-text part, placeholders and all."""
        return "".join(self.text_units)

    def personalised(
        self,
        *,
        unsubscribe_url: str,
        preferences_url: str,
        feedback_url: Callable[[str, str], str],
        view_url: str,
    ) -> tuple[str, str]:
        """HTML and text with one reader's links filled in (`feedback_url(arxiv_id, verdict)`)."""
        html, text = fill_personal_links(
            self.html,
            self.text,
            link_marker=self.link_marker,
            unsubscribe_url=unsubscribe_url,
            preferences_url=preferences_url,
            view_url=view_url,
        )
        for index, arxiv_id in enumerate(self.feedback_papers):
            for verdict in ("more", "less"):
                placeholder = feedback_placeholder(self.link_marker, index, verdict)
                url = feedback_url(arxiv_id, verdict)
                html = html.replace(placeholder, escape(url, quote=True))
                text = text.replace(placeholder, url)
        return html, text


@dataclass(frozen=True, slots=True)
class DigestBlocks:
    """An edition's personal-digest pieces, rendered (and MJML-compiled) once.

    `assemble` joins the pieces a selection needs: no template runs per reader
    or per selection, only string joins and a few replacements.
    """

    edition_date: date
    subject: str
    link_marker: str
    html_parts: dict[str, str]
    text_parts: dict[str, str]
    papers: dict[str, PaperBlocks]
    trending: tuple[str, ...]  # the edition's popularity ranking, best first
    # Encoded size of the parts every digest has (the larger "For you" header counted).
    fixed_html_size: int = 0
    # Blocks filled in for a place in a digest, kept so that every selection showing
    # a paper at the same place shares the very same units (see `PersonalDigest`).
    _filled: dict[tuple[object, ...], tuple[str, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def assemble(
        self,
        picks: Sequence[tuple[str, str]],
        *,
        for_you: bool = True,
        week_trending: Sequence[str] | None = None,
    ) -> PersonalDigest:
        """The digest of one selection: `picks` are (arXiv id, why) best first.

        "For you" lists the picks with their why line (or says that nothing
        cleared the floor; no such section without `for_you`), then "Trending
        today" the edition's ranking without them, or, given `week_trending`
        (a weekly reader's), "Trending this week" those papers. Trending papers
        are dropped from the end while the encoded HTML, with room for every
        reader's links, would be clipped.
        """
        marker = self.link_marker
        # The reader's own words (interests, liked titles) as their why line shows
        # them; they can never hold this rendering's marker, so never a placeholder
        # the send stage fills.
        picked = [
            (arxiv_id, shorten_text(_clean_text(why), WHY_MAX_CHARS).replace(marker, ""))
            for arxiv_id, why in picks
            if arxiv_id in self.papers
        ]
        if not for_you:
            picked = []
        shown = {arxiv_id for arxiv_id, _ in picked}
        ranking = self.trending if week_trending is None else week_trending
        trending = [a for a in ranking if a not in shown and a in self.papers]
        # The size is bounded from the blocks' own encoded sizes, never by encoding
        # the whole digest again: each block ends a line, and what is filled into
        # it (its position, the why line on a line of its own) changes where its
        # lines break by at most one soft line break (3 bytes) at each of 4 places.
        size = self.fixed_html_size + sum(
            self.papers[arxiv_id].for_you_size
            + encoded_html_size(escape(line, quote=True))
            + FEEDBACK_URL_ALLOWANCE
            + 12
            for arxiv_id, line in picked
        )
        keep = 0
        for arxiv_id in trending:
            grown = size + self.papers[arxiv_id].trending_size + FEEDBACK_URL_ALLOWANCE + 12
            if grown > ENCODED_HTML_MAX_BYTES:
                break
            size = grown
            keep += 1
        if size > ENCODED_HTML_MAX_BYTES:
            raise RenderError(
                f"a personal digest is {size} bytes encoded even without trending papers, over "
                f"the {ENCODED_HTML_MAX_BYTES}-byte limit; lower the personal count"
            )
        return self._joined(
            picked,
            trending[:keep],
            for_you=for_you,
            trending_section="trending" if week_trending is None else "trending_week",
        )

    def _joined(
        self,
        picked: list[tuple[str, str]],
        trending: list[str],
        *,
        for_you: bool,
        trending_section: str,
    ) -> PersonalDigest:
        """The digest's units: `picked` are (arXiv id, why line as shown), best first."""
        marker = self.link_marker
        html = [self.html_parts["top"]]
        text = [self.text_parts["top"]]
        if for_you:
            section = "for_you" if picked else "nothing"
            html.append(self.html_parts[section])
            text.append(self.text_parts[section])
        order: list[str] = []
        for arxiv_id, line in picked:
            index = len(order)
            for units, flavour, shown_why in (
                (html, "html", escape(line, quote=True)),
                (text, "text", line),
            ):
                before, prefix, suffix, after = self._for_you_units(arxiv_id, flavour, index)
                # Last: the reader's own words never pass through a replacement.
                units += (before, prefix + shown_why + suffix, after)
            order.append(arxiv_id)
        html.append(self.html_parts[trending_section])
        text.append(self.text_parts[trending_section])
        for position, arxiv_id in enumerate(trending, start=1):
            html.append(self._trending_unit(arxiv_id, "html", position, len(order)))
            text.append(self._trending_unit(arxiv_id, "text", position, len(order)))
            order.append(arxiv_id)
        html.append(self.html_parts["end"])
        text.append(self.text_parts["end"])
        return PersonalDigest(
            subject=self.subject,
            html_units=tuple(unit for unit in html if unit),
            text_units=tuple(unit for unit in text if unit),
            link_marker=marker,
            feedback_papers=tuple(order),
            shown=tuple(order),
        )

    def _for_you_units(self, arxiv_id: str, flavour: str, index: int) -> tuple[str, str, str, str]:
        """A "For you" block at `index`, filled in and cut around its why line.

        The lines before the why line, the why line's text before and after the
        why, and the lines after it: the same objects for every selection that
        shows the paper there (see `PersonalDigest`).
        """
        key = ("for_you", arxiv_id, flavour, index)
        found = self._filled.get(key)
        if found is None:
            blocks = self.papers[arxiv_id]
            block = blocks.for_you_html if flavour == "html" else blocks.for_you_text
            number = str(index + 1) if flavour == "html" else f"{index + 1:>2}"
            filled = self._filled_block(block, number, index)
            why = filled.index(self._why_mark)
            line_start = filled.rfind("\n", 0, why) + 1
            line_end = filled.index("\n", why) + 1
            found = (
                filled[:line_start],
                filled[line_start:why],
                filled[why + len(self._why_mark) : line_end],
                filled[line_end:],
            )
            self._keep_filled(key, found)
        before, prefix, suffix, after = found
        return before, prefix, suffix, after

    def _trending_unit(self, arxiv_id: str, flavour: str, position: int, index: int) -> str:
        """A trending block at `position`, its feedback links the paper's at `index`."""
        key = ("trending", arxiv_id, flavour, position, index)
        found = self._filled.get(key)
        if found is None:
            blocks = self.papers[arxiv_id]
            block = blocks.trending_html if flavour == "html" else blocks.trending_text
            # The text part right-aligns positions so that item 10 lines up with item 9.
            number = str(position) if flavour == "html" else f"{position:>2}"
            found = (self._filled_block(block, number, index),)
            self._keep_filled(key, found)
        return found[0]

    @property
    def _why_mark(self) -> str:
        return f"NLWHY{self.link_marker}Z"

    def _filled_block(self, block: str, number: str, index: int) -> str:
        marker = self.link_marker
        return block.replace(f"NLPOS{marker}Z", number).replace(
            f"NLPERSONAL{marker}xFBNNx", f"NLPERSONAL{marker}xFB{index}x"
        )

    def _keep_filled(self, key: tuple[object, ...], units: tuple[str, ...]) -> None:
        if len(self._filled) >= FILLED_BLOCKS_KEPT:
            self._filled.clear()
        self._filled[key] = units


def _split_blocks(rendered: str, link_marker: str) -> dict[str, str]:
    pattern = re.compile(re.escape(f"NLBLOCK{link_marker}Z") + r"([a-z0-9_]+)Z")
    pieces = pattern.split(rendered)
    parts = {"top": pieces[0]}
    for index in range(1, len(pieces), 2):
        parts[pieces[index]] = pieces[index + 1]
    return parts


def render_blocks(
    env: jinja2.Environment,
    trending: Sequence[RankedPaper],
    candidates: Sequence[PaperRecord],
    *,
    edition_date: date,
    subject: str,
    postal_address: str,
    list_name: str,
    link_marker: str,
) -> DigestBlocks:
    """Every block a personal digest of the edition may hold, rendered and compiled once.

    `trending` is the edition's ranking (as shown in today's digest);
    `candidates` every other paper a selection may pick. Each paper gets two
    blocks (in "For you", with its why line, and in "Trending today"); the
    position, the why line and the feedback links are placeholders.
    """
    papers: dict[str, PaperRecord] = {}
    thumbnails: set[str] = set()
    for item in sorted(trending, key=lambda entry: entry.position):
        papers[item.paper.arxiv_id] = item.paper
        if item.position <= THUMBNAILS_SHOWN:
            thumbnails.add(item.paper.arxiv_id)
    for paper in candidates:
        papers.setdefault(paper.arxiv_id, paper)
    entries = []
    for paper in papers.values():
        plain = make_paper_card(RankedPaper(paper, 0.0, THUMBNAILS_SHOWN + 1))
        shown = (
            make_paper_card(RankedPaper(paper, 0.0, 1)) if paper.arxiv_id in thumbnails else plain
        )
        entries.append(_PaperEntry(plain, shown))
    date_label = format_edition_date(edition_date)
    context: dict[str, object] = {
        "subject": subject,
        "preheader": shorten_text(
            f"{date_label}: papers picked for you, then today's most popular", PREHEADER_MAX_CHARS
        ),
        "list_name": _clean_text(list_name),
        "edition_date_label": date_label,
        "intro": "Papers picked for your interests, then the most popular.",
        "nothing_line": NOTHING_FOR_YOU,
        "ranking_line": RANKING_LINE,
        # The reader's own copy (a signed link filled in per reader), not the public edition.
        "view_url": PersonalField.VIEW_URL.placeholder(link_marker),
        "unsubscribe_url": PersonalField.UNSUBSCRIBE_URL.placeholder(link_marker),
        "preferences_url": PersonalField.PREFERENCES_URL.placeholder(link_marker),
        "postal_address": _clean_text(postal_address),
        "papers": entries,
        "position": f"NLPOS{link_marker}Z",
        "why_placeholder": f"NLWHY{link_marker}Z",
        "more_url": feedback_placeholder(link_marker, "NN", "more"),
        "less_url": feedback_placeholder(link_marker, "NN", "less"),
        "block": lambda name: _block_marker(link_marker, name),
    }
    html, text = render_email(env, "digest_blocks", context)
    # Each HTML block ends a line (the markup is one long line; a line end between
    # sections is only white space): quoted-printable then breaks each block's
    # lines on their own, so a block met again encodes as before (see assemble).
    html_parts = {
        name: part if part.endswith("\n") else part + "\n"
        for name, part in _split_blocks(html, link_marker).items()
    }
    text_parts = _split_blocks(text, link_marker)
    if not all(part.endswith("\n") for part in text_parts.values()):
        raise RenderError("every block of the plain-text digest must end with a line end")
    # In HTML the why line stands on a line of its own too (white space at the
    # edges of its paragraph shows nothing), so the lines around it, which hold
    # the links, are the same for every reader of the paper.
    why_mark = f"NLWHY{link_marker}Z"
    blocks = {
        paper.arxiv_id: PaperBlocks(
            html_parts[f"fy_{index}"].replace(why_mark, f"\n{why_mark}\n"),
            text_parts[f"fy_{index}"],
            html_parts[f"tr_{index}"],
            text_parts[f"tr_{index}"],
            encoded_html_size(html_parts[f"fy_{index}"]),
            encoded_html_size(html_parts[f"tr_{index}"]),
        )
        for index, paper in enumerate(papers.values())
    }
    # The larger of each pair of alternative parts counts.
    fixed = sum(
        max(encoded_html_size(html_parts[name]) + 3 for name in names)
        for names in (("top",), ("end",), ("trending", "trending_week"), ("for_you", "nothing"))
    )
    return DigestBlocks(
        edition_date=edition_date,
        subject=subject,
        link_marker=link_marker,
        html_parts=html_parts,
        text_parts=text_parts,
        papers=blocks,
        trending=tuple(item.paper.arxiv_id for item in sorted(trending, key=lambda e: e.position)),
        fixed_html_size=fixed,
    )
