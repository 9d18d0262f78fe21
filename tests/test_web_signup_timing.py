"""A sign-up's answer cannot tell a new address from a known one: same answer, same work before it.

No clock is read here: the tests check the structure that makes the timing
equal (before the answer, one and the same insert whatever the address, and
no email; a database that cannot take it gives every address the same 503).
`benchmarks/signup_timing.py` measures it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
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
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
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
        words = args[2].split()
        # The verb, with its table for writes ("INSERT INTO subscribers").
        verb = words[0].upper()
        table = words[2] if verb in ("INSERT", "DELETE") and len(words) > 2 else ""
        shown = f"{verb} {words[1].upper()} {table}" if table else verb
        log.append(("sql", shown))

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
async def test_one_and_the_same_insert_and_no_email_before_the_answer_whatever_the_address(
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

    before: dict[str, list[tuple[str, str]]] = {}
    after: dict[str, list[tuple[str, str]]] = {}
    for kind, events in per_kind.items():
        answered = events.index(("answered", "/subscribe"))
        before[kind], after[kind] = events[:answered], events[answered + 1 :]
    # Before the answer: the sign-up received (subscribers.received), the same for all.
    assert before == {key: [("sql", "INSERT INTO received_signups")] for key in KINDS}
    # The work after the answer does differ (that is what had to leave the request).
    assert after["new"].count(("sql", "INSERT INTO subscribers")) == 1
    assert after["new"].count(("sql", "INSERT INTO confirmation_queue")) == 1
    # A confirmed reader: the one INSERT finds the address there, and nothing changes.
    assert after["confirmed"].count(("sql", "INSERT INTO subscribers")) == 1
    assert not any(verb.startswith("UPDATE") for _, verb in after["confirmed"])
    # Once recorded, the received row is gone, in every case.
    assert all(("sql", "DELETE FROM received_signups") in events for events in after.values())
    # No email at all in the request: the sign-up queued it, and a worker sends it.
    assert all(name != "smtp" for events in per_kind.values() for name, _ in events)
    assert ("smtp", "new@example.org") in sent_later
    first = answers["new"]
    for kind in KINDS:
        answer = answers[kind]
        assert answer.status_code == first.status_code
        assert answer.content == first.content
        assert sorted(answer.headers.items()) == sorted(first.headers.items())


def test_a_database_that_cannot_take_the_sign_up_answers_every_address_alike(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    # The answer now waits for the received row: if it cannot be written, the
    # visitor is told to come back (nothing was taken), whoever they are.
    _seed(engine)

    def refuse(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO received_signups"):
            raise sqlite3.OperationalError("database is locked")

    config = web_settings(settings)
    event.listen(engine, "before_cursor_execute", refuse)
    try:
        with live_server(create_app(config, engine=engine)) as base_url:
            answers = {}
            for kind in KINDS:
                with httpx.Client(base_url=base_url, timeout=10) as client:
                    answers[kind] = client.post("/subscribe", json={"email": f"{kind}@example.org"})
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    first = answers["new"]
    assert first.status_code == 503
    assert first.headers["retry-after"] == "60"
    assert "try again in a minute" in first.json()["detail"]
    for kind in KINDS:
        assert (answers[kind].status_code, answers[kind].content) == (503, first.content)
    assert subscriber(engine, "new@example.org") is None  # nothing half-done
    assert smtp_server.handler.messages == []
