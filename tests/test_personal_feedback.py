"""Feedback changes the ranking: "Less like this" and "More like this" clicked in a real server.

The labelled corpus (tests/data/relevance) is stored as the personal digest
tests store it; the reader is added and previewed with the real CLI, and the
two choices are posted to a real uvicorn, exactly as a reader's browser would.
"""

from __future__ import annotations

import datetime as dt
import json

import httpx
from sqlalchemy import Engine

from newsletter.core.settings import load_settings
from newsletter.web.app import create_app
from subscribers.tokens import feedback_url
from tests.support.cli import run_cli
from tests.support.relevance_corpus import SUBTOPICS
from tests.support.web import live_server, subscriber

DAY = dt.date(2026, 11, 5)

NEXT_DAY = DAY + dt.timedelta(days=1)
READER = "legs@example.org"


def for_you(env: dict[str, str], day: dt.date) -> list[dict[str, object]]:
    result = run_cli("preview", "--date", day.isoformat(), "--json", "--for", READER, env=env)
    named = {s["name"]: s["papers"] for s in json.loads(result.stdout)["sections"]}
    assert "for_you" in named, named
    papers: list[dict[str, object]] = named["for_you"]
    return papers


def trending(env: dict[str, str], day: dt.date) -> list[str]:
    result = run_cli("preview", "--date", day.isoformat(), "--json", "--for", READER, env=env)
    named = {s["name"]: s["papers"] for s in json.loads(result.stdout)["sections"]}
    return [str(p["arxiv_id"]) for p in named["trending"]]


def test_less_and_more_like_this_change_the_for_you_section(
    labelled_corpus: tuple[Engine, dict[str, str]],
) -> None:
    engine, env = labelled_corpus
    run_cli(
        "subscribers",
        "add",
        READER,
        "--confirmed",
        "--topics",
        "Robotics",
        "--interests",
        "legged locomotion: quadruped and humanoid walking, sim-to-real",
        env=env,
    )
    today_before = [str(p["arxiv_id"]) for p in for_you(env, DAY)]
    tomorrow_before = [str(p["arxiv_id"]) for p in for_you(env, NEXT_DAY)]
    disliked = today_before[0]
    # "More like this" on a paper of the digest's trending part far from their interests.
    liked = next(
        arxiv_id
        for arxiv_id in trending(env, DAY)
        if not SUBTOPICS[arxiv_id] & (SUBTOPICS[disliked] | {"locomotion", "robot-manipulation"})
    )
    liked_topics = SUBTOPICS[liked]
    assert not any(SUBTOPICS[a] & liked_topics for a in tomorrow_before), tomorrow_before

    reader = subscriber(engine, READER)
    assert reader is not None
    settings = load_settings(
        database_url=env["NEWSLETTER_DATABASE_URL"],
        smtp_host="127.0.0.1",
        smtp_port=25,
        secret_key=env["NEWSLETTER_SECRET_KEY"],
        base_url="https://news.example.org",
        from_address="Daily ML Papers <digest@news.example.org>",
    )
    with live_server(create_app(settings, engine=engine)) as base_url, httpx.Client() as client:
        for arxiv_id, verdict in ((disliked, "less"), (liked, "more")):
            url = feedback_url(base_url, settings.secret_key, reader.key, arxiv_id, verdict)
            assert client.get(url).status_code == 200  # what a mail scanner does: nothing
            answer = client.post(url)
            assert answer.status_code == 200 and "Thanks:" in answer.text

    today_after = for_you(env, DAY)
    tomorrow_after = for_you(env, NEXT_DAY)

    # The disliked paper is gone; the liked one is not offered again either.
    assert disliked not in {p["arxiv_id"] for p in today_after}
    assert liked not in {p["arxiv_id"] for p in today_after}
    # Tomorrow, papers like the liked one come up, and say why.
    alike = [p for p in tomorrow_after if SUBTOPICS[str(p["arxiv_id"])] & liked_topics]
    assert alike, (liked_topics, tomorrow_after)
    assert any("which you liked" in str(p["why"]) for p in alike)
    # Fewer papers like the disliked one make the cut.
    disliked_topics = SUBTOPICS[disliked]
    before_alike = sum(1 for a in tomorrow_before if SUBTOPICS[a] & disliked_topics)
    after_alike = sum(1 for p in tomorrow_after if SUBTOPICS[str(p["arxiv_id"])] & disliked_topics)
    assert after_alike < before_alike
