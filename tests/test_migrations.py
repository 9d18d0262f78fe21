"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL.

After `upgrade_schema`, Alembic's autogenerate compares the database with the
models' metadata; any operation it proposes (a missing column, index or
constraint, a changed type) is a model change without its migration.
"""

from __future__ import annotations

import pprint
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, text
from sqlmodel import SQLModel

import newsletter.models  # noqa: F401  (registers every table, as migrations/env.py does)
from newsletter.core.db import create_db_engine, current_revision, head_revision, upgrade_schema
from tests.support.postgres import postgres_database_or_skip


def _drift(database_url: str) -> list[Any]:
    """The operations autogenerate would write after migrating an empty database to head."""
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            # The same comparison options as migrations/env.py.
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


def _expression_indexes() -> set[str]:
    return {
        str(index.name)
        for table in SQLModel.metadata.tables.values()
        for index in table.indexes
        if any(not isinstance(expression, Column) for expression in index.expressions)
    }


# SQLite cannot reflect expression-based indexes (`lower(email)`), so autogenerate
# skips them, saying so; the test looks them up by name instead.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_the_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    drift = _drift(url)
    assert drift == [], "models changed without a migration:\n" + pprint.pformat(drift)
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            indexes = set(
                connection.scalars(text("SELECT name FROM sqlite_master WHERE type = 'index'"))
            )
    finally:
        engine.dispose()
    assert _expression_indexes(), "the models have no expression index to look for"
    assert _expression_indexes() <= indexes


@pytest.mark.postgres
def test_the_migrations_match_the_models_on_postgresql() -> None:
    with postgres_database_or_skip() as url:
        drift = _drift(url)
    assert drift == [], "models changed without a migration:\n" + pprint.pformat(drift)


def test_the_fast_head_revision_is_the_one_alembic_finds() -> None:
    from alembic.script import ScriptDirectory

    from newsletter.core.db import head_revision
    from newsletter.core.resources import migrations_path

    assert head_revision() == ScriptDirectory(str(migrations_path())).get_current_head()
