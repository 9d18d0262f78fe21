"""`newsletter bounces serve`: reports delivered over SMTP change readers, ledger and stats."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import Engine, select

from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.core.settings import Settings, load_settings
from newsletter.delivery.feedback.receiver import BounceHandler, serve_bounces
from newsletter.delivery.ledger import deliveries, subscribers
from newsletter.delivery.worker import send_edition
from subscribers.models import SubscriberStatus
from subscribers.suppressions import find_active
from tests.support.cli import run_cli
from tests.support.sending import DAY, ledger_rows, make_edition, seed_subscribers
from tests.support.smtp_server import RecordingSmtpServer, closed_port
from tests.test_bounces import BOUNCE_ADDRESS, report

LISTENING = re.compile(r"Receiving bounces on 127\.0\.0\.1:(\d+)")


class BounceServerProcess:
    """`newsletter bounces serve --port 0` as a real process; its output read line by line."""

    def __init__(self, env: dict[str, str], *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "bounces", "serve", "--port", "0", *extra],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.wait_for(LISTENING).group(1))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")  # the process ended

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        """The first new line matching `pattern` (fails if the process ends first)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matched {pattern.pattern}: {self.output}") from None
            if not line:
                self.lines.put("")  # for stop() to find
                raise AssertionError(f"the server ended: {''.join(self.output)}")
            self.output.append(line)
            if match := pattern.search(line):
                return match

    def stop(self) -> int:
        """SIGTERM, then the exit code once the rest of the output is read."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        assert self.process.stdout is not None
        if not self.process.stdout.closed:
            while (line := self.lines.get(timeout=10)) != "":
                self.output.append(line)
            self.process.stdout.close()
        return code


async def deliver(port: int, raw: bytes, *, to: str, sender: str = "") -> None:
    """Hand a report to the bounce server as a mail server would (null sender by default)."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as client:
        await client.sendmail(sender, [to], raw)


@pytest.fixture
def bounce_env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "NEWSLETTER_BOUNCE_ADDRESS": BOUNCE_ADDRESS}


@pytest.fixture
def cli_settings(bounce_env: dict[str, str]) -> Settings:
    """The settings the CLI processes of `bounce_env` build, for sending in the test."""
    variables = {
        name.removeprefix("NEWSLETTER_").lower(): value
        for name, value in bounce_env.items()
        if name.startswith("NEWSLETTER_")
    }
    return load_settings(_env_file=None, **variables)


@pytest.fixture
def cli_engine(cli_settings: Settings) -> Iterator[Engine]:
    engine = create_db_engine(cli_settings.database_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def bounce_server(bounce_env: dict[str, str], cli_engine: Engine) -> Iterator[BounceServerProcess]:
    server = BounceServerProcess(bounce_env)
    yield server
    server.stop()


def reader_status(engine: Engine, address: str) -> SubscriberStatus:
    with engine.connect() as connection:
        return SubscriberStatus(
            connection.execute(
                select(subscribers.c.status).where(subscribers.c.email == address)
            ).scalar_one()
        )


async def test_bounces_and_complaints_over_smtp_reach_readers_ledger_and_stats(
    cli_settings: Settings,
    cli_engine: Engine,
    smtp_server: RecordingSmtpServer,
    bounce_server: BounceServerProcess,
    bounce_env: dict[str, str],
) -> None:
    # The full loop: a digest goes out with a VERP envelope sender...
    bounced, complained, delayed, kept = seed_subscribers(cli_engine, 4)
    make_edition(cli_engine)
    await send_edition(cli_settings, cli_engine, edition_date=DAY)
    sent = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert len(sent) == 4

    def reply_to(name: str, address: str) -> tuple[bytes, str]:
        verp = sent[address].mail_from
        message_id = sent[address].message["Message-ID"]
        return report(name, bounce_to=verp, recipient=address, message_id=message_id), verp

    # ... and the receiving side's bounce goes back to exactly that address.
    raw, verp = reply_to("postfix.eml", bounced)
    await deliver(bounce_server.port, raw, to=verp)
    line = bounce_server.wait_for(re.compile(rf"hard_bounce {re.escape(bounced)} delivery \d+ "))
    assert line.string.rstrip().endswith("mailbox table (recorded; the reader is now bounced)")
    # A complaint comes from a provider's address to the plain bounce address.
    raw, _ = reply_to("arf_yahoo.eml", complained)
    await deliver(bounce_server.port, raw, to=BOUNCE_ADDRESS, sender="feedback@arf.example.com")
    bounce_server.wait_for(
        re.compile(rf"complaint {re.escape(complained)} .*\[arf\].*now complained")
    )
    raw, verp = reply_to("postfix_delayed.eml", delayed)
    await deliver(bounce_server.port, raw, to=verp)
    bounce_server.wait_for(re.compile(rf"soft_bounce {re.escape(delayed)} .*4\.4\.1.*\(recorded\)"))
    # The same bounce twice changes nothing more.
    raw, verp = reply_to("postfix.eml", bounced)
    await deliver(bounce_server.port, raw, to=verp)
    bounce_server.wait_for(re.compile(rf"hard_bounce {re.escape(bounced)} .*seen before"))

    assert reader_status(cli_engine, bounced) is SubscriberStatus.BOUNCED
    assert reader_status(cli_engine, complained) is SubscriberStatus.COMPLAINED
    assert reader_status(cli_engine, delayed) is SubscriberStatus.CONFIRMED
    assert reader_status(cli_engine, kept) is SubscriberStatus.CONFIRMED
    with cli_engine.connect() as connection:
        suppressed = {a: find_active(connection, a) for a in (bounced, complained, delayed)}
    assert suppressed[bounced] is not None and suppressed[bounced].reason == "bounced"
    assert suppressed[complained] is not None and suppressed[complained].reason == "complained"
    assert suppressed[delayed] is None
    rows = {row.email: row for row in ledger_rows(cli_engine)}
    assert rows[bounced].status == "bounced" and "User unknown" in (rows[bounced].last_error or "")
    assert rows[complained].status == "complained"
    assert rows[delayed].status == rows[kept].status == "sent"

    stats = json.loads(run_cli("stats", "--date", DAY.isoformat(), "--json", env=bounce_env).stdout)
    assert stats["deliveries"] == {
        "queued": 0,
        "sent": 2,
        "failed": 0,
        "bounced": 1,
        "skipped": 0,
        "complained": 1,
    }
    assert stats["soft_bounces"] == 1
    table = run_cli("stats", "--date", DAY.isoformat(), env=bounce_env).stdout
    assert re.search(r"complained\s*│\s*1\b", table)
    assert re.search(r"soft bounces \(still sent\)\s*│\s*1\b", table)

    assert bounce_server.stop() == 0
    assert "Traceback" not in "".join(bounce_server.output)
    assert "Stopped: 3 recorded, 1 duplicates, 0 unknown, 0 unrecognised" in "".join(
        bounce_server.output
    )


async def test_the_receiver_takes_mail_for_the_bounce_address_only_and_drops_junk(
    cli_engine: Engine, bounce_server: BounceServerProcess
) -> None:
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await deliver(bounce_server.port, b"Subject: hi\r\n\r\nhi\r\n", to="postmaster@example.org")
    assert refused.value.recipients[0].code == 550
    # Junk and a forged token are accepted (no retry would help), logged, and change nothing.
    await deliver(bounce_server.port, bytes(range(1, 256)) * 20, to=BOUNCE_ADDRESS)
    bounce_server.wait_for(re.compile(r"unrecognised report of \d+ bytes, dropped: "))
    forged = "bounces+1-aaaaaaaaaaaaaaaa@bounces.example.org"
    raw = report("postfix.eml", bounce_to=forged, recipient="x@example.org", message_id="<a@b>")
    await deliver(bounce_server.port, raw, to=forged)
    bounce_server.wait_for(re.compile(r"unrecognised report .* does not verify \(forged\?\)"))
    with cli_engine.connect() as connection:
        assert connection.execute(select(deliveries)).all() == []
    # One line each; flufl.bounce's tracebacks for junk stay out of the operator's log.
    assert bounce_server.stop() == 0
    assert "Traceback" not in "".join(bounce_server.output)


async def test_unrecognised_reports_can_be_kept_in_a_maildir(
    bounce_env: dict[str, str], cli_engine: Engine, tmp_path: Path
) -> None:
    kept = tmp_path / "unrecognised"
    server = BounceServerProcess(bounce_env, "--unrecognised-dir", str(kept))
    try:
        raw = report(
            "auto_reply.eml", bounce_to=BOUNCE_ADDRESS, recipient="r@example.org", message_id=""
        )
        await deliver(server.port, raw, to=BOUNCE_ADDRESS)
        server.wait_for(re.compile(r"kept in"))
    finally:
        server.stop()
    [stored] = list((kept / "new").iterdir())
    assert b"Out of office" in stored.read_bytes()


def test_serve_refuses_to_start_without_a_bounce_address(cli_env: dict[str, str]) -> None:
    result = run_cli("bounces", "serve", "--port", "0", env=cli_env, check=False)
    assert result.returncode != 0
    assert "NEWSLETTER_BOUNCE_ADDRESS is not set" in result.stderr
    assert "Traceback" not in result.stderr


class InProcessReceiver:
    """`serve_bounces` on its own event loop in a thread, for faults the CLI cannot show."""

    def __init__(self, handler: BounceHandler) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.stop_event: asyncio.Event | None = None

        def on_ready(host: str, port: int) -> None:
            self.port = port
            self.ready.set()

        async def run() -> None:
            self.stop_event = asyncio.Event()
            await serve_bounces(
                handler, host="127.0.0.1", port=0, stop=self.stop_event, ready=on_ready
            )

        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(run(),), daemon=True
        )
        self.thread.start()
        assert self.ready.wait(10)

    def close(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)
        self.loop.close()


async def test_a_database_that_is_down_gets_451_so_the_sender_retries(settings: Settings) -> None:
    bouncing = load_settings(**{**settings.model_dump(), "bounce_address": BOUNCE_ADDRESS})
    down = create_db_engine(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/newsletter")
    receiver = InProcessReceiver(BounceHandler(bouncing, down))
    try:
        raw = report(
            "postfix.eml", bounce_to=BOUNCE_ADDRESS, recipient="r@example.org", message_id="<a@b>"
        )
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await deliver(receiver.port, raw, to=BOUNCE_ADDRESS)
        assert refused.value.code == 451
    finally:
        receiver.close()
        down.dispose()


async def test_a_report_over_the_size_cap_is_refused(settings: Settings, engine: Engine) -> None:
    bouncing = load_settings(
        **{**settings.model_dump(), "bounce_address": BOUNCE_ADDRESS, "bounce_max_bytes": 65536}
    )
    receiver = InProcessReceiver(BounceHandler(bouncing, engine))
    try:
        huge = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await deliver(receiver.port, huge * 100, to=BOUNCE_ADDRESS)
        assert refused.value.code == 552
    finally:
        receiver.close()
