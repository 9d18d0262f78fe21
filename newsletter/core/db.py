"""Database engines, sessions and schema migrations.

The same code runs on SQLite (the embedded default) and PostgreSQL; the URL
decides. `upgrade_schema` applies the Alembic migrations in `migrations/`
(installed with the package as `newsletter.migrations`).
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlmodel import Session

from newsletter.core.errors import ConfigurationError
from newsletter.core.resources import migrations_path

# How long SQLite waits for another process's write lock before giving up;
# `?timeout=SECONDS` in the URL (the sqlite3 module's own parameter) changes it.
SQLITE_LOCK_TIMEOUT_SECONDS = 30.0


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
    return create_engine(url, pool_pre_ping=True)


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


# `revision = "0003"` and `down_revision = "0002"` lines of a migration file.
_REVISION_LINE = re.compile(
    r"^(revision|down_revision)(?:\s*:\s*[^=]+)?\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE
)


def head_revision() -> str | None:
    """The newest migration this version of the code knows.

    Every command checks the schema against it, so it is read from the
    migration files' own `revision` lines rather than by importing Alembic
    (a quarter of a second); tests check both agree.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (migrations_path() / "versions").glob("*.py"):
        found = dict(_REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        if "revision" in found:
            revisions.add(found["revision"])
        if "down_revision" in found:
            parents.add(found["down_revision"])
    heads = revisions - parents
    if len(heads) != 1:
        raise ConfigurationError(
            f"the bundled migrations have {len(heads)} heads instead of one; reinstall the package"
        )
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return str(version) if version is not None else None


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
