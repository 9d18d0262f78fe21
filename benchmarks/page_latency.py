"""How long a page takes while an edition is being sent from /admin.

Runs `newsletter serve` as a real process on a fresh SQLite database with N
confirmed readers and the bundled sample day, an aiosmtpd sink in another
process, then asks for the sign-up page every 20 ms: first with nothing
going on, then from the moment `POST /admin/editions/{day}/send` is made until
the ledger says the edition is sent. Prints the latencies of both phases.

    .venv/bin/python benchmarks/page_latency.py [--subscribers 3000] [--json]

Extra arguments after `--` go to `newsletter serve` (e.g. `-- --no-worker`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

TOKEN = "benchmark-admin-token-0123456789"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _seed(env: dict[str, str], subscribers: int) -> str:
    from sqlalchemy import insert

    from newsletter.core.clock import utc_now
    from newsletter.core.db import create_db_engine
    from newsletter.sample_data import SAMPLE_DAY, sample_day_path
    from subscribers.models import Subscriber

    newsletter = [sys.executable, "-m", "newsletter"]
    subprocess.run([*newsletter, "db", "upgrade"], env=env, check=True, capture_output=True)
    day = SAMPLE_DAY.isoformat()
    subprocess.run(
        [*newsletter, "ingest", "--file", str(sample_day_path()), "--date", day],
        env=env,
        check=True,
        capture_output=True,
    )
    engine = create_db_engine(env["NEWSLETTER_DATABASE_URL"])
    now = utc_now()
    rows = [
        {
            "email": f"reader{n:06d}@example.org",
            "name": f"Reader {n}",
            "status": "confirmed",
            "key": f"key-{n:06d}",
            "topics": [],
            "paused": False,
            "created_at": now,
            "updated_at": now,
        }
        for n in range(subscribers)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Subscriber.__table__), rows)  # type: ignore[attr-defined]
    engine.dispose()
    return day


def _latencies(client: httpx.Client, *, until: Any, least: int, interval: float) -> list[float]:
    taken: list[float] = []
    while len(taken) < least or not until():
        started = time.perf_counter()
        client.get("/").raise_for_status()
        took = time.perf_counter() - started
        taken.append(took * 1000)
        # A steady pace, so both phases (and both versions) see the same load.
        time.sleep(max(0.0, interval - took))
    return taken


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "requests": len(values),
        "median_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=3000)
    parser.add_argument("--interval-ms", type=float, default=20.0, help="between page requests")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("serve_args", nargs="*")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="page-latency-"))
    smtp_port, web_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(smtp_port),
        NEWSLETTER_ADMIN_TOKEN=TOKEN,
        NEWSLETTER_BASE_URL=f"http://127.0.0.1:{web_port}",
    )
    day = _seed(env, args.subscribers)
    sink_at = f"127.0.0.1:{smtp_port}"
    sink = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l", sink_at],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(web_port), *args.serve_args],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(smtp_port)
        _wait_for_port(web_port)
        base_url = f"http://127.0.0.1:{web_port}"
        with httpx.Client(base_url=base_url, timeout=60) as client:
            interval = args.interval_ms / 1000
            idle = _latencies(client, until=lambda: True, least=200, interval=interval)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            started = time.monotonic()
            answer = client.post(f"/admin/editions/{day}/send", headers=auth)
            answered_ms = (time.monotonic() - started) * 1000
            answer.raise_for_status()
            last_check = [0.0]

            def sent() -> bool:
                if time.monotonic() - last_check[0] < 0.1:
                    return False
                last_check[0] = time.monotonic()
                status = client.get(f"/admin/editions/{day}", headers=auth).json()
                return status.get("status") == "sent"

            during = _latencies(client, until=sent, least=1, interval=interval)
            send_seconds = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(30)
        sink.terminate()
        sink.wait(10)
    result = {
        "subscribers": args.subscribers,
        "send_answered_ms": round(answered_ms, 1),
        "send_seconds": round(send_seconds, 2),
        "idle": _summary(idle),
        "during_send": _summary(during),
    }
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
