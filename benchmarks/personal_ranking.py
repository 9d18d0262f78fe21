"""Personal ranking at scale: every reader against 200 candidate papers, time and peak memory.

    .venv/bin/python benchmarks/personal_ranking.py [--readers N ...] [--json]

For each size (default 100,000 and 1,000,000 readers), one process seeds a
SQLite database with the labelled papers of tests/data/relevance and N readers
with varied profiles (`send_throughput.seed_personal`), and a fresh process
then ranks every reader in one pass, as the send's start does
(`editions.personal.personal_reader_ids` then `personal_picks`), with the five
latest days' papers as candidates (200 papers; the day before is the
background; scikit-learn is imported before the clock starts). It reports the
seconds that took, the CPU seconds of the process (on a shared machine, what
the ranking itself cost), the readers per second, and its own peak resident set
(VmHWM, read by the ranking process itself). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from send_throughput import PROJECT_ROOT, bench_settings, own_peak_rss_kib, seed_personal

from newsletter.core.db import create_db_engine
from newsletter.editions.personal import personal_picks, personal_reader_ids
from newsletter.relevance.terms import analyzer

# Five days of the labelled set: 5 × 40 papers.
CANDIDATE_DAYS = 5


def rank_child(database_url: str) -> None:
    """Rank every reader of the seeded database; print the figures as one JSON line."""
    settings = bench_settings(database_url, 25, 1)
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            day = connection.exec_driver_sql("SELECT max(daily_date) FROM papers").scalar_one()
        analyzer()  # scikit-learn's import, once per process, is not the ranking's cost
        started, cpu_started = time.perf_counter(), time.process_time()
        with engine.connect() as connection:
            ids = personal_reader_ids(connection)
        picks = personal_picks(
            settings,
            engine,
            day=_as_date(day),
            subscriber_ids=ids,
            days=CANDIDATE_DAYS,
        )
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        with engine.connect() as connection:
            candidates = connection.exec_driver_sql(
                "SELECT count(*) FROM papers WHERE daily_date > date(?, ?)",
                (str(day), f"-{CANDIDATE_DAYS} days"),
            ).scalar_one()
    finally:
        engine.dispose()
    print(
        json.dumps(
            {
                "readers": len(ids),
                "ranked": len(picks),
                "candidates": candidates,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_rss_mb": own_peak_rss_kib() / 1024,
            }
        )
    )


def _as_date(value: object) -> object:
    import datetime as dt

    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def seed_child(database_url: str, readers: int) -> None:
    """Seed the papers and `readers` readers."""
    engine = create_db_engine(database_url)
    try:
        seed_personal(engine, readers=readers, seed=0)
    finally:
        engine.dispose()


def measure(readers: int) -> dict[str, float]:
    """Seed in one process, rank in a fresh one; the ranking process's figures."""
    with tempfile.TemporaryDirectory(prefix="bench-ranking-") as directory:
        database_url = f"sqlite:///{Path(directory) / 'ranking.db'}"
        child = [sys.executable, __file__, "--database-url", database_url]
        subprocess.run(
            [*child, "--child", "seed", "--readers", str(readers)], check=True, cwd=PROJECT_ROOT
        )
        result = subprocess.run(
            [*child, "--child", "rank"],
            check=True,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, measure each size, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--readers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", choices=["seed", "rank"], help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child == "seed":
        seed_child(arguments.database_url, arguments.readers[0])
        return
    if arguments.child == "rank":
        rank_child(arguments.database_url)
        return
    results = []
    for readers in arguments.readers:
        figures = measure(readers)
        results.append(figures)
        if not arguments.json:
            print(
                f"{int(figures['readers']):>9,} readers × {int(figures['candidates'])} candidates: "
                f"ranked in {figures['seconds']:.2f} s "
                f"({figures['cpu_seconds']:.2f} s of CPU; "
                f"{figures['readers'] / figures['seconds']:,.0f} readers/s), "
                f"peak RSS {figures['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    if arguments.json:
        print(json.dumps({"sizes": results}))
    elif len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"peak RSS {int(last['readers']):,} / {int(first['readers']):,} readers: "
            f"{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x"
        )


if __name__ == "__main__":
    main()
