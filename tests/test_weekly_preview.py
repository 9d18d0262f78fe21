"""`newsletter preview --for` a weekly reader: what a send of that day would give them.

On their weekday, the weekly digest (the week's "For you" and "Trending this
week", minus what was already sent to them); on another day, a plain "no
digest today" and the weekday they get it, not a daily digest.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from newsletter.delivery.ledger import deliveries, editions, subscribers
from newsletter.delivery.selections import selections
from newsletter.editions.personal import papers
from tests.support.cli import cli_environment, run_cli, send_day
from tests.support.relevance_corpus import labelled_database
from tests.support.smtp_server import RecordingSmtpServer

WEDNESDAY, THURSDAY, SATURDAY = dt.date(2026, 11, 4), dt.date(2026, 11, 5), dt.date(2026, 11, 7)
LEGS = ["--topics", "Robotics", "--interests", "legged locomotion, sim-to-real"]


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    """A migrated SQLite database holding the six days of labelled papers."""
    with labelled_database(f"sqlite:///{tmp_path / 'weekly.db'}") as database:
        yield database


def _make_weekly(engine: Engine, address: str, weekday: int, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(subscribers)
            .where(subscribers.c.email == address)
            .values(frequency="weekly", weekly_day=weekday, **values)
        )


def _preview_json(env: dict[str, str], day: dt.date, address: str) -> dict[str, list[str]]:
    """The previewed sections of `address`'s digest: section name → arXiv ids, in order."""
    result = run_cli("preview", "--date", day.isoformat(), "--json", "--for", address, env=env)
    return {
        section["name"]: [paper["arxiv_id"] for paper in section["papers"]]
        for section in json.loads(result.stdout)["sections"]
    }


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_a_weekly_readers_preview_on_their_day_is_the_digest_the_send_delivers(
    stored: tuple[Engine, str], tmp_path: Path
) -> None:
    engine, url = stored
    with RecordingSmtpServer() as server:
        env = cli_environment(url, server.port)
        # Daily on Wednesday, weekly on Saturdays from then on: Wednesday's
        # digest is what their weekly one must leave out.
        run_cli("subscribers", "add", "weekly@example.org", "--confirmed", *LEGS, env=env)
        run_cli("subscribers", "add", "popular@example.org", "--confirmed", env=env)
        _make_weekly(engine, "popular@example.org", SATURDAY.weekday(), digest_mode="trending")
        wednesday = send_day(server, env, WEDNESDAY, 1)
        _make_weekly(engine, "weekly@example.org", SATURDAY.weekday())
        # Wednesday's papers become the week's most popular: were they not left
        # out, they would lead "Trending this week".
        with engine.begin() as connection:
            connection.execute(
                update(papers)
                .where(papers.c.daily_date == WEDNESDAY)
                .values(upvotes=papers.c.upvotes + 5000)
            )

        previewed = {
            address: _preview_json(env, SATURDAY, address)
            for address in ("weekly@example.org", "popular@example.org")
        }
        out = tmp_path / "weekly.html"
        run_cli(
            "preview",
            "--date",
            SATURDAY.isoformat(),
            "--for",
            "weekly@example.org",
            "--out",
            str(out),
            env=env,
        )
        saturday = send_day(server, env, SATURDAY, 2)

    with engine.connect() as connection:
        sent = {
            row.email: row
            for row in connection.execute(
                select(deliveries.c.email, selections.c.picks, selections.c.trending)
                .join(selections, selections.c.id == deliveries.c.selection_id)
                .join(editions, editions.c.id == deliveries.c.edition_id)
                .where(editions.c.date == SATURDAY)
            )
        }
    weekly = previewed["weekly@example.org"]
    assert list(weekly) == ["for_you", "trending"]
    assert weekly["for_you"] and weekly["trending"]
    assert weekly["for_you"] == [pick["arxiv_id"] for pick in sent["weekly@example.org"].picks]
    assert weekly["trending"] == sent["weekly@example.org"].trending
    # The trending digest's weekly reader: the week's trending, no "For you".
    assert previewed["popular@example.org"] == {"trending": sent["popular@example.org"].trending}
    # Nothing Wednesday's digest carried comes back, in the preview as in the send.
    wednesday_text = _text(wednesday["weekly@example.org"].message)
    assert not [a for a in weekly["for_you"] + weekly["trending"] if a in wednesday_text]

    # The written preview is the message they receive, word for word.
    received = _text(saturday["weekly@example.org"].message).replace("\r\n", "\n")
    assert "TRENDING THIS WEEK" in received
    assert out.with_suffix(".txt").read_text(encoding="utf-8").replace("\r\n", "\n") == received


def test_a_weekly_reader_on_another_day_is_told_there_is_no_digest_and_which_day_it_comes(
    stored: tuple[Engine, str], tmp_path: Path
) -> None:
    engine, url = stored
    env = cli_environment(url, 25)
    run_cli("subscribers", "add", "weekly@example.org", "--confirmed", *LEGS, env=env)
    _make_weekly(engine, "weekly@example.org", SATURDAY.weekday())
    out = tmp_path / "thursday.html"

    written = run_cli(
        "preview",
        "--date",
        THURSDAY.isoformat(),
        "--for",
        "weekly@example.org",
        "--out",
        str(out),
        env=env,
        check=False,
    )
    printed = run_cli(
        "preview",
        "--date",
        THURSDAY.isoformat(),
        "--for",
        "weekly@example.org",
        "--json",
        env=env,
        check=False,
    )

    # Nothing to send, like `run` on a day without papers: exit 5, not an error.
    assert written.returncode == 5, written.stdout + written.stderr
    assert "weekly digest, sent on Saturdays" in written.stdout
    assert "no digest on Thursday 2026-11-05" in written.stdout
    assert written.stderr == "" and not out.exists()
    assert printed.returncode == 5, printed.stdout + printed.stderr
    answer = json.loads(printed.stdout)
    assert answer["sections"] == []
    assert answer["no_digest"]["weekly_day"] == "Saturday"
    assert "no digest on Thursday 2026-11-05" in answer["no_digest"]["reason"]


def test_a_paused_weekly_reader_on_their_day_is_told_a_send_gives_them_nothing(
    stored: tuple[Engine, str],
) -> None:
    engine, url = stored
    env = cli_environment(url, 25)
    run_cli("subscribers", "add", "weekly@example.org", "--confirmed", *LEGS, env=env)
    _make_weekly(engine, "weekly@example.org", SATURDAY.weekday(), paused=True)

    result = run_cli(
        "preview",
        "--date",
        SATURDAY.isoformat(),
        "--for",
        "weekly@example.org",
        "--json",
        env=env,
        check=False,
    )

    assert result.returncode == 5, result.stdout + result.stderr
    reason = json.loads(result.stdout)["no_digest"]["reason"]
    assert "no digest on Saturday 2026-11-07: not confirmed, or paused" in reason
