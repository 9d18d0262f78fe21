"""Sign-up over the form and JSON paths: one confirmation email, same answers, every refusal."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from sqlalchemy import Engine, text

from newsletter.core.db import session_scope
from newsletter.core.settings import Settings
from newsletter.core.templating import make_template_environment
from newsletter.delivery.confirmations import ConfirmationSender
from subscribers.models import SubscriberStatus
from subscribers.store import add_subscriber, remove_subscriber
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
    html_text,
    running_app,
    send_queued_confirmations,
    subscriber,
    web_settings,
)


async def test_signup_page_has_a_labelled_form_without_script(
    settings: Settings, engine: Engine
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        response = await client.get("/")
    assert response.status_code == 200
    page = response.text
    assert '<form method="post" action="/subscribe"' in page
    assert '<label for="email">' in page and 'id="email"' in page
    assert "<script" not in page
    for topic in settings.topics:
        assert f'value="{topic}"' in page
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_form_signup_sends_one_confirmation_email(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        response = await client.post(
            "/subscribe",
            data={"email": "Ada@Example.org", "name": "Ada", "topics": ["LLMs", "Robotics"]},
        )
        assert smtp_server.messages == []  # the request only queued it
        await send_queued_confirmations(web_settings(settings), engine)  # a worker's turn
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    assert len(smtp_server.messages) == 1
    caught = smtp_server.messages[0]
    assert caught.rcpt_tos == ["Ada@example.org"]
    message = caught.message
    assert message["Subject"] == f"Confirm your subscription to {settings.list_name}"
    assert message["Message-ID"].endswith("@news.example.org>")
    assert message["Date"]
    text, html = html_text(message)
    assert "https://news.example.org/confirm/" in text
    assert "https://news.example.org/confirm/" in html
    assert "Hello Ada" in text
    stored = subscriber(engine, "Ada@example.org")
    assert stored is not None
    assert stored.status == SubscriberStatus.PENDING
    assert stored.topics == ["LLMs", "Robotics"]


async def test_json_signup_answers_json(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        response = await client.post(
            "/subscribe", json={"email": "grace@example.org", "topics": ["diffusion"]}
        )
        await send_queued_confirmations(web_settings(settings), engine)  # a worker's turn
    assert response.status_code == 202
    assert response.json()["status"] == "check-your-inbox"
    assert smtp_server.handler.recipients() == ["grace@example.org"]
    stored = subscriber(engine, "grace@example.org")
    assert stored is not None and stored.topics == ["Diffusion"]


@pytest.mark.parametrize(
    "address",
    [
        "not-an-address",
        "two@@example.org",
        "",
        "a" * 250 + "@example.org",
        "ada@example.org\r\nBcc: x@y.z",
    ],
)
async def test_invalid_addresses_are_refused_on_both_paths(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, address: str
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        as_json = await client.post("/subscribe", json={"email": address})
        as_form = await client.post("/subscribe", data={"email": address})
    assert as_json.status_code == 422
    assert as_json.json()["field"] == "email"
    assert "Please check the email address" in as_json.json()["detail"]
    assert as_form.status_code == 422
    assert "Please check the email address" in as_form.text
    assert 'aria-invalid="true"' in as_form.text
    assert smtp_server.messages == []


async def test_honeypot_gets_the_ordinary_answer_and_nothing_happens(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        as_form = await client.post(
            "/subscribe", data={"email": "bot@example.org", "website": "http://spam.example"}
        )
        as_json = await client.post(
            "/subscribe", json={"email": "bot2@example.org", "website": "http://spam.example"}
        )
        genuine_json = await client.post("/subscribe", json={"email": "person@example.org"})
        await send_queued_confirmations(web_settings(settings), engine)  # a worker's turn
    assert as_form.status_code == 200 and "Check your inbox" in as_form.text
    assert as_json.status_code == 202 and as_json.json() == genuine_json.json()
    assert subscriber(engine, "bot@example.org") is None
    assert subscriber(engine, "bot2@example.org") is None
    assert smtp_server.handler.recipients() == ["person@example.org"]


@pytest.mark.parametrize("path", ["form", "json"])
async def test_floods_get_429_with_retry_after(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, path: str
) -> None:
    limited = web_settings(settings, signup_rate_limit=3, signup_rate_window_seconds=600)

    async def sign_up(client: httpx.AsyncClient, n: int) -> httpx.Response:
        body = {"email": f"flood{n}@example.org"}
        if path == "json":
            return await client.post("/subscribe", json=body)
        return await client.post("/subscribe", data=body)

    async with running_app(limited, engine) as (_, client):
        answers = [await sign_up(client, n) for n in range(4)]
    async with running_app(limited, engine, client_address="198.51.100.9") as (_, other):
        elsewhere = await other.post("/subscribe", json={"email": "other@example.org"})
        await send_queued_confirmations(limited, engine)
    codes = [answer.status_code for answer in answers]
    assert codes[:3] == ([200] * 3 if path == "form" else [202] * 3)
    refused = answers[3]
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 0 < retry_after <= 600
    assert "try again in about 10 minutes" in refused.text
    assert elsewhere.status_code == 202  # another client is not punished
    assert len(smtp_server.messages) == 4
    assert subscriber(engine, "flood3@example.org") is None


async def test_known_and_unknown_addresses_get_the_same_answer(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    with session_scope(engine) as session:
        add_subscriber(session, email="known@example.org", topics=["Theory"], confirmed=True)
    async with running_app(web_settings(settings), engine) as (_, client):
        unknown = await client.post("/subscribe", json={"email": "new@example.org"})
        known = await client.post(
            "/subscribe", json={"email": "KNOWN@example.org", "topics": ["LLMs"]}
        )
        unknown_form = await client.post("/subscribe", data={"email": "new2@example.org"})
        known_form = await client.post("/subscribe", data={"email": "known@example.org"})
        await send_queued_confirmations(web_settings(settings), engine)  # a worker's turn
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    assert known_form.status_code == unknown_form.status_code == 200
    assert known_form.text == unknown_form.text
    # A confirmed subscriber gets no email and a stranger cannot change their topics.
    assert sorted(smtp_server.handler.recipients()) == ["new2@example.org", "new@example.org"]
    stored = subscriber(engine, "known@example.org")
    assert stored is not None
    assert stored.status == SubscriberStatus.CONFIRMED and stored.topics == ["Theory"]


async def test_pending_address_gets_its_confirmation_again_at_most_once_per_interval(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        for _ in range(3):
            answer = await client.post("/subscribe", json={"email": "again@example.org"})
            assert answer.status_code == 202
        await send_queued_confirmations(web_settings(settings), engine)  # a worker's turn
    assert smtp_server.handler.recipients() == ["again@example.org"]

    no_interval = web_settings(settings, confirm_resend_interval_seconds=0)
    async with running_app(no_interval, engine) as (_, client):
        await client.post("/subscribe", json={"email": "again@example.org"})
        await send_queued_confirmations(no_interval, engine)
    assert smtp_server.handler.recipients() == ["again@example.org"] * 2


async def test_an_unsubscribed_address_must_confirm_again(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    with session_scope(engine) as session:
        add_subscriber(session, email="left@example.org", confirmed=True)
        remove_subscriber(session, email="left@example.org")
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.post("/subscribe", data={"email": "left@example.org"})
        await send_queued_confirmations(web_settings(settings), engine)  # a worker's turn
    assert answer.status_code == 200
    stored = subscriber(engine, "left@example.org")
    assert stored is not None and stored.status == SubscriberStatus.PENDING
    assert smtp_server.handler.recipients() == ["left@example.org"]


async def test_line_breaks_in_a_name_never_reach_a_header(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    name = "Ada\r\nBcc: victim@example.net\r\n\r\nInjected body"
    async with running_app(web_settings(settings), engine) as (_, client):
        as_form = await client.post("/subscribe", data={"email": "ada@example.org", "name": name})
        as_json = await client.post("/subscribe", json={"email": "bob@example.org", "name": name})
        await send_queued_confirmations(web_settings(settings), engine)  # a worker's turn
    assert as_form.status_code == 200 and as_json.status_code == 202
    assert len(smtp_server.messages) == 2
    for caught in smtp_server.messages:
        assert "victim@example.net" not in caught.rcpt_tos
        assert caught.message["Bcc"] is None
        to_header = caught.raw.split(b"\r\n\r\n", 1)[0].decode()
        assert "Ada Bcc: victim@example.net Injected body" in caught.message["To"]
        assert "\nBcc:" not in to_header
    stored = subscriber(engine, "ada@example.org")
    assert stored is not None and stored.name == "Ada Bcc: victim@example.net Injected body"


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "Ada <b>bold</b>"])
async def test_markup_in_a_name_is_refused_on_both_paths(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, name: str
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        as_form = await client.post("/subscribe", data={"email": "ada@example.org", "name": name})
        as_json = await client.post("/subscribe", json={"email": "ada@example.org", "name": name})
    assert as_json.status_code == 422
    assert as_json.json()["field"] == "name"
    assert as_form.status_code == 422
    assert "a name cannot contain &lt; or &gt;" in as_form.text
    assert "<script>" not in as_form.text
    assert name not in as_form.text  # echoed back escaped, never as markup
    assert smtp_server.messages == []
    assert subscriber(engine, "ada@example.org") is None


async def test_unknown_topics_and_bad_bodies_are_refused(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        topic_json = await client.post(
            "/subscribe", json={"email": "a@example.org", "topics": ["Astrology"]}
        )
        topic_form = await client.post(
            "/subscribe", data={"email": "a@example.org", "topics": "Astrology"}
        )
        not_json = await client.post(
            "/subscribe", content=b"{oops", headers={"content-type": "application/json"}
        )
        wrong_type = await client.post("/subscribe", json={"email": 42})
        no_body = await client.post(
            "/subscribe", content=b"email=a", headers={"content-type": "text/plain"}
        )
    assert topic_json.status_code == 422 and "Astrology" in topic_json.json()["detail"]
    assert topic_form.status_code == 422 and "unknown topic" in topic_form.text
    assert not_json.status_code == 422 and "not valid JSON" in not_json.json()["detail"]
    assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "email"
    assert no_body.status_code == 415
    assert smtp_server.messages == []


async def test_a_relay_that_is_down_delays_the_confirmation_without_losing_it(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    config = web_settings(settings)
    async with running_app(config, engine) as (_, client):
        answer = await client.post("/subscribe", json={"email": "unlucky@example.org"})
    assert answer.status_code == 202  # the visitor gets the usual answer

    unreachable = config.model_copy(update={"smtp_port": closed_port, "smtp_timeout_seconds": 5})
    env = make_template_environment(config.templates_dir)
    failed = await ConfirmationSender(unreachable, engine, env).run(
        stop=asyncio.Event(), stop_when_idle=True
    )
    assert (failed.retrying, failed.sent, failed.given_up) == (1, 0, 0)
    stored = subscriber(engine, "unlucky@example.org")
    assert stored is not None and stored.confirmation_sent_at is not None  # still claimed
    with engine.begin() as connection:  # the retry's time comes
        connection.execute(text("UPDATE confirmation_queue SET next_attempt_at = created_at"))

    assert (await send_queued_confirmations(config, engine)).sent == 1  # the relay is back
    assert smtp_server.handler.recipients() == ["unlucky@example.org"]
