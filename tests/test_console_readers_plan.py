"""The console's readers list reads an index range, never the whole table, nor sorts it.

Keyset paging stays fast at a million readers only if every page is an index
range scan in the order shown. Timing it here would be flaky; the databases'
own query plans say it deterministically.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, Select, text

from newsletter.core.db import create_db_engine, upgrade_schema
from subscribers.listing import readers_query
from subscribers.models import SubscriberStatus
from tests.support.postgres import postgres_database_or_skip
from tests.support.sending import seed_subscribers

VARIANTS: dict[str, dict[str, Any]] = {
    "first page": {},
    "a later page": {"after": "reader01000@example.org"},
    "one status": {"status": SubscriberStatus.PENDING},
    "one status, a later page": {"status": SubscriberStatus.PENDING, "after": "p00100@x.org"},
    "search": {"search": "reader0123"},
    "search, one status": {"search": "reader0123", "status": SubscriberStatus.CONFIRMED},
}


def _seed(engine: Engine) -> None:
    """Readers of two statuses, and the statistics the planner reads."""
    seed_subscribers(engine, 2700)
    seed_subscribers(engine, 300, status=SubscriberStatus.PENDING, prefix="p")
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))


def _sqlite_plan(engine: Engine, statement: Select[Any]) -> str:
    compiled = statement.compile(dialect=engine.dialect)
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params).all()
    return "\n".join(str(row[-1]) for row in rows)


def _index_for(variant: str) -> str:
    """The index that gives a variant's rows in address order: one status has its own."""
    if "status" in variant:
        return "ix_subscribers_status_email_lower"
    return "ix_subscribers_email_lower"


@pytest.mark.parametrize("variant", VARIANTS)
def test_sqlite_pages_readers_from_an_index_without_sorting(engine: Engine, variant: str) -> None:
    _seed(engine)
    plan = _sqlite_plan(engine, readers_query(**VARIANTS[variant]))
    assert f"INDEX {_index_for(variant)} " in plan or plan.endswith(_index_for(variant)), plan
    assert "TEMP B-TREE" not in plan, plan  # no sort: the index gives the order
    assert not any(line.strip() == "SCAN subscribers" for line in plan.splitlines()), plan


def _postgres_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _postgres_nodes(child)
    return nodes


@pytest.mark.postgres
def test_postgres_pages_a_large_list_from_an_index_without_sorting() -> None:
    with postgres_database_or_skip() as database_url:
        engine = create_db_engine(database_url)
        try:
            upgrade_schema(engine)
            with engine.begin() as connection:
                connection.execute(
                    text(
                        "INSERT INTO subscribers (email, mailbox, name, status, key, topics, "
                        "interests, digest_mode, personal_count, frequency, weekly_day, paused, "
                        "created_at, updated_at) "
                        "SELECT 'reader' || lpad(i::text, 7, '0') || '@example.org', "
                        "'reader' || lpad(i::text, 7, '0') || '@example.org', NULL, "
                        "CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'confirmed' END, 'key-' || i, "
                        "'[]', '', 'trending', 5, 'daily', 0, false, now(), now() "
                        "FROM generate_series(0, 99999) AS i"
                    )
                )
                connection.execute(text("ANALYZE subscribers"))
            for variant, options in VARIANTS.items():
                compiled = readers_query(**options).compile(
                    dialect=engine.dialect, compile_kwargs={"literal_binds": True}
                )
                with engine.connect() as connection:
                    (plan,) = connection.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}")).one()
                nodes = _postgres_nodes(
                    (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
                )
                kinds = [node["Node Type"] for node in nodes]
                assert "Seq Scan" not in kinds and "Sort" not in kinds, (variant, kinds)
                assert any(
                    node.get("Index Name", "").startswith("ix_subscribers_") for node in nodes
                ), (
                    variant,
                    kinds,
                )
        finally:
            engine.dispose()
