"""A sign-up queues its confirmation in the database; a worker builds and sends it.

Real components: the app in-process or `newsletter serve` as a process, the
`newsletter worker` command, a recording aiosmtpd server with faults, SQLite in
a temp directory (and PostgreSQL where marked). Waits are on events: a message
arriving, a line on stderr, a recipient reaching the server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import signal
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, event, func, select

from newsletter.core.db import create_db_engine, session_scope, upgrade_schema
from newsletter.core.settings import Settings
from newsletter.core.templating import make_template_environment
from newsletter.delivery.confirmations import ConfirmationSender
from newsletter.web.signup_writer import SignupWriter
from subscribers.models import QueuedConfirmation, ReceivedSignup, SubscriberStatus
from subscribers.signup import SignupDetails
from subscribers.store import find_subscriber, mark_confirmed
from tests.support.cli import run_cli
from tests.support.postgres import postgres_database_or_skip
from tests.support.smtp_server import Hold, RecordingSmtpServer
from tests.support.web import (
    ADMIN_TOKEN,
    confirmation_path,
    running_app,
    send_queued_confirmations,
    subscriber,
    web_settings,
)
from tests.test_web_never_sends import (
    free_port,
    needs_proc,
    newsletter_process,
    process_environment,
)

QUEUE = QueuedConfirmation.__table__  # type: ignore[attr-defined]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def queued(engine: Engine) -> list[tuple[str | None, int, str | None]]:
    """The queue's rows as (leased_by, attempts, last_error)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(QUEUE.c.leased_by, QUEUE.c.attempts, QUEUE.c.last_error).order_by(QUEUE.c.id)
        ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def queue_length(engine: Engine) -> int:
    """How many confirmation emails wait."""
    with engine.connect() as connection:
        count: int = connection.execute(select(func.count()).select_from(QUEUE)).scalar_one()
    return count


async def run_sender_until(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, messages: int
) -> None:
    """A polling sender (fast retries) in this loop until `messages` have arrived."""
    stop = asyncio.Event()
    sender = ConfirmationSender(
        settings,
        engine,
        make_template_environment(settings.templates_dir),
        poll_seconds=0.01,
        retry_base_seconds=0.02,
        max_attempts=3,
    )
    task = asyncio.create_task(sender.run(stop=stop, stop_when_idle=False))
    try:
        arrived = await asyncio.to_thread(smtp_server.handler.wait_for_messages, messages, 30)
        assert arrived, f"{messages} confirmation emails never arrived"
    finally:
        stop.set()
        await task


async def test_the_answer_leaves_the_email_queued_in_the_database_and_a_worker_sends_it(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = web_settings(settings)
    async with running_app(config, engine) as (_, client):
        answer = await client.post("/subscribe", json={"email": "ada@example.org", "name": "Ada"})
    assert answer.status_code == 202
    # The app is gone (a restart, a crash after the commit): the email waits in the database.
    assert smtp_server.messages == []
    assert queued(engine) == [(None, 0, None)]
    async with running_app(config, engine) as (_, client):
        counts = await client.get("/admin/subscribers", headers=AUTH)
    assert counts.json()["confirmations_queued"] == 1

    sent = await send_queued_confirmations(config, engine)

    assert (sent.sent, sent.retrying, sent.given_up) == (1, 0, 0)
    [message] = smtp_server.messages
    assert message.rcpt_tos == ["ada@example.org"]
    assert queue_length(engine) == 0
    async with running_app(config, engine) as (_, client):
        assert (await client.post(confirmation_path(smtp_server))).status_code == 200
    stored = subscriber(engine, "ada@example.org")
    assert stored is not None and stored.status == SubscriberStatus.CONFIRMED


async def test_a_second_sign_up_within_the_interval_queues_nothing_more(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = web_settings(settings)
    async with running_app(config, engine) as (_, client):
        for _ in range(3):
            await client.post("/subscribe", json={"email": "ada@example.org"})
        assert queue_length(engine) == 1
        await send_queued_confirmations(config, engine)
        await client.post("/subscribe", json={"email": "ada@example.org"})
        assert queue_length(engine) == 0
        await send_queued_confirmations(config, engine)
    assert smtp_server.handler.recipients() == ["ada@example.org"]


async def test_a_relay_failure_is_retried_with_backoff_and_sent_once(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    smtp_server.handler.fault = lambda stage, address, n: (
        "451 4.3.0 try again later" if stage == "rcpt" and n <= 2 else None
    )
    config = web_settings(settings)
    async with running_app(config, engine) as (_, client):
        await client.post("/subscribe", json={"email": "ada@example.org"})

    await run_sender_until(config, engine, smtp_server, 1)

    assert smtp_server.handler.attempts[("rcpt", "ada@example.org")] == 3
    assert smtp_server.handler.recipients() == ["ada@example.org"]
    assert queue_length(engine) == 0


async def test_a_permanent_refusal_gives_up_and_frees_the_slot_for_a_new_sign_up(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    smtp_server.handler.fault = lambda stage, address, n: (
        "550 5.1.1 no such mailbox" if stage == "rcpt" and n == 1 else None
    )
    config = web_settings(settings)
    async with running_app(config, engine) as (_, client):
        await client.post("/subscribe", json={"email": "ada@example.org"})
        refused = await send_queued_confirmations(config, engine)
        assert (refused.sent, refused.given_up) == (0, 1)
        assert queue_length(engine) == 0
        stored = subscriber(engine, "ada@example.org")
        assert stored is not None and stored.confirmation_sent_at is None

        await client.post("/subscribe", json={"email": "ada@example.org"})  # the owner tries again
        again = await send_queued_confirmations(config, engine)
    assert again.sent == 1
    assert smtp_server.handler.recipients() == ["ada@example.org"]


async def test_a_relay_down_for_every_attempt_gives_up_after_the_last(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    smtp_server.handler.fault = lambda stage, address, n: "421 4.3.2 shutting down"
    config = web_settings(settings)
    async with running_app(config, engine) as (_, client):
        await client.post("/subscribe", json={"email": "ada@example.org"})
    env = make_template_environment(config.templates_dir)
    sender = ConfirmationSender(config, engine, env, retry_base_seconds=0, max_attempts=3)
    outcome = await sender.run(stop=asyncio.Event(), stop_when_idle=True)
    assert (outcome.retrying, outcome.given_up, outcome.sent) == (2, 1, 0)
    assert queue_length(engine) == 0
    stored = subscriber(engine, "ada@example.org")
    assert stored is not None and stored.confirmation_sent_at is None


async def test_a_reader_who_confirmed_before_the_worker_came_gets_nothing(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = web_settings(settings)
    async with running_app(config, engine) as (_, client):
        await client.post("/subscribe", json={"email": "ada@example.org"})
    with session_scope(engine) as session:  # an operator confirmed them meanwhile
        found = find_subscriber(session, email="ada@example.org")
        assert found is not None
        mark_confirmed(found, now=dt.datetime.now(dt.UTC), client_address=None)

    outcome = await send_queued_confirmations(config, engine)

    assert (outcome.sent, outcome.not_wanted) == (0, 1)
    assert smtp_server.messages == []
    assert queue_length(engine) == 0


async def test_the_newsletter_worker_command_sends_queued_confirmations_and_says_so(
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    database_url: str,
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        await client.post("/subscribe", json={"email": "ada@example.org"})
    result = await asyncio.to_thread(
        run_cli, "worker", env=process_environment(database_url, smtp_server.port)
    )
    assert "Confirmation emails: 1 sent, 0 to retry, 0 given up" in result.stdout
    assert smtp_server.handler.recipients() == ["ada@example.org"]
    assert queue_length(engine) == 0


@needs_proc
def test_serve_s_worker_child_sends_the_confirmation_of_a_sign_up(
    engine: Engine, smtp_server: RecordingSmtpServer, database_url: str
) -> None:
    port = free_port()
    env = process_environment(database_url, smtp_server.port)
    with newsletter_process("-v", "serve", "--port", str(port), env=env) as server:
        server.wait_for_line("started the sending worker")
        server.wait_for_line("Application startup complete")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            answer = client.post("/subscribe", json={"email": "ada@example.org"})
        assert answer.status_code == 202
        assert smtp_server.handler.wait_for_messages(1, timeout=30)
        server.signal_and_wait(signal.SIGTERM)
    assert smtp_server.handler.recipients() == ["ada@example.org"]
    assert queue_length(engine) == 0


@needs_proc
def test_a_worker_killed_mid_send_leaves_the_email_to_the_next_one_which_sends_it_once(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, database_url: str
) -> None:
    hold = Hold(applies=lambda address: True)
    smtp_server.handler.hold = hold
    env = process_environment(database_url, smtp_server.port)
    asyncio.run(_sign_up(web_settings(settings), engine, "ada@example.org"))
    # One process, the one that sends: with several, SIGKILL would hit only their parent.
    with newsletter_process("-v", "worker", "--forever", "--processes", "1", env=env) as first:
        assert hold.reached.wait(30), "the worker never reached the relay"
        first.popen.kill()  # SIGKILL: no clean-up, its lease stays in the table
        first.popen.wait(30)
    [(leased_by, attempts, _)] = queued(engine)
    assert leased_by is not None and attempts == 1
    smtp_server.handler.hold = None
    hold.release()  # the dead worker's session ends without DATA

    result = run_cli("worker", env=env)

    assert "Confirmation emails: 1 sent" in result.stdout
    assert smtp_server.handler.recipients() == ["ada@example.org"]
    assert queue_length(engine) == 0


async def _sign_up(settings: Settings, engine: Engine, address: str) -> None:
    async with running_app(settings, engine) as (_, client):
        answer = await client.post("/subscribe", json={"email": address})
        assert answer.status_code == 202


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL database for one test, dropped afterwards."""
    with postgres_database_or_skip() as url:
        yield url


@pytest.mark.postgres
async def test_sign_ups_queue_and_two_senders_share_the_queue_on_postgresql(
    settings: Settings, smtp_server: RecordingSmtpServer, postgres_url: str
) -> None:
    config = web_settings(settings, database_url=postgres_url, signup_rate_limit=1000)
    pg_engine = create_db_engine(postgres_url)
    try:
        upgrade_schema(pg_engine)
        addresses = [f"reader{n}@example.org" for n in range(20)]
        async with running_app(config, pg_engine) as (_, client):
            for address in addresses:
                assert (await client.post("/subscribe", json={"email": address})).status_code == 202
        assert queue_length(pg_engine) == len(addresses)
        env = make_template_environment(config.templates_dir)
        senders = [ConfirmationSender(config, pg_engine, env) for _ in range(2)]
        outcomes = await asyncio.gather(
            *(sender.run(stop=asyncio.Event(), stop_when_idle=True) for sender in senders)
        )
        assert sum(outcome.sent for outcome in outcomes) == len(addresses)
        assert sorted(smtp_server.handler.recipients()) == sorted(addresses)  # each once
        assert queue_length(pg_engine) == 0
    finally:
        pg_engine.dispose()


async def test_sign_ups_arriving_together_share_a_transaction_and_all_are_queued(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    commits: list[str] = []
    event.listen(engine, "commit", lambda connection: commits.append("commit"))
    config = web_settings(settings, signup_rate_limit=1000)
    addresses = [f"reader{n}@example{n}.org" for n in range(20)]
    async with running_app(config, engine) as (_, client):
        answers = await asyncio.gather(
            *(client.post("/subscribe", json={"email": address}) for address in addresses)
        )
    assert {answer.status_code for answer in answers} == {202}
    assert queue_length(engine) == len(addresses)
    assert len(commits) < len(addresses)  # fewer transactions than sign-ups


async def test_one_sign_up_that_cannot_be_recorded_does_not_lose_the_others() -> None:
    recorded: list[str] = []

    def write_batch(
        arrivals: Sequence[SignupDetails | None],
        answered: Sequence[tuple[int, SignupDetails | None]],
    ) -> list[int]:
        batch = [details for _, details in answered if details is not None]
        if any(details.email.startswith("bad") for details in batch):
            raise RuntimeError("this batch cannot be stored")
        recorded.extend(details.email for details in batch)
        return list(range(len(arrivals)))

    writer = SignupWriter(write_batch)
    emails = ["a@example.org", "bad@example.org", "b@example.org"]
    outcomes = await asyncio.gather(
        *(writer.record(0, SignupDetails(email, None, ())) for email in emails),
        return_exceptions=True,
    )
    assert sorted(recorded) == ["a@example.org", "b@example.org"]
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], RuntimeError)


async def test_an_email_that_cannot_be_built_is_dropped_and_the_worker_carries_on(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, tmp_path: Path
) -> None:
    config = web_settings(settings)
    async with running_app(config, engine) as (_, client):
        await client.post("/subscribe", json={"email": "ada@example.org"})
    # An operator's own templates with a mistake in the confirmation email.
    broken = tmp_path / "templates"
    shutil.copytree(config.templates_dir, broken)
    (broken / "email" / "confirm.txt.j2").write_text("{{ no_such_value }}\n")
    outcome = await send_queued_confirmations(
        config.model_copy(update={"templates_dir": broken}), engine
    )
    assert (outcome.sent, outcome.given_up) == (0, 1)
    assert smtp_server.messages == []
    assert queue_length(engine) == 0
    stored = subscriber(engine, "ada@example.org")
    assert stored is not None and stored.confirmation_sent_at is None  # may sign up again


def received_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(ReceivedSignup)).scalar_one()
        )


async def test_a_sign_up_answered_but_never_recorded_is_recorded_when_the_app_starts_again(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    # The server stops between the answer and the recording (here: the recording's
    # first write fails, as a crash would leave it). The answer promised an email.
    config = web_settings(settings)

    def crash(connection: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO subscribers"):
            raise sqlite3.OperationalError("disk I/O error")

    event.listen(engine, "before_cursor_execute", crash)
    try:
        async with running_app(config, engine) as (_, client):
            answer = await client.post("/subscribe", json={"email": "kept@example.org"})
    finally:
        event.remove(engine, "before_cursor_execute", crash)
    assert answer.status_code == 202
    assert subscriber(engine, "kept@example.org") is None
    assert received_rows(engine) == 1  # what the answer waited for

    async with running_app(config, engine):  # started again: it records what was left
        pass

    kept = subscriber(engine, "kept@example.org")
    assert kept is not None and kept.status == SubscriberStatus.PENDING
    assert received_rows(engine) == 0
    await send_queued_confirmations(config, engine)
    assert smtp_server.handler.recipients() == ["kept@example.org"]


async def test_a_honeypot_sign_up_leaves_nothing_behind(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = web_settings(settings)
    async with running_app(config, engine) as (_, client):
        answer = await client.post(
            "/subscribe", data={"email": "bot@example.org", "website": "https://spam.example"}
        )
    assert answer.status_code == 200
    assert subscriber(engine, "bot@example.org") is None
    assert received_rows(engine) == 0
    assert queue_length(engine) == 0
