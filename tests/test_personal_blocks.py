"""Personal digests from blocks: hostile text stays text, every digest fits Gmail, links are signed.

The blocks are rendered by the real templates and MJML; messages are made by
the real `CompiledDigest` and read back with the `email` package, as a mail
client would.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import functools
from email.message import EmailMessage
from pathlib import Path
from unittest import mock

import dkim
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter.core.dkim import DkimSigner
from newsletter.core.errors import InvalidTokenError
from newsletter.core.settings import Settings, load_settings
from newsletter.core.templating import make_template_environment
from newsletter.delivery.assemble import CompiledDigest, EncodingCache, Recipient
from newsletter.render import (
    ENCODED_HTML_MAX_BYTES,
    DigestBlocks,
    PersonalDigest,
    render_blocks,
)
from newsletter.values import PaperRecord, RankedPaper
from subscribers.tokens import (
    feedback_url,
    feedback_urls,
    make_feedback_token,
    read_feedback_token,
)
from tests.support.dkim_keys import dns_for, write_key

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


def _compiled(
    settings: Settings,
    digest: PersonalDigest,
    *,
    cache: EncodingCache | None = None,
    signer: DkimSigner | None = None,
) -> CompiledDigest:
    """The digest compiled as a sending worker compiles it."""
    return CompiledDigest.compile_units(
        settings,
        subject=digest.subject,
        html_units=digest.html_units,
        text_units=digest.text_units,
        edition_date=DAY,
        link_marker=digest.link_marker,
        feedback_papers=digest.feedback_papers,
        cache=EncodingCache() if cache is None else cache,
        signer=signer,
        # A fixed Date: a test that makes the same message twice gets the same bytes.
        clock=lambda: dt.datetime(2026, 11, 5, 6, 0, tzinfo=dt.UTC),
    )


def _message(
    settings: Settings, blocks: DigestBlocks, picks: list[tuple[str, str]]
) -> EmailMessage:
    compiled = _compiled(settings, blocks.assemble(picks))
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
    # In bulk (the tags of all the links are encoded at once), each link is its own.
    papers = ["2611.00001", "2611.12345", "hep-th/9901001", "2611.00001v2", "2612.99999"]
    assert feedback_urls("https://n.example.org", "secret", "readerkey", papers) == [
        tuple(
            feedback_url("https://n.example.org", "secret", "readerkey", paper, verdict)
            for verdict in ("more", "less")
        )
        for paper in papers
    ]


# ---- units: a digest compiled unit by unit is the digest compiled whole ------------------------

_DIFFERENTIAL_SETTINGS = load_settings(
    _env_file=None,
    database_url="sqlite:///unused.db",
    secret_key="test-secret-key-0123456789",
    base_url="https://news.example.org",
    from_address="Daily ML Papers <digest@news.example.org>",
)
# Why lines as a hostile reader writes them: markup, quotes, line breaks, control and
# bidi characters, dots at a line start, this rendering's own placeholders.
_WHY = st.lists(
    st.one_of(
        st.characters(blacklist_categories=("Cs",)),
        st.sampled_from(["\r\n", "\n.", "<p>", '"', "{{ x }}", "\u202e", "=3D", " ", "\t"]),
        st.just(f"NLPERSONAL{MARKER}xFB1xMORExURL"),
        st.just(f"NLWHY{MARKER}Z"),
    ),
    max_size=40,
).map("".join)


@functools.cache
def _differential_blocks() -> DigestBlocks:
    return _blocks([paper(n, title=f"Paper {n}. .leading dot = {n}") for n in range(24)])


@functools.cache
def _shared_cache() -> EncodingCache:
    # One cache for every example: units met before are reused, as across a send.
    return EncodingCache(limit=500, layouts_kept=64)


@hypothesis_settings(max_examples=120, deadline=None)
@given(
    picks=st.lists(st.tuples(st.integers(0, 29), _WHY), max_size=8),
    for_you=st.booleans(),
    weekly=st.booleans(),
    name=st.sampled_from(["R", None, 'Zoë "Q" O\'Neil']),
)
def test_a_digest_compiled_by_units_is_byte_for_byte_the_digest_compiled_whole(
    picks: list[tuple[int, str]], for_you: bool, weekly: bool, name: str | None
) -> None:
    blocks = _differential_blocks()
    week = [f"2611.{n:05d}" for n in (23, 5, 17, 2)] if weekly else None
    digest = blocks.assemble(
        [(f"2611.{n:05d}", why) for n, why in picks], for_you=for_you, week_trending=week
    )
    assert all(unit.endswith("\n") for unit in digest.html_units + digest.text_units)
    recipient = Recipient("r@example.org", name, "readerkey", "<1@example.org>")
    fields = {
        "subject": digest.subject,
        "edition_date": DAY,
        "link_marker": digest.link_marker,
        "feedback_papers": digest.feedback_papers,
        # One clock for both: their Date headers must not fall in different seconds.
        "clock": lambda: dt.datetime(2026, 11, 5, 6, 0, tzinfo=dt.UTC),
    }
    with mock.patch("newsletter.delivery.assemble.new_boundary", return_value="=_fixed"):
        whole = CompiledDigest.compile(
            _DIFFERENTIAL_SETTINGS, html=digest.html, text=digest.text, **fields
        )
        by_units = CompiledDigest.compile_units(
            _DIFFERENTIAL_SETTINGS,
            html_units=digest.html_units,
            text_units=digest.text_units,
            cache=_shared_cache(),
            signer=None,
            **fields,
        )

    assert by_units.assemble(recipient) == whole.assemble(recipient)
    assert by_units.prepare(recipient) == whole.prepare(recipient)
    assert by_units.html_encoded_size == whole.html_encoded_size


def test_units_selections_share_outlive_a_table_full_of_readers_own_why_lines() -> None:
    # Every reader's why line is a unit of its own; were the shared blocks emptied
    # with them whenever the table filled, each would be encoded again and again.
    cache = EncodingCache(units_kept=4)
    block = "<p>A block every selection holds</p>\n"
    shared = cache.unit("html", MARKER, block)
    assert cache.unit("html", MARKER, block) is shared

    for reader in range(40):
        cache.unit("html", MARKER, f"matches your interest in \u201cwords r{reader}\u201d\n")
        assert cache.unit("html", MARKER, block) is shared


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_personal_digests_are_signed_and_verify(
    kind: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signing = load_settings(
        **{
            **settings.model_dump(),
            "dkim_selector": "daily",
            "dkim_key_file": write_key(tmp_path, kind),
        }
    )
    signer = DkimSigner.from_settings(signing)
    assert signer is not None
    blocks = _blocks([paper(n) for n in range(14)])
    cache = EncodingCache()
    # The signature's t= tag is the signing second: both builds below must sign in the
    # same one, or they differ by the clock, not by their bytes.
    monkeypatch.setattr("newsletter.core.dkim.time.time", lambda: 1_796_172_079.0)

    for picks in ([("2611.00003", "because of .dots\r\nand lines  ")], [], [("2611.00011", "x")]):
        compiled = _compiled(signing, blocks.assemble(picks), cache=cache, signer=signer)
        for key in ("k" * 22, "j" * 30):
            reader = Recipient("ada@example.org", "Ada", key, "<1.digest@news.example.org>")
            assembled = compiled.assemble(reader)
            assert assembled.startswith(b"DKIM-Signature:")
            assert dkim.verify(assembled, dnsfunc=dns_for(signer))
            prepared = compiled.prepare(reader).data
            assert prepared[:-3].replace(b"\r\n..", b"\r\n.") == assembled
