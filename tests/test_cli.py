"""The `newsletter` command as an operator uses it: a real process, real SMTP, real SQLite."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import math
from pathlib import Path
from typing import Any

import pytest

from newsletter.core.db import create_db_engine
from tests.support.cli import run_cli
from tests.support.sending import insert_subscriber_row
from tests.support.smtp_server import RecordingSmtpServer

DAY = "2026-11-20"
END_OF_DAY_HOURS = {  # hours from publication to midnight UTC after DAY
    "2611.00001": 24.0,
    "2611.00002": 48.0,
    "2611.00003": 12.0,
    "2611.00004": 36.0,
}


def _paper(
    arxiv_id: str, title: str, upvotes: int, comments: int, stars: int | None, published: str
) -> dict[str, Any]:
    paper: dict[str, Any] = {
        "id": arxiv_id,
        "authors": [
            {"_id": "a1", "name": "Ana Uno", "hidden": False},
            {"_id": "a2", "name": "Bo Dos", "hidden": True},
            {"_id": "a3", "name": "Cy Tres", "hidden": False},
            {"_id": "a4", "name": "Di Cuatro", "hidden": False},
        ],
        "publishedAt": published,
        "submittedOnDailyAt": f"{DAY}T08:00:00.000Z",
        "title": title,
        "summary": "An abstract with\nhard line breaks.",
        "upvotes": upvotes,
    }
    if stars is not None:
        paper["githubRepo"] = f"https://github.com/example/{arxiv_id}"
        paper["githubStars"] = stars
    return {"paper": paper, "title": title, "numComments": comments, "publishedAt": published}


HOSTILE_TITLE = "<script>alert('x')</script> & \"quotes\": p < 0.05 for {{ 7*7 }}"


@pytest.fixture
def papers_file(tmp_path: Path) -> Path:
    records = [
        _paper("2611.00001", "Plain Title One", 10, 2, None, "2026-11-20T00:00:00.000Z"),
        _paper("2611.00002", HOSTILE_TITLE, 40, 0, 500, "2026-11-19T00:00:00.000Z"),
        _paper("2611.00003", "Fresh But Quiet", 3, 1, None, "2026-11-20T12:00:00.000Z"),
        _paper("2611.00004", "Starred $\\mathcal{O}(n)$", 5, 0, 2000, "2026-11-19T12:00:00.000Z"),
    ]
    path = tmp_path / "papers.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def documented_score(upvotes: int, comments: int, stars: int, age_hours: float) -> float:
    """The README's formula, written out independently of the code."""
    popularity = math.log(1 + upvotes) + 0.5 * math.log(1 + comments) + 0.25 * math.log(1 + stars)
    return popularity * 2 ** (-age_hours / 72)


def test_every_command_has_help(cli_env: dict[str, str]) -> None:
    commands = [
        [],
        ["ingest"],
        ["preview"],
        ["send"],
        ["test-send"],
        ["pause"],
        ["resume"],
        ["cancel"],
        ["run"],
        ["demo"],
        ["worker"],
        ["stats"],
        ["check"],
        ["serve"],
        ["subscribers"],
        ["subscribers", "add"],
        ["subscribers", "list"],
        ["subscribers", "remove"],
        ["db"],
        ["db", "upgrade"],
    ]
    for command in commands:
        result = run_cli(*command, "--help", env=cli_env)
        assert "Usage:" in result.stdout, command


def test_ingest_file_then_preview_ranks_by_the_documented_formula(
    cli_env: dict[str, str], papers_file: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "ingest", "--source", "file", "--file", str(papers_file), "--date", DAY, env=cli_env
    )
    assert "4 new" in result.stdout
    out = tmp_path / "preview" / "digest.html"
    run_cli("preview", "--date", DAY, "--out", str(out), env=cli_env)
    html = out.read_text(encoding="utf-8")
    text = out.with_suffix(".txt").read_text(encoding="utf-8")

    counts = {
        "2611.00001": (10, 2, 0),
        "2611.00002": (40, 0, 500),
        "2611.00003": (3, 1, 0),
        "2611.00004": (5, 0, 2000),
    }
    expected = sorted(counts, key=lambda i: -documented_score(*counts[i], END_OF_DAY_HOURS[i]))
    positions = [text.index(f"https://huggingface.co/papers/{arxiv_id}") for arxiv_id in expected]
    assert positions == sorted(positions), f"text order should be {expected}"
    html_positions = [
        html.index(f"https://huggingface.co/papers/{arxiv_id}") for arxiv_id in expected
    ]
    assert html_positions == sorted(html_positions)

    # Hostile text shows literally: escaped in HTML, verbatim in text, never executed.
    assert HOSTILE_TITLE in text
    assert "&lt;script&gt;alert(" in html
    assert "<script>alert(" not in html
    assert "{{ 7*7 }}" in html and "49" not in text
    assert "$\\mathcal{O}(n)$" in text
    assert "Ana Uno, Bo Dos, Cy Tres et al." in text


def test_send_reaches_each_confirmed_subscriber_once_and_a_second_run_sends_nothing(
    cli_env: dict[str, str], papers_file: Path, smtp_server: RecordingSmtpServer
) -> None:
    run_cli("ingest", "--file", str(papers_file), "--date", DAY, env=cli_env)
    for address in ("ada@example.org", "Bob@Example.org", "cy@example.org"):
        run_cli("subscribers", "add", address, "--confirmed", env=cli_env)
    run_cli("subscribers", "add", "pending@example.org", env=cli_env)
    run_cli("subscribers", "add", "gone@example.org", "--confirmed", env=cli_env)
    run_cli("subscribers", "remove", "GONE@example.org", env=cli_env)

    listed = json.loads(run_cli("subscribers", "list", "--json", env=cli_env).stdout)
    assert {row["email"]: row["status"] for row in listed} == {
        "ada@example.org": "confirmed",
        "Bob@example.org": "confirmed",
        "cy@example.org": "confirmed",
        "pending@example.org": "pending",
        "gone@example.org": "unsubscribed",
    }

    dry = run_cli("send", "--date", DAY, "--dry-run", env=cli_env)
    assert "It would go to 3 readers" in dry.stdout
    assert smtp_server.messages == []

    first = run_cli("send", "--date", DAY, env=cli_env)
    assert "Send summary" in first.stdout
    assert sorted(smtp_server.handler.recipients()) == [
        "Bob@example.org",
        "ada@example.org",
        "cy@example.org",
    ]
    message = smtp_server.messages[0].message
    for header in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
        assert message[header], header
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"].endswith("@news.example.org>")
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]

    run_cli("send", "--date", DAY, env=cli_env)
    assert len(smtp_server.messages) == 3

    stats = json.loads(run_cli("stats", "--date", DAY, "--json", env=cli_env).stdout)
    assert stats["deliveries"]["sent"] == 3
    assert stats["status"] == "sent"


@pytest.mark.timeout(90)  # a bad row once hung `newsletter send` until it was killed
def test_send_fails_rows_it_cannot_address_and_delivers_the_rest(
    cli_env: dict[str, str], papers_file: Path, smtp_server: RecordingSmtpServer
) -> None:
    run_cli("ingest", "--file", str(papers_file), "--date", DAY, env=cli_env)
    for address in ("ada@example.org", "cy@example.org"):
        run_cli("subscribers", "add", address, "--confirmed", env=cli_env)
    engine = create_db_engine(cli_env["NEWSLETTER_DATABASE_URL"])
    try:
        insert_subscriber_row(engine, email="gone@example.org", key="gone+a-key-00000")
        insert_subscriber_row(engine, email="no address@example.org", key="fine-key-00001")
    finally:
        engine.dispose()

    result = run_cli("send", "--date", DAY, env=cli_env)

    assert sorted(smtp_server.handler.recipients()) == ["ada@example.org", "cy@example.org"]
    stats = json.loads(run_cli("stats", "--date", DAY, "--json", env=cli_env).stdout)
    assert (stats["status"], stats["deliveries"]["sent"], stats["deliveries"]["failed"]) == (
        "finished_with_failures",  # two readers could not be reached
        2,
        2,
    )
    assert "message not prepared" in result.stderr  # one log line per row, saying why


def test_test_send_goes_to_one_address_and_is_marked(
    cli_env: dict[str, str], papers_file: Path, smtp_server: RecordingSmtpServer
) -> None:
    run_cli("ingest", "--file", str(papers_file), "--date", DAY, env=cli_env)
    run_cli("subscribers", "add", "reader@example.org", "--confirmed", env=cli_env)
    run_cli("send", "--date", DAY, "--to", "editor@example.org", env=cli_env)
    assert smtp_server.handler.recipients() == ["editor@example.org"]
    assert "TEST" in smtp_server.messages[0].message["Subject"].upper()
    stats = json.loads(run_cli("stats", "--date", DAY, "--json", env=cli_env).stdout)
    assert stats["test_sends"] == 1
    assert stats["deliveries"]["sent"] == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["subscribers", "add", "not-an-address"], "not a valid email address"),
        (["subscribers", "add", "a@b.org\r\nBcc: x@y.org"], "line breaks"),
        (["subscribers", "remove", "nobody@example.org"], "no subscriber"),
        (
            ["ingest", "--file", "/nonexistent/papers.json", "--date", DAY],
            "/nonexistent/papers.json",
        ),
        (["ingest", "--source", "rss"], "--source must be hf, arxiv or file"),
        (
            ["preview", "--date", "2001-01-01", "--out", "x.html"],
            "no papers are stored for 2001-01-01",
        ),
    ],
)
def test_errors_are_one_clear_line_without_traceback(
    cli_env: dict[str, str], args: list[str], expected: str
) -> None:
    result = run_cli(*args, env=cli_env, check=False)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_malformed_file_is_one_error_and_writes_nothing(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}', encoding="utf-8")
    result = run_cli("ingest", "--file", str(bad), "--date", DAY, env=cli_env, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    preview = run_cli(
        "preview", "--date", DAY, "--out", str(tmp_path / "p.html"), env=cli_env, check=False
    )
    assert "no papers are stored" in preview.stderr


def test_production_refuses_the_default_secret(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, NEWSLETTER_ENVIRONMENT="production")
    env.pop("NEWSLETTER_SECRET_KEY")
    result = run_cli("subscribers", "list", env=env, check=False)
    assert result.returncode == 1
    assert "NEWSLETTER_SECRET_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_db_upgrade_creates_then_keeps_data(cli_env: dict[str, str]) -> None:
    first = run_cli("db", "upgrade", env=cli_env)
    assert "Upgraded the schema from nothing" in first.stdout
    run_cli("subscribers", "add", "keep@example.org", env=cli_env)
    second = run_cli("db", "upgrade", env=cli_env)
    assert "up to date" in second.stdout
    listed = json.loads(run_cli("subscribers", "list", "--json", env=cli_env).stdout)
    assert [row["email"] for row in listed] == ["keep@example.org"]


def test_demo_fills_the_outbox_with_complete_digests(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    result = run_cli(
        "demo",
        "--outbox",
        str(outbox),
        "--database-url",
        f"sqlite:///{tmp_path / 'demo.db'}",
        env=dict(cli_env, COLUMNS="80"),
    )
    assert "preview.html" in result.stdout
    lines = result.stdout.splitlines()
    # Within 80 columns, but for the paths: on lines of their own, whole, to copy.
    assert all(len(line) <= 80 for line in lines if str(tmp_path) not in line)
    assert f"  {outbox / 'preview.html'}" in lines
    box = mailbox.Maildir(outbox)
    messages = [
        email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
        for key in box.iterkeys()
    ]
    assert len(messages) >= 3
    # Each message has an .eml copy that opens with a double click; the table
    # names each on one row of its own, unwrapped at 80 columns.
    copies = sorted((outbox / "eml").glob("*.eml"))
    assert sorted(copy.read_bytes() for copy in copies) == sorted(
        box.get_bytes(key) for key in box.iterkeys()
    )
    rows = [line for line in lines if line.startswith("│")]
    listed = sorted(word for row in rows for word in row.split() if word.endswith(".eml"))
    assert listed == [f"eml/{copy.name}" for copy in copies] and len(rows) == len(copies)
    for message in messages:
        # The demo's day reads like a real one: no markup or template syntax in it.
        text = message.get_body(preferencelist=("plain",))
        assert text is not None and "alert(1)" not in text.get_content()
        assert "{{" not in text.get_content()
        assert message["List-Unsubscribe"].startswith("<https://news.example.org/unsubscribe/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Message-ID"] and message["Date"] and message["List-Id"]
        parts = list(message.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        assert len(parts[1].as_bytes()) < 102 * 1024
    assert (outbox / "preview.html").exists()
    # Running it again starts afresh rather than reporting nothing to do.
    run_cli(
        "demo",
        "--outbox",
        str(outbox),
        "--database-url",
        f"sqlite:///{tmp_path / 'demo.db'}",
        env=cli_env,
    )
    assert len(mailbox.Maildir(outbox).keys()) == len(messages)
    assert len(list((outbox / "eml").glob("*.eml"))) == len(messages)


def test_run_fetches_ranks_renders_and_sends_what_cron_runs(
    cli_env: dict[str, str], papers_file: Path, smtp_server: RecordingSmtpServer
) -> None:
    from tests.support.feed_server import FeedResponse, running_feed_server

    day_papers = json.loads(papers_file.read_text(encoding="utf-8"))
    with running_feed_server() as feeds:
        feeds.serve("/api/daily_papers", FeedResponse(503), FeedResponse.json(day_papers))
        env = dict(cli_env, NEWSLETTER_HF_API_URL=feeds.url("/api/daily_papers"))
        run_cli("subscribers", "add", "ada@example.org", "--confirmed", env=env)
        result = run_cli("run", "--date", DAY, env=env)
        requests = feeds.requests("/api/daily_papers")
    assert "4 new" in result.stdout
    assert requests[-1].query["date"] == DAY
    assert len(requests) == 2  # the 503 was retried
    assert smtp_server.handler.recipients() == ["ada@example.org"]
    # cron runs it again the same day: nobody gets a second copy.
    with running_feed_server() as feeds:
        feeds.serve("/api/daily_papers", FeedResponse.json(day_papers))
        env = dict(cli_env, NEWSLETTER_HF_API_URL=feeds.url("/api/daily_papers"))
        run_cli("run", "--date", DAY, env=env)
    assert smtp_server.handler.recipients() == ["ada@example.org"]


def test_run_stops_with_one_line_when_the_source_is_down(cli_env: dict[str, str]) -> None:
    from tests.support.feed_server import FeedResponse, running_feed_server

    with running_feed_server() as feeds:
        feeds.serve("/api/daily_papers", FeedResponse(400, b'{"error": "Invalid date"}'))
        env = dict(cli_env, NEWSLETTER_HF_API_URL=feeds.url("/api/daily_papers"))
        result = run_cli("run", "--date", DAY, env=env, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_operator_commands_and_their_old_spellings_say_the_same(
    cli_env: dict[str, str], papers_file: Path
) -> None:
    run_cli("ingest", "--file", str(papers_file), "--date", DAY, env=cli_env)
    run_cli("subscribers", "add", "ada@example.org", "--confirmed", env=cli_env)
    draft_pause = run_cli("pause", "--date", DAY, env=cli_env, check=False)
    old_pause = run_cli("send", "--date", DAY, "--pause", env=cli_env, check=False)
    assert draft_pause.returncode == old_pause.returncode == 1
    assert "no edition exists for 2026-11-20" in draft_pause.stderr
    assert draft_pause.stderr == old_pause.stderr
    run_cli("send", "--date", DAY, env=cli_env)
    cancel = run_cli("cancel", "--date", DAY, env=cli_env, check=False)
    old_cancel = run_cli("send", "--date", DAY, "--cancel", env=cli_env, check=False)
    assert cancel.returncode == old_cancel.returncode == 1
    assert "sent already" in cancel.stderr and cancel.stderr == old_cancel.stderr
    assert "Traceback" not in cancel.stderr + old_cancel.stderr


def test_run_exits_4_when_a_reader_was_not_reached_and_retry_failed_reaches_them(
    cli_env: dict[str, str], papers_file: Path, smtp_server: RecordingSmtpServer
) -> None:
    from tests.support.feed_server import FeedResponse, running_feed_server

    smtp_server.handler.fault = lambda stage, rcpt, n: (
        "554 5.6.0 message refused" if stage == "rcpt" and rcpt == "bob@example.org" else None
    )
    day_papers = json.loads(papers_file.read_text(encoding="utf-8"))
    with running_feed_server() as feeds:
        feeds.serve("/api/daily_papers", FeedResponse.json(day_papers))
        env = dict(cli_env, NEWSLETTER_HF_API_URL=feeds.url("/api/daily_papers"))
        for reader in ("ada@example.org", "bob@example.org"):
            run_cli("subscribers", "add", reader, "--confirmed", env=env)
        result = run_cli("run", "--date", DAY, env=env, check=False)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "The edition did not reach every reader: 1 failed, 0 bounced; "
        "`newsletter send --retry-failed` tries the failed ones again."
    ) in result.stderr
    assert smtp_server.handler.recipients() == ["ada@example.org"]
    status = run_cli("stats", "--date", DAY, env=env)
    assert "finished_with_failures" in status.stdout

    smtp_server.handler.fault = None
    retried = run_cli("send", "--retry-failed", "--date", DAY, env=env)
    assert "Queued again 1 readers whose delivery failed." in retried.stdout
    assert sorted(smtp_server.handler.recipients()) == ["ada@example.org", "bob@example.org"]
    assert "finished_with_failures" not in run_cli("stats", "--date", DAY, env=env).stdout
