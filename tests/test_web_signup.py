"""Sign-up over the form and JSON paths: one confirmation email, same answers, every refusal."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from newsletter.settings import Settings
from subscribers.models import SubscriberStatus
from tests.smtp_server import RecordingSmtpServer
from tests.web_support import html_text, running_app, subscriber, web_settings


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
