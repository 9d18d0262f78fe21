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

    def committed(*_: Any) -> None:
        log.append(("sql", "COMMIT"))

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", committed)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", committed)


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
async def test_every_address_is_recorded_before_the_same_answer(
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
        # Every kind is committed before its answer, and nothing is left for after it.
        assert ("sql", "COMMIT") in events[:answered], (kind, events)
        assert events[answered + 1 :] == [], (kind, events)
    # What is written does differ (the email is queued only for the new address).
    assert per_kind["new"].count(("sql", "INSERT")) == 2  # the reader and the queued email
    # A confirmed reader: the one INSERT finds the address there, and nothing changes.
    assert per_kind["confirmed"].count(("sql", "INSERT")) == 1
    assert ("sql", "UPDATE") not in per_kind["confirmed"]
    # No email at all in the request: the sign-up queued it, and a worker sends it.
    assert all(name != "smtp" for events in per_kind.values() for name, _ in events)
    assert ("smtp", "new@example.org") in sent_later
    first = answers["new"]
    assert first.status_code == (200 if as_form else 202)
    for kind in KINDS:
        answer = answers[kind]
        assert answer.status_code == first.status_code
        assert answer.content == first.content
        assert sorted(answer.headers.items()) == sorted(first.headers.items())


def test_a_sign_up_waits_for_a_locked_database_and_is_answered_once_recorded(
    settings: Settings, engine: Engine
) -> None:
    _seed(engine)
    database = settings.database_url.removeprefix("sqlite:///")
    tried_to_write = threading.Event()

    def note_statement(*_: Any) -> None:
        tried_to_write.set()

    order: list[str] = []
    codes: list[int] = []
    with live_server(create_app(web_settings(settings), engine=engine)) as base_url:
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # no other connection can write until it ends

        def sign_up() -> None:
            with httpx.Client(base_url=base_url, timeout=30) as client:
                answer = client.post("/subscribe", json={"email": "new@example.org"})
            codes.append(answer.status_code)
            order.append("answered")

        event.listen(engine, "before_cursor_execute", note_statement)
        visitor = threading.Thread(target=sign_up)
        visitor.start()
        try:
            assert tried_to_write.wait(timeout=30)  # the request is at the database now
        finally:
            order.append("released")
            blocker.execute("ROLLBACK")
            blocker.close()
            event.remove(engine, "before_cursor_execute", note_statement)
        visitor.join(timeout=30)
    assert order == ["released", "answered"]
    assert codes == [202]
    stored = subscriber(engine, "new@example.org")
    assert stored is not None and stored.status == SubscriberStatus.PENDING


@pytest.mark.parametrize("as_form", [False, True], ids=["json", "form"])
async def test_a_failing_database_refuses_every_address_alike(
    settings: Settings, engine: Engine, as_form: bool
) -> None:
    _seed(engine)
    # Every sign-up's write now fails, whatever its address.
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE subscribers RENAME TO subscribers_elsewhere")
    answers: dict[str, httpx.Response] = {}
    config = web_settings(settings)
    app = create_app(config, engine=engine)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=config.base_url) as client,
    ):
        for kind in KINDS:
            body = {"email": f"{kind}@example.org"}
            answers[kind] = (
                await client.post("/subscribe", data=body)
                if as_form
                else await client.post("/subscribe", json=body)
            )
    first = answers["new"]
    assert first.status_code == 503
    assert first.headers["retry-after"] == "60"
    assert "could not be recorded" in first.text and "try again" in first.text
    for kind in KINDS:
        assert answers[kind].status_code == 503
        assert answers[kind].content == first.content
