"""Database engines, sessions and schema migrations.

The same code runs on SQLite (the embedded default) and PostgreSQL; the URL
decides. `upgrade_schema` applies the Alembic migrations in `migrations/`
(installed with the package as `newsletter.migrations`).
"""

from __future__ import annotations

import ast
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    SQLAlchemyError,
)
from sqlmodel import Session

from newsletter.core.errors import ConfigurationError
from newsletter.core.resources import migrations_path

ALEMBIC_VERSION_TABLE = "alembic_version"  # Alembic's default; migrations/env.py keeps it

# How long SQLite waits for another process's write lock before giving up;
# `?timeout=SECONDS` in the URL (the sqlite3 module's own parameter) changes it.
SQLITE_LOCK_TIMEOUT_SECONDS = 30.0

# A server connection that sat in the pool this long is checked (`SELECT 1`) before it is
# handed out, and replaced if the server closed it meanwhile (a restart, a failover, an idle
# timeout). One in steady use is not: a ping on every checkout (`pool_pre_ping`) was a round
# trip, and the server's and the driver's work, for every transaction, a sign-up's included.
# A connection that breaks while in use is caught as before: SQLAlchemy then discards the
# whole pool, so only the transaction under way fails.
IDLE_PING_SECONDS = 5.0


def upsert_insert(dialect_name: str, table: Any) -> Any:
    """An INSERT that can take `ON CONFLICT` clauses, built for the connection's dialect.

    PostgreSQL and SQLite spell ON CONFLICT alike, but SQLAlchemy builds it per
    dialect. The PostgreSQL one is imported only when asked for: a PostgreSQL
    engine has loaded it already, and a SQLite command (the CLI's start-up)
    should not pay for it.
    """
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    return sqlite_insert(table)


def _normalise_url(url: str) -> str:
    # Operators paste `postgresql://` URLs; psycopg 3 is the driver we ship.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_db_engine(database_url: str) -> Engine:
    """An engine for the URL, with SQLite tuned for one writer and many readers."""
    url_text = _normalise_url(database_url)
    try:
        url = make_url(url_text)
    except ArgumentError:
        raise ConfigurationError(
            f"NEWSLETTER_DATABASE_URL is not a database URL: {database_url!r}"
        ) from None
    if url.get_backend_name() == "sqlite":
        # A `file:` URI (`?uri=true`, e.g. with `mode=ro`) is SQLite's to resolve.
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            timeout = float(str(url.query.get("timeout", SQLITE_LOCK_TIMEOUT_SECONDS)))
        except ValueError:
            raise ConfigurationError(
                f"NEWSLETTER_DATABASE_URL has a timeout that is not a number of seconds: "
                f"{url.query['timeout']!r}"
            ) from None
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": timeout})
        event.listen(engine, "connect", _configure_sqlite_connection)
        return engine
    engine = create_engine(url)
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Before handing out a connection idle for IDLE_PING_SECONDS, check the server still has it.

    Raising DisconnectionError makes the pool drop it and hand out a new one
    (up to three tries), as `pool_pre_ping` does on every checkout.
    """
    checked_in_at = record.info.get("checked_in_at")
    if checked_in_at is None or time.monotonic() - checked_in_at < IDLE_PING_SECONDS:
        return  # new, or in steady use
    try:
        _ping(dbapi_connection)
    except Exception as error:
        raise DisconnectionError(f"an idle connection was closed by the server: {error}") from error


def _ping(dbapi_connection: Any) -> None:
    autocommit = dbapi_connection.autocommit
    try:
        dbapi_connection.autocommit = True  # the ping opens no transaction
        dbapi_connection.execute("SELECT 1")
    finally:
        if not dbapi_connection.closed:
            dbapi_connection.autocommit = autocommit


def try_begin_write(connection: Connection) -> bool:
    """Take SQLite's write lock now if it is free (False if another process holds it).

    On SQLite a writer that finds the lock held sleeps in its busy handler (1,
    2, 5, 10 ms and longer, blocking its thread), however soon the lock frees:
    a sending process's event loop, and every connection on it, would stall.
    With this the caller waits without blocking and tries again. The
    connection's own busy timeout is back in place afterwards; once the lock
    is held, WAL readers never block it. Other databases lock rows, not the
    file: True at once, nothing done.
    """
    if connection.dialect.name != "sqlite":
        return True
    timeout_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
    connection.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    except DBAPIError as error:
        driver_error = error.orig
        if isinstance(driver_error, sqlite3.Error) and driver_error.sqlite_errorcode & 0xFF == 5:
            return False  # SQLITE_BUSY
        raise
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(timeout_ms)}")
    return True


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    config.attributes["engine"] = engine
    return config


def upgrade_schema(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration, keeping data."""
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")


def head_revision() -> str | None:
    """The newest migration this version of the code knows."""
    # Every command checks the schema, and importing Alembic costs more than the
    # rest of a small command; a straight history is read from the files instead.
    head = linear_head(migrations_path() / "versions")
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(migrations_path())).get_current_head()


def linear_head(versions: Path) -> str | None:
    """The last revision of a straight history of migration files, or None if it is not one.

    Reads each file's `revision` and `down_revision` without importing it; a
    branch, a merge, or a value that is not a plain literal leaves it to Alembic.
    """
    parents: dict[str, str | None] = {}
    for path in versions.glob("*.py"):
        found = _revision_ids(path)
        if found is None:
            return None
        revision, down_revision = found
        parents[revision] = down_revision
    children = set(parents.values())
    heads = [revision for revision in parents if revision not in children]
    if len(heads) != 1 or len(children) != len(parents):
        return None
    return heads[0]


def _revision_ids(path: Path) -> tuple[str, str | None] | None:
    values: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value = node.target.id, node.value
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            name, value = node.targets[0].id, node.value
        else:
            continue
        if name in ("revision", "down_revision") and value is not None:
            try:
                values[name] = ast.literal_eval(value)
            except ValueError:
                return None
    revision, down_revision = values.get("revision"), values.get("down_revision")
    if not isinstance(revision, str) or not (
        down_revision is None or isinstance(down_revision, str)
    ):
        return None
    return revision, down_revision


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    # Alembic's own reading (MigrationContext) needs the whole of Alembic imported.
    with engine.connect() as connection:
        if not inspect(connection).has_table(ALEMBIC_VERSION_TABLE):
            return None
        return connection.execute(
            text(f"SELECT version_num FROM {ALEMBIC_VERSION_TABLE}")
        ).scalar_one_or_none()


# What to do about the database errors an operator meets, by SQLite result code
# (its low byte) and by PostgreSQL SQLSTATE, then by SQLSTATE class.
_LOCKED = "the database is busy with another process; wait for that to finish and try again"
_READ_ONLY = (
    "the database is read-only; make it writable, "
    "or point NEWSLETTER_DATABASE_URL at a writable one"
)
_FULL = "the disk holding the database is full; free some space and try again"
_SQLITE_ADVICE = {
    5: _LOCKED,  # SQLITE_BUSY
    6: _LOCKED,  # SQLITE_LOCKED
    8: _READ_ONLY,  # SQLITE_READONLY
    10: "the database file could not be read or written; check the disk",  # SQLITE_IOERR
    11: "the database file is damaged; restore it from a backup",  # SQLITE_CORRUPT
    13: _FULL,  # SQLITE_FULL
    14: (  # SQLITE_CANTOPEN
        "cannot open the database file; check NEWSLETTER_DATABASE_URL "
        "and that its directory is writable"
    ),
    26: "NEWSLETTER_DATABASE_URL names a file that is not a SQLite database",  # SQLITE_NOTADB
}
_POSTGRES_ADVICE = {
    "25006": _READ_ONLY,  # read_only_sql_transaction: a standby, or a read-only database
    "53100": _FULL,  # disk_full
    "55P03": _LOCKED,  # lock_not_available
    "40P01": _LOCKED,  # deadlock_detected
    "40001": _LOCKED,  # serialization_failure
    "42501": (  # insufficient_privilege
        "the database user lacks a privilege this needs; grant it, or use the schema owner"
    ),
    "3D000": "the database does not exist; create it, or check NEWSLETTER_DATABASE_URL",
}
_POSTGRES_CLASS_ADVICE = {
    "08": "lost the connection to the database server; check that it is up and try again",
    "53": "the database server ran out of resources (disk, memory or connections); try later",
    "57": "the database server ended the session (it may be restarting); try again",
}


def describe_database_error(error: SQLAlchemyError) -> str:
    """One line saying what went wrong with the database and what to do about it."""
    driver_error = error.orig if isinstance(error, DBAPIError) else None
    detail = str(driver_error if driver_error is not None else error).strip()
    detail = detail.splitlines()[0] if detail else type(error).__name__
    advice = _advice_for(driver_error)
    if advice is None:
        if isinstance(error, IntegrityError):
            advice = "the database refused a change that conflicts with what it holds; try again"
        else:
            advice = "the database refused the command"
    return f"{advice} ({detail})"


def _advice_for(driver_error: BaseException | None) -> str | None:
    if isinstance(driver_error, sqlite3.Error):
        return _SQLITE_ADVICE.get(driver_error.sqlite_errorcode & 0xFF)
    # psycopg is loaded only when a PostgreSQL engine connected; importing it
    # here for every SQLite command would cost a tenth of a second.
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(driver_error, psycopg.Error):
        sqlstate = driver_error.sqlstate
        if sqlstate is None:  # psycopg's "connection failed" and "server closed the connection"
            return "cannot reach the database server; check NEWSLETTER_DATABASE_URL and the server"
        return _POSTGRES_ADVICE.get(sqlstate) or _POSTGRES_CLASS_ADVICE.get(sqlstate[:2])
    return None
