"""Personal ranking at scale: what the send's start holds to rank and store every reader.

    .venv/bin/python benchmarks/personal_ranking.py [--readers N ...] [--databases DIR] [--json]

For each size (default 100,000 and 1,000,000 readers), one process seeds a
SQLite database with the labelled papers of tests/data/relevance and N readers
with varied profiles (`send_throughput.seed_personal`), and a fresh process
then does what the send's start does: the corpus counted, every reader ranked
batch by batch (`editions.personal.daily_selections`) into a temporary file
(`delivery.selections.spooled`), then, in a start-like transaction that it
rolls back at the end, `control.start_with_selections` reading the batches back,
storing each batch's distinct selections (`delivery.selections.store_selections`)
and queueing the audience with them. The candidates are the five latest days'
papers (200 papers; the day before is the background; scikit-learn is
imported and the edition prepared before the clock starts). It reports the
seconds spent ranking, the CPU seconds of that ranking (on a shared machine,
what the ranking itself cost), the readers per second, the whole start's
seconds (rank, store, queue) and the transaction's (store, queue: how long
SQLite's write lock is held), the selections stored, and its own peak
resident set (VmHWM, read by the measuring process itself). `--databases DIR`
keeps the seeded databases there and reuses them (the 1,000,000 seed takes a
while). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from send_throughput import PROJECT_ROOT, bench_settings, own_peak_rss_kib, seed_personal
from sqlalchemy import func, select

from newsletter.core.db import create_db_engine
from newsletter.delivery.control import start_with_selections
from newsletter.delivery.selections import spool_record, spooled, spooled_records
from newsletter.editions.content import prepare_edition
from newsletter.editions.personal import (
    SelectionBatch,
    daily_selections,
    daily_selections_in_processes,
    index_corpus,
)
from newsletter.models import Selection
from newsletter.relevance.terms import analyzer

# Five days of the labelled set: 5 × 40 papers.
CANDIDATE_DAYS = 5

selections = Selection.__table__  # type: ignore[attr-defined]


class TimedBatches:
    """The batches of selections, with the wall and CPU seconds spent making them."""

    def __init__(self, batches: Iterator[SelectionBatch]) -> None:
        self.batches = batches
        self.seconds = self.cpu_seconds = 0.0

    def __iter__(self) -> Iterator[SelectionBatch]:
        while True:
            started, cpu_started = time.perf_counter(), time.process_time()
            batch = next(self.batches, None)
            self.seconds += time.perf_counter() - started
            self.cpu_seconds += time.process_time() - cpu_started
            if batch is None:
                return
            yield batch


def rank_child(database_url: str, processes: int) -> None:
    """Rank and store every reader of the seeded database as a start does; print one JSON line.

    With `processes` above one, the readers' pages are ranked and prepared in
    that many forked processes, as `newsletter send` ranks them
    (`daily_selections_in_processes`); the ranking's seconds are then the
    wall time until every batch is spooled, and its CPU seconds this
    process's and the children's.
    """
    settings = bench_settings(database_url, 25, 1)
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            day = _as_date(
                connection.exec_driver_sql("SELECT max(daily_date) FROM papers").scalar_one()
            )
            readers = connection.exec_driver_sql("SELECT count(*) FROM subscribers").scalar_one()
            candidates = connection.exec_driver_sql(
                "SELECT count(*) FROM papers WHERE daily_date > date(?, ?)",
                (str(day), f"-{CANDIDATE_DAYS} days"),
            ).scalar_one()
        edition = prepare_edition(settings, engine, day=day)
        assert edition.id is not None
        edition_id = edition.id
        analyzer()  # scikit-learn's import, once per process, is not the ranking's cost
        started = time.perf_counter()
        index_corpus(engine)  # as `edition_selections` does, before the start's transaction
        with engine.connect() as reading, engine.connect() as connection:
            # Ranked before the start's transaction, as `selections.rank_readers` does.
            if processes > 1:
                cpu_started = time.process_time() + children_cpu_seconds()
                ranked = spooled_records(
                    daily_selections_in_processes(
                        settings,
                        engine,
                        reading,
                        day=day,
                        days=CANDIDATE_DAYS,
                        then=spool_record,
                        processes=processes,
                    )
                )
                ranking_seconds = time.perf_counter() - started
                ranking_cpu = time.process_time() + children_cpu_seconds() - cpu_started
            else:
                batches = TimedBatches(
                    daily_selections(settings, reading, day=day, days=CANDIDATE_DAYS)
                )
                ranked = spooled(batches)
                ranking_seconds, ranking_cpu = batches.seconds, batches.cpu_seconds
            locked = time.perf_counter()
            transaction = connection.begin()
            try:
                now = dt.datetime.now(dt.UTC)
                queued = start_with_selections(
                    connection, edition_id=edition_id, picks=ranked, now=now
                )
                stored = connection.execute(
                    select(func.count()).where(selections.c.edition_id == edition_id)
                ).scalar_one()
                start_seconds = time.perf_counter() - started
                transaction_seconds = time.perf_counter() - locked
            finally:
                transaction.rollback()  # the seeded database stays as it was, for the next run
    finally:
        engine.dispose()
    print(
        json.dumps(
            {
                "readers": readers,
                "ranked": queued,
                "candidates": candidates,
                "processes": processes,
                "seconds": ranking_seconds,
                "cpu_seconds": ranking_cpu,
                "start_seconds": start_seconds,
                "transaction_seconds": transaction_seconds,
                "selections": stored,
                "queued": queued,
                "peak_rss_mb": own_peak_rss_kib() / 1024,
            }
        )
    )


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have ended (the ranking's forks, once joined)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _as_date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def seed_child(database_url: str, readers: int) -> None:
    """Seed the papers and `readers` readers."""
    engine = create_db_engine(database_url)
    try:
        seed_personal(engine, readers=readers, seed=0)
    finally:
        engine.dispose()


def measure(readers: int, databases: Path | None, processes: int) -> dict[str, float]:
    """Seed in one process (unless kept from before), rank and store in a fresh one; its figures."""
    with tempfile.TemporaryDirectory(prefix="bench-ranking-") as directory:
        database = (databases or Path(directory)) / f"ranking-{readers}.db"
        database_url = f"sqlite:///{database}"
        child = [sys.executable, __file__, "--database-url", database_url]
        if not database.exists():
            subprocess.run(
                [*child, "--child", "seed", "--readers", str(readers)],
                check=True,
                cwd=PROJECT_ROOT,
            )
        result = subprocess.run(
            [*child, "--child", "rank", "--processes", str(processes)],
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
    parser.add_argument(
        "--databases", type=Path, help="keep the seeded databases in this folder and reuse them"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="rank in this many forked processes, as `newsletter send` does (default 1)",
    )
    parser.add_argument("--child", choices=["seed", "rank"], help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child == "seed":
        seed_child(arguments.database_url, arguments.readers[0])
        return
    if arguments.child == "rank":
        rank_child(arguments.database_url, arguments.processes)
        return
    if arguments.databases is not None:
        arguments.databases.mkdir(parents=True, exist_ok=True)
    results = []
    for readers in arguments.readers:
        figures = measure(readers, arguments.databases, arguments.processes)
        results.append(figures)
        if not arguments.json:
            print(
                f"{int(figures['readers']):>9,} readers × {int(figures['candidates'])} candidates, "
                f"{arguments.processes} process{'es' if arguments.processes > 1 else ''}: "
                f"ranked in {figures['seconds']:.2f} s "
                f"({figures['cpu_seconds']:.2f} s of CPU; "
                f"{figures['readers'] / figures['seconds']:,.0f} readers/s), "
                f"peak RSS {figures['peak_rss_mb']:.0f} MB; "
                f"start (rank, store, queue) {figures['start_seconds']:.2f} s, "
                f"of which the transaction (store, queue) {figures['transaction_seconds']:.2f} s, "
                f"{int(figures['selections']):,} selections stored",
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
