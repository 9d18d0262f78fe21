"""Personal digests through the real paths: profiles from the CLI, the corpus's terms, "For you".

The papers are the labelled relevance set (tests/data/relevance: invented
papers over six days, each with the subtopics it is about), stored as an
ingest would store them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from newsletter.editions.personal import index_corpus, paper_text_of
from newsletter.models import CorpusTerm, Paper, Subscriber
from newsletter.relevance.terms import document_terms
from tests.support.cli import run_cli
from tests.support.relevance_corpus import SUBTOPICS

DAY = dt.date(2026, 11, 5)


def sections(env: dict[str, str], *extra: str) -> dict[str, list[dict[str, object]]]:
    result = run_cli("preview", "--date", DAY.isoformat(), "--json", *extra, env=env)
    return {s["name"]: s["papers"] for s in json.loads(result.stdout)["sections"]}


def test_three_readers_with_different_profiles_get_their_own_papers(
    labelled_corpus: tuple[Engine, dict[str, str]],
) -> None:
    _, env = labelled_corpus
    run_cli(
        "subscribers",
        "add",
        "legs@example.org",
        "--confirmed",
        "--topics",
        "Robotics",
        "--interests",
        "legged locomotion: quadruped and humanoid walking, sim-to-real",
        env=env,
    )
    run_cli(
        "subscribers",
        "add",
        "speech@example.org",
        "--confirmed",
        "--interests",
        "speech recognition for low-resource languages",
        env=env,
    )
    run_cli("subscribers", "add", "plain@example.org", "--confirmed", env=env)

    legs = sections(env, "--for", "legs@example.org")
    speech = sections(env, "--for", "speech@example.org")
    plain = sections(env, "--for", "plain@example.org")

    legs_ids = [p["arxiv_id"] for p in legs["for_you"]]
    speech_ids = [p["arxiv_id"] for p in speech["for_you"]]
    assert legs_ids and speech_ids and not set(legs_ids) & set(speech_ids)
    assert SUBTOPICS[str(legs_ids[0])] & {"locomotion", "robot-manipulation"}
    assert "speech-recognition" in SUBTOPICS[str(speech_ids[0])]
    assert all(str(p["why"]) for p in legs["for_you"] + speech["for_you"])
    assert str(speech["for_you"][0]["why"]).startswith("matches your interest in ")
    # "Trending today" never repeats what "For you" showed.
    assert not set(legs_ids) & {p["arxiv_id"] for p in legs["trending"]}
    # No profile: exactly today's digest.
    assert list(plain) == ["trending"]
    assert plain["trending"] == sections(env)["trending"]


def test_a_reader_who_chose_trending_only_gets_no_for_you(
    labelled_corpus: tuple[Engine, dict[str, str]],
) -> None:
    engine, env = labelled_corpus
    run_cli("subscribers", "add", "t@example.org", "--confirmed", "--interests", "speech", env=env)
    with engine.begin() as connection:
        connection.execute(
            update(Subscriber.__table__).values(digest_mode="trending")  # type: ignore[attr-defined]
        )

    assert list(sections(env, "--for", "t@example.org")) == ["trending"]


def test_an_unknown_reader_is_one_clear_error(
    labelled_corpus: tuple[Engine, dict[str, str]],
) -> None:
    _, env = labelled_corpus
    result = run_cli(
        "preview",
        "--date",
        DAY.isoformat(),
        "--json",
        "--for",
        "nobody@example.org",
        env=env,
        check=False,
    )
    assert result.returncode != 0
    assert "no subscriber with the address 'nobody@example.org'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--topics", "Robotics,Knitting"], "unknown topic 'Knitting'"),
        (["--interests", "x" * 501], "interests are limited to 500 characters (501 given)"),
    ],
)
def test_subscribers_add_refuses_unknown_topics_and_long_interests(
    labelled_corpus: tuple[Engine, dict[str, str]], args: list[str], message: str
) -> None:
    _, env = labelled_corpus
    result = run_cli("subscribers", "add", "a@example.org", *args, env=env, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_profiles_are_stored_cleaned_and_listed(
    labelled_corpus: tuple[Engine, dict[str, str]],
) -> None:
    _, env = labelled_corpus
    run_cli(
        "subscribers",
        "add",
        "a@example.org",
        "--topics",
        "robotics, llms",
        "--interests",
        "  diffusion\u202e policies\r\nfor   robots ",
        env=env,
    )

    [row] = json.loads(run_cli("subscribers", "list", "--json", env=env).stdout)

    assert row["topics"] == ["LLMs", "Robotics"]  # as configured, in the list's order
    assert row["interests"] == "diffusion policies for robots"


def test_import_takes_an_interests_column(
    labelled_corpus: tuple[Engine, dict[str, str]], tmp_path: Path
) -> None:
    _, env = labelled_corpus
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        "email,topics,interests\n"
        "a@example.org,Robotics,legged robots\n"
        f"b@example.org,,{'y' * 600}\n",
        encoding="utf-8",
    )
    result = run_cli("subscribers", "import", str(csv_file), "--confirmed", env=env)

    assert "interests are limited to 500 characters" in result.stdout + result.stderr
    rows = {
        r["email"]: r for r in json.loads(run_cli("subscribers", "list", "--json", env=env).stdout)
    }
    assert rows["a@example.org"]["interests"] == "legged robots"
    assert rows["b@example.org"]["interests"] == ""  # dropped with a warning, the row kept


def test_the_corpus_term_counts_follow_new_and_changed_papers(
    labelled_corpus: tuple[Engine, dict[str, str]],
) -> None:
    engine, _ = labelled_corpus
    # Counted on 20 November, changed on 1 December: fixed times, not the clock's
    # (with the real one, the change stopped being "after the count" on 1 December).
    counted_at = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    assert index_corpus(engine, now=counted_at) == 240
    assert index_corpus(engine, now=counted_at) == 0  # nothing new: nothing counted twice

    with engine.begin() as connection:
        connection.execute(
            update(Paper.__table__)  # type: ignore[attr-defined]
            .where(Paper.__table__.c.arxiv_id == "2611.00014")  # type: ignore[attr-defined]
            .values(
                abstract="An entirely new abstract about quokka husbandry.",
                updated_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
            )
        )
    assert index_corpus(engine, now=dt.datetime(2026, 12, 2, tzinfo=dt.UTC)) == 1

    with engine.connect() as connection:
        stored_counts = {
            term: count
            for term, count in connection.execute(
                select(CorpusTerm.__table__.c.term, CorpusTerm.__table__.c.papers)  # type: ignore[attr-defined]
            ).all()
            if count
        }
        expected: Counter[str] = Counter()
        for row in connection.execute(select(Paper.__table__)).mappings():  # type: ignore[attr-defined]
            expected.update(document_terms(paper_text_of(row).text()))
    assert stored_counts == dict(expected)
    assert stored_counts["quokka"] == 1
