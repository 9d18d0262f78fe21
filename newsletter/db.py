"""Database engines, sessions and schema migrations.

The same code runs on SQLite (the embedded default) and PostgreSQL; the URL
decides. `upgrade_schema` applies the Alembic migrations in `migrations/`
(installed with the package as `newsletter.migrations`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session

from newsletter.errors import ConfigurationError
from newsletter.resources import migrations_path

ALEMBIC_VERSION_TABLE = "alembic_version"  # Alembic's default; migrations/env.py keeps it


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
