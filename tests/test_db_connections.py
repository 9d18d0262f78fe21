"""Server connections: one the server closed while it sat idle is replaced, unseen.

Real PostgreSQL (a database of the test's own): the server ends a pooled
connection's backend, as a restart or an idle timeout would, and the next
transaction must still work. A connection in steady use is not pinged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from newsletter.core import db
from newsletter.core.db import create_db_engine
from tests.support.postgres import ADMIN_URL, postgres_database_or_skip


@pytest.fixture
def engine() -> Iterator[Engine]:
    with postgres_database_or_skip() as url:
        engine = create_db_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def counted_pings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per ping sent from now on (the pings still go to the server)."""
    pings: list[int] = []
    ping = db._ping

    def counting(dbapi_connection: Any) -> None:
        pings.append(1)
        ping(dbapi_connection)

    monkeypatch.setattr(db, "_ping", counting)
    return pings


def backend_of(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def end_backend(pid: int) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert ended == (True,)


def test_a_connection_closed_by_the_server_while_idle_is_replaced(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = backend_of(engine)
    end_backend(first)
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)  # every pooled connection counts as idle
    pings = counted_pings(monkeypatch)

    assert backend_of(engine) != first
    assert pings == [1]  # no error: a new connection took its place


def test_without_the_ping_the_closed_connection_fails_once(engine: Engine) -> None:
    # What the ping is for: a connection in steady use goes out unchecked, and if the
    # server dropped it the transaction fails (and the pool is discarded, so the next works).
    first = backend_of(engine)
    end_backend(first)

    with pytest.raises(Exception, match=r"terminat|closed|server"):
        backend_of(engine)
    assert backend_of(engine) != first


def test_a_connection_in_steady_use_is_not_pinged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend_of(engine)
    pings = counted_pings(monkeypatch)
    for _ in range(3):
        backend_of(engine)
    assert pings == []

    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    backend_of(engine)
    assert pings == [1]
