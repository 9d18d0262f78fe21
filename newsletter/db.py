"""Database engines, sessions and schema migrations.

The same code runs on SQLite (the embedded default) and PostgreSQL; the URL
decides. `upgrade_schema` applies the Alembic migrations in `migrations/`
(installed with the package as `newsletter.migrations`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session

from newsletter.errors import ConfigurationError
from newsletter.resources import migrations_path


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
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _configure_sqlite_connection)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
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
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(migrations_path())).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
