"""Personal digests from blocks: hostile text stays text, every digest fits Gmail, links are signed.

The blocks are rendered by the real templates and MJML; messages are made by
the real `CompiledDigest` and read back with the `email` package, as a mail
client would.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.core.errors import InvalidTokenError
from newsletter.core.settings import Settings
from newsletter.core.templating import make_template_environment
from newsletter.delivery.assemble import CompiledDigest, EncodingCache, Recipient
from newsletter.render import ENCODED_HTML_MAX_BYTES, DigestBlocks, render_blocks
from newsletter.values import PaperRecord, RankedPaper
from subscribers.tokens import (
    feedback_url,
    feedback_urls,
    make_feedback_token,
    read_feedback_token,
)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
DAY = dt.date(2026, 11, 5)
MARKER = "0123456789abcdef0123456789abcdef"


def _blocks(papers: list[PaperRecord], trending: int = 10) -> DigestBlocks:
    ranked = [RankedPaper(p, 1.0, i + 1) for i, p in enumerate(papers[:trending])]
    return render_blocks(
        make_template_environment(TEMPLATES),
        ranked,
        papers[trending:],
        edition_date=DAY,
        subject="Daily ML Papers — 5 Nov 2026",
        postal_address="1 Example Street",
        list_name="Daily ML Papers",
        link_marker=MARKER,
    )


def _message(
    settings: Settings, blocks: DigestBlocks, picks: list[tuple[str, str]]
) -> EmailMessage:
    digest = blocks.assemble(picks)
    compiled = CompiledDigest.compile(
        settings,
        subject=digest.subject,
        html=digest.html,
        text=digest.text,
        edition_date=DAY,
        link_marker=digest.link_marker,
        feedback_papers=digest.feedback_papers,
        cut=digest.cut,
        cache=EncodingCache(),
    )
    raw = compiled.assemble(Recipient("r@example.org", "R", "readerkey", "<1@example.org>"))
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _parts(message: EmailMessage) -> tuple[str, str]:
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None and text is not None
    return str(html.get_content()), str(text.get_content())


def paper(n: int, **fields: object) -> PaperRecord:
    values: dict[str, object] = {
        "title": f"Paper number {n}",
        "abstract": "An abstract. " * 10,
        "authors": ("Ada Lovelace", "Alan Turing"),
        "upvotes": 100 - n,
    }
    values.update(fields)
    return PaperRecord(f"2611.{n:05d}", **values)  # type: ignore[arg-type]


def test_hostile_why_lines_and_titles_stay_text(settings: Settings) -> None:
    hostile_title = '<script>alert(1)</script> & "quotes" NLPOS' + MARKER + "Z"
    blocks = _blocks([paper(0, title=hostile_title), *(paper(n) for n in range(1, 12))])
    why = (
        'like <b>"Attention"</b>\r\nBcc: victim@example.org NLPERSONAL'
        + MARKER
        + "xUNSUBSCRIBExURL NLPOS"
        + MARKER
        + "Z\u202e"
    )

    html, text = _parts(_message(settings, blocks, [("2611.00011", why), ("2611.00000", "x")]))

    assert "<b>" not in html and "&lt;b&gt;" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    # The reader's own words are never filled in as a link or a position.
    why_line = text.split("Bcc:")[1].split("\n")[0]
    assert "NLPERSONALxUNSUBSCRIBExURL" in why_line and "NLPOSZ" in why_line
    assert "https://news.example.org/unsubscribe/" not in why_line
    assert "Bcc: victim@example.org" in text  # on the why line, not a header
    assert "\u202e" not in text and "\u202e" not in html
    assert "NLCUT" not in html + text and "NLPOS" + MARKER not in html + text


def test_a_paper_picked_for_you_is_not_repeated_under_trending(settings: Settings) -> None:
    blocks = _blocks([paper(n) for n in range(20)])

    _, text = _parts(_message(settings, blocks, [("2611.00003", "because"), ("2611.00015", "b")]))
    text = text.replace("\r\n", "\n")

    assert text.count("Paper number 3\n") == 1
    assert text.index("Paper number 15") < text.index("TRENDING TODAY")
    trending = text.split("TRENDING TODAY")[1]
    assert "1. Paper number 0" in trending and "4. Paper number 4" in trending


def test_an_unknown_pick_is_left_out_and_no_picks_says_so(settings: Settings) -> None:
    blocks = _blocks([paper(n) for n in range(12)])

    _, text = _parts(_message(settings, blocks, [("9999.99999", "gone")]))

    assert "Nothing today matched your interests" in text
    assert "gone" not in text


def test_every_personal_digest_stays_under_the_clipping_limit(settings: Settings) -> None:
    long = "word " * 400
    papers = [
        paper(
            n, title=f"{long[:240]} {n}", abstract=long, thumbnail="https://img.example.org/t.png"
        )
        for n in range(80)
    ]
    blocks = _blocks(papers, trending=60)
    picks = [(f"2611.{n:05d}", "matches your interest in " + "x" * 200) for n in range(60, 80)]

    digest = blocks.assemble(picks)
    message = _message(settings, blocks, picks)
    raw = message.as_bytes()

    start = raw.index(b"Content-Type: text/html")
    body = raw[raw.index(b"\n\n", start) + 2 :]
    assert len(body) < ENCODED_HTML_MAX_BYTES
    assert digest.shown[:20] == tuple(a for a, _ in picks)  # For you whole, trending cut
    assert 20 < len(digest.shown) < 80


def test_feedback_tokens_are_signed_per_reader_paper_and_verdict() -> None:
    token = make_feedback_token("secret", "readerkey", "hep-th/9901001", "less")

    assert read_feedback_token("secret", token) == ("readerkey", "hep-th/9901001", "less")
    assert "/" not in token
    with pytest.raises(InvalidTokenError):
        read_feedback_token("other secret", token)
    flipped = token.replace(".l.", ".m.")
    assert flipped != token
    with pytest.raises(InvalidTokenError):
        read_feedback_token("secret", flipped)
    with pytest.raises(ValueError, match="verdict"):
        make_feedback_token("secret", "readerkey", "2611.00001", "maybe")
    with pytest.raises(ValueError, match="subscriber key"):
        make_feedback_token("secret", "bad key!", "2611.00001", "more")
    url = feedback_url("https://n.example.org", "secret", "readerkey", "2611.00001", "more")
    assert url.startswith("https://n.example.org/feedback/")
    assert feedback_urls("https://n.example.org", "secret", "readerkey", ["2611.00001"]) == [
        (url, feedback_url("https://n.example.org", "secret", "readerkey", "2611.00001", "less"))
    ]
