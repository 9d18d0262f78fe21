"""Failures an operator meets are one line on stderr and exit 1; `-v` adds the traceback.

A locked or read-only database, a full disk, a path that cannot be written:
run through the `newsletter` process, on SQLite and the real PostgreSQL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from newsletter.core.db import create_db_engine, describe_database_error, upgrade_schema
from newsletter.core.errors import ConfigurationError
from tests.support.cli import cli_environment, run_cli
from tests.support.postgres import postgres_database_or_skip
from tests.support.smtp_server import RecordingSmtpServer

DAY = "2026-11-20"


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture
def database_file(tmp_path: Path) -> Path:
    """A migrated SQLite database file."""
    path = tmp_path / "cli.db"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade_schema(engine)
    engine.dispose()
    return path


@pytest.fixture
def papers_file(tmp_path: Path) -> Path:
    paper = {
        "id": "2611.00001",
        "title": "A Paper",
        "summary": "An abstract.",
        "submittedOnDailyAt": f"{DAY}T08:00:00.000Z",
    }
    path = tmp_path / "papers.json"
    path.write_text(json.dumps([{"paper": paper}]), encoding="utf-8")
    return path


@pytest.fixture
def write_lock(database_file: Path) -> Iterator[sqlite3.Connection]:
    """Another process's open write transaction on the database."""
    holder = sqlite3.connect(database_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    yield holder
    holder.rollback()
    holder.close()


def test_a_locked_sqlite_database_is_one_line_and_verbose_adds_the_traceback(
    database_file: Path, write_lock: sqlite3.Connection, smtp_server: RecordingSmtpServer
) -> None:
    # A short lock timeout in the URL, so the test does not wait the default 30 s.
    env = cli_environment(f"sqlite:///{database_file}?timeout=0.1", smtp_server.port)

    result = run_cli("subscribers", "add", "ada@example.org", env=env, check=False)

    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert "busy with another process" in line and "database is locked" in line

    verbose = run_cli("-v", "subscribers", "add", "ada@example.org", env=env, check=False)
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and line in verbose.stderr.splitlines()

    write_lock.rollback()
    run_cli("subscribers", "add", "ada@example.org", env=env)


def test_a_read_only_sqlite_database_is_one_line(
    database_file: Path, papers_file: Path, smtp_server: RecordingSmtpServer
) -> None:
    read_only = f"sqlite:///file:{database_file}?mode=ro&uri=true"
    env = cli_environment(read_only, smtp_server.port)

    result = run_cli("ingest", "--file", str(papers_file), "--date", DAY, env=env, check=False)

    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert "the database is read-only" in line and "NEWSLETTER_DATABASE_URL" in line


@pytest.mark.postgres
def test_a_read_only_postgresql_database_is_one_line(
    papers_file: Path, smtp_server: RecordingSmtpServer
) -> None:
    with postgres_database_or_skip() as database_url:
        env = cli_environment(database_url, smtp_server.port)
        run_cli("db", "upgrade", env=env)
        with psycopg.connect(database_url, autocommit=True) as admin:
            name = admin.info.dbname
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                    sql.Identifier(name)
                )
            )

        result = run_cli("ingest", "--file", str(papers_file), "--date", DAY, env=env, check=False)

    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert "the database is read-only" in line and "read-only transaction" in line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_is_one_line(
    tmp_path: Path, papers_file: Path, smtp_server: RecordingSmtpServer
) -> None:
    env = cli_environment(f"sqlite:///{tmp_path / 'cli.db'}", smtp_server.port)
    run_cli("ingest", "--file", str(papers_file), "--date", DAY, env=env)

    # Every write to /dev/full fails with ENOSPC, as on a full disk.
    result = run_cli("preview", "--date", DAY, "--out", "/dev/full", env=env, check=False)

    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert "No space left on device; free some space" in line


def test_an_output_path_through_a_file_is_one_line(
    tmp_path: Path, papers_file: Path, smtp_server: RecordingSmtpServer
) -> None:
    env = cli_environment(f"sqlite:///{tmp_path / 'cli.db'}", smtp_server.port)
    run_cli("ingest", "--file", str(papers_file), "--date", DAY, env=env)

    out = papers_file / "digest.html"  # a "directory" that is a file
    result = run_cli("preview", "--date", DAY, "--out", str(out), env=env, check=False)

    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert f"cannot use {papers_file}" in line and "check the path" in line


# ---- what each database error says -----------------------------------------------------------


def _error_from(database_url: str, *statements: str) -> SQLAlchemyError:
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    except SQLAlchemyError as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError("the statements did not fail")


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (
            [
                "CREATE TABLE t (x TEXT)",
                "PRAGMA max_page_count = 2",
                "INSERT INTO t VALUES (randomblob(100000))",
            ],
            "the disk holding the database is full; free some space and try again",
        ),
        (["PRAGMA query_only = ON", "CREATE TABLE t (x)"], "the database is read-only"),
        (
            ["CREATE TABLE t (x UNIQUE)", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)"],
            "the database refused a change that conflicts with what it holds",
        ),
    ],
    ids=["full", "read-only", "conflict"],
)
def test_sqlite_errors_are_described_with_what_to_do(
    tmp_path: Path, statements: list[str], expected: str
) -> None:
    error = _error_from(f"sqlite:///{tmp_path / 'x.db'}", *statements)
    message = describe_database_error(error)
    assert message.startswith(expected)
    assert "\n" not in message and "[SQL:" not in message


def test_an_unreachable_postgresql_server_is_described_with_what_to_do() -> None:
    error = _error_from("postgresql://postgres@127.0.0.1:1/none?connect_timeout=3", "SELECT 1")
    assert describe_database_error(error).startswith(
        "cannot reach the database server; check NEWSLETTER_DATABASE_URL"
    )


def test_a_lock_timeout_that_is_not_a_number_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        create_db_engine(f"sqlite:///{tmp_path / 'x.db'}?timeout=soon")
