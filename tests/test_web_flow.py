"""The issue's "done when", end to end in-process: join, confirm, receive, leave in one click."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import Engine

from newsletter.core.settings import Settings
from newsletter.delivery.worker import run_worker, send_edition
from newsletter.editions.content import prepare_edition
from subscribers.models import SubscriberStatus
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
    ADMIN_TOKEN,
    confirmation_path,
    html_text,
    running_app,
    send_queued_confirmations,
    snapshot,
    store_papers,
    subscriber,
    web_settings,
)

FIRST_DAY = dt.date(2026, 3, 5)
NEXT_DAY = dt.date(2026, 3, 6)


async def test_join_confirm_receive_and_leave_with_one_click(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = web_settings(settings)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with running_app(config, engine) as (_, client):
        signed_up = await client.post(
            "/subscribe", data={"email": "reader@example.org", "topics": ["LLMs"]}
        )
        assert signed_up.status_code == 200
        assert smtp_server.messages == []  # queued with the sign-up: a worker sends it
        assert (await send_queued_confirmations(config, engine)).sent == 1
        assert len(smtp_server.messages) == 1
        path = confirmation_path(smtp_server)
        before = snapshot(engine)
        assert (await client.get(path)).status_code == 200
        assert snapshot(engine) == before
        assert (await client.post(path)).status_code == 200

        store_papers(engine, FIRST_DAY)
        started = await client.post(f"/admin/editions/{FIRST_DAY}/send", headers=auth)
        assert started.status_code == 202
        assert smtp_server.messages[1:] == []  # queued: a worker sends it
        await run_worker(config, engine)
        digests = [m for m in smtp_server.messages if m.message["List-Unsubscribe"]]
        assert [m.rcpt_tos for m in digests] == [["reader@example.org"]]
        digest = digests[0].message
        assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        match = re.search(
            r"<https://news\.example\.org(/unsubscribe/[^>]+)>", digest["List-Unsubscribe"]
        )
        assert match, digest["List-Unsubscribe"]

        text, _ = html_text(digest)
        # A personal reader's "View in browser" is their own copy of the day.
        view_url = re.search(r"https://news\.example\.org(/view/[A-Za-z0-9_.-]+)", text)
        assert view_url and f".{FIRST_DAY:%Y%m%d}." in view_url.group(1)
        web_copy = await client.get(view_url.group(1))
        assert web_copy.status_code == 200
        # Their own copy carries their own links (the public page carries none).
        assert match.group(1) in web_copy.text
        assert "NLPERSONAL" not in web_copy.text

        left = await client.post(
            match.group(1),
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert left.status_code == 200
        stored = subscriber(engine, "reader@example.org")
        assert stored is not None and stored.status == SubscriberStatus.UNSUBSCRIBED

    store_papers(engine, NEXT_DAY)
    before_next = len(smtp_server.messages)
    prepare_edition(config, engine, day=NEXT_DAY)
    report = await send_edition(config, engine, edition_date=NEXT_DAY)
    assert report.sent == 0
    assert len(smtp_server.messages) == before_next
