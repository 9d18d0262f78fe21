"""How long `newsletter subscribers import` takes for a 100,000-row list on SQLite.

Writes a CSV of N rows (mixed-case addresses, names, topics, a few bad and
duplicate rows) to a temp directory, creates a fresh SQLite database there and
times `subscribers.importing.import_csv_file` — what the CLI and the admin
endpoint call — with `--confirmed`, then a second run of the same file (which
must add nothing). Target: the first run under 15 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.core.settings import load_settings
from subscribers.importing import import_csv_file

TOPICS = ("cs.LG", "cs.CL", "cs.CV", "stat.ML")


def write_list(path: Path, rows: int) -> None:
    """A list like one moved from another service: about 1% bad or repeated rows."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "topics", "status"])
        for number in range(rows):
            if number % 200 == 7:
                writer.writerow([f"not-an-address-{number}", "", "", ""])
            elif number % 200 == 9:
                writer.writerow([f"Reader{number - 2}@Example.org", "again", "", ""])
            else:
                status = "unsubscribed" if number % 50 == 0 else ""
                writer.writerow(
                    [
                        f"Reader{number}@Example.org",
                        f"Reader Number {number}",
                        ";".join(TOPICS[: number % 4]),
                        status,
                    ]
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        csv_path = Path(directory) / "list.csv"
        write_list(csv_path, options.rows)
        settings = load_settings(
            database_url=f"sqlite:///{Path(directory) / 'bench.db'}",
            topics=list(TOPICS),
        )
        engine = create_db_engine(settings.database_url)
        upgrade_schema(engine)
        try:
            started = time.perf_counter()
            first = import_csv_file(engine, csv_path, topics=settings.topics, confirmed=True)
            first_seconds = time.perf_counter() - started
            started = time.perf_counter()
            rerun = import_csv_file(engine, csv_path, topics=settings.topics, confirmed=True)
            rerun_seconds = time.perf_counter() - started
        finally:
            engine.dispose()
    assert rerun.added == 0, "a rerun added rows"
    figures = {
        "rows": options.rows,
        "added": first.added,
        "skipped": len(first.skipped),
        "import_seconds": round(first_seconds, 2),
        "rows_per_second": round(options.rows / first_seconds),
        "rerun_seconds": round(rerun_seconds, 2),
        "rerun_already_present": rerun.already_present,
    }
    if options.json:
        print(json.dumps(figures))
        return
    print(
        f"{options.rows} rows: {first.added} added, {len(first.skipped)} skipped "
        f"in {first_seconds:.2f} s ({figures['rows_per_second']} rows/s); "
        f"rerun {rerun_seconds:.2f} s, {rerun.already_present} already present, 0 added"
    )


if __name__ == "__main__":
    main()
