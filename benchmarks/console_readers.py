"""How long one page of the console's readers list takes at 1,000,000 readers on PostgreSQL.

Fills a temporary database (dropped afterwards) with N readers, one in ten
pending, and times `subscribers.listing.readers_page` — what
`GET /admin/console/readers` calls — for the first page, a page in the middle
of the list, one status's pages and an address search. Each figure is the
median of R runs, in milliseconds. Target: every page under 10 ms, the middle
as fast as the first (keyset paging over an index; no OFFSET, no sort).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from sqlalchemy import Engine, text  # noqa: E402

from newsletter.core.db import create_db_engine, upgrade_schema  # noqa: E402
from subscribers.listing import readers_page  # noqa: E402
from subscribers.models import SubscriberStatus  # noqa: E402
from tests.support.postgres import temporary_database  # noqa: E402


def fill(engine: Engine, readers: int) -> None:
    """N readers written by the database itself, then the planner's statistics."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (email, mailbox, name, status, key, topics, interests, "
                "digest_mode, personal_count, frequency, weekly_day, paused, created_at, "
                "updated_at) "
                "SELECT 'reader' || lpad(i::text, 7, '0') || '@example.org', "
                "'reader' || lpad(i::text, 7, '0') || '@example.org', 'Reader ' || i, "
                "CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'confirmed' END, 'key-' || i, '[]', "
                "'', 'trending', 5, 'daily', 0, false, now(), now() "
                "FROM generate_series(0, :last) AS i"
            ),
            {"last": readers - 1},
        )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE subscribers")
        )


def median_ms(engine: Engine, rounds: int, **options: Any) -> float:
    """The median time of one page, in milliseconds."""
    times = []
    for _ in range(rounds):
        with engine.connect() as connection:
            started = time.perf_counter()
            page = readers_page(connection, **options)
            times.append((time.perf_counter() - started) * 1000)
        assert len(page.readers) == 50, options
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readers", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    middle = f"reader{options.readers // 2:07d}@example.org"
    with temporary_database("newsletter_bench") as url:
        engine = create_db_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            upgrade_schema(engine)
            started = time.perf_counter()
            fill(engine, options.readers)
            fill_seconds = round(time.perf_counter() - started, 1)
            pending = SubscriberStatus.PENDING
            figures = {
                "readers": options.readers,
                "fill_seconds": fill_seconds,
                "first_page_ms": median_ms(engine, options.rounds),
                "middle_page_ms": median_ms(engine, options.rounds, after=middle),
                "pending_first_page_ms": median_ms(engine, options.rounds, status=pending),
                "pending_middle_page_ms": median_ms(
                    engine, options.rounds, status=pending, after=middle
                ),
                "search_ms": median_ms(engine, options.rounds, search=middle[:10]),
            }
        finally:
            engine.dispose()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
