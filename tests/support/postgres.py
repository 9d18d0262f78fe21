"""A uniquely named PostgreSQL database per test, on the shared server at 127.0.0.1:5432.

Several engineers and CI jobs share the server, so every database gets a
random name and is dropped (even after a failure) with `WITH (FORCE)`, which
also ends connections a killed worker process left behind.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

# The server to use; override with TEST_POSTGRES_URL (any database on it; it is the admin one).
ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_unavailable_reason() -> str | None:
    """Why the PostgreSQL server cannot be used, or None when it answers."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return f"PostgreSQL at {ADMIN_URL} is unreachable: {str(error).strip()}"
    return None


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def temporary_database(prefix: str = "newsletter_test") -> Iterator[str]:
    """Create an empty database with a unique name; yield its URL; drop it afterwards."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def postgres_database_or_skip() -> Iterator[str]:
    """A temporary database's URL, or skip the test saying why the server is not there."""
    reason = postgres_unavailable_reason()
    if reason is not None:
        print(f"skipping: {reason}", file=sys.stderr)
        pytest.skip(reason)
    with temporary_database() as url:
        yield url
