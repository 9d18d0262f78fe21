"""A new user's first hour with the `newsletter` command: each rough edge they met, smoothed.

Every test runs the real command in its own process, on SQLite in a temporary
directory, as tests/test_cli.py does.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT
from tests.support.cli import run_cli
from tests.support.feed_server import FeedResponse, running_feed_server
from tests.support.smtp_server import RecordingSmtpServer

DAY = "2026-11-20"


def _record(
    arxiv_id: str,
    title: str,
    *,
    upvotes: int = 5,
    published: str = f"{DAY}T06:00:00.000Z",
    featured: str | None = f"{DAY}T08:00:00.000Z",
) -> dict[str, Any]:
    paper: dict[str, Any] = {
        "id": arxiv_id,
        "authors": [{"name": "Ana Uno"}, {"name": "Bo Dos"}],
        "publishedAt": published,
        "title": title,
        "summary": "An abstract.",
        "upvotes": upvotes,
    }
    if featured is not None:
        paper["submittedOnDailyAt"] = featured
    return {"paper": paper, "title": title, "numComments": 0}


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_run_on_a_day_without_papers_says_so_and_exits_5_after_ingesting(
    cli_env: dict[str, str], smtp_server: RecordingSmtpServer
) -> None:
    run_cli("subscribers", "add", "ada@example.org", "--confirmed", env=cli_env)
    with running_feed_server() as feeds:
        feeds.serve("/api/daily_papers", FeedResponse.json([]))
        env = dict(cli_env, NEWSLETTER_HF_API_URL=feeds.url("/api/daily_papers"))
        result = run_cli("run", "--date", "2026-11-21", env=env, check=False)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "No papers for 2026-11-21; nothing sent." in result.stdout
    assert "ingest" not in result.stderr  # no "run `newsletter ingest` first" after ingesting
    assert smtp_server.messages == []


def test_ingest_file_takes_the_day_its_records_name(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    papers = _write(
        tmp_path / "day.json", [_record("2611.00001", "One"), _record("2611.00002", "Two")]
    )
    result = run_cli("ingest", "--file", str(papers), env=cli_env)
    assert "Ingested 2 papers for 2026-11-20 from file" in result.stdout
    preview = run_cli("preview", "--date", DAY, "--json", env=cli_env)
    shown = json.loads(preview.stdout)["sections"][0]["papers"]
    assert sorted(paper["arxiv_id"] for paper in shown) == ["2611.00001", "2611.00002"]


def test_ingest_file_of_several_days_needs_a_date(cli_env: dict[str, str], tmp_path: Path) -> None:
    papers = _write(
        tmp_path / "week.json",
        [
            _record("2611.00001", "One"),
            _record("2611.00002", "Two", featured="2026-11-21T08:00:00.000Z"),
        ],
    )
    refused = run_cli("ingest", "--file", str(papers), env=cli_env, check=False)
    assert refused.returncode == 1
    assert "from 2 days (2026-11-20, 2026-11-21): give --date YYYY-MM-DD" in refused.stderr
    taken = run_cli("ingest", "--file", str(papers), "--date", "2026-11-22", env=cli_env)
    assert "Ingested 2 papers for 2026-11-22" in taken.stdout


def test_a_file_without_a_usable_record_fails_and_each_warning_prints_once(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    papers = _write(
        tmp_path / "bad.json",
        [_record("not-an-id", "Broken"), _record("2611.00003", "Undated", featured=None)],
    )
    result = run_cli("ingest", "--file", str(papers), env=cli_env, check=False)
    assert result.returncode == 1
    assert "has no usable record (2 skipped); nothing was stored" in result.stderr
    assert result.stderr.count("'not-an-id' is not an arXiv id") == 1
    assert result.stderr.count("no submittedOnDailyAt date") == 1
    assert "Ingested" not in result.stdout


def test_a_papers_featured_day_not_its_arxiv_date_sets_its_age(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # The new user's digest: 12 upvotes above 149, because arXiv published the
    # popular one six days before Hugging Face featured both on the same day.
    papers = _write(
        tmp_path / "day.json",
        [
            _record("2611.00003", "Fresh but quiet", upvotes=12),
            _record(
                "2611.00004", "Featured late", upvotes=149, published="2026-11-14T06:00:00.000Z"
            ),
        ],
    )
    run_cli("ingest", "--file", str(papers), env=cli_env)
    preview = run_cli("preview", "--date", DAY, "--json", env=cli_env)
    shown = json.loads(preview.stdout)["sections"][0]["papers"]
    assert [paper["arxiv_id"] for paper in shown] == ["2611.00004", "2611.00003"]
    out = tmp_path / "digest.html"
    run_cli("preview", "--date", DAY, "--out", str(out), env=cli_env)
    text = out.with_suffix(".txt").read_text(encoding="utf-8")
    assert "How they are ranked: Hugging Face upvotes count most" in text


def test_send_dry_run_lists_the_first_readers_and_the_count_and_json_lists_all(
    cli_env: dict[str, str], tmp_path: Path, smtp_server: RecordingSmtpServer
) -> None:
    run_cli(
        "ingest",
        "--file",
        str(_write(tmp_path / "d.json", [_record("2611.00001", "One")])),
        env=cli_env,
    )
    readers = [f"reader{n:02d}@example.org" for n in range(1, 13)]
    csv = tmp_path / "readers.csv"
    csv.write_text("email\n" + "\n".join(readers) + "\n", encoding="utf-8")
    run_cli("subscribers", "import", str(csv), "--confirmed", env=cli_env)
    run_cli("subscribers", "add", "left@example.org", "--confirmed", env=cli_env)
    run_cli("subscribers", "remove", "left@example.org", env=cli_env)

    shown = run_cli("send", "--date", DAY, "--dry-run", env=cli_env)
    assert "It would go to 12 readers" in shown.stdout
    listed = [line.strip() for line in shown.stdout.splitlines() if "@example.org" in line]
    assert listed == readers[:10]
    assert "… and 2 more (--json lists them all)" in shown.stdout

    as_json = json.loads(run_cli("send", "--date", DAY, "--dry-run", "--json", env=cli_env).stdout)
    assert as_json["count"] == 12 and as_json["recipients"] == readers
    assert as_json["subject"] == "One"
    assert smtp_server.messages == []  # nothing sent


def test_add_confirmed_refuses_a_reader_who_left_unless_forced_and_a_suppressed_one_always(
    cli_env: dict[str, str],
) -> None:
    run_cli("subscribers", "add", "ada@example.org", "--confirmed", env=cli_env)
    run_cli("subscribers", "remove", "ada@example.org", env=cli_env)
    refused = run_cli(
        "subscribers", "add", "ada@example.org", "--confirmed", env=cli_env, check=False
    )
    assert refused.returncode == 1
    assert "ada@example.org unsubscribed earlier: not re-subscribed; add --force" in refused.stderr
    forced = run_cli("subscribers", "add", "ada@example.org", "--confirmed", "--force", env=cli_env)
    assert "ada@example.org: confirmed" in forced.stdout

    run_cli("subscribers", "add", "bo@example.org", "--confirmed", env=cli_env)
    run_cli("subscribers", "erase", "bo@example.org", env=cli_env)  # stays suppressed (a hash)
    for extra in ([], ["--force"]):
        never = run_cli(
            "subscribers", "add", "bo@example.org", "--confirmed", *extra, env=cli_env, check=False
        )
        assert never.returncode == 1
        assert "bo@example.org is suppressed (erased)" in never.stderr
    listed = run_cli("subscribers", "list", "--json", env=cli_env)
    assert [row["email"] for row in json.loads(listed.stdout)] == ["ada@example.org"]


def test_help_spells_values_as_click_does_and_version_answers(cli_env: dict[str, str]) -> None:
    for command in (["--help"], ["send", "--help"], ["subscribers", "add", "--help"]):
        shown = run_cli(*command, env=dict(cli_env, COLUMNS="100")).stdout
        assert "<bool>" not in shown and "<str>" not in shown and "{email}" not in shown
    add_help = run_cli("subscribers", "add", "--help", env=cli_env).stdout
    assert "Usage: newsletter subscribers add [OPTIONS] EMAIL" in add_help
    assert "YYYY-MM-DD" in run_cli("send", "--help", env=cli_env).stdout
    assert run_cli("--version", env=cli_env).stdout.strip() == "newsletter 0.1.0"


def test_verbose_shows_the_migrations_but_not_alembics_set_up(cli_env: dict[str, str]) -> None:
    result = run_cli("-v", "stats", env=cli_env)
    assert "Running upgrade" in result.stderr
    assert "setup plugin" not in result.stderr
    assert "Context impl" not in result.stderr and "Will assume" not in result.stderr


def test_git_ignores_sqlites_write_ahead_files() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "demo.db-wal", "demo.db-shm", "outbox/eml/0001-a.eml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ignored.stdout.split() == ["demo.db-wal", "demo.db-shm", "outbox/eml/0001-a.eml"]
