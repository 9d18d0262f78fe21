"""A sign-up's answer cannot tell a new address from a known one: same answer, same work before it.

No clock is read here: the tests check the structure that makes the timing
equal (no query and no email before the answer is complete; a locked database
does not hold the answer back). `benchmarks/signup_timing.py` measures it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event
from starlette.types import Message, Receive, Scope, Send

from newsletter.core.db import session_scope
from newsletter.core.settings import Settings
from newsletter.web.app import create_app
from subscribers import store
from subscribers.models import SubscriberStatus
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
    confirmation_worker,
    live_server,
    send_queued_confirmations,
    subscriber,
    web_settings,
)

KINDS = ("new", "pending", "confirmed", "unsubscribed")


def _seed(engine: Engine) -> None:
    with session_scope(engine) as session:
        store.add_subscriber(session, email="confirmed@example.org", confirmed=True)
        store.add_subscriber(session, email="unsubscribed@example.org", confirmed=True)
        store.remove_subscriber(session, email="unsubscribed@example.org")
        pending = store.add_subscriber(session, email="pending@example.org")
        pending.confirmation_sent_at = dt.datetime.now(dt.UTC)


@contextmanager
def _statements(engine: Engine, log: list[tuple[str, str]]) -> Iterator[None]:
    def record(*args: Any) -> None:
        log.append(("sql", args[2].split()[0].upper()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", record)


class AnswerRecorder:
    """ASGI wrapper noting in the shared log when the answer's last byte went out."""

    def __init__(self, app: Any, log: list[tuple[str, str]]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def noting_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.log.append(("answered", scope["path"]))

        await self.app(scope, receive, noting_send)


@pytest.mark.parametrize("as_form", [False, True], ids=["json", "form"])
async def test_no_query_and_no_email_before_the_answer_whatever_the_address(
    settings: Settings, engine: Engine, as_form: bool
) -> None:
    _seed(engine)
    log: list[tuple[str, str]] = []

    def note_smtp(stage: str, address: str, attempt: int) -> None:
        log.append(("smtp", address))

    answers: dict[str, httpx.Response] = {}
    per_kind: dict[str, list[tuple[str, str]]] = {}
    with RecordingSmtpServer(fault=note_smtp) as smtp:
        config = web_settings(settings, smtp_port=smtp.port)
        app = create_app(config, engine=engine)
        transport = httpx.ASGITransport(app=AnswerRecorder(app, log), client=("203.0.113.7", 1))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url=config.base_url) as client,
        ):
            with _statements(engine, log):
                for kind in KINDS:
                    log.clear()
                    body = {"email": f"{kind}@example.org", "name": "Same Name"}
                    answers[kind] = (
                        await client.post("/subscribe", data=body)
                        if as_form
                        else await client.post("/subscribe", json=body)
                    )
                    per_kind[kind] = list(log)
            log.clear()
            await send_queued_confirmations(config, engine)  # what a worker does next
            sent_later = list(log)

    for kind, events in per_kind.items():
        answered = events.index(("answered", "/subscribe"))
        assert events[:answered] == [], (kind, events)  # nothing before the answer
    # The work after the answer does differ (that is what had to leave the request).
    assert per_kind["new"].count(("sql", "INSERT")) == 2  # the reader and the queued email
    # A confirmed reader: the one INSERT finds the address there, and nothing changes.
    assert per_kind["confirmed"].count(("sql", "INSERT")) == 1
    assert ("sql", "UPDATE") not in per_kind["confirmed"]
    # No email at all in the request: the sign-up queued it, and a worker sends it.
    assert all(name != "smtp" for events in per_kind.values() for name, _ in events)
    assert ("smtp", "new@example.org") in sent_later
    first = answers["new"]
    for kind in KINDS:
        answer = answers[kind]
        assert answer.status_code == first.status_code
        assert answer.content == first.content
        assert sorted(answer.headers.items()) == sorted(first.headers.items())


def test_a_locked_database_does_not_hold_back_any_answer(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, tmp_path: Any
) -> None:
    _seed(engine)
    delivered = threading.Event()
    original = smtp_server.handler.fault
    smtp_server.handler.fault = lambda stage, address, n: (
        delivered.set() if stage == "data" else None
    )
    database = settings.database_url.removeprefix("sqlite:///")
    config = web_settings(settings)
    with (
        live_server(create_app(config, engine=engine)) as base_url,
        confirmation_worker(config, engine),
    ):
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # no other connection can write until it ends
        try:
            codes = {}
            for kind in KINDS:
                # A connection each: a kept-alive one would wait for the last background task.
                with httpx.Client(base_url=base_url, timeout=10) as client:
                    codes[kind] = client.post(
                        "/subscribe", json={"email": f"{kind}@example.org"}
                    ).status_code
            assert not delivered.is_set()  # the sign-ups are still waiting for the database
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert delivered.wait(timeout=30)
    smtp_server.handler.fault = original
    assert codes == dict.fromkeys(KINDS, 202)
    stored = subscriber(engine, "new@example.org")
    assert stored is not None and stored.status == SubscriberStatus.PENDING
