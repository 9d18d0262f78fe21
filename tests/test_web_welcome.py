"""After confirming: a page that says what comes next and leads on, and a welcome email.

Through the real path: the sign-up form, the queued confirmation sent by the
worker's sender, the confirm button, then the queued welcome sent the same way.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter.core.settings import Settings
from newsletter.delivery.worker import send_edition
from newsletter.editions.content import prepare_edition
from newsletter.models import Edition, EditionStatus
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
    confirmation_path,
    html_text,
    running_app,
    send_queued_confirmations,
    store_papers,
    web_settings,
)

LATEST_DAY = dt.date(2026, 3, 5)


def _an_edition_went_out(settings: Settings, engine: Engine) -> None:
    """An edition sent at 07:00 UTC (to nobody yet): the latest one a newcomer can read."""
    store_papers(engine, LATEST_DAY)
    prepare_edition(settings, engine, day=LATEST_DAY)
    with Session(engine) as session:
        edition = session.exec(select(Edition).where(Edition.date == LATEST_DAY)).one()
        edition.status = EditionStatus.SENT
        edition.send_started_at = dt.datetime(2026, 3, 5, 7, 0, tzinfo=dt.UTC)
        session.add(edition)
        session.commit()


async def _join_and_confirm(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> str:
    """Sign up, receive the confirmation, press its button; the confirmed page's HTML."""
    async with running_app(settings, engine) as (_, client):
        signed_up = await client.post("/subscribe", data={"email": "new@example.org"})
        assert signed_up.status_code == 200
        assert (await send_queued_confirmations(settings, engine)).sent == 1
        confirmed = await client.post(confirmation_path(smtp_server))
        assert confirmed.status_code == 200
        return confirmed.text


async def test_the_confirmed_page_leads_to_the_preferences_and_the_latest_edition(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = web_settings(settings)
    _an_edition_went_out(config, engine)
    page = await _join_and_confirm(config, engine, smtp_server)

    assert "You are subscribed" in page
    assert "Digests go out once a day (the latest on 5 Mar 2026 at 07:00 UTC)" in page
    assert "yours start with the next one" in page
    assert re.search(r'<a href="/preferences/[^"]+">Choose your topics', page), page
    assert f'<a href="/editions/{LATEST_DAY}">Read the latest edition</a>' in page
    assert "welcome email is on its way" in page

    # The welcome went into the queue with the click; the worker's sender sends it.
    assert len(smtp_server.messages) == 1
    assert (await send_queued_confirmations(config, engine)).sent == 1
    welcome = smtp_server.messages[-1]
    assert welcome.rcpt_tos == ["new@example.org"]
    assert welcome.message["Subject"] == "Welcome to Daily ML Papers"
    text, html = html_text(welcome.message)
    assert "Digests go out once a day (the latest on 5 Mar 2026 at 07:00 UTC)" in text
    assert f"https://news.example.org/editions/{LATEST_DAY}" in text
    assert re.search(r"https://news\.example\.org/preferences/\S+", text)
    assert re.search(r"https://news\.example\.org/unsubscribe/\S+", text)
    assert f'href="https://news.example.org/editions/{LATEST_DAY}"' in html
    # Sent once: nothing is left in the queue.
    assert (await send_queued_confirmations(config, engine)).sent == 0


async def test_before_any_edition_the_page_and_the_welcome_say_the_first_is_yet_to_come(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = web_settings(settings)
    page = await _join_and_confirm(config, engine, smtp_server)
    assert "Your first digest comes with the first edition this list sends." in page
    assert "Read the latest edition" not in page
    assert (await send_queued_confirmations(config, engine)).sent == 1
    text, _ = html_text(smtp_server.messages[-1].message)
    assert "Your first digest comes with the first edition this list sends." in text
    assert "/editions/" not in text


async def test_no_welcome_for_a_reader_who_left_before_it_went_out(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = web_settings(settings)
    await _join_and_confirm(config, engine, smtp_server)
    async with running_app(config, engine) as (_, client):
        # The confirmation email has no unsubscribe link; the reader leaves from a digest.
        store_papers(engine, LATEST_DAY)
        prepare_edition(config, engine, day=LATEST_DAY)
        report = await send_edition(config, engine, edition_date=LATEST_DAY)
        assert report.sent == 1
        digest = smtp_server.messages[-1].message
        match = re.search(
            r"<https://news\.example\.org(/unsubscribe/[^>]+)>", digest["List-Unsubscribe"]
        )
        assert match
        left = await client.post(match.group(1))
        assert left.status_code == 200
    before = len(smtp_server.messages)
    sent = await send_queued_confirmations(config, engine)
    assert (sent.sent, sent.not_wanted) == (0, 1)
    assert len(smtp_server.messages) == before
