"""Send throughput: the real pipeline against the machine's limit, raw SMTP and a naive build.

    .venv/bin/python benchmarks/send_throughput.py [--subscribers N] [--concurrency C] [--json]

Everything runs against one fast local SMTP sink (postfix's `smtp-sink` when
installed, else an aiosmtpd sink in a subprocess) with the same digest (by
default the CLI's: NEWSLETTER_TOP_N papers) and the same number of connections
(by default the CLI's NEWSLETTER_SMTP_CONCURRENCY):

(l) the machine's limit: postfix's `smtp-source` (C) sending the same message
    bytes over the same number of sessions (skipped, saying so, when missing);
(a) `send_edition` with the delivery ledger on SQLite;
(b) the same on PostgreSQL at 127.0.0.1:5432 (a temporary database, dropped after);
(c) one prebuilt message sent raw with aiosmtplib;
(d) the naive way: `build_message` per recipient, then `send_message`;
(e) one prepared message (`CompiledDigest.prepare`) sent with the project's own
    `connection.transmit` (pipelined when the sink offers it): the pool's ceiling;

With `--personal`, only the personal case instead: N readers (default 10,000)
with varied profiles (topics and phrases of the labelled readers'
interests in tests/data/relevance, different "For you" counts) against
that set's papers; the time of ranking every reader in one pass, the number
of distinct selections, the largest encoded HTML part of any selection, and
`send_edition` (SQLite) in messages per second beside raw aiosmtplib sending
one personal digest's bytes over the same connections, round by round. With
`--all-different` as well, the worst case: every reader's words carry a token of
their own in each phrase, so every reader's why lines, hence their selection,
differ (one compiled digest per reader). It also prints the CPU per message
of the sending processes and of the sink, and the ceiling they put on two
processes on this machine's cores. With `--personal --cli-readers N`, instead,
`newsletter send` itself end to end for N personal readers (its start,
ranking and sending processes), beside `smtp-source` sending as many messages;

Every Python path runs on the event loop the commands run on (uvloop where it
is installed: `newsletter.core.eventloop`). The paths are
run interleaved round by round; each ratio is taken within a round and the
median over the rounds is reported with its spread. Then the peak memory
(VmHWM, read by the measured process itself) of a dry run of (a), everything
but SMTP, at 100,000 and 1,000,000 subscribers, each in a fresh process after
seeding in another one. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import aiosmtplib  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402

from newsletter.core import eventloop  # noqa: E402
from newsletter.core.db import create_db_engine, upgrade_schema  # noqa: E402
from newsletter.core.settings import Settings, load_settings  # noqa: E402
from newsletter.values import (  # noqa: E402
    PaperRecord,
    PersonalField,
    RankedPaper,
    new_link_marker,
)

if TYPE_CHECKING:
    from newsletter.editions.personal import ReaderSelection
    from newsletter.render import DigestBlocks

EDITION_DATE = dt.date(2026, 1, 5)
# The random part of the placeholders, as one rendering of an edition has it.
LINK_MARKER = new_link_marker()
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SMTP_SINK = Path("/usr/sbin/smtp-sink")
SMTP_SOURCE = Path("/usr/sbin/smtp-source")
# The CLI's defaults: what `newsletter send` does unless told otherwise.
CLI_TOP_N = int(Settings.model_fields["top_n"].default)
CLI_CONCURRENCY = int(Settings.model_fields["smtp_concurrency"].default)
# The paths, in the order of a round's first turn (each round starts one further on).
PATHS = (
    "smtp_source_limit",
    "raw_limit",
    "prepared_limit",
    "pipeline_sqlite",
    "pipeline_sqlite_2p",
    "pipeline_postgres",
    "cli_sqlite",
    "cli_sqlite_2p",
    "naive",
)
NAIVE_MAX_MESSAGES = 2000  # the naive path is slow; its rate settles long before this
SEED_CHUNK = 50_000


# ---- the digest ---------------------------------------------------------------------------


def realistic_papers(count: int) -> list[RankedPaper]:
    """Papers shaped like a real Hugging Face daily list: long titles, abstracts, many authors."""
    abstract = (
        "Large language models trained on web-scale corpora exhibit emergent abilities, yet "
        "their behaviour under distribution shift remains poorly understood. We introduce a "
        "benchmark of 12,000 tasks spanning reasoning, coding and multilingual understanding "
        "(including 中文, 日本語 and Ελληνικά), and show that instruction tuning with ≈3% "
        "synthetic data closes 41% of the gap. Code and data are released. "
    )
    papers = []
    for position in range(1, count + 1):
        record = PaperRecord(
            arxiv_id=f"2601.{position:05d}",
            title=(
                f"Scaling Laws for Mixture-of-Experts Diffusion Transformers № {position}: "
                "Efficient Training with Ünïcode-Aware Tokenizers"
            ),
            abstract=abstract * 3,
            authors=tuple(f"Author {n} Ægirsdóttir" for n in range(8)),
            upvotes=200 - position,
            num_comments=position,
            github_repo=f"https://github.com/example-lab/project-{position}",
            github_stars=1000 + position,
            project_page=f"https://example-lab.github.io/project-{position}",
            thumbnail=f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2601.{position:05d}.png",
            ai_summary=abstract * 2,
        )
        papers.append(RankedPaper(paper=record, score=200.0 - position, position=position))
    return papers


def make_digest(settings: Settings, paper_count: int) -> tuple[str, str, str, str]:
    """(subject, html, text, how) of a rendered digest, or a synthetic one without a renderer."""
    try:
        from newsletter.core.templating import make_template_environment
        from newsletter.render import render_digest
    except ImportError:
        return synthetic_digest()
    digest = render_digest(
        make_template_environment(settings.templates_dir),
        realistic_papers(paper_count),
        edition_date=EDITION_DATE,
        base_url=settings.base_url,
        postal_address=settings.postal_address,
        list_name="Daily ML Papers",
        link_marker=LINK_MARKER,
    )
    how = f"render_digest, {len(digest.papers)} papers"
    return digest.subject, digest.html, digest.text, how


def synthetic_digest() -> tuple[str, str, str, str]:
    """A 60 KB stand-in for when `newsletter.render` is not available."""
    card = (
        '<tr><td style="padding:16px 20px;font-family:Arial,sans-serif">'
        '<h2><a href="https://huggingface.co/papers/2601.00001">Scaling Ünïcode Transformers'
        "</a></h2><p>Zoë Ægir, 山田太郎 et al.</p><p>"
        + "We study long-context reasoning in large language models. " * 12
        + "</p></td></tr>\n"
    )
    unsubscribe = PersonalField.UNSUBSCRIBE_URL.placeholder(LINK_MARKER)
    preferences = PersonalField.PREFERENCES_URL.placeholder(LINK_MARKER)
    html = (
        '<!doctype html><html lang="en"><body><table>'
        + card * 40
        + f'<tr><td><a href="{unsubscribe}">Unsubscribe</a> '
        f'<a href="{preferences}">Preferences</a></td></tr></table></body></html>'
    )
    text_part = "Scaling Ünïcode Transformers\n" * 200 + f"Unsubscribe: {unsubscribe}\n"
    return "Daily ML Papers — synthetic digest", html, text_part, "synthetic"


# ---- helpers ------------------------------------------------------------------------------


def bench_settings(database_url: str, smtp_port: int, concurrency: int) -> Settings:
    """Settings for one run; `.env` and the environment are ignored so runs compare."""
    return load_settings(
        _env_file=None,
        database_url=database_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_concurrency=concurrency,
        smtp_timeout_seconds=60.0,
        secret_key="benchmark-secret-key-0123456789",
        base_url="https://news.example.org",
        from_address="Daily ML Papers <digest@news.example.org>",
        send_retry_base_seconds=0.0,
    )


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    """Block until something accepts connections on the port."""
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"the SMTP sink exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the SMTP sink did not listen on port {port}")


@contextlib.contextmanager
def smtp_sink(*, postfix: bool = False) -> Iterator[tuple[int, str]]:
    """A fast SMTP server that accepts and discards everything: (port, description).

    With `postfix`, a real relay instead: Debian's Postfix on a private port and
    spool (tests/support/postfix.py), which queues each message, then discards it.
    """
    if postfix:
        from tests.support.postfix import running_postfix

        with running_postfix(discard=True) as relay:
            yield relay.port, "Postfix (queues, then discards)"
        return
    port = free_port()
    if SMTP_SINK.exists():
        command = [str(SMTP_SINK)]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]
        command += [f"127.0.0.1:{port}", "1000"]
        description = "postfix smtp-sink"
    else:
        command = [sys.executable, __file__, "--child", "sink", "--port", str(port)]
        description = "aiosmtpd sink (subprocess)"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    SINK_PIDS[port] = process.pid
    try:
        wait_until_listening(port, process)
        yield port, description
    finally:
        del SINK_PIDS[port]
        process.terminate()
        process.wait(timeout=10)


# The sink process on each port (not Postfix's, which are many): its CPU is read from /proc.
SINK_PIDS: dict[int, int] = {}


def sink_cpu_seconds(port: int) -> float | None:
    """The CPU time the sink on `port` has used so far (None: not one process of ours)."""
    pid = SINK_PIDS.get(port)
    if pid is None:
        return None
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(who: int) -> float:
    """CPU time of this process (RUSAGE_SELF) or of its ended, waited-for children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_aiosmtpd_sink(port: int) -> None:
    """The fallback sink: aiosmtpd accepting every message (runs in its own process)."""
    from aiosmtpd.controller import Controller

    class Discard:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    controller = Controller(Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def postgres_reachable() -> bool:
    """True when a PostgreSQL server answers on 127.0.0.1:5432."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), 1.0):
        return True
    return False


@contextlib.contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """A fresh, uniquely named database on the shared server; dropped afterwards."""
    from sqlalchemy import create_engine

    name = f"bench_send_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---- seeding --------------------------------------------------------------------------------


def seed_database(engine: Engine, *, subscribers: int, subject: str, html: str, body: str) -> None:
    """Migrate, then insert N confirmed subscribers and a draft edition holding the digest.

    Rows are generated inside the database (a recursive CTE on SQLite,
    generate_series on PostgreSQL), in chunks, so seeding a million takes seconds.
    """
    upgrade_schema(engine)
    postgres = engine.dialect.name == "postgresql"
    # One in ten names is non-ASCII and one in ten is missing, as in a real list.
    if postgres:
        insert = text(
            "INSERT INTO subscribers (email, name, status, key, topics, paused, created_at, "
            "updated_at) SELECT 'reader' || n || '@example.org', "
            "CASE WHEN n % 10 = 0 THEN 'Zoë Ægir ' || n WHEN n % 10 = 1 THEN NULL "
            "ELSE 'Reader ' || n END, 'confirmed', md5(n::text || random()::text), "
            "'[]'::json, false, now() AT TIME ZONE 'utc', now() AT TIME ZONE 'utc' "
            "FROM generate_series(CAST(:start AS integer), CAST(:stop AS integer)) AS n"
        )
    else:
        insert = text(
            "WITH RECURSIVE seq(n) AS (SELECT :start UNION ALL SELECT n + 1 FROM seq "
            "WHERE n < :stop) "
            "INSERT INTO subscribers (email, name, status, key, topics, paused, created_at, "
            "updated_at) SELECT 'reader' || n || '@example.org', "
            "CASE WHEN n % 10 = 0 THEN 'Zoë Ægir ' || n WHEN n % 10 = 1 THEN NULL "
            "ELSE 'Reader ' || n END, 'confirmed', lower(hex(randomblob(16))), '[]', 0, "
            "datetime('now'), datetime('now') FROM seq"
        )
    with engine.begin() as connection:
        for start in range(1, subscribers + 1, SEED_CHUNK):
            stop = min(subscribers, start + SEED_CHUNK - 1)
            connection.execute(insert, {"start": start, "stop": stop})
        connection.execute(
            text(
                "INSERT INTO editions (date, status, subject, html, text, created_at, "
                "rendered_at) VALUES (:date, 'draft', :subject, :html, :text, :now, :now)"
            ),
            {
                "date": EDITION_DATE,
                "subject": subject,
                "html": html,
                "text": body,
                "now": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            },
        )


# ---- the four measurements --------------------------------------------------------------------


def measure_pipeline(
    settings: Settings, *, subscribers: int, digest: tuple[str, str, str]
) -> float:
    """(a)/(b): messages per second of `send_edition` over the real SMTP pool."""
    from newsletter.delivery.worker import send_edition

    engine = create_db_engine(settings.database_url)
    try:
        subject, html, body = digest
        seed_database(engine, subscribers=subscribers, subject=subject, html=html, body=body)
        started = time.perf_counter()
        report = eventloop.run(send_edition(settings, engine, edition_date=EDITION_DATE))
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    if report.sent != subscribers:
        raise RuntimeError(
            f"the pipeline sent {report.sent} of {subscribers} "
            f"(failed {report.failed}, bounced {report.bounced}, paused: {report.paused_reason})"
        )
    return subscribers / elapsed


def measure_pipeline_processes(
    settings: Settings, *, processes: int, subscribers: int, digest: tuple[str, str, str]
) -> float:
    """(a2): `send --processes N`'s sending processes, measured as (a) is.

    In this process, as `newsletter send` does once its command has started:
    the edition is started (its audience queued), then N sending processes are
    forked from this one, each running `newsletter send --as-child` with
    concurrency / N connections (so the relay sees as many sessions as in (a)),
    until the last has ended. Like (a), the figure holds the processes' own
    start (each compiles the digest and opens its connections) but not the
    interpreter's start and imports, which (f) and (f2) measure through the CLI.
    """
    from newsletter.delivery.worker import prepare_send

    engine = create_db_engine(settings.database_url)
    subject, html, body = digest
    seed_database(engine, subscribers=subscribers, subject=subject, html=html, body=body)
    per_process = per_process_settings(settings, processes)
    try:
        started = time.perf_counter()
        begun = prepare_send(engine, edition_date=EDITION_DATE, settings=per_process)
        sent = send_in_processes(per_process, engine, processes, EDITION_DATE, begun.edition_id)
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    if sent != subscribers:
        raise RuntimeError(f"--processes {processes} sent {sent} of {subscribers}")
    return subscribers / elapsed


def per_process_settings(settings: Settings, processes: int) -> Settings:
    """Each of N processes' settings: concurrency / N connections, so the relay sees as many."""
    return settings.model_copy(
        update={"smtp_concurrency": max(1, settings.smtp_concurrency // processes)}
    )


def send_in_processes(
    settings: Settings, engine: Engine, processes: int, day: dt.date, edition_id: int
) -> int:
    """Send a started edition from N processes forked as `send --processes N` forks them.

    The `newsletter` command is built first, as it is in the command's own
    process before it forks. Returns the messages sent.
    """
    import threading

    from newsletter.cli import newsletter_command, run_command_here
    from newsletter.delivery.worker_process import run_sending_processes

    newsletter_command()
    command = [sys.executable, "-m", "newsletter", "send", "--as-child", "--date", day.isoformat()]
    outcome = run_sending_processes(
        settings,
        engine,
        children={
            f"bench-{number}": [*command, "--worker-id", f"bench-{number}"]
            for number in range(1, processes + 1)
        },
        edition_id=edition_id,
        progress=None,
        stop=threading.Event(),
        kill=threading.Event(),
        run_in_fork=run_command_here,
    )
    if outcome.failed_statuses:
        raise RuntimeError(f"--processes {processes}: children failed: {outcome.failed_statuses}")
    return outcome.report.sent


def cli_environment(settings: Settings) -> dict[str, str]:
    """The environment for a `newsletter` command with these settings (none of ours inherited)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return environment | {
        "NEWSLETTER_DATABASE_URL": settings.database_url,
        "NEWSLETTER_SMTP_HOST": settings.smtp_host,
        "NEWSLETTER_SMTP_PORT": str(settings.smtp_port),
        "NEWSLETTER_SMTP_TIMEOUT_SECONDS": str(settings.smtp_timeout_seconds),
        "NEWSLETTER_SECRET_KEY": settings.secret_key,
        "NEWSLETTER_BASE_URL": settings.base_url,
        "NEWSLETTER_FROM_ADDRESS": settings.from_address,
        "NEWSLETTER_SEND_RETRY_BASE_SECONDS": "0",
    }


def measure_cli(
    settings: Settings, *, processes: int, subscribers: int, digest: tuple[str, str, str], tmp: Path
) -> float:
    """(f)/(f2): the command `newsletter worker --processes N`, start-up and all.

    The edition is started (its audience queued) in this process, then the
    command runs: its interpreter's start and imports, the N processes
    (concurrency / N connections each) and its exit are in the figure, timed
    from the start of the edition.
    """
    from newsletter.delivery.control import start_edition

    engine = create_db_engine(settings.database_url)
    subject, html, body = digest
    seed_database(engine, subscribers=subscribers, subject=subject, html=html, body=body)
    environment = cli_environment(settings)
    environment["NEWSLETTER_SMTP_CONCURRENCY"] = str(max(1, settings.smtp_concurrency // processes))
    command = [sys.executable, "-m", "newsletter", "worker", "--processes", str(processes)]
    try:
        started = time.perf_counter()
        start_edition(engine, EDITION_DATE)
        finished = subprocess.run(
            command, env=environment, cwd=tmp, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - started
        if finished.returncode != 0:
            raise RuntimeError(f"worker --processes {processes}: {finished.stderr[-2000:]}")
        with engine.connect() as connection:
            sent = connection.execute(
                text("SELECT count(*) FROM deliveries WHERE status = 'sent'")
            ).scalar_one()
    finally:
        engine.dispose()
    if sent != subscribers:
        raise RuntimeError(f"worker --processes {processes} sent {sent} of {subscribers}")
    return subscribers / elapsed


async def _send_over_connections(
    settings: Settings,
    count: int,
    concurrency: int,
    make_and_send: Callable[[aiosmtplib.SMTP, int], Awaitable[None]],
) -> float:
    from newsletter.delivery.connection import make_smtp_client

    # The same client set-up as the pipeline's pool (aiosmtplib's default would
    # upgrade to TLS whenever the sink offers STARTTLS, measuring encryption).
    # Timed from the first connect to the last QUIT, like the pipeline's send,
    # which opens and closes its own connections.
    started = time.perf_counter()
    clients = [make_smtp_client(settings) for _ in range(concurrency)]
    await asyncio.gather(*(client.connect() for client in clients))
    remaining = iter(range(count))

    async def lane(client: aiosmtplib.SMTP) -> None:
        for index in remaining:
            await make_and_send(client, index)

    await asyncio.gather(*(lane(client) for client in clients))
    await asyncio.gather(*(client.quit() for client in clients))
    return count / (time.perf_counter() - started)


def measure_raw(settings: Settings, *, count: int, digest: tuple[str, str, str]) -> float:
    """(c): one prebuilt message sent `count` times over C connections: the ceiling."""
    sender, message = one_message(settings, digest)

    async def send(client: aiosmtplib.SMTP, index: int) -> None:
        await client.sendmail(sender, [f"reader{index}@example.org"], message)

    return eventloop.run(_send_over_connections(settings, count, settings.smtp_concurrency, send))


def smtp_source_command() -> Path | None:
    """postfix's `smtp-source`, if installed (Debian package `postfix`)."""
    if SMTP_SOURCE.exists():
        return SMTP_SOURCE
    found = shutil.which("smtp-source")
    return Path(found) if found else None


def one_message(settings: Settings, digest: tuple[str, str, str]) -> tuple[str, bytes]:
    """(envelope sender, bytes) of one reader's message, as the pipeline assembles it."""
    from newsletter.delivery.assemble import CompiledDigest, Recipient

    subject, html, body = digest
    compiled = CompiledDigest.compile(
        settings,
        subject=subject,
        html=html,
        text=body,
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
    )
    message = compiled.assemble(Recipient("reader1@example.org", "Reader 1", "k" * 22, "<1@x>"))
    return compiled.envelope_from, bytes(message)


def measure_smtp_source(
    settings: Settings, *, source: Path, count: int, digest: tuple[str, str, str], tmp: Path
) -> float:
    """(l): postfix's smtp-source sending the same message `count` times over C sessions.

    `-F` takes the message with LF line endings and writes CRLF and the
    dot-stuffing itself; `-d` keeps each session open for its next message.
    Timed from the process's start to its exit, connections included.
    """
    sender, message = one_message(settings, digest)
    path = tmp / "message.eml"
    path.write_bytes(message.replace(b"\r\n", b"\n"))
    command = [
        str(source),
        "-d",
        "-s",
        str(settings.smtp_concurrency),
        "-m",
        str(count),
        "-f",
        sender,
        "-t",
        "reader@example.org",
        "-F",
        str(path),
        f"127.0.0.1:{settings.smtp_port}",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return count / (time.perf_counter() - started)


def measure_prepared(settings: Settings, *, count: int, digest: tuple[str, str, str]) -> float:
    """(e): one prepared message sent `count` times with `transmit` over C connections."""
    from newsletter.delivery.assemble import CompiledDigest, Recipient
    from newsletter.delivery.connection import connect, make_smtp_client, transmit

    subject, html, body = digest
    compiled = CompiledDigest.compile(
        settings,
        subject=subject,
        html=html,
        text=body,
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
    )
    message = compiled.prepare(Recipient("reader1@example.org", "Reader 1", "k" * 22, "<1@x>"))

    async def run() -> float:
        started = time.perf_counter()
        clients = [make_smtp_client(settings) for _ in range(settings.smtp_concurrency)]
        refusals = await asyncio.gather(*(connect(client) for client in clients))
        if any(refusals):
            raise RuntimeError(f"cannot connect to the sink: {refusals}")
        remaining = iter(range(count))

        async def lane(client: aiosmtplib.SMTP) -> None:
            for index in remaining:
                reply = await transmit(
                    client, compiled.envelope_from, f"reader{index}@example.org", message
                )
                if not reply.accepted:
                    raise RuntimeError(f"the sink refused a message: {reply}")

        await asyncio.gather(*(lane(client) for client in clients))
        await asyncio.gather(*(client.quit() for client in clients))
        return count / (time.perf_counter() - started)

    return eventloop.run(run())


def measure_naive(settings: Settings, *, count: int, digest: tuple[str, str, str]) -> float:
    """(d): build an EmailMessage per recipient with the email package, then send it."""
    from newsletter.delivery.assemble import Recipient, build_message, make_message_id

    subject, html, body = digest

    async def send(client: aiosmtplib.SMTP, index: int) -> None:
        recipient = Recipient(
            email=f"reader{index}@example.org",
            name=f"Reader {index}",
            subscriber_key=f"key{index:019d}",
            message_id=make_message_id(settings, edition_date=EDITION_DATE, delivery_id=index),
        )
        message = build_message(
            settings,
            subject=subject,
            html=html,
            text=body,
            edition_date=EDITION_DATE,
            link_marker=LINK_MARKER,
            recipient=recipient,
        )
        await client.send_message(message)

    return eventloop.run(_send_over_connections(settings, count, settings.smtp_concurrency, send))


def measure_assemble_microseconds(settings: Settings, digest: tuple[str, str, str]) -> float:
    """Mean cost of one `assemble` call on this digest."""
    return _microseconds_per_message(settings, digest, prepared=False)


def measure_prepare_microseconds(settings: Settings, digest: tuple[str, str, str]) -> float:
    """Mean cost of one `prepare` call (the message ready for DATA) on this digest."""
    return _microseconds_per_message(settings, digest, prepared=True)


def _microseconds_per_message(
    settings: Settings, digest: tuple[str, str, str], *, prepared: bool
) -> float:
    from newsletter.delivery.assemble import CompiledDigest, Recipient

    subject, html, body = digest
    compiled = CompiledDigest.compile(
        settings,
        subject=subject,
        html=html,
        text=body,
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
    )
    people = [
        Recipient(f"reader{n}@example.org", f"Zoë Ægir {n}", f"key{n:019d}", f"<{n}@x>")
        for n in range(2000)
    ]
    build = compiled.prepare if prepared else compiled.assemble
    started = time.perf_counter()
    for person in people:
        build(person)
    return (time.perf_counter() - started) / len(people) * 1e6


def measure_dkim_cost(arguments: argparse.Namespace) -> dict[str, float]:
    """`assemble` per message unsigned, then signed with a fresh RSA-2048 and ed25519 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    keys = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-dkim-") as tmp:
        settings = bench_settings(f"sqlite:///{Path(tmp) / 'unused.db'}", 25, 1)
        subject, html, body, how = make_digest(settings, arguments.papers)
        digest = (subject, html, body)
        costs = {"assemble_us": measure_assemble_microseconds(settings, digest)}
        log(f"digest: {how}; assemble() unsigned: {costs['assemble_us']:.1f} µs per message")
        for kind, key in keys.items():
            path = Path(tmp) / f"{kind}.pem"
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            signing = settings.model_copy(update={"dkim_selector": "bench", "dkim_key_file": path})
            cost = measure_assemble_microseconds(signing, digest)
            costs[f"assemble_dkim_{kind}_us"] = cost
            log(f"assemble() signed {kind}: {cost:.1f} µs per message")
    return costs


def encoded_html_kb(settings: Settings, digest: tuple[str, str, str]) -> float:
    """Size of the quoted-printable HTML part, what Gmail's clipping limit counts."""
    from newsletter.delivery.assemble import CompiledDigest

    subject, html, body = digest
    compiled = CompiledDigest.compile(
        settings,
        subject=subject,
        html=html,
        text=body,
        edition_date=EDITION_DATE,
        link_marker=LINK_MARKER,
    )
    return compiled.html_encoded_size / 1024


# ---- peak memory of a dry run, each size in fresh processes ----------------------------------


def child_seed(database_url: str, subscribers: int, papers: int) -> None:
    """Child process: migrate and seed the dry-run database."""
    settings = bench_settings(database_url, 25, 4)
    subject, html, body, _ = make_digest(settings, papers)
    engine = create_db_engine(database_url)
    try:
        seed_database(engine, subscribers=subscribers, subject=subject, html=html, body=body)
    finally:
        engine.dispose()


def child_dry_run(database_url: str, subscribers: int, concurrency: int) -> None:
    """Child process: run the pipeline into a null transport and print the peak RSS in MB."""
    from newsletter.delivery.transport import NullTransport
    from newsletter.delivery.worker import send_edition

    settings = bench_settings(database_url, 25, concurrency)
    engine = create_db_engine(database_url)
    transport = NullTransport(lanes=concurrency)
    started = time.perf_counter()
    try:
        report = eventloop.run(
            send_edition(settings, engine, edition_date=EDITION_DATE, transport=transport)
        )
    finally:
        engine.dispose()
    elapsed = time.perf_counter() - started
    if report.sent != subscribers or transport.delivered != subscribers:
        raise SystemExit(f"dry run delivered {transport.delivered} of {subscribers}")
    print(json.dumps({"peak_rss_mb": own_peak_rss_kib() / 1024, "seconds": elapsed}))


def own_peak_rss_kib() -> int:
    """This process's own peak resident set (VmHWM), in KiB.

    Not `ru_maxrss`: on Linux it survives exec, so a child started by a big
    parent reports the parent's peak when its own is smaller.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status: peak memory needs Linux")


def measure_dry_run_peak(subscribers: int, concurrency: int, papers: int) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a dry run at this size; seeding happens in another process."""
    with tempfile.TemporaryDirectory(prefix="bench-send-") as directory:
        database_url = f"sqlite:///{Path(directory) / 'dry-run.db'}"
        child = [sys.executable, __file__, "--database-url", database_url]
        size = ["--subscribers", str(subscribers), "--concurrency", str(concurrency)]
        size += ["--papers", str(papers)]
        subprocess.run([*child, "--child", "seed", *size], check=True, cwd=PROJECT_ROOT)
        result = subprocess.run(
            [*child, "--child", "dry-run", *size],
            check=True,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return float(figures["peak_rss_mb"]), float(figures["seconds"])


# ---- the personal case -----------------------------------------------------------------------

RELEVANCE_DATA = PROJECT_ROOT / "tests" / "data" / "relevance"


def seed_personal(
    engine: Engine, *, readers: int, seed: int, all_different: bool = False
) -> dt.date:
    """The labelled papers and N readers with varied profiles; returns the day to send.

    `all_different`: every reader has words, each phrase with a token of their
    own ("regret bounds r17"), which their why lines quote: no two selections alike.
    """
    import random

    from newsletter.relevance.topics import load_topics

    upgrade_schema(engine)
    rows = [
        json.loads(line)
        for line in (RELEVANCE_DATA / "papers.jsonl").read_text().splitlines()
        if line.strip()
    ]
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO papers (arxiv_id, title, abstract, authors, ai_keywords, sources, "
                "daily_date, upvotes, num_comments, created_at, updated_at) VALUES (:arxiv_id, "
                ':title, :abstract, \'["A. Author", "B. Author"]\', :keywords, \'["bench"]\', '
                ":day, :upvotes, 0, :now, :now)"
            ),
            [
                {
                    "arxiv_id": row["arxiv_id"],
                    "title": row["title"],
                    "abstract": row["abstract"],
                    "keywords": json.dumps(row["keywords"]),
                    "day": dt.date.fromisoformat(row["day"]),
                    "upvotes": row["upvotes"],
                    "now": now,
                }
                for row in rows
            ],
        )
    labelled = json.loads((RELEVANCE_DATA / "readers.json").read_text())
    phrases = sorted(
        {
            phrase.strip()
            for reader in labelled
            for phrase in str(reader["interests"]).replace(";", ",").replace(".", ",").split(",")
            if len(phrase.strip()) > 3
        }
    )
    topics = [topic.name for topic in load_topics(None)]
    chance = random.Random(seed)
    subscribers = []
    for n in range(1, readers + 1):
        interests = ", ".join(chance.sample(phrases, chance.randint(0, 3)))
        chosen = chance.sample(topics, chance.randint(0 if interests else 1, 2))
        if all_different:  # no topics: their why lines would be alike
            own = chance.sample(phrases, chance.randint(1, 3))
            interests, chosen = ", ".join(f"{phrase} r{n}" for phrase in own), []
        subscribers.append(
            {
                "email": f"reader{n}@example.org",
                "key": secrets.token_hex(11),
                "topics": json.dumps(chosen),
                "interests": interests[:500],
                "count": chance.randint(3, 8),
                "now": now,
            }
        )
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (email, status, key, topics, interests, digest_mode, "
                "personal_count, frequency, weekly_day, paused, created_at, updated_at) VALUES "
                "(:email, 'confirmed', :key, :topics, :interests, 'personal', :count, 'daily', "
                "0, 0, :now, :now)"
            ),
            subscribers,
        )
    return max(dt.date.fromisoformat(row["day"]) for row in rows)


def measure_personal(arguments: argparse.Namespace) -> dict[str, object]:
    """The personal case: ranking, selections, sizes, and msg/s beside the machine's limit.

    Each round seeds two databases alike (the same readers), sends one from
    this process (as `send_edition`) and the other from two forked processes
    (as `send --processes 2`, concurrency / 2 connections each), then sends
    the first reader's message as raw aiosmtplib and as `smtp-source` (the
    limit) would; the ratios are per round, their median reported.
    """
    from newsletter.delivery.control import start_edition
    from newsletter.delivery.selections import PersonalDigests, rank_readers
    from newsletter.delivery.worker import send_edition
    from newsletter.delivery.worker_process import available_cores
    from newsletter.editions.content import prepare_edition
    from newsletter.editions.personal import load_selections

    count, concurrency = arguments.subscribers, arguments.concurrency
    source = smtp_source_command()
    results: dict[str, object] = {"readers": count}
    rates: dict[str, list[float]] = {"personal": [], "personal_2p": [], "raw": [], "limit": []}
    # CPU µs per message, each round: the sending processes' and the sink's, per case.
    cpu: dict[str, list[float]] = {}
    with smtp_sink(postfix=arguments.postfix) as (port, sink), tempfile.TemporaryDirectory() as tmp:
        log(f"SMTP sink: {sink}; {count} personal readers; {concurrency} connections")

        def started(name: str, round_number: int) -> tuple[Settings, Engine, dt.date]:
            url = f"sqlite:///{Path(tmp) / f'{name}{round_number}.db'}"
            settings = bench_settings(url, port, concurrency)
            engine = create_db_engine(url)
            day = seed_personal(
                engine, readers=count, seed=round_number, all_different=arguments.all_different
            )
            prepare_edition(settings, engine, day=day)
            clock = time.perf_counter()
            # The batches the start would take, ranked and dropped (the start ranks again).
            ranked = sum(len(batch.readers) for batch in rank_readers(settings, engine, day=day))
            ranking = time.perf_counter() - clock
            log(f"round {round_number + 1}: ranked {ranked} readers in {ranking:.2f} s")
            results.setdefault("ranking_seconds", []).append(ranking)  # type: ignore[union-attr]
            start_edition(engine, day, settings=settings)
            return settings, engine, day

        for round_number in range(arguments.rounds):
            settings, engine, day = started("personal", round_number)
            try:
                with engine.connect() as connection:
                    stored = load_selections(connection, edition_id=1)
                results["distinct_selections"] = len(stored)
                personal = PersonalDigests.load(
                    settings, engine, edition_id=1, clock=lambda: dt.datetime.now(dt.UTC)
                )
                assert personal is not None
                sizes = [
                    personal.compile_digest(personal.blocks, picks).html_encoded_size
                    for picks in stored.values()
                ]
                results["largest_html_kb"] = max(sizes) / 1024
                digest = first_personal_digest(personal.blocks, stored)
                used = CpuUse(port)
                clock = time.perf_counter()
                report = eventloop.run(send_edition(settings, engine, edition_date=day))
                rates["personal"].append(report.sent / (time.perf_counter() - clock))
                used.per_message(report.sent, cpu, "1p")
                if report.sent != count:
                    raise RuntimeError(f"the personal send sent {report.sent} of {count}")
            finally:
                engine.dispose()
            settings, engine, day = started("personal-2p", round_number)
            try:
                used = CpuUse(port)
                clock = time.perf_counter()
                sent = send_in_processes(per_process_settings(settings, 2), engine, 2, day, 1)
                rates["personal_2p"].append(sent / (time.perf_counter() - clock))
                used.per_message(sent, cpu, "2p")
                if sent != count:
                    raise RuntimeError(f"the personal send from 2 processes sent {sent} of {count}")
            finally:
                engine.dispose()
            rates["raw"].append(measure_raw(settings, count=count, digest=digest))
            if source is not None:
                rates["limit"].append(
                    measure_smtp_source(
                        settings, source=source, count=count, digest=digest, tmp=Path(tmp)
                    )
                )
            log(
                f"round {round_number + 1}: personal {rates['personal'][-1]:.0f}/s, "
                f"2 processes {rates['personal_2p'][-1]:.0f}/s, raw {rates['raw'][-1]:.0f}/s"
                + (f", smtp-source limit {rates['limit'][-1]:.0f}/s" if rates["limit"] else "")
            )

    def ratios(numerator: str, denominator: str) -> list[float]:
        return [n / d for n, d in zip(rates[numerator], rates[denominator], strict=True)]

    results["pipeline_personal"] = statistics.median(rates["personal"])
    results["pipeline_personal_2p"] = statistics.median(rates["personal_2p"])
    results["raw_limit"] = statistics.median(rates["raw"])
    results["ratio_vs_raw"] = statistics.median(ratios("personal", "raw"))
    results["smtp_source_limit"] = statistics.median(rates["limit"]) if rates["limit"] else None
    for key, name in (("ratio_vs_limit", "personal"), ("ratio_2p_vs_limit", "personal_2p")):
        per_round = ratios(name, "limit") if rates["limit"] else []
        results[key] = statistics.median(per_round) if per_round else None
        results[f"{key}_spread"] = spread(per_round) if per_round else None
    results["ranking_seconds"] = statistics.median(results["ranking_seconds"])  # type: ignore[arg-type]
    for case in ("1p", "2p"):
        for whose in ("senders", "sink"):
            found = cpu.get(f"{whose}_{case}")
            results[f"cpu_us_per_message_{whose}_{case}"] = (
                statistics.median(found) if found else None
            )
    one_sender_cpu = results["cpu_us_per_message_senders_1p"]
    if isinstance(one_sender_cpu, float):
        # One sending process runs on one core at most (the sink has the other):
        # it cannot send faster than one message per its CPU per message.
        results["ceiling_1p"] = 1e6 / one_sender_cpu
    senders_cpu = results["cpu_us_per_message_senders_2p"]
    sink_cpu = results["cpu_us_per_message_sink_2p"]
    if isinstance(senders_cpu, float) and isinstance(sink_cpu, float):
        # What two sending processes and the sink could send on this machine's cores if
        # they never waited: the sink alone bounds smtp-source (1 / its CPU per message).
        cores = results["cores"] = available_cores()
        results["ceiling_2p"] = cores / ((senders_cpu + sink_cpu) / 1e6)
    return results


def first_personal_digest(
    blocks: DigestBlocks, stored: dict[int, ReaderSelection]
) -> tuple[str, str, str]:
    """(subject, HTML, text) of the first stored selection's digest, links filled in."""
    first = next(iter(stored.values())).assemble(blocks)
    html, body = first.personalised(
        unsubscribe_url="https://news.example.org/unsubscribe/x",
        preferences_url="https://news.example.org/preferences/x",
        feedback_url=lambda a, v: f"https://news.example.org/feedback/{a}.{v}",
        view_url="https://news.example.org/view/x",
    )
    return first.subject, html, body


def measure_personal_cli(arguments: argparse.Namespace) -> dict[str, object]:
    """`newsletter send` end to end for N personal readers, with the CLI's defaults.

    The readers are seeded and the edition prepared (rendered) here; then the
    command runs in a new process and is timed from its start to its exit:
    its imports, the start (every reader ranked, the selections stored, the
    audience queued), its sending processes and connections as it chooses
    them. Then `smtp-source` sends as many copies of the first reader's
    message over the CLI's connections, for the machine's own time.
    """
    from newsletter.delivery.selections import PersonalDigests
    from newsletter.editions.content import prepare_edition
    from newsletter.editions.personal import load_selections

    count = arguments.cli_readers
    source = smtp_source_command()
    results: dict[str, object] = {"personal_cli_readers": count}
    with smtp_sink(postfix=arguments.postfix) as (port, sink), tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'personal-cli.db'}"
        settings = bench_settings(url, port, CLI_CONCURRENCY)
        engine = create_db_engine(url)
        try:
            log(f"SMTP sink: {sink}; seeding {count:,} personal readers")
            day = seed_personal(
                engine, readers=count, seed=0, all_different=arguments.all_different
            )
            prepare_edition(settings, engine, day=day)
            environment = cli_environment(settings)  # the CLI's own concurrency
            command = [sys.executable, "-m", "newsletter", "send", "--date", day.isoformat()]
            log(f"running: newsletter send --date {day.isoformat()}")
            children_cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            finished = subprocess.run(
                command, env=environment, cwd=tmp, capture_output=True, text=True, check=False
            )
            elapsed = time.perf_counter() - started
            used = cpu_seconds(resource.RUSAGE_CHILDREN) - children_cpu
            if finished.returncode != 0:
                raise RuntimeError(f"newsletter send: {finished.stderr[-2000:]}")
            for line in (finished.stdout + finished.stderr).splitlines()[-12:]:
                log(f"  | {line}")
            with engine.connect() as connection:
                sent = connection.execute(
                    text("SELECT count(*) FROM deliveries WHERE status = 'sent'")
                ).scalar_one()
                stored = load_selections(connection, edition_id=1)
            if sent != count:
                raise RuntimeError(f"newsletter send sent {sent} of {count}")
            results["personal_cli_seconds"] = elapsed
            results["personal_cli_per_s"] = count / elapsed
            results["personal_cli_cpu_us_per_message"] = used / count * 1e6
            results["distinct_selections"] = len(stored)
            results["smtp_source_seconds"] = None
            if source is not None:
                personal = PersonalDigests.load(
                    settings, engine, edition_id=1, clock=lambda: dt.datetime.now(dt.UTC)
                )
                assert personal is not None
                digest = first_personal_digest(personal.blocks, stored)
                rate = measure_smtp_source(
                    settings, source=source, count=count, digest=digest, tmp=Path(tmp)
                )
                results["smtp_source_seconds"] = count / rate
        finally:
            engine.dispose()
    return results


def print_personal_cli(results: dict[str, object]) -> None:
    """The end-to-end figures, one per line."""
    count, seconds = results["personal_cli_readers"], results["personal_cli_seconds"]
    assert isinstance(count, int) and isinstance(seconds, float)
    print(f"readers                         {count:,}")
    print(f"distinct selections             {results['distinct_selections']:,}")
    print(
        f"newsletter send (CLI defaults)  {seconds:.1f} s from its start to its exit, "
        f"{results['personal_cli_per_s']:,.0f} msg/s (target at 100,000: under 60 s)"
    )
    print(
        f"CPU per message, every process  {results['personal_cli_cpu_us_per_message']:,.0f} µs "
        "(ranking and start-up included)"
    )
    limit = results["smtp_source_seconds"]
    print(
        "smtp-source, as many messages   "
        + (f"{limit:.1f} s" if isinstance(limit, float) else "n/a (no smtp-source)")
    )


class CpuUse:
    """The CPU the sending processes and the sink use from now to `per_message`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.own = cpu_seconds(resource.RUSAGE_SELF)
        self.children = cpu_seconds(resource.RUSAGE_CHILDREN)
        self.sink = sink_cpu_seconds(port)

    def per_message(self, sent: int, into: dict[str, list[float]], case: str) -> None:
        """Add µs per message of the senders (this process and its waited-for children)."""
        senders = (
            cpu_seconds(resource.RUSAGE_SELF)
            - self.own
            + cpu_seconds(resource.RUSAGE_CHILDREN)
            - self.children
        )
        into.setdefault(f"senders_{case}", []).append(senders / sent * 1e6)
        sink = sink_cpu_seconds(self.port)
        if sink is not None and self.sink is not None:
            into.setdefault(f"sink_{case}", []).append((sink - self.sink) / sent * 1e6)


def print_personal(results: dict[str, object]) -> None:
    """The personal case's figures, one per line."""

    def against_limit(key: str, target: str) -> str:
        ratio, spread_ = results[key], results[f"{key}_spread"]
        if ratio is None or not isinstance(spread_, dict):
            return "n/a (no smtp-source)"
        return f"{ratio:.3f} ({spread_['min']:.3f}–{spread_['max']:.3f}) (target ≥ {target})"

    print(f"readers                         {results['readers']:,}")
    print(f"ranking every reader            {results['ranking_seconds']:.2f} s")
    print(f"distinct selections             {results['distinct_selections']:,} (target ≥ 1,000)")
    print(f"largest HTML part, encoded      {results['largest_html_kb']:.1f} KB (limit 102 KB)")
    print(f"personal send_edition (SQLite)  {results['pipeline_personal']:,.0f} msg/s")
    print(f"personal, --processes 2         {results['pipeline_personal_2p']:,.0f} msg/s")
    print(f"raw aiosmtplib                  {results['raw_limit']:,.0f} msg/s")
    limit = results["smtp_source_limit"]
    print(f"smtp-source limit               {f'{limit:,.0f} msg/s' if limit else 'n/a'}")
    print(f"personal / raw                  {results['ratio_vs_raw']:.3f} (target ≥ 0.8)")
    print(f"personal / limit                {against_limit('ratio_vs_limit', '0.6')}")
    print(f"personal 2 processes / limit    {against_limit('ratio_2p_vs_limit', '0.8')}")

    def microseconds(key: str) -> str:
        value = results.get(key)
        return f"{value:,.0f} µs" if isinstance(value, float) else "n/a"

    for case, name in (("1p", "1 process  "), ("2p", "2 processes")):
        print(
            f"CPU per message, {name}    {microseconds(f'cpu_us_per_message_senders_{case}')} "
            f"sending, {microseconds(f'cpu_us_per_message_sink_{case}')} the sink"
        )
    for key, name, bound in (
        ("ceiling_1p", "1 process's ceiling", "1 core / sending CPU per message"),
        (
            "ceiling_2p",
            "2 processes' ceiling",
            f"{results.get('cores')} cores / (sending + sink CPU per message)",
        ),
    ):
        ceiling = results.get(key)
        if isinstance(ceiling, float) and isinstance(limit, float):
            print(f"{name:<33}{ceiling:,.0f} msg/s, {ceiling / limit:.3f} × the limit: {bound}")


# ---- the whole run ------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress on stderr, so `--json` output stays one object on stdout."""
    print(message, file=sys.stderr, flush=True)


def run(arguments: argparse.Namespace) -> dict[str, object]:
    """Every measurement in one run; returns the figures by name."""
    concurrency = arguments.concurrency
    results: dict[str, object] = dict.fromkeys(
        (
            "pipeline_sqlite",
            "pipeline_postgres",
            "raw_limit",
            "prepared_limit",
            "naive",
            "ratio_vs_raw",
            "ratio_vs_naive",
            "peak_rss_mb_100k",
            "peak_rss_mb_1m",
            "smtp_source_limit",
            "ratio_vs_limit",
            "signup_per_s",
            "signup_ratio_vs_hello",
        )
    )
    if arguments.dkim:
        results.update(measure_dkim_cost(arguments))
    if not arguments.skip_throughput:
        measure_throughput(arguments, results)
    if not arguments.skip_memory:
        peaks: dict[str, float] = {}
        results["peak_rss_mb_by_size"] = peaks
        for size in arguments.memory_subscribers:
            peak, seconds = measure_dry_run_peak(size, concurrency, arguments.papers)
            log(f"dry run, {size} subscribers: peak RSS {peak:.1f} MB ({seconds:.1f} s)")
            peaks[str(size)] = peak
            if size == 100_000:
                results["peak_rss_mb_100k"] = peak
            elif size == 1_000_000:
                results["peak_rss_mb_1m"] = peak
    if not arguments.skip_signup:
        signup = measure_signup(arguments)
        results["signup_per_s"] = signup["signup_per_s"]
        results["signup_ratio_vs_hello"] = signup["signup_ratio_vs_hello"]
        results["signup"] = signup
    return results


def measure_signup(arguments: argparse.Namespace) -> dict[str, object]:
    """The sign-up load case of `signup_throughput.py`, on SQLite only (that script does more)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import signup_throughput

    options = signup_throughput.parse_arguments(
        [
            "--requests",
            str(arguments.signup_requests),
            "--rounds",
            str(arguments.rounds),
            "--skip-postgres",
        ]
    )
    return signup_throughput.run(options)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of per-round figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure_throughput(arguments: argparse.Namespace, results: dict[str, object]) -> None:
    """Every path, interleaved round by round, and their per-round ratios, into `results`."""
    count, concurrency = arguments.subscribers, arguments.concurrency
    postgres = not arguments.skip_postgres and postgres_reachable()
    source = smtp_source_command()
    if source is None:
        log(
            "smtp-source not found (Debian package `postfix`): "
            "the machine's limit (smtp_source_limit) is skipped"
        )
    skipped = {"pipeline_postgres"} if not postgres else set()
    if source is None:
        skipped.add("smtp_source_limit")
    wanted = set(arguments.only or PATHS) | {"smtp_source_limit"}
    paths = [name for name in PATHS if name in wanted and name not in skipped]
    rounds: dict[str, list[float]] = {name: [] for name in paths}
    with (
        smtp_sink(postfix=arguments.postfix) as (port, sink),
        tempfile.TemporaryDirectory(prefix="bench-send-") as tmp,
    ):
        settings = bench_settings(f"sqlite:///{Path(tmp) / 'unused.db'}", port, concurrency)
        subject, html, body, how = make_digest(settings, arguments.papers)
        digest = (subject, html, body)
        _, message = one_message(settings, digest)
        log(
            f"sink: {sink} on port {port}; digest: {how}, one message {len(message) / 1024:.1f} KB"
            f" (HTML {len(html.encode()) / 1024:.1f} KB, text {len(body.encode()) / 1024:.1f} KB);"
            f" {count} messages per path, {concurrency} connections, "
            f"{arguments.rounds} interleaved rounds"
        )
        log(f"assemble(): {measure_assemble_microseconds(settings, digest):.1f} µs per message")
        log(f"prepare(): {measure_prepare_microseconds(settings, digest):.1f} µs per message")
        html_kb = encoded_html_kb(settings, digest)
        log(f"encoded HTML part (Gmail clips over ~102 KB): {html_kb:.1f} KB")
        naive_count = min(count, NAIVE_MAX_MESSAGES)

        def measure(name: str, round_number: int) -> float:
            if name == "smtp_source_limit":
                assert source is not None
                return measure_smtp_source(
                    settings, source=source, count=count, digest=digest, tmp=Path(tmp)
                )
            if name == "raw_limit":
                return measure_raw(settings, count=count, digest=digest)
            if name == "prepared_limit":
                return measure_prepared(settings, count=count, digest=digest)
            if name == "pipeline_sqlite":
                url = f"sqlite:///{Path(tmp) / f'pipeline-{round_number}.db'}"
                return measure_pipeline(
                    bench_settings(url, port, concurrency), subscribers=count, digest=digest
                )
            if name == "pipeline_sqlite_2p":
                url = f"sqlite:///{Path(tmp) / f'pipeline-2p-{round_number}.db'}"
                return measure_pipeline_processes(
                    bench_settings(url, port, concurrency),
                    processes=2,
                    subscribers=count,
                    digest=digest,
                )
            if name in ("cli_sqlite", "cli_sqlite_2p"):
                url = f"sqlite:///{Path(tmp) / f'{name}-{round_number}.db'}"
                return measure_cli(
                    bench_settings(url, port, concurrency),
                    processes=2 if name == "cli_sqlite_2p" else 1,
                    subscribers=count,
                    digest=digest,
                    tmp=Path(tmp),
                )
            if name == "pipeline_postgres":
                with temporary_postgres_database() as url:
                    return measure_pipeline(
                        bench_settings(url, port, concurrency), subscribers=count, digest=digest
                    )
            return measure_naive(settings, count=naive_count, digest=digest)

        # Rounds interleave the paths, each round starting one path further on, so
        # load from other processes and warm caches fall on every path alike; a
        # ratio is only ever taken between figures of the same round.
        for round_number in range(1, arguments.rounds + 1):
            shift = (round_number - 1) % len(paths)
            for name in paths[shift:] + paths[:shift]:
                rounds[name].append(measure(name, round_number))
            log(
                f"round {round_number}: "
                + ", ".join(f"{name} {values[-1]:,.0f} msg/s" for name, values in rounds.items())
            )
    for name, values in rounds.items():
        results[name] = statistics.median(values)
    results["rounds"] = rounds

    def per_round(numerator: str, denominator: str) -> list[float]:
        return [a / b for a, b in zip(rounds[numerator], rounds[denominator], strict=True)]

    spreads = {}
    for key, denominator in (("ratio_vs_raw", "raw_limit"), ("ratio_vs_naive", "naive")):
        if {"pipeline_sqlite", denominator} <= rounds.keys():  # not left out by --only
            results[key] = statistics.median(per_round("pipeline_sqlite", denominator))
            spreads[key] = spread(per_round("pipeline_sqlite", denominator))
    if {"pipeline_sqlite", "smtp_source_limit"} <= rounds.keys():
        results["ratio_vs_limit"] = statistics.median(
            per_round("pipeline_sqlite", "smtp_source_limit")
        )
        spreads["ratio_vs_limit"] = spread(per_round("pipeline_sqlite", "smtp_source_limit"))
    if "smtp_source_limit" in rounds:
        results["ratios_vs_limit"] = {
            name: spread(per_round(name, "smtp_source_limit"))
            for name in rounds
            if name != "smtp_source_limit"
        }
    results["ratio_spread"] = spreads


def print_table(results: dict[str, object]) -> None:
    """The figures for a person, with the targets beside them."""

    def shown(value: object, unit: str) -> str:
        return "n/a" if not isinstance(value, float | int) else f"{value:,.1f} {unit}"

    print("median msg/s over the rounds:")
    print(f"(l) smtp-source limit    {shown(results['smtp_source_limit'], 'msg/s')}")
    print(f"(a) pipeline, SQLite     {shown(results['pipeline_sqlite'], 'msg/s')}")
    print(f"(a2) send --processes 2  {shown(results.get('pipeline_sqlite_2p'), 'msg/s')}")
    print(f"(b) pipeline, PostgreSQL {shown(results['pipeline_postgres'], 'msg/s')}")
    print(f"(c) raw aiosmtplib       {shown(results['raw_limit'], 'msg/s')}")
    print(f"(d) naive EmailMessage   {shown(results['naive'], 'msg/s')}")
    print(f"(e) prepared, transmit   {shown(results['prepared_limit'], 'msg/s')}")
    print(f"(f) CLI, 1 process       {shown(results.get('cli_sqlite'), 'msg/s')}")
    print(f"(f2) CLI, --processes 2  {shown(results.get('cli_sqlite_2p'), 'msg/s')}")
    ratios = results.get("ratios_vs_limit")
    if isinstance(ratios, dict):
        print("per-round ratio to the limit, median (min–max):")
        for name, figures in ratios.items():
            print(
                f"  {name:<18} {figures['median']:.3f} ({figures['min']:.3f}–{figures['max']:.3f})"
            )
    spreads = results.get("ratio_spread")
    for label, key, target in (
        ("a/l", "ratio_vs_limit", "≥ 0.6"),
        ("a/c", "ratio_vs_raw", "≥ 0.9"),
        ("a/d", "ratio_vs_naive", "≥ 4"),
    ):
        ratio = results[key]
        figures = spreads.get(key) if isinstance(spreads, dict) else None
        extra = f" ({figures['min']:.3f}–{figures['max']:.3f})" if figures else ""
        value = "n/a" if not isinstance(ratio, float) else f"{ratio:.3f}"
        print(f"{label} {value}{extra} (target {target})")
    print(f"peak RSS, 100,000 subscribers   {shown(results['peak_rss_mb_100k'], 'MB')}")
    print(
        f"peak RSS, 1,000,000 subscribers {shown(results['peak_rss_mb_1m'], 'MB')}"
        " (target flat from 100,000 and under 100 MB)"
    )
    print(f"sign-ups                        {shown(results['signup_per_s'], '/s')}")
    ratio = results["signup_ratio_vs_hello"]
    value = "n/a" if not isinstance(ratio, float) else f"{ratio:.3f}"
    print(f"sign-up / hello-world POST      {value} (target ≥ 0.3)")


def paths_argument(value: str) -> list[str]:
    """`--only`'s value: known path names."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PATHS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown path {', '.join(unknown) or '(none given)'}; the paths: {', '.join(PATHS)}"
        )
    return names


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=10_000, help="messages per measurement")
    parser.add_argument("--readers", dest="subscribers", type=int, help="the same as --subscribers")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=CLI_CONCURRENCY,
        help=f"SMTP connections (default: the CLI's, {CLI_CONCURRENCY})",
    )
    parser.add_argument(
        "--papers",
        type=int,
        default=CLI_TOP_N,
        help=f"papers in the rendered digest (default: the CLI's NEWSLETTER_TOP_N, {CLI_TOP_N})",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions")
    parser.add_argument(
        "--only",
        type=paths_argument,
        help="only these paths, comma-separated (the limit, smtp_source_limit, always runs): "
        + ", ".join(PATHS),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--personal",
        action="store_true",
        help="only the personal-digest case (readers with profiles; see the docstring)",
    )
    parser.add_argument(
        "--all-different",
        action="store_true",
        help="with --personal: every reader's selection differs from every other's",
    )
    parser.add_argument(
        "--cli-readers",
        type=int,
        metavar="N",
        help="with --personal: instead, time `newsletter send` end to end for N personal readers",
    )
    parser.add_argument(
        "--postfix",
        action="store_true",
        help="send to Debian's Postfix (a real relay: SIZE, PIPELINING, a queue) instead of a sink",
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the dry-run peaks")
    parser.add_argument("--skip-throughput", action="store_true", help="only the dry-run peaks")
    parser.add_argument("--skip-postgres", action="store_true", help="skip measurement (b)")
    parser.add_argument(
        "--skip-signup", action="store_true", help="skip the sign-up load case (SQLite)"
    )
    parser.add_argument(
        "--signup-requests", type=int, default=2000, help="sign-ups per round of the load case"
    )
    parser.add_argument(
        "--dkim", action="store_true", help="also time assemble() signed with RSA and ed25519"
    )
    parser.add_argument(
        "--memory-subscribers",
        type=lambda value: [int(part) for part in value.split(",")],
        default=[100_000, 1_000_000],
        help="comma-separated audience sizes for the dry-run peaks",
    )
    # Internal: the subprocesses this script starts.
    parser.add_argument("--child", choices=["seed", "dry-run", "sink"], help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    """Run the benchmark (or one of its child processes)."""
    arguments = parse_arguments()
    if arguments.child == "sink":
        run_aiosmtpd_sink(arguments.port)
        return
    if arguments.child == "seed":
        child_seed(arguments.database_url, arguments.subscribers, arguments.papers)
        return
    if arguments.child == "dry-run":
        child_dry_run(arguments.database_url, arguments.subscribers, arguments.concurrency)
        return
    measure, show = run, print_table
    if arguments.personal and arguments.cli_readers:
        measure, show = measure_personal_cli, print_personal_cli
    elif arguments.personal:
        measure, show = measure_personal, print_personal
    results = measure(arguments)
    if arguments.json:
        print(json.dumps(results))
    else:
        show(results)


if __name__ == "__main__":
    main()
