"""Alembic environment: runs on the engine that `newsletter.core.db` hands over."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import newsletter.models  # noqa: F401  (registers every table on the metadata)
from newsletter.core.db import create_db_engine

config = context.config
target_metadata = SQLModel.metadata

engine = config.attributes.get("engine")
if engine is None:  # run by the `alembic` command itself
    engine = create_db_engine(
        config.get_main_option("sqlalchemy.url") or "sqlite:///./newsletter.core.db"
    )

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
