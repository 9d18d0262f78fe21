"""Helpers shared by the web tests: an app on the test database, a client, the caught email."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from email.message import EmailMessage
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter.core.dkim import DkimSigner
from newsletter.core.settings import Settings
from newsletter.core.templating import make_template_environment
from newsletter.delivery.confirmations import (
    ConfirmationSender,
    ConfirmationsSent,
    send_due_confirmations,
)
from newsletter.models import Paper
from newsletter.web.app import create_app
from subscribers.models import Subscriber
from tests.support.smtp_server import RecordingSmtpServer

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
CLIENT_ADDRESS = "203.0.113.7"


def web_settings(settings: Settings, **overrides: Any) -> Settings:
    """The test settings with an admin token and any overrides."""
    values: dict[str, Any] = {"admin_token": ADMIN_TOKEN, **overrides}
    return settings.model_copy(update=values)


@asynccontextmanager
async def running_app(
    settings: Settings, engine: Engine, *, client_address: str = CLIENT_ADDRESS
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app under its lifespan and an httpx client talking to it in-process."""
    app = create_app(settings, engine=engine)
    transport = httpx.ASGITransport(app=app, client=(client_address, 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=settings.base_url) as client,
    ):
        yield app, client


@contextmanager
def live_server(app: FastAPI | uvicorn.Config | Callable[[str], FastAPI]) -> Iterator[str]:
    """The app (or a whole uvicorn config) under a real uvicorn in a thread; yields its base URL.

    A function in place of the app is given the base URL first (for the app's settings).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if not isinstance(app, FastAPI | uvicorn.Config):
        app = app(f"http://127.0.0.1:{port}")
    config = app if isinstance(app, uvicorn.Config) else uvicorn.Config(app, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        listener.close()


async def send_queued_confirmations(settings: Settings, engine: Engine) -> ConfirmationsSent:
    """What a worker does next: send every confirmation email that sign-ups queued, then stop.

    In-process (ASGITransport) requests return after the app's background task, so
    the sign-up is recorded by then; a live server's may not be: use
    `confirmation_worker` there and wait for the email.
    """
    env = make_template_environment(settings.templates_dir)
    return await send_due_confirmations(
        settings, engine, env, signer=DkimSigner.from_settings(settings)
    )


@contextmanager
def confirmation_worker(settings: Settings, engine: Engine) -> Iterator[None]:
    """A confirmation sender polling the queue in a thread of its own, as a worker process does."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    sender = ConfirmationSender(
        settings,
        engine,
        make_template_environment(settings.templates_dir),
        signer=DkimSigner.from_settings(settings),
        poll_seconds=0.02,
    )

    async def run() -> None:
        await sender.run(stop=stop, stop_when_idle=False)

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


def html_text(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML parts of a caught message."""
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    return text_part.get_content(), html_part.get_content()


def confirmation_path(smtp_server: RecordingSmtpServer, index: int = -1) -> str:
    """The /confirm/… path from a caught confirmation email's text part."""
    text, _ = html_text(smtp_server.messages[index].message)
    match = re.search(r"https?://[^/\s]+(/confirm/\S+)", text)
    assert match, text
    return match.group(1)


def subscriber(engine: Engine, email: str) -> Subscriber | None:
    """The stored subscriber with this address."""
    with Session(engine) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).first()


def snapshot(engine: Engine) -> list[tuple[Any, ...]]:
    """Every subscriber row as plain values, to prove a request changed nothing."""
    with Session(engine) as session:
        rows = session.exec(select(Subscriber).order_by(Subscriber.id)).all()  # type: ignore[arg-type]
        return [tuple(getattr(row, field) for field in Subscriber.model_fields) for row in rows]


def store_papers(engine: Engine, day: dt.date, count: int = 3) -> None:
    """Store a few papers of that day, as ingest would, so an edition can be prepared."""
    with Session(engine) as session:
        for n in range(count):
            session.add(
                Paper(
                    arxiv_id=f"2603.{day.day:02d}{n:03d}",
                    title=f"Paper {n} on <attention> & scaling",
                    abstract="We study things. " * 5,
                    authors=["Ada Example", "Grace Example"],
                    daily_date=day,
                    published_at=dt.datetime(day.year, day.month, day.day, 8, tzinfo=dt.UTC),
                    upvotes=10 * (n + 1),
                    sources=["hf"],
                )
            )
        session.commit()
