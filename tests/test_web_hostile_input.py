"""Hostile bodies and text on every endpoint that reads one: always a 4xx, never a 5xx.

The fuzzing tests drive a real uvicorn with hypothesis-generated bodies (deep
nesting, lone surrogates, control and bidi characters, huge strings, raw
bytes); the others pin down where such text may end up: stored names, the
confirmation's headers, the Atom feed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

import httpx
import hypothesis
import hypothesis.strategies as st
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from newsletter.core.clock import utc_now
from newsletter.core.db import session_scope
from newsletter.core.settings import Settings
from newsletter.core.text import BIDI_CONTROLS, CONTROL_CHARACTERS, XML_INVALID
from newsletter.models import Edition, EditionPaper, EditionStatus, Paper
from newsletter.web.app import create_app
from subscribers.store import add_subscriber
from subscribers.tokens import (
    make_confirm_token,
    make_feedback_token,
    make_preferences_token,
    make_unsubscribe_token,
)
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
    ADMIN_TOKEN,
    live_server,
    running_app,
    send_queued_confirmations,
    subscriber,
    web_settings,
)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
FUZZ = hypothesis.settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)

HOSTILE_CHARACTERS = [
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "\udc80",  # what surrogateescape makes of a stray byte
    "\x00",
    "\x1b",
    "\r",
    "\n",
    "\x85",  # NEL, a C1 line break
    "\u2028",
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\ufeff",
    "\ufffe",
    "\uffff",
    "\U0010ffff",
    '"',
    "\\",
    "<",
    ">",
    "@",
    "+",
]
hostile_text = st.one_of(
    st.text(
        st.one_of(
            st.sampled_from(HOSTILE_CHARACTERS),
            st.characters(categories=["L", "N", "P", "S", "Zs", "Cc", "Cf", "Cs"]),
        ),
        max_size=30,
    ),
    # Huge strings, cheaper to build than to draw character by character.
    st.builds(
        lambda piece, count: piece * count,
        st.sampled_from(["a", "\ud800", "\u202e", "é", "\x00"]),
        st.integers(500, 6_000),  # around the 16 KiB and 4 KiB body limits, once escaped
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=10,
)
email_like = st.one_of(
    st.just("reader@example.org"),
    hostile_text,
    st.builds(lambda local: f"{local}@example.org", hostile_text),
    st.builds(lambda domain: f"reader@{domain}.org", hostile_text),
)
sign_up_objects = st.fixed_dictionaries(
    {"email": email_like},
    optional={
        "name": st.one_of(hostile_text, json_values),
        "topics": st.one_of(st.lists(hostile_text, max_size=5), json_values),
        "website": st.one_of(st.just(""), json_values),
        "\ud800": json_values,
    },
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"email": "reader@example.org", "topics": ' + _nested(depth, "list") + b"}"


deeply_nested = st.builds(
    _nested, st.integers(1, 8_000), st.sampled_from(["list", "object", "in-a-field"])
)
json_bodies = st.one_of(
    # json.dumps writes a lone surrogate as the escape "\ud800": valid JSON text.
    sign_up_objects.map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    deeply_nested,
    st.binary(max_size=300),
)


def _urlencode(pairs: list[tuple[str, str]]) -> bytes:
    # surrogatepass: a lone surrogate goes out as the bytes ED A0 80, as a hostile client may send.
    return "&".join(
        f"{quote(key, encoding='utf-8', errors='surrogatepass')}="
        f"{quote(value, encoding='utf-8', errors='surrogatepass')}"
        for key, value in pairs
    ).encode("ascii")


form_bodies = st.one_of(
    st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(["email", "name", "topics", "website", "action"]), hostile_text
            ),
            st.one_of(
                st.sampled_from(["reader@example.org", "save", "pause", "LLMs"]), hostile_text
            ),
        ),
        max_size=8,
    ).map(_urlencode),
    st.binary(max_size=300),
)


def _tokens(settings: Settings, engine: Engine) -> dict[str, str]:
    with session_scope(engine) as session:
        reader = add_subscriber(session, email="fuzzed@example.org", confirmed=True)
        key = reader.key
        session.add(Paper(arxiv_id="2603.05001", title="A paper", sources=["hf"]))
    return {
        "feedback": make_feedback_token(settings.secret_key, key, "2603.05001", "less"),
        "preferences": make_preferences_token(settings.secret_key, key),
        "unsubscribe": make_unsubscribe_token(settings.secret_key, key),
        "confirm": make_confirm_token(settings.secret_key, key, issued_at=utc_now()),
    }


def _fuzz_settings(settings: Settings) -> Settings:
    return web_settings(settings, signup_rate_limit=1_000_000)


def test_hostile_json_bodies_never_get_a_5xx(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = _fuzz_settings(settings)
    tokens = _tokens(config, engine)
    targets = [
        "/subscribe",
        "/admin/editions/2026-03-05/test-send",
        f"/preferences/{tokens['preferences']}",
        f"/unsubscribe/{tokens['unsubscribe']}",
        f"/confirm/{tokens['confirm']}",
        f"/feedback/{tokens['feedback']}",
        f"/feedback/{tokens['feedback']}/undo",
        f"/preferences/{tokens['preferences']}/papers",
    ]
    with (
        live_server(create_app(config, engine=engine)) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):

        @FUZZ
        @hypothesis.given(body=json_bodies, target=st.sampled_from(targets))
        def never_5xx(body: bytes, target: str) -> None:
            response = client.post(target, content=body, headers={**JSON, **AUTH})
            assert response.status_code < 500, (target, body[:300], response.text[:300])

        never_5xx()


def test_hostile_form_bodies_never_get_a_5xx(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = _fuzz_settings(settings)
    tokens = _tokens(config, engine)
    targets = [
        "/subscribe",
        f"/preferences/{tokens['preferences']}",
        f"/preferences/{tokens['preferences']}/papers",
        f"/feedback/{tokens['feedback']}",
        f"/feedback/{tokens['feedback']}/undo",
    ]
    content_types = [FORM["content-type"], "multipart/form-data; boundary=x", "text/plain"]
    with (
        live_server(create_app(config, engine=engine)) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):

        @FUZZ
        @hypothesis.given(
            body=form_bodies,
            target=st.sampled_from(targets),
            content_type=st.sampled_from(content_types),
        )
        def never_5xx(body: bytes, target: str, content_type: str) -> None:
            response = client.post(target, content=body, headers={"content-type": content_type})
            assert response.status_code < 500, (target, body[:300], response.text[:300])

        never_5xx()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b'{"email": "a@b.org", "topics": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    ],
    ids=["array", "object", "inside-a-field"],
)
def test_a_few_kb_of_nesting_gets_a_4xx_and_the_connection_lives_on(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, body: bytes
) -> None:
    config = _fuzz_settings(settings)
    with (
        live_server(create_app(config, engine=engine)) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        refused = client.post("/subscribe", content=body, headers=JSON)
        test_send = client.post(
            "/admin/editions/2026-03-05/test-send", content=body, headers={**JSON, **AUTH}
        )
        after = client.get("/")  # the same kept-alive connection still works
    assert refused.status_code == 422, refused.text
    assert "nests too deeply" in refused.json()["detail"]
    assert 400 <= test_send.status_code < 500, test_send.text
    assert after.status_code == 200
    assert smtp_server.messages == []


@pytest.mark.parametrize("field", ["name", "email", "website", "topics"])
async def test_a_lone_surrogate_escape_gets_a_4xx(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, field: str
) -> None:
    value: Any = ["\ud800"] if field == "topics" else "\ud800"
    body = json.dumps({"email": "a@b.org", field: value})
    assert "\\ud800" in body  # sent as JSON text with the escape
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.post("/subscribe", content=body.encode(), headers=JSON)
        test_send = await client.post(
            "/admin/editions/2026-03-05/test-send",
            content=json.dumps({"email": "a\ud800@b.org"}).encode(),
            headers={**JSON, **AUTH},
        )
    assert answer.status_code == 422, answer.text
    assert test_send.status_code == 422, test_send.text
    assert smtp_server.messages == []
    assert subscriber(engine, "a@b.org") is None


HOSTILE_NAME = "\u202eAda\x00 \x1b[31m\u2066Love\u2069lace\u2028\ufeff\ufffe"
CLEAN_NAME = "Ada [31mLovelace \ufeff"


async def test_names_lose_controls_and_bidi_overrides_on_every_path(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        as_json = await client.post(
            "/subscribe", json={"email": "json@example.org", "name": HOSTILE_NAME}
        )
        as_form = await client.post(
            "/subscribe", data={"email": "form@example.org", "name": HOSTILE_NAME}
        )
        await send_queued_confirmations(settings, engine)
        with session_scope(engine) as session:
            key = add_subscriber(session, email="prefs@example.org", confirmed=True).key
        token = make_preferences_token(settings.secret_key, key)
        saved = await client.post(
            f"/preferences/{token}", data={"action": "save", "name": HOSTILE_NAME}
        )
    assert as_json.status_code == 202 and as_form.status_code == 200
    assert saved.status_code == 200
    for address in ("json@example.org", "form@example.org", "prefs@example.org"):
        stored = subscriber(engine, address)
        assert stored is not None
        assert stored.name is not None
        assert not BIDI_CONTROLS.search(stored.name)
        assert not CONTROL_CHARACTERS.search(stored.name)
        assert not XML_INVALID.search(stored.name)
        assert stored.name == CLEAN_NAME
    assert len(smtp_server.messages) == 2
    for caught in smtp_server.messages:
        to = caught.message["To"]
        assert "Ada [31mLovelace" in to
        assert "\u202e" not in to and "\u2066" not in to and "\x1b" not in to


def test_a_name_with_a_lone_surrogate_can_be_stored(engine: Engine) -> None:
    # `newsletter subscribers add --name` gets a stray byte of argv as "\udcff".
    with session_scope(engine) as session:
        add_subscriber(session, email="argv@example.org", name="Grace\udcff Hopper")
    stored = subscriber(engine, "argv@example.org")
    assert stored is not None and stored.name == "Grace Hopper"


@pytest.mark.parametrize(
    "address", ["a\ud800@example.org", "a@exa\u202emple.org", "\u2066a@example.org"]
)
def test_addresses_with_surrogates_or_bidi_controls_are_refused(
    engine: Engine, address: str
) -> None:
    from newsletter.core.errors import InvalidEmailError

    with session_scope(engine) as session, pytest.raises(InvalidEmailError):
        add_subscriber(session, email=address)


async def test_the_atom_feed_stays_well_formed_whatever_the_stored_text(
    settings: Settings, engine: Engine
) -> None:
    with Session(engine) as session:
        edition = Edition(
            date=dt.date(2026, 3, 5),
            status=EditionStatus.SENT,
            subject="Top \x0bpaper:\u202e txt.exe\x01 \ufffe",
            html="<p>x</p>",
            send_started_at=dt.datetime(2026, 3, 5, 7, tzinfo=dt.UTC),
        )
        # A paper stored by an earlier version, before text was cleaned at ingest.
        paper = Paper(
            arxiv_id="2603.00001",
            title="Line one\x01\nLine two \x1b and \uffff",
            abstract="An abstract \x1b with \ufffe in it.",
            daily_date=dt.date(2026, 3, 5),
        )
        session.add_all([edition, paper])
        session.flush()
        assert edition.id is not None and paper.id is not None
        session.add(EditionPaper(edition_id=edition.id, paper_id=paper.id, position=1, score=1.0))
        session.commit()
    config = web_settings(settings, list_name="Daily \x07ML\u202e Papers")
    async with running_app(config, engine) as (_, client):
        response = await client.get("/editions/feed.xml")
    assert response.status_code == 200
    root = ET.fromstring(response.content)  # raises on any character XML forbids
    atom = "{http://www.w3.org/2005/Atom}"
    entry = root.find(f"{atom}entry")
    assert entry is not None
    assert entry.findtext(f"{atom}title") == "Top paper: txt.exe"
    assert root.findtext(f"{atom}title") == "Daily ML Papers"
    content = entry.findtext(f"{atom}content") or ""
    assert "Line one" in content and "\x01" not in content and "\uffff" not in content
