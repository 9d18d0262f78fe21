"""Sign-up and edition-page throughput of `newsletter serve`, beside a hello-world FastAPI app.

    .venv/bin/python benchmarks/signup_throughput.py [--requests N] [--concurrency C]
        [--rounds R] [--skip-postgres] [--with-worker] [--json]

Two servers run side by side as processes, on the same uvicorn settings
(`newsletter.web.app.uvicorn_config`, one process each): `newsletter serve`
on a fresh database (SQLite in a temp directory, then a private PostgreSQL
database created and dropped), and a FastAPI app with a hello-world POST (a
JSON body read into a pydantic model) and GET. A bounded async httpx client
(C requests in flight, kept-alive connections) sends N requests per path and
round: sign-ups with addresses never used before, and GETs of one public
edition's page (the rendered digest). The paths are interleaved round by
round; each ratio is taken within a round, and the median over the rounds is
reported with its spread. The server's own CPU time per request (from
/proc/PID/stat) and the client's are reported too: the client shares the
machine, and a client that is the bottleneck would flatter the slower path.

By default the server runs without its worker child (`--no-worker`), so the
figures are the request path's alone; `--with-worker` starts the child, which
then sends the confirmations to a local sink meanwhile. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import HTMLResponse  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from send_throughput import (  # noqa: E402
    CLI_TOP_N,
    EDITION_DATE,
    bench_settings,
    free_port,
    make_digest,
    postgres_reachable,
    smtp_sink,
    temporary_postgres_database,
    wait_until_listening,
)
from sqlalchemy import text  # noqa: E402

from newsletter.core.db import create_db_engine, upgrade_schema  # noqa: E402
from newsletter.core.settings import load_settings  # noqa: E402

PATHS = ("hello_post", "signup", "hello_get", "edition_page")
SECRET_KEY = "benchmark-secret-key-0123456789-abcdefghij"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress on stderr, so `--json` output stays one object on stdout."""
    print(message, file=sys.stderr, flush=True)


# ---- the servers ------------------------------------------------------------------------------


class Greeting(BaseModel):
    """The hello-world POST's body: one field, as small as a sign-up's."""

    email: str


def hello_app() -> FastAPI:
    """A FastAPI hello world: a POST reading a small JSON model, and a GET."""
    app = FastAPI()

    @app.post("/hello", status_code=202)
    async def post_hello(greeting: Greeting) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/hello", response_class=HTMLResponse)
    async def get_hello() -> str:
        return "<!doctype html><title>Hello</title><p>Hello, world.</p>"

    return app


def run_hello_server(port: int, database_url: str) -> None:
    """Child process: the hello app under the very uvicorn settings `newsletter serve` uses."""
    import uvicorn

    from newsletter.web.app import uvicorn_config

    settings = load_settings(_env_file=None, database_url=database_url, secret_key=SECRET_KEY)
    config = uvicorn_config(settings, host="127.0.0.1", port=port)
    config.app = hello_app()
    uvicorn.Server(config).run()


def server_environment(database_url: str, smtp_port: int) -> dict[str, str]:
    """`newsletter serve`'s environment: this database, limits that never bite, a local sink."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    environment.update(
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_SECRET_KEY=SECRET_KEY,
        NEWSLETTER_BASE_URL="https://news.example.org",
        NEWSLETTER_FROM_ADDRESS="Daily ML Papers <digest@news.example.org>",
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(smtp_port),
        # Every request comes from 127.0.0.1: the per-client and per-domain limits would
        # answer 429 or skip the email after a few, which is not the work being measured.
        NEWSLETTER_SIGNUP_RATE_LIMIT=str(10**9),
        NEWSLETTER_CONFIRM_MAILBOX_LIMIT=str(10**9),
        NEWSLETTER_CONFIRM_DOMAIN_LIMIT=str(10**9),
        NEWSLETTER_CONFIRM_SHARED_DOMAIN_LIMIT=str(10**9),
    )
    return environment


@contextlib.contextmanager
def running(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """A server process listening on `port`; yields its pid, stops it on the way out."""
    process = subprocess.Popen(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # both servers log every request alike; nobody reads it
    )
    try:
        wait_until_listening(port, process)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def seed_edition(database_url: str, papers: int) -> None:
    """Migrate, and store one public (sent) edition holding a rendered digest."""
    settings = bench_settings(database_url, 25, 4)
    subject, html, body, _ = make_digest(settings, papers)
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO editions (date, status, subject, html, text, created_at, "
                    "rendered_at, send_started_at) "
                    "VALUES (:date, 'sent', :subject, :html, :text, :now, :now, :now)"
                ),
                {"date": EDITION_DATE, "subject": subject, "html": html, "text": body, "now": now},
            )
    finally:
        engine.dispose()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def client_cpu_seconds() -> float:
    """This process's own CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the client -------------------------------------------------------------------------------


class Load:
    """N requests of one kind, C in flight, each lane on its own kept-alive connection."""

    def __init__(self, concurrency: int, *, client: httpx.AsyncClient | None = None) -> None:
        self.concurrency = concurrency
        self.client = client  # None: the plain HTTP/1.1 client below
        self.serial = 0

    def request(self, kind: str, index: int, run_id: int) -> tuple[str, str, bytes | None]:
        """(method, path, JSON body) of one request of this kind."""
        address = f"r{run_id}x{index}@d{index % 997}.example.org"
        body = json.dumps({"email": address}).encode()
        if kind == "signup":
            # An address never used before, on one of many domains, as real sign-ups are.
            return "POST", "/subscribe", body
        if kind == "hello_post":
            return "POST", "/hello", body
        if kind == "hello_get":
            return "GET", "/hello", None
        return "GET", f"/editions/{EDITION_DATE.isoformat()}", None

    async def run(self, kind: str, base_url: str, count: int) -> tuple[float, int]:
        """(seconds, requests without the expected answer) for `count` requests of this kind."""
        remaining = iter(range(count))
        run_id = self.serial
        self.serial += 1
        expected = 202 if kind in ("signup", "hello_post") else 200
        failures = 0

        async def lane() -> None:
            nonlocal failures
            connection = None if self.client else await PlainConnection.open(base_url)
            try:
                for index in remaining:
                    method, path, body = self.request(kind, index, run_id)
                    if connection is not None:
                        status = await connection.exchange(method, path, body)
                    else:
                        assert self.client is not None
                        answer = await self.client.request(
                            method,
                            f"{base_url}{path}",
                            content=body,
                            headers={"content-type": "application/json"} if body else None,
                        )
                        status = answer.status_code
                    failures += status != expected
            finally:
                if connection is not None:
                    connection.close()

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(self.concurrency)))
        return time.perf_counter() - started, failures


class PlainConnection:
    """A minimal HTTP/1.1 client on one kept-alive connection: one request in one write.

    It costs the client a few tens of microseconds per request where httpx
    costs about 2 ms: on a shared 2-core machine an expensive client would
    cap both servers alike and hide the difference being measured.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, base_url: str) -> PlainConnection:
        """Connect to `http://host:port`."""
        host, _, port = base_url.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}")

    async def exchange(self, method: str, path: str, body: bytes | None) -> int:
        """Send one request and read its whole answer; the status code."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        status_line = await self.reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = None
        chunked = False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while size := int((await self.reader.readline()).strip(), 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        elif length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        """Hang up."""
        self.writer.close()


# ---- one backend ------------------------------------------------------------------------------


async def measure_backend(
    arguments: argparse.Namespace,
    *,
    newsletter_url: str,
    newsletter_pid: int,
    hello_url: str,
    hello_pid: int,
) -> dict[str, object]:
    """Every path, interleaved over the rounds, against one running `newsletter serve`."""
    limits = httpx.Limits(
        max_connections=arguments.concurrency, max_keepalive_connections=arguments.concurrency
    )
    per_second: dict[str, list[float]] = {name: [] for name in PATHS}
    server_cpu_ms: dict[str, list[float]] = {name: [] for name in PATHS}
    client_cpu_ms: dict[str, list[float]] = {name: [] for name in PATHS}
    failures = dict.fromkeys(PATHS, 0)
    targets = {
        "hello_post": (hello_url, hello_pid),
        "hello_get": (hello_url, hello_pid),
        "signup": (newsletter_url, newsletter_pid),
        "edition_page": (newsletter_url, newsletter_pid),
    }
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        load = Load(arguments.concurrency, client=client if arguments.client == "httpx" else None)
        for name in PATHS:  # warm up: connections, caches, the edition page's first build
            url, _ = targets[name]
            await load.run(name, url, min(200, arguments.requests))
        for round_number in range(1, arguments.rounds + 1):
            shift = (round_number - 1) % len(PATHS)
            for name in PATHS[shift:] + PATHS[:shift]:
                url, pid = targets[name]
                server_before, client_before = process_cpu_seconds(pid), client_cpu_seconds()
                seconds, failed = await load.run(name, url, arguments.requests)
                server_cpu = process_cpu_seconds(pid) - server_before
                client_cpu = client_cpu_seconds() - client_before
                per_second[name].append(arguments.requests / seconds)
                server_cpu_ms[name].append(server_cpu / arguments.requests * 1000)
                client_cpu_ms[name].append(client_cpu / arguments.requests * 1000)
                failures[name] += failed
            log(
                f"  round {round_number}: "
                + ", ".join(f"{name} {values[-1]:,.0f}/s" for name, values in per_second.items())
            )
    if any(failures.values()):
        raise RuntimeError(f"requests that did not get the expected answer: {failures}")

    def ratios(numerator: str, denominator: str) -> list[float]:
        return [a / b for a, b in zip(per_second[numerator], per_second[denominator], strict=True)]

    signup_ratios = ratios("signup", "hello_post")
    edition_ratios = ratios("edition_page", "hello_get")
    return {
        "signup_per_s": statistics.median(per_second["signup"]),
        "hello_post_per_s": statistics.median(per_second["hello_post"]),
        "signup_ratio_vs_hello": statistics.median(signup_ratios),
        "signup_ratio_spread": [min(signup_ratios), max(signup_ratios)],
        "edition_page_per_s": statistics.median(per_second["edition_page"]),
        "hello_get_per_s": statistics.median(per_second["hello_get"]),
        "edition_ratio_vs_hello": statistics.median(edition_ratios),
        "edition_ratio_spread": [min(edition_ratios), max(edition_ratios)],
        "server_cpu_ms_per_request": {
            name: statistics.median(values) for name, values in server_cpu_ms.items()
        },
        "client_cpu_ms_per_request": {
            name: statistics.median(values) for name, values in client_cpu_ms.items()
        },
        "rounds": per_second,
    }


def measure_newsletter_serve(
    arguments: argparse.Namespace,
    *,
    database_url: str,
    smtp_port: int,
    hello_url: str,
    hello_pid: int,
) -> dict[str, object]:
    """Seed the database, start `newsletter serve` on it and measure every path."""
    seed_edition(database_url, arguments.papers)
    port = free_port()
    serve = [sys.executable, "-m", "newsletter", "serve", "--port", str(port)]
    if not arguments.with_worker:
        serve.append("--no-worker")
    with running(serve, port, server_environment(database_url, smtp_port)) as pid:
        return asyncio.run(
            measure_backend(
                arguments,
                newsletter_url=f"http://127.0.0.1:{port}",
                newsletter_pid=pid,
                hello_url=hello_url,
                hello_pid=hello_pid,
            )
        )


@contextlib.contextmanager
def backend_database(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh database of this kind; a PostgreSQL one is dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'signup.db'}"
        return
    with temporary_postgres_database() as url:
        yield url


def run(arguments: argparse.Namespace) -> dict[str, object]:
    """Both backends against one hello-world server; the figures by name."""
    backends = ["sqlite"]
    if not arguments.skip_postgres:
        if postgres_reachable():
            backends.append("postgresql")
        else:
            log("PostgreSQL does not answer on 127.0.0.1:5432: only SQLite is measured")
    results: dict[str, object] = {}
    hello_port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="bench-signup-") as directory,
        smtp_sink() as (smtp_port, sink),
    ):
        tmp = Path(directory)
        hello = [sys.executable, __file__, "--child", "hello", "--port", str(hello_port)]
        hello += ["--database-url", f"sqlite:///{tmp / 'unused.db'}"]
        with running(hello, hello_port) as hello_pid:
            for backend in backends:
                log(
                    f"{backend}: newsletter serve"
                    f"{'' if arguments.with_worker else ' --no-worker'} beside the hello app; "
                    f"{arguments.requests} requests per path and round, "
                    f"{arguments.concurrency} in flight, {arguments.rounds} rounds"
                    + (f"; confirmations go to {sink}" if arguments.with_worker else "")
                )
                with backend_database(backend, tmp) as database_url:
                    results[backend] = measure_newsletter_serve(
                        arguments,
                        database_url=database_url,
                        smtp_port=smtp_port,
                        hello_url=f"http://127.0.0.1:{hello_port}",
                        hello_pid=hello_pid,
                    )
    sqlite = results["sqlite"]
    assert isinstance(sqlite, dict)
    for key in (
        "signup_per_s",
        "hello_post_per_s",
        "signup_ratio_vs_hello",
        "edition_page_per_s",
        "hello_get_per_s",
        "edition_ratio_vs_hello",
    ):
        results[key] = sqlite[key]
    postgres = results.get("postgresql")
    if isinstance(postgres, dict):
        results["signup_per_s_postgres"] = postgres["signup_per_s"]
        results["signup_ratio_vs_hello_postgres"] = postgres["signup_ratio_vs_hello"]
    return results


def print_table(results: dict[str, object]) -> None:
    """The figures for a person, with the targets beside them."""
    for backend in ("sqlite", "postgresql"):
        figures = results.get(backend)
        if not isinstance(figures, dict):
            continue
        server = figures["server_cpu_ms_per_request"]
        client = figures["client_cpu_ms_per_request"]
        print(f"{backend}: median requests/s over the rounds (server / client CPU ms each)")
        for name, key in (
            ("signup", "signup_per_s"),
            ("hello_post", "hello_post_per_s"),
            ("edition_page", "edition_page_per_s"),
            ("hello_get", "hello_get_per_s"),
        ):
            print(
                f"  {name:<13} {figures[key]:>9,.0f}/s  "
                f"({server[name]:.2f} / {client[name]:.2f} ms)"
            )
        low, high = figures["signup_ratio_spread"]
        print(
            f"  sign-up / hello POST   {figures['signup_ratio_vs_hello']:.3f} "
            f"({low:.3f}–{high:.3f}; target ≥ 0.3)"
        )
        low, high = figures["edition_ratio_spread"]
        print(
            f"  edition / hello GET    {figures['edition_ratio_vs_hello']:.3f} "
            f"({low:.3f}–{high:.3f}; target ≥ 0.5)"
        )


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per path and round")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions")
    parser.add_argument(
        "--papers", type=int, default=CLI_TOP_N, help="papers in the edition page's digest"
    )
    parser.add_argument("--skip-postgres", action="store_true", help="only SQLite")
    parser.add_argument(
        "--client",
        choices=["plain", "httpx"],
        default="plain",
        help="plain: a minimal HTTP/1.1 client (default); httpx: httpx.AsyncClient, costlier",
    )
    parser.add_argument(
        "--with-worker",
        action="store_true",
        help="run serve's worker child (it sends the confirmations meanwhile)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    # Internal: the hello-world server this script starts.
    parser.add_argument("--child", choices=["hello"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    """Run the benchmark (or the hello-world server child)."""
    arguments = parse_arguments()
    if arguments.child == "hello":
        run_hello_server(arguments.port, arguments.database_url)
        return
    results = run(arguments)
    if arguments.json:
        print(json.dumps(results))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
