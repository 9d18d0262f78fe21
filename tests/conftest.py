"""Shared fixtures: settings on a temp SQLite database, a recording SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import Engine

from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.core.eventloop import loop_factory
from newsletter.core.settings import Settings, load_settings
from tests.support.cli import cli_environment
from tests.support.message_kinds import SentKinds, received_every_kind
from tests.support.postgres import postgres_database_or_skip
from tests.support.relevance_corpus import store_labelled_papers
from tests.support.smtp_server import RecordingSmtpServer


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Async tests run on the loop the commands run on; `both_event_loops` adds asyncio's.

    The commands and uvicorn use uvloop where it is installed and asyncio's
    own loop elsewhere, and the SMTP conversation must work on either.
    """
    factories = {"commands": loop_factory()}
    if item.get_closest_marker("both_event_loops"):
        factories["asyncio"] = asyncio.new_event_loop
    return factories


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's `.env` or NEWSLETTER_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def smtp_server() -> Iterator[RecordingSmtpServer]:
    """A recording SMTP server on a free port, stopped after the test."""
    with RecordingSmtpServer() as server:
        yield server


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh SQLite database file in the test's temp directory."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def settings(database_url: str, smtp_server: RecordingSmtpServer) -> Settings:
    """Settings pointing at the temp database and the recording SMTP server."""
    return load_settings(
        database_url=database_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        secret_key="test-secret-key-0123456789",
        base_url="https://news.example.org",
        from_address="Daily ML Papers <digest@news.example.org>",
        send_retry_base_seconds=0.0,
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the migrated temp database."""
    engine = create_db_engine(settings.database_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def each_database(request: pytest.FixtureRequest, database_url: str) -> Iterator[Engine]:
    """A migrated database of each kind: the temp SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        engine = create_db_engine(database_url)
        upgrade_schema(engine)
        yield engine
        engine.dispose()
        return
    with postgres_database_or_skip() as url:
        engine = create_db_engine(url)
        upgrade_schema(engine)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def cli_env(tmp_path: Path, smtp_server: RecordingSmtpServer) -> dict[str, str]:
    """The environment of a `newsletter` process on a temp SQLite file and the recording server."""
    return cli_environment(f"sqlite:///{tmp_path / 'cli.db'}", smtp_server.port)


@pytest.fixture
def labelled_corpus(tmp_path: Path) -> Iterator[tuple[Engine, dict[str, str]]]:
    """A migrated SQLite database holding the labelled papers (six days), and a CLI env on it."""
    url = f"sqlite:///{tmp_path / 'personal.db'}"
    engine = create_db_engine(url)
    upgrade_schema(engine)
    store_labelled_papers(engine)
    yield engine, cli_environment(url, 25)
    engine.dispose()


@pytest.fixture(scope="session")
def every_message_kind(tmp_path_factory: pytest.TempPathFactory) -> SentKinds:
    """One message of each kind the product sends, as a relay received it (sent once per run)."""
    return received_every_kind(tmp_path_factory.mktemp("message-kinds"))
