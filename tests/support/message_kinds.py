"""Every kind of message the product sends, made by the production code through `newsletter`.

The outside judges (a real relay, SpamAssassin, axe-core, the link check) look
at each kind: the day's digest as a reader without a profile gets it
(trending), a personal digest ("For you"), the test copy, the double opt-in
confirmation (sent by `subscribers import`) and the welcome that follows the
click on its button. Each kind goes to its own address, so whichever server
received them, a kind is found by its recipient.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import text

from newsletter.core.clock import utc_now
from newsletter.core.db import create_db_engine, upgrade_schema
from newsletter.core.settings import load_settings
from newsletter.web.app import create_app
from subscribers.tokens import make_confirm_token
from tests.support.cli import CLI_SECRET_KEY, cli_environment, run_cli
from tests.support.relevance_corpus import store_labelled_papers
from tests.support.smtp_server import ReceivedMessage, RecordingSmtpServer
from tests.support.web import live_server

# A day of the labelled papers (tests/support/relevance_corpus.py).
DAY = dt.date(2026, 11, 5)

# Each kind the product sends, and the address it is sent to. A new kind of message
# is judged by every check once it has a row here and a command in `send_every_kind`.
RECIPIENTS = {
    "digest-trending": "plain@example.org",
    "digest-personal": "legs@example.org",
    "test-copy": "tester@example.org",
    "confirmation": "newcomer@example.org",
    "welcome": "welcomed@example.org",
}
DIGEST_KINDS = ("digest-trending", "digest-personal")
PERSONAL_PROFILE = ["--topics", "Robotics", "--interests", "legged locomotion, sim-to-real"]


def send_every_kind(
    database_url: str, smtp_port: int, workdir: Path, *, kinds: tuple[str, ...] = tuple(RECIPIENTS)
) -> None:
    """Send each of `kinds` once, with `newsletter` commands, through the relay at `smtp_port`.

    The database must hold the labelled papers (`store_labelled_papers`); `workdir` takes
    the import's CSV file.
    """
    env = cli_environment(database_url, smtp_port)
    if "digest-trending" in kinds:
        run_cli("subscribers", "add", RECIPIENTS["digest-trending"], "--confirmed", env=env)
    if "digest-personal" in kinds:
        personal = RECIPIENTS["digest-personal"]
        run_cli("subscribers", "add", personal, "--confirmed", *PERSONAL_PROFILE, env=env)
    if set(DIGEST_KINDS) & set(kinds):
        run_cli("send", "--date", DAY.isoformat(), env=env)
    if "test-copy" in kinds:
        to = RECIPIENTS["test-copy"]
        run_cli("test-send", "--to", to, "--date", DAY.isoformat(), env=env)
    if "confirmation" in kinds:
        listing = workdir / "newcomers.csv"
        listing.write_text(f"email,name\n{RECIPIENTS['confirmation']},New Reader\n")
        run_cli("subscribers", "import", str(listing), env=env)
    if "welcome" in kinds:
        # A pending reader presses the confirm button, which queues the welcome; a worker sends it.
        run_cli("subscribers", "add", RECIPIENTS["welcome"], env=env)
        press_confirm_button(database_url, RECIPIENTS["welcome"])
        run_cli("worker", env=env)


def press_confirm_button(database_url: str, email: str) -> None:
    """POST a pending reader's confirmation link to the app, as the page's button does."""
    settings = load_settings(
        _env_file=None,
        database_url=database_url,
        secret_key=CLI_SECRET_KEY,
        base_url="https://news.example.org",
    )
    token = make_confirm_token(
        CLI_SECRET_KEY, subscriber_key(database_url, email), issued_at=utc_now()
    )
    engine = create_db_engine(database_url)
    try:
        with live_server(create_app(settings, engine=engine)) as site:
            answer = httpx.post(f"{site}/confirm/{token}")
    finally:
        engine.dispose()
    assert answer.status_code == 200 and "You are subscribed" in answer.text, answer.text


@dataclass(frozen=True)
class SentKinds:
    """One received message of each kind, and the database they were sent from."""

    database_url: str
    messages: dict[str, ReceivedMessage]


def papers_database(workdir: Path) -> str:
    """A new SQLite database in `workdir` holding the labelled papers, code links on DAY's."""
    database_url = f"sqlite:///{workdir / 'kinds.db'}"
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine)
        store_labelled_papers(engine)
        with engine.begin() as connection:
            # Code links too, as the Hugging Face feed gives them, so the digests show every link.
            connection.execute(
                text(
                    "UPDATE papers SET github_repo = 'https://github.com/example-lab/' || arxiv_id"
                    " WHERE daily_date = :day"
                ),
                {"day": DAY.isoformat()},
            )
    finally:
        engine.dispose()
    return database_url


def received_every_kind(workdir: Path) -> SentKinds:
    """Send every kind to a recording SMTP server from a fresh database; what it received."""
    database_url = papers_database(workdir)
    with RecordingSmtpServer() as server:
        send_every_kind(database_url, server.port, workdir)
        assert server.handler.wait_for_messages(len(RECIPIENTS), timeout=30)
        by_recipient = {message.rcpt_tos[0]: message for message in server.messages}
    return SentKinds(
        database_url=database_url,
        messages={kind: by_recipient[address] for kind, address in RECIPIENTS.items()},
    )


def subscriber_key(database_url: str, email: str) -> str:
    """The key a subscriber's signed links are made from."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            key: str = connection.execute(
                text("SELECT key FROM subscribers WHERE email = :email"), {"email": email}
            ).scalar_one()
            return key
    finally:
        engine.dispose()
