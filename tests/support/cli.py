"""Helpers shared by the CLI tests: the `newsletter` command as a real process."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

from tests.support.smtp_server import ReceivedMessage, RecordingSmtpServer

# The secret the `newsletter` processes of the tests sign their links with.
CLI_SECRET_KEY = "cli-test-secret"


def cli_environment(database_url: str, smtp_port: int) -> dict[str, str]:
    """The environment of a `newsletter` process using this database and SMTP server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(smtp_port),
        NEWSLETTER_SECRET_KEY=CLI_SECRET_KEY,
        NEWSLETTER_BASE_URL="https://news.example.org",
        NEWSLETTER_FROM_ADDRESS="Daily ML Papers <digest@news.example.org>",
        NEWSLETTER_SEND_RETRY_BASE_SECONDS="0",
        COLUMNS="200",
    )
    return env


def run_cli(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `newsletter ARGS`; unless `check` is off, a non-zero exit fails the test."""
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def send_day(
    server: RecordingSmtpServer, env: dict[str, str], day: dt.date, expected: int
) -> dict[str, ReceivedMessage]:
    """`newsletter send` the edition of `day`; the `expected` messages delivered, by recipient."""
    before = len(server.messages)
    result = run_cli("send", "--date", day.isoformat(), env=env)
    assert server.handler.wait_for_messages(before + expected, timeout=60), result.stdout
    return {m.rcpt_tos[0]: m for m in server.messages[before:]}
