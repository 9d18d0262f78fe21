"""Operator endpoints: the bearer token, queueing a send for workers, test copies and counts."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from newsletter.core.db import session_scope
from newsletter.core.settings import Settings
from newsletter.delivery.worker import run_worker
from newsletter.editions.content import get_edition
from subscribers.store import add_subscriber, remove_subscriber
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import ADMIN_TOKEN, running_app, store_papers, web_settings

DAY = dt.date(2026, 3, 6)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ADMIN_CALLS = [
    ("POST", f"/admin/editions/{DAY}/send", None),
    ("POST", f"/admin/editions/{DAY}/test-send", {"email": "op@example.org"}),
    ("GET", f"/admin/editions/{DAY}", None),
    ("GET", "/admin/subscribers", None),
    ("POST", f"/admin/editions/{DAY}/pause", None),
    ("POST", f"/admin/editions/{DAY}/resume", None),
    ("POST", f"/admin/editions/{DAY}/cancel", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_admin_is_404_without_a_configured_token(
    settings: Settings, engine: Engine, method: str, path: str, body: object
) -> None:
    no_token = web_settings(settings, admin_token=None)
    async with running_app(no_token, engine) as (_, client):
        answer = await client.request(method, path, json=body, headers=AUTH)
        empty = await client.request(method, path, json=body, headers={"Authorization": "Bearer "})
    assert answer.status_code == 404 and empty.status_code == 404


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_admin_is_401_with_a_wrong_or_missing_token(
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    method: str,
    path: str,
    body: object,
) -> None:
    store_papers(engine, DAY)
    async with running_app(web_settings(settings), engine) as (_, client):
        for headers in (
            {},
            {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
            {"Authorization": f"Basic {ADMIN_TOKEN}"},
            {"Authorization": ADMIN_TOKEN},
        ):
            answer = await client.request(method, path, json=body, headers=headers)
            assert answer.status_code == 401, headers
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "NEWSLETTER_ADMIN_TOKEN" in answer.json()["detail"]
    assert get_edition(engine, DAY) is None  # refused before anything was prepared
    assert smtp_server.messages == []


async def test_subscriber_counts_by_status(settings: Settings, engine: Engine) -> None:
    with session_scope(engine) as session:
        add_subscriber(session, email="a@example.org", confirmed=True)
        add_subscriber(session, email="b@example.org", confirmed=True)
        add_subscriber(session, email="c@example.org")
        remove_subscriber(session, email="b@example.org")
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.get("/admin/subscribers", headers=AUTH)
    assert answer.status_code == 200
    assert answer.json() == {
        "counts": {
            "pending": 1,
            "confirmed": 1,
            "unsubscribed": 1,
            "bounced": 0,
            "complained": 0,
        },
        "total": 3,
        "suppressed": {"bounced": 0, "complained": 0, "erased": 0, "operator": 0},
        "confirmed_but_suppressed": 0,
        "confirmations_queued": 0,  # the pending one was added by an operator, never asked
    }


async def test_send_queues_once_and_a_worker_delivers_it(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    store_papers(engine, DAY)
    with session_scope(engine) as session:
        for n in range(3):
            add_subscriber(session, email=f"reader{n}@example.org", confirmed=True)
    async with running_app(web_settings(settings), engine) as (_, client):
        first = await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
        second = await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
        assert smtp_server.messages == []  # the web only queued it
        report = await run_worker(web_settings(settings), engine)
        status = await client.get(first.json()["status_url"], headers=AUTH)
        again = await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
    assert sorted(smtp_server.handler.recipients()) == [f"reader{n}@example.org" for n in range(3)]
    assert report.sent == 3
    assert first.status_code == 202
    assert first.json()["status_url"] == f"{settings.base_url}/admin/editions/{DAY}"
    assert first.headers["location"] == first.json()["status_url"]
    assert first.json()["status"] == "sending"
    assert first.json()["deliveries"] == {
        "queued": 3,
        "sent": 0,
        "failed": 0,
        "bounced": 0,
        "skipped": 0,
        "complained": 0,
    }
    assert second.status_code == 409
    assert second.json()["status_url"] == first.json()["status_url"]
    assert "being sent already" in second.json()["detail"]
    assert second.json()["deliveries"]["queued"] == 3  # nobody queued twice
    body = status.json()
    assert status.status_code == 200
    assert body["status"] == "sent"
    assert body["deliveries"] == {
        "queued": 0,
        "sent": 3,
        "failed": 0,
        "bounced": 0,
        "skipped": 0,
        "complained": 0,
    }
    assert body["unsubscribed_since"] == 0
    assert body["send_started_at"] and body["send_finished_at"]
    assert again.status_code == 409 and "sent already" in again.json()["detail"]


async def test_status_counts_unsubscribes_since_the_send(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    store_papers(engine, DAY)
    with session_scope(engine) as session:
        add_subscriber(session, email="stays@example.org", confirmed=True)
        add_subscriber(session, email="leaves@example.org", confirmed=True)
    async with running_app(web_settings(settings), engine) as (_, client):
        await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
        await run_worker(settings, engine)
        with session_scope(engine) as session:
            remove_subscriber(session, email="leaves@example.org")
        status = await client.get(f"/admin/editions/{DAY}", headers=AUTH)
    assert status.json()["unsubscribed_since"] == 1
    assert status.json()["deliveries"]["sent"] == 2


async def test_test_send_delivers_one_marked_copy(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    store_papers(engine, DAY)
    with session_scope(engine) as session:
        add_subscriber(session, email="reader@example.org", confirmed=True)
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.post(
            f"/admin/editions/{DAY}/test-send", json={"email": "op@example.org"}, headers=AUTH
        )
        refused = await client.post(
            f"/admin/editions/{DAY}/test-send", json={"email": "nope"}, headers=AUTH
        )
        status = await client.get(f"/admin/editions/{DAY}", headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["is_test"] is True and answer.json()["status"] == "sent"
    assert smtp_server.handler.recipients() == ["op@example.org"]
    assert refused.status_code == 422 and "not a valid email address" in refused.json()["detail"]
    assert status.json()["test_sends"] == 1
    assert status.json()["deliveries"]["sent"] == 0


async def test_missing_editions_and_bad_dates_are_clear(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        no_papers = await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
        no_edition = await client.get(f"/admin/editions/{DAY}", headers=AUTH)
        no_copy = await client.post(
            f"/admin/editions/{DAY}/test-send", json={"email": "op@example.org"}, headers=AUTH
        )
        bad_date = await client.post("/admin/editions/2026-13-45/send", headers=AUTH)
        not_date = await client.get("/admin/editions/yesterday", headers=AUTH)
    assert no_papers.status_code == 404 and "no papers" in no_papers.json()["detail"]
    assert no_edition.status_code == 404 and DAY.isoformat() in no_edition.json()["detail"]
    assert no_copy.status_code == 404
    for answer in (bad_date, not_date):
        assert answer.status_code == 422
        assert "day" in answer.json()["detail"] and "date" in answer.json()["detail"]
    assert smtp_server.messages == []


async def test_pause_resume_and_cancel_over_http(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    store_papers(engine, DAY)
    with session_scope(engine) as session:
        for n in range(10):
            add_subscriber(session, email=f"reader{n}@example.org", confirmed=True)
    async with running_app(web_settings(settings), engine) as (_, client):
        refused = await client.post(f"/admin/editions/{DAY}/pause", headers=AUTH)
        assert refused.status_code == 404  # nothing prepared yet, nothing to pause
        await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
        paused = await client.post(f"/admin/editions/{DAY}/pause", headers=AUTH)
        send_paused = await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
        while_paused = await run_worker(settings, engine)  # finds nothing it may send
        resumed = await client.post(f"/admin/editions/{DAY}/resume", headers=AUTH)
        resumed_again = await client.post(f"/admin/editions/{DAY}/resume", headers=AUTH)
        await run_worker(settings, engine)
        status = await client.get(f"/admin/editions/{DAY}", headers=AUTH)
        too_late = await client.post(f"/admin/editions/{DAY}/cancel", headers=AUTH)
        not_paused = await client.post(f"/admin/editions/{DAY}/resume", headers=AUTH)
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    assert paused.json()["status_reason"] == "paused by operator over HTTP"
    assert send_paused.status_code == 409 and "/resume" in send_paused.json()["detail"]
    assert while_paused.sent == 0
    assert resumed.status_code == 202 and resumed_again.status_code == 202
    assert resumed.json()["status"] == "sending"
    assert resumed.headers["location"] == f"{settings.base_url}/admin/editions/{DAY}"
    assert resumed.json()["deliveries"]["queued"] == 10
    assert sorted(smtp_server.handler.recipients()) == sorted(
        f"reader{n}@example.org" for n in range(10)
    )
    assert status.json()["status"] == "sent"
    assert status.json()["deliveries"]["sent"] == 10
    assert too_late.status_code == 409
    assert "sent already" in too_late.json()["detail"]
    assert not_paused.status_code == 409


async def test_a_cancelled_edition_stays_cancelled(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    store_papers(engine, DAY)
    with session_scope(engine) as session:
        for n in range(4):
            add_subscriber(session, email=f"reader{n}@example.org", confirmed=True)
    async with running_app(web_settings(settings), engine) as (_, client):
        await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
        cancelled = await client.post(f"/admin/editions/{DAY}/cancel", headers=AUTH)
        report = await run_worker(settings, engine)
        send_again = await client.post(f"/admin/editions/{DAY}/send", headers=AUTH)
        resume = await client.post(f"/admin/editions/{DAY}/resume", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["deliveries"] == {
        "queued": 0,
        "sent": 0,
        "failed": 4,
        "bounced": 0,
        "skipped": 0,
        "complained": 0,
    }
    assert report.sent == 0 and smtp_server.messages == []
    assert send_again.status_code == 409 and "cancelled" in send_again.json()["detail"]
    assert resume.status_code == 409 and "cancelled" in resume.json()["detail"]
