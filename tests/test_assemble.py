"""Assembled messages equal fully built ones, resist header injection and survive SMTP."""

from __future__ import annotations

import email
import email.policy
import random
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import format_datetime, getaddresses

import aiosmtplib
import pytest

from newsletter.core.errors import InvalidEmailError
from newsletter.core.resources import templates_path
from newsletter.core.settings import Settings, load_settings
from newsletter.core.templating import make_template_environment
from newsletter.delivery.assemble import (
    TEST_SEND_KEY,
    CompiledDigest,
    Recipient,
    build_message,
    make_message_id,
)
from newsletter.render import render_digest
from newsletter.values import PaperRecord, PersonalField, RankedPaper
from subscribers.tokens import read_preferences_token, read_unsubscribe_token
from tests.support.smtp_server import RecordingSmtpServer

EDITION_DATE = date(2026, 1, 5)
SENT_AT = datetime(2026, 1, 5, 7, 30, 15, tzinfo=UTC)
LINK_MARKER = "0123456789abcdef0123456789abcdef"
UNSUBSCRIBE = PersonalField.UNSUBSCRIBE_URL.placeholder(LINK_MARKER)
PREFERENCES = PersonalField.PREFERENCES_URL.placeholder(LINK_MARKER)

CJK_NAME = "山田太郎" * 12 + " 研究者"  # long enough to need several encoded-words


def make_settings(**overrides: object) -> Settings:
    """Settings for messages only (no database or SMTP server)."""
    values: dict[str, object] = {
        "secret_key": "test-secret-key-0123456789",
        "base_url": "https://news.example.org",
        "from_address": "Daily ML Papers <digest@news.example.org>",
        "list_id": "Daily ML Papers <daily.news.example.org>",
    }
    values.update(overrides)
    return load_settings(**values)


def fixed_clock() -> datetime:
    """A clock stuck at the send moment, so both paths stamp the same Date."""
    return SENT_AT


def parse(raw: bytes) -> EmailMessage:
    """The message as a modern mail client library reads it."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def visible_header(raw: bytes, name: str) -> list[str]:
    """What a reader sees for each occurrence of a header: RFC 2047 decoded, unfolded."""
    legacy = email.message_from_bytes(raw, policy=email.policy.compat32)
    shown = []
    for value in legacy.get_all(name, []):
        decoded = str(make_header(decode_header(str(value).replace("\r\n", "").replace("\n", ""))))
        shown.append(" ".join(decoded.split()))
    return shown


def displayed_address(raw: bytes) -> tuple[str, str]:
    """The To display name as a reader sees it (adjacent encoded-words joined) and the address."""
    legacy = email.message_from_bytes(raw, policy=email.policy.compat32)
    [(name, address)] = getaddresses([str(legacy["To"]).replace("\r\n", "")])
    return str(make_header(decode_header(name))), address


def content_type_without_boundary(message: Message) -> tuple[str, list[tuple[str, str]]]:
    """The content type and its parameters, leaving out the random boundary."""
    params = [(k, v) for k, v in message.get_params() or [] if k not in ("boundary",)]
    return message.get_content_type(), params[1:]


def assert_equivalent(fast: bytes, reference: bytes) -> None:
    """Every header and both decoded parts agree between the two messages."""
    mine, theirs = parse(fast), parse(reference)
    assert sorted(mine.keys()) == sorted(theirs.keys())
    # Long names split into several encoded-words come back from the email
    # package with spaces at the splits (mail clients join them), and the two
    # paths may quote or encode a name differently, so To is compared decoded.
    assert displayed_address(fast) == displayed_address(reference)
    for name in set(theirs.keys()) - {"Content-Type", "To"}:
        assert visible_header(fast, name) == visible_header(reference, name), name
        assert [str(v) for v in mine.get_all(name, [])] == [
            str(v) for v in theirs.get_all(name, [])
        ], name
    assert content_type_without_boundary(mine) == content_type_without_boundary(theirs)
    mine_parts, their_parts = list(mine.iter_parts()), list(theirs.iter_parts())
    assert [p.get_content_type() for p in mine_parts] == ["text/plain", "text/html"]
    assert [p.get_content_type() for p in their_parts] == ["text/plain", "text/html"]
    for mine_part, their_part in zip(mine_parts, their_parts, strict=True):
        assert mine_part.get_content_charset() == their_part.get_content_charset() == "utf-8"
        assert mine_part["Content-Transfer-Encoding"] == "quoted-printable"
        assert mine_part.get_content() == their_part.get_content()


def both_ways(
    settings: Settings,
    recipient: Recipient,
    *,
    subject: str,
    html: str,
    text: str,
    is_test: bool = False,
) -> tuple[bytes, bytes]:
    """The assembled message and the fully built reference, as bytes on the wire."""
    compiled = CompiledDigest.compile(
        settings,
        subject=subject,
        html=html,
        text=text,
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
        is_test=is_test,
        clock=fixed_clock,
    )
    reference = build_message(
        settings,
        subject=subject,
        html=html,
        text=text,
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
        recipient=recipient,
        is_test=is_test,
        sent_at=SENT_AT,
    )
    return compiled.assemble(recipient), reference.as_bytes()


def recipient(
    name: str | None, *, email_address: str = "reader@example.org", key: str | None = "k" * 22
) -> Recipient:
    """A recipient with a fixed Message-ID."""
    return Recipient(
        email=email_address,
        name=name,
        subscriber_key=key,
        message_id=make_message_id(make_settings(), edition_date=EDITION_DATE, delivery_id=42),
    )


def digest_html(title: str) -> str:
    """A small digest with placeholders in the places templates put them."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title></head><body>\n"
        f'<h1 style="font-family:Arial, sans-serif;color:#111">{title}</h1>\n'
        "<p>Tab\tand trailing spaces   \n.a line starting with a dot\nFrom the start</p>\n"
        f'<a href="{PREFERENCES}">Preferences</a> · <a href="{UNSUBSCRIBE}">Unsubscribe</a>\n'
        f"<p>{'long line without breaks ' * 60}</p>\n</body></html>\n"
    )


def digest_text(title: str) -> str:
    """The text part with both placeholders."""
    return f"{title}\n\nManage: {PREFERENCES}\nUnsubscribe: {UNSUBSCRIBE}\n"


def one_click_url(message: EmailMessage) -> str:
    """The https URL in List-Unsubscribe."""
    match = re.search(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize(
    "name",
    [
        None,
        "Ada Lovelace",
        "Zoë Ægir",
        CJK_NAME,
        'Doe, John "JJ" \\ O\'Brien',
        "A" * 90,
        "Ünïcödé " * 20,
    ],
)
@pytest.mark.parametrize(
    "subject",
    ["Daily ML Papers — 5 January 2026: Ünïcode 検索 títulos", "Plain ASCII subject"],
)
def test_assembled_message_equals_fully_built_message(name: str | None, subject: str) -> None:
    settings = make_settings(
        reply_to="Editors <editors@news.example.org>",
        unsubscribe_mailto="unsubscribe@news.example.org",
    )
    title = 'Diffusion für Zoë: 大規模言語モデル & <tags> "quotes" = signs'
    fast, reference = both_ways(
        settings, recipient(name), subject=subject, html=digest_html(title), text=digest_text(title)
    )
    assert_equivalent(fast, reference)
    assert displayed_address(fast) == (" ".join((name or "").split()), "reader@example.org")


def test_rendered_digest_assembles_like_the_reference() -> None:
    settings = make_settings()
    papers = [
        RankedPaper(
            paper=PaperRecord(
                arxiv_id=f"2601.{index:05d}",
                title=f"Scaling Ünïcode Transformers № {index}: 深層学習 for “everyone”",
                abstract="We study é, ß and 中文 in long abstracts. " * 12,
                authors=("Zoë Ægir", "山田太郎", "Jean-Luc Picard"),
                upvotes=100 - index,
                github_repo="https://github.com/example/repo",
            ),
            score=100.0 - index,
            position=index,
        )
        for index in range(1, 13)
    ]
    digest = render_digest(
        make_template_environment(templates_path()),
        papers,
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
        base_url=settings.base_url,
        postal_address=settings.postal_address,
        list_name="Daily ML Papers",
    )
    assert UNSUBSCRIBE in digest.html and UNSUBSCRIBE in digest.text
    person = recipient("Zoë Ægir")
    fast, reference = both_ways(
        settings, person, subject=digest.subject, html=digest.html, text=digest.text
    )
    assert_equivalent(fast, reference)
    html_part = parse(fast).get_body(preferencelist=("html",))
    assert html_part is not None
    assert one_click_url(parse(fast)) in html_part.get_content()


@pytest.mark.parametrize("seed", range(40))
def test_placeholders_anywhere_decode_to_the_personal_urls(seed: int) -> None:
    # Placeholders land at every column, next to each other, at line starts and
    # ends, after spaces and non-ASCII; long base URLs make the URL itself wrap.
    chooser = random.Random(seed)
    settings = make_settings(
        base_url="https://news.example.org/" + "deep/path/" * chooser.randint(0, 12)
    )
    alphabet = ["a", "b", " ", "\t", "=", "é", "字", "\n", "\r\n", ".", "&", "<", '"']
    chunks: list[str] = []
    for _ in range(chooser.randint(1, 30)):
        pick = chooser.random()
        if pick < 0.15:
            chunks.append(chooser.choice([UNSUBSCRIBE, PREFERENCES]))
        else:
            chunks.append("".join(chooser.choices(alphabet, k=chooser.randint(0, 90))))
    body = "".join(chunks)
    fast, reference = both_ways(
        settings, recipient("Zoë Ægir"), subject="Seed test", html=body, text=body
    )
    assert_equivalent(fast, reference)
    for line in fast.split(b"\r\n\r\n", 1)[1].split(b"\r\n"):
        assert len(line) <= 76


def test_hostile_name_and_subject_cannot_add_headers() -> None:
    settings = make_settings()
    hostile_name = "Eve\r\nBcc: victim@example.org\r\nX-Injected: yes\u2028Cc: x@example.org"
    hostile_subject = "Hello\r\nBcc: victim@example.org\nX-Injected: yes\x00\x1b"
    person = recipient(hostile_name)
    compiled = CompiledDigest.compile(
        settings,
        subject=hostile_subject,
        html=digest_html("t"),
        text=digest_text("t"),
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
        clock=fixed_clock,
    )
    raw = compiled.assemble(person)
    message = parse(raw)
    for injected in ("Bcc", "Cc", "X-Injected"):
        assert message[injected] is None
    assert not re.search(rb"^(Bcc|Cc|X-Injected):", raw, flags=re.MULTILINE | re.IGNORECASE)
    assert len(message.get_all("To", [])) == 1
    assert message["To"].addresses[0].addr_spec == "reader@example.org"
    assert displayed_address(raw) == (
        "Eve Bcc: victim@example.org X-Injected: yes Cc: x@example.org",
        "reader@example.org",
    )
    assert str(message["Subject"]) == "Hello Bcc: victim@example.org X-Injected: yes"
    fast, reference = both_ways(
        settings, person, subject=hostile_subject, html="<p>x</p>", text="x"
    )
    assert_equivalent(fast, reference)


def test_name_that_looks_like_an_encoded_word_is_shown_literally() -> None:
    # The email package writes such a name bare, so readers decode it into
    # "Not an encoded word"; the assembled message shows what was typed.
    name = "=?utf-8?q?Not_an_encoded_word?="
    compiled = CompiledDigest.compile(
        make_settings(),
        subject="s",
        html="<p>x</p>",
        text="x",
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
    )
    raw = compiled.assemble(recipient(name))
    assert visible_header(raw, "To") == [f"{name} <reader@example.org>"]


@pytest.mark.parametrize(
    "address", ["reader@example.org\r\nBcc: victim@example.org", "zoë@example.org", "a b@x.org"]
)
def test_unusable_addresses_are_refused(address: str) -> None:
    compiled = CompiledDigest.compile(
        make_settings(),
        subject="s",
        html="<p>x</p>",
        text="x",
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
    )
    with pytest.raises(InvalidEmailError):
        compiled.assemble(recipient("Name", email_address=address))


def test_headers_links_and_line_lengths() -> None:
    settings = make_settings(
        reply_to="editors@news.example.org", unsubscribe_mailto="mailto:leave@news.example.org"
    )
    compiled = CompiledDigest.compile(
        settings,
        subject="Today's papers",
        html=digest_html("Title"),
        text=digest_text("Title"),
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
        clock=fixed_clock,
    )
    key = "Zq3v9Yb2kK1xw0rT5uVw8g"
    raw = compiled.assemble(recipient("Ada", key=key))
    message = parse(raw)

    assert compiled.envelope_from == "digest@news.example.org"
    assert str(message["From"]) == "Daily ML Papers <digest@news.example.org>"
    assert str(message["Reply-To"]) == "editors@news.example.org"
    assert str(message["Subject"]) == "Today's papers"
    assert str(message["Date"]) == format_datetime(SENT_AT)
    assert str(message["Message-ID"]) == "<20260105.42.digest@news.example.org>"
    assert str(message["List-Id"]) == "Daily ML Papers <daily.news.example.org>"
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert str(message["List-Unsubscribe"]).endswith(
        ", <mailto:leave@news.example.org?subject=unsubscribe>"
    )
    url = one_click_url(message)
    assert url.startswith("https://news.example.org/unsubscribe/")
    assert read_unsubscribe_token(settings.secret_key, url.rsplit("/", 1)[1]) == key

    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert f"Unsubscribe: {url}" in text.get_content()
    assert f'<a href="{url}">Unsubscribe</a>' in html.get_content()
    preferences = re.search(r"Manage: (\S+)", text.get_content())
    assert preferences is not None
    assert (
        read_preferences_token(settings.secret_key, preferences.group(1).rsplit("/", 1)[1]) == key
    )
    assert UNSUBSCRIBE not in raw.decode("ascii")

    assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r")
    header_block, body = raw.split(b"\r\n\r\n", 1)
    # A URL cannot be folded, so only the List-Unsubscribe line may pass 78.
    long_lines = [line for line in header_block.split(b"\r\n") if len(line) > 78]
    assert [line[:18] for line in long_lines] == [b"List-Unsubscribe: "]
    assert all(len(line) <= 998 for line in long_lines)
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    assert compiled.html_encoded_size <= len(raw)


def test_long_names_and_urls_keep_lines_within_limits() -> None:
    settings = make_settings(base_url="https://news.example.org/" + "x" * 150)
    compiled = CompiledDigest.compile(
        settings,
        subject="Ü" * 200,
        html="<p>x</p>",
        text="x",
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
    )
    raw = compiled.assemble(recipient(CJK_NAME * 3))
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    header_block, body = raw.split(b"\r\n\r\n", 1)
    # Only the List-Unsubscribe URL may exceed 78: a URL cannot be folded.
    long_lines = [line for line in header_block.split(b"\r\n") if len(line) > 78]
    assert [line[:18] for line in long_lines] == [b"List-Unsubscribe: "]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    assert " ".join((CJK_NAME * 3).split()) in visible_header(raw, "To")[0]


def test_test_send_has_prefix_and_harmless_links() -> None:
    settings = make_settings()
    test_copy = recipient("Editor", key=None)
    fast, reference = both_ways(
        settings,
        test_copy,
        subject="Preview",
        html=digest_html("t"),
        text=digest_text("t"),
        is_test=True,
    )
    assert_equivalent(fast, reference)
    message = parse(fast)
    assert str(message["Subject"]) == "[TEST] Preview"
    token = one_click_url(message).rsplit("/", 1)[1]
    assert read_unsubscribe_token(settings.secret_key, token) == TEST_SEND_KEY


def test_message_id_is_stable_per_delivery() -> None:
    settings = make_settings()
    first = make_message_id(settings, edition_date=EDITION_DATE, delivery_id=7)
    assert first == make_message_id(settings, edition_date=EDITION_DATE, delivery_id=7)
    assert first == "<20260105.7.digest@news.example.org>"
    assert first != make_message_id(settings, edition_date=EDITION_DATE, delivery_id=8)


def test_date_follows_the_clock() -> None:
    moments = iter([SENT_AT, SENT_AT + timedelta(milliseconds=300), SENT_AT + timedelta(seconds=2)])
    clock: Callable[[], datetime] = lambda: next(moments)  # noqa: E731
    compiled = CompiledDigest.compile(
        make_settings(),
        subject="s",
        html="<p>x</p>",
        text="x",
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
        clock=clock,
    )
    dates = [str(parse(compiled.assemble(recipient("A")))["Date"]) for _ in range(3)]
    assert dates == [
        format_datetime(SENT_AT),
        format_datetime(SENT_AT),
        format_datetime(SENT_AT + timedelta(seconds=2)),
    ]


async def test_assembled_message_survives_smtp(
    settings: Settings, smtp_server: RecordingSmtpServer
) -> None:
    title = "Zoë's 大規模 paper"
    compiled = CompiledDigest.compile(
        settings,
        subject=f"Digest: {title}",
        html=digest_html(title),
        text=digest_text(title),
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
    )
    people = [recipient("Zoë Ægir", email_address="zoe@example.org"), recipient(CJK_NAME)]
    sent = [compiled.assemble(person) for person in people]
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_server.port) as client:
        for person, raw in zip(people, sent, strict=True):
            await client.sendmail(compiled.envelope_from, [person.email], raw)

    received = smtp_server.messages
    assert [m.rcpt_tos for m in received] == [["zoe@example.org"], ["reader@example.org"]]
    assert all(m.mail_from == "digest@news.example.org" for m in received)
    for got, raw in zip(received, sent, strict=True):
        # Lines starting with "." were dot-stuffed in transit and restored.
        assert got.raw == raw
        assert str(got.message["Subject"]) == f"Digest: {title}"
        html = got.message.get_body(preferencelist=("html",))
        assert html is not None
        assert ".a line starting with a dot" in html.get_content()
        assert one_click_url(got.message) in html.get_content()
    assert visible_header(received[0].raw, "To") == ["Zoë Ægir <zoe@example.org>"]


def test_a_subject_keeps_its_plain_words_readable_and_encodes_only_the_rest() -> None:
    from newsletter.core.headers import unstructured_header

    raw = unstructured_header("Subject", "Daily ML Papers — 27 Nov 2026: Sparse Models")
    assert raw.startswith(b"Subject: Daily ML Papers =?utf-8?b?")
    assert b" 27 Nov 2026: Sparse Models\r\n" in raw
    parsed = email.message_from_bytes(raw + b"\r\n", policy=email.policy.default)
    assert str(parsed["Subject"]) == "Daily ML Papers — 27 Nov 2026: Sparse Models"
