"""Hostile text through the real paths, judged on the raw bytes a real SMTP server received.

An attacker controls paper titles, summaries, author names and URLs (any
feed), and the name on a sign-up. None of it may add or change a header,
break the MIME structure, or carry a reader's personal link anywhere but to
`NEWSLETTER_BASE_URL`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import json
import sqlite3
from collections import Counter
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import jinja2
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine

from newsletter.core.mime import OutgoingMessage
from newsletter.core.resources import templates_path
from newsletter.core.settings import Settings
from newsletter.core.templating import make_template_environment
from newsletter.core.text import single_line
from newsletter.delivery.assemble import CompiledDigest, Recipient
from newsletter.delivery.connection import send_single_message
from newsletter.render import render_digest
from newsletter.values import PaperRecord, RankedPaper, new_link_marker
from subscribers.tokens import make_preferences_token, make_unsubscribe_token
from tests.support.cli import run_cli
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import running_app, send_queued_confirmations, web_settings

DAY = "2026-11-20"
BASE_URL = "https://news.example.org"
# Short enough to survive subject shortening; the decoded CR LF once became a real header.
REPLY_TO_ATTACK = "=?utf-8?q?Hi=0D=0AReply-To:_phish@evil.example?="
BODY_ATTACK = "=?utf-8?q?x=0D=0A=0D=0AVisit_http://evil.example?="
# The fixed placeholder of old renderings, plain and split by a bidi control.
PREFERENCES_LOOKALIKE = "NLPERSONALxPREFERENCESxURL"
UNSUBSCRIBE_SPLIT = "NLPERSONALx\u202aUNSUBSCRIBExURL"

DIGEST_HEADERS = Counter(
    {
        "from": 1,
        "to": 1,
        "subject": 1,
        "date": 1,
        "message-id": 1,
        "mime-version": 1,
        "list-id": 1,
        "list-unsubscribe": 1,
        "list-unsubscribe-post": 1,
        "content-type": 1,
    }
)
CONFIRMATION_HEADERS = Counter(
    {
        "from": 1,
        "to": 1,
        "subject": 1,
        "date": 1,
        "message-id": 1,
        "auto-submitted": 1,
        "mime-version": 1,
        "content-type": 1,
    }
)


def header_names(raw: bytes) -> Counter[str]:
    """How often each header appears in the raw message's header block."""
    block = raw.split(b"\r\n\r\n", 1)[0]
    names: Counter[str] = Counter()
    for line in block.split(b"\r\n"):
        assert len(line) <= 998, line[:80]
        assert line.isascii(), line[:80]
        if line[:1] not in (b" ", b"\t"):
            name, colon, _ = line.partition(b":")
            assert colon, f"not a header line: {line[:80]!r}"
            names[name.decode("ascii").lower()] += 1
    return names


def checked_message(raw: bytes, expected_headers: Counter[str]) -> EmailMessage:
    """The parsed message, after asserting its headers and MIME structure are ours alone."""
    assert header_names(raw) == expected_headers
    assert b"\r\n" in raw and raw.replace(b"\r\n", b"").count(b"\n") == 0, "bare LF on the wire"
    assert raw.replace(b"\r\n", b"").count(b"\r") == 0, "bare CR on the wire"
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert not message.defects and not any(part.defects for part in parts)
    return message


def display_name(raw: bytes, header: str = "To") -> str:
    """The display name of a mailbox header, decoded as RFC 2047 says.

    The email package's address parser keeps the folding space between two
    encoded-words of a phrase, which RFC 2047 (6.2) says to drop; mail clients
    drop it, so the test decodes the raw header the way they do.
    """
    block = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n ", " ")
    (line,) = [
        line for line in block.split("\r\n") if line.lower().startswith(header.lower() + ":")
    ]
    value = line.split(":", 1)[1].strip()
    if not value.endswith(">"):
        return ""
    phrase = value.rsplit("<", 1)[0].strip()
    if phrase.startswith('"'):
        return phrase[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return str(make_header(decode_header(phrase)))


def bodies(message: EmailMessage) -> list[str]:
    """The decoded text and HTML parts."""
    return [str(part.get_content()) for part in message.iter_parts()]


def assert_tokens_only_in_own_links(message: EmailMessage, key: str, secret: str) -> None:
    """Each personal token appears only right after our own unsubscribe/preferences path."""
    for token, path in (
        (make_unsubscribe_token(secret, key), "/unsubscribe/"),
        (make_preferences_token(secret, key), "/preferences/"),
    ):
        for body in bodies(message):
            start = body.find(token)
            assert start != -1, f"the {path} link is missing"
            while start != -1:
                prefix = BASE_URL + path
                assert body[start - len(prefix) : start] == prefix, body[start - 120 : start]
                before = body[start - len(prefix) - 1 : start - len(prefix)]
                assert before in ('"', " ", "\n", "<"), f"{path} link inside another URL"
                start = body.find(token, start + 1)


def hf_record(
    arxiv_id: str, title: str, upvotes: int, *, thumbnail: str | None = None, **paper: Any
) -> dict[str, Any]:
    """One Daily Papers record in the Hugging Face API shape (thumbnail at the top level)."""
    fields = {
        "id": arxiv_id,
        "title": title,
        "summary": "An abstract.",
        "authors": [{"name": "Ana Uno"}],
        "publishedAt": f"{DAY}T06:00:00.000Z",
        "upvotes": upvotes,
        **paper,
    }
    record = {"paper": fields, "title": title, "numComments": 0, "publishedAt": f"{DAY}T06:00Z"}
    if thumbnail is not None:
        record["thumbnail"] = thumbnail
    return record


def test_a_feed_cannot_forge_headers_or_reroute_personal_links(
    tmp_path: Path, smtp_server: RecordingSmtpServer
) -> None:
    env = {
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(smtp_server.port),
        "NEWSLETTER_SECRET_KEY": "hostile-test-secret",
        "NEWSLETTER_BASE_URL": BASE_URL,
        "NEWSLETTER_FROM_ADDRESS": "Daily ML Papers <digest@news.example.org>",
        "NEWSLETTER_SEND_RETRY_BASE_SECONDS": "0",
        "PATH": "/usr/bin:/bin",
    }
    records = [
        hf_record("2611.00001", REPLY_TO_ATTACK, 90),
        hf_record(
            "2611.00002",
            BODY_ATTACK,
            80,
            thumbnail=f"https://evil.example/pixel.png?{PREFERENCES_LOOKALIKE}",
            githubRepo=f"https://evil.example/{UNSUBSCRIBE_SPLIT}",
        ),
        hf_record(
            "2611.00003",
            f"Click {PREFERENCES_LOOKALIKE} or {UNSUBSCRIBE_SPLIT}",
            70,
            summary=f"See https://evil.example/?{PREFERENCES_LOOKALIKE}",
        ),
    ]
    feed = tmp_path / "papers.json"
    feed.write_text(json.dumps(records), encoding="utf-8")
    run_cli("ingest", "--file", str(feed), "--date", DAY, env=env)
    run_cli("subscribers", "add", "ada@example.org", "--name", BODY_ATTACK, "--confirmed", env=env)
    run_cli("send", "--date", DAY, env=env)

    (caught,) = smtp_server.messages
    message = checked_message(caught.raw, DIGEST_HEADERS)
    # The reader sees exactly the title the feed gave, encoded-word syntax and all.
    assert REPLY_TO_ATTACK in str(message["Subject"])
    assert message["Reply-To"] is None
    assert display_name(caught.raw) == BODY_ATTACK
    assert str(message["List-Unsubscribe"]).startswith(f"<{BASE_URL}/unsubscribe/")

    with sqlite3.connect(tmp_path / "cli.db") as connection:
        (key,) = connection.execute("SELECT key FROM subscribers").fetchone()
    assert_tokens_only_in_own_links(message, key, "hostile-test-secret")
    text, html = bodies(message)
    # The look-alikes stay inert text where the feed put them.
    assert f"https://evil.example/pixel.png?{PREFERENCES_LOOKALIKE}" in html
    assert f"https://evil.example/?{PREFERENCES_LOOKALIKE}" in text


async def test_a_sign_up_name_cannot_forge_the_confirmation_email(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    name = "=?utf-8?q?x=0D=0ASubject:_Urgent=0D=0A=0D=0AVisit_http://evil.example?="
    async with running_app(web_settings(settings), engine) as (_, client):
        response = await client.post("/subscribe", json={"email": "ada@example.org", "name": name})
        await send_queued_confirmations(settings, engine)
    assert response.status_code == 202
    (caught,) = smtp_server.messages
    message = checked_message(caught.raw, CONFIRMATION_HEADERS)
    assert message["Subject"] == f"Confirm your subscription to {settings.list_name}"
    assert display_name(caught.raw) == name
    text, html = bodies(message)
    # Nothing of the name was decoded into the body either.
    assert "Visit http://evil.example" not in text + html
    assert "Subject: Urgent" not in text + html
    assert f"{BASE_URL}/confirm/" in text


# --- generated attacks ------------------------------------------------------------------

HOSTILE_PIECES = [
    "=?utf-8?q?",
    "=?UTF-8?B?",
    "=0D=0A",
    "=0A",
    "?=",
    "_Reply-To:_a@evil.example",
    "\r\n",
    "\r",
    "\n",
    "\r\nBcc: victim@example.net",
    "\r\n\r\n",
    "\x00",
    "\x0b",
    "\x1b[31m",
    "\x85",
    "\u2028",
    "\u2029",
    "\u202e",
    "\u2066",
    "\u200f",
    "\ud800",
    "\udfff",
    "\ufeff",
    "NLPERSONALx",
    "UNSUBSCRIBE",
    "PREFERENCES",
    "xURL",
    "{{ 7*7 }}",
    "{% raw %}",
    "<script>alert(1)</script>",
    "p < 0.05",
    '"',
    "'",
    "\\",
    "Subject: forged",
    "--",
    ".",
    "=_digest_",
    "Content-Type: text/html",
    "https://evil.example/",
    "山田",
    "Zoë",
    " ",
]
hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=4)), max_size=14
).map("".join)
hostile_url = st.one_of(
    hostile_text,
    hostile_text.map(lambda text: "https://evil.example/" + text),
    st.sampled_from(HOSTILE_PIECES).map(lambda piece: f"https://evil.example/?{piece}xURL"),
)


def _paper(arxiv_id: str, title: str, thumbnail: str, repo: str, author: str) -> PaperRecord:
    return PaperRecord(
        arxiv_id=arxiv_id,
        title=title,
        abstract=title,
        ai_summary=title,
        authors=(author, "Ana Uno"),
        thumbnail=thumbnail,
        github_repo=repo,
        project_page=repo,
        upvotes=5,
    )


def test_generated_hostile_text_never_reaches_a_header_or_a_personal_link(
    settings: Settings, smtp_server: RecordingSmtpServer
) -> None:
    template_env = make_template_environment(templates_path())
    settings = settings.model_copy(update={"reply_to": "Editors <editors@news.example.org>"})
    expected_headers = DIGEST_HEADERS + Counter({"reply-to": 1})
    key = "k" * 22

    @hypothesis_settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(title=hostile_text, name=hostile_text, url=hostile_url, author=hostile_text)
    def check(title: str, name: str, url: str, author: str) -> None:
        digest = _render(template_env, settings, title=title, url=url, author=author)
        compiled = CompiledDigest.compile(
            settings,
            subject=digest.subject,
            html=digest.html,
            text=digest.text,
            edition_date=digest.edition_date,
            link_marker=digest.link_marker,
        )
        raw = compiled.assemble(Recipient("ada@example.org", name, key, "<1.digest@x.org>"))
        before = len(smtp_server.messages)
        message = OutgoingMessage(compiled.envelope_from, "ada@example.org", raw)
        _send(settings, message)
        received = smtp_server.messages[before].raw
        parsed = checked_message(received, expected_headers)
        assert str(parsed["Subject"]) == single_line(digest.subject)
        assert display_name(received) == single_line(name)
        assert str(parsed["Reply-To"]) == "Editors <editors@news.example.org>"
        assert_tokens_only_in_own_links(parsed, key, settings.secret_key)

    check()


def _render(
    env: jinja2.Environment, settings: Settings, *, title: str, url: str, author: str
) -> Any:
    papers = [
        RankedPaper(_paper("2611.00001", title, url, url, author), score=2.0, position=1),
        RankedPaper(_paper("2611.00002", "Plain", url, url, title), score=1.0, position=2),
    ]
    return render_digest(
        env,
        papers,
        edition_date=dt.date(2026, 11, 20),
        base_url=settings.base_url,
        postal_address=settings.postal_address,
        list_name=settings.list_name,
        link_marker=new_link_marker(),
    )


def _send(settings: Settings, message: OutgoingMessage) -> None:
    asyncio.run(send_single_message(settings, message))
