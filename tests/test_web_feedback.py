"""Feedback from the email through a real uvicorn: a GET records nothing, a POST records, undo.

And the preferences page's list of judged papers, with remove and flip.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter.core.settings import Settings
from newsletter.models import Paper
from newsletter.web.app import create_app
from subscribers.models import ReaderPaper, Subscriber, SubscriberStatus
from subscribers.tokens import (
    feedback_url,
    make_feedback_token,
    make_preferences_token,
    make_unsubscribe_token,
    preferences_url,
)
from tests.support.web import live_server, snapshot, web_settings

DAY = dt.date(2026, 3, 5)
PAPER = "2603.05001"
OTHER = "2603.05002"


@pytest.fixture
def site(settings: Settings, engine: Engine) -> Iterator[tuple[str, Settings]]:
    """The app under a real uvicorn; its base URL and settings."""
    config = web_settings(settings)
    with live_server(create_app(config, engine=engine)) as base_url:
        yield base_url, config


@pytest.fixture
def reader(engine: Engine) -> Subscriber:
    """A confirmed reader, and two stored papers of the day."""
    with Session(engine, expire_on_commit=False) as session:
        for n, arxiv_id in enumerate((PAPER, OTHER)):
            session.add(
                Paper(
                    arxiv_id=arxiv_id,
                    title=f"Paper {n}: <script>alert(1)</script> & diffusion policies",
                    abstract="We teach robots to walk. " * 3,
                    authors=[f"Author {i}" for i in range(8)],
                    daily_date=DAY,
                    upvotes=5,
                    sources=["hf"],
                )
            )
        row = Subscriber(email="ada@example.org", status=SubscriberStatus.CONFIRMED)
        session.add(row)
        session.commit()
        return row


def judgements(engine: Engine) -> list[tuple[Any, ...]]:
    with Session(engine) as session:
        rows = session.exec(select(ReaderPaper).order_by(ReaderPaper.id)).all()  # type: ignore[arg-type]
        return [(r.subscriber_id, r.paper_key, r.verdict, r.source) for r in rows]


def path_of(settings: Settings, key: str, arxiv_id: str, verdict: str) -> str:
    return feedback_url("", settings.secret_key, key, arxiv_id, verdict)


def test_a_get_shows_the_paper_and_a_button_and_records_nothing(
    site: tuple[str, Settings], reader: Subscriber, engine: Engine
) -> None:
    base_url, settings = site
    before = (snapshot(engine), judgements(engine))
    with httpx.Client(base_url=base_url) as client:
        # A mail scanner: GET and HEAD, more than once.
        pages = [client.get(path_of(settings, reader.key, PAPER, "more")) for _ in range(3)]
        client.head(path_of(settings, reader.key, PAPER, "less"))

    page = pages[0]
    assert page.status_code == 200
    assert "Paper 0: &lt;script&gt;alert(1)&lt;/script&gt; &amp; diffusion policies" in page.text
    assert "Author 0, Author 1" in page.text and "and 2 more" in page.text
    assert f'href="https://arxiv.org/abs/{PAPER}"' in page.text
    assert '<form method="post"' in page.text and ">More like this</button>" in page.text
    assert "nothing is recorded until you do" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in page.headers
    assert (snapshot(engine), judgements(engine)) == before == (before[0], [])


def test_a_post_records_a_second_replaces_and_undo_puts_back(
    site: tuple[str, Settings], reader: Subscriber, engine: Engine
) -> None:
    base_url, settings = site
    more = path_of(settings, reader.key, PAPER, "more")
    less = path_of(settings, reader.key, PAPER, "less")
    with httpx.Client(base_url=base_url) as client:
        first = client.post(more)
        assert first.status_code == 200
        assert "Thanks: more papers like this" in first.text
        assert judgements(engine) == [(reader.id, PAPER, "liked", "email")]
        with Session(engine) as session:
            row = session.exec(select(ReaderPaper)).one()
            assert row.arxiv_id == PAPER and row.title.startswith("Paper 0")
            assert "robots to walk" in row.abstract
        assert client.post(more).status_code == 200  # twice: still one row
        assert judgements(engine) == [(reader.id, PAPER, "liked", "email")]

        second = client.post(less)
        assert "Thanks: fewer papers like this" in second.text
        assert judgements(engine) == [(reader.id, PAPER, "disliked", "email")]
        undo = re.search(
            r'<form method="post" action="([^"]+)">\s*<input type="hidden" name="previous" '
            r'value="([^"]+)">\s*<button type="submit" class="secondary">Undo</button>',
            second.text,
        )
        assert undo is not None and undo.group(2) == "liked:email"

        undone = client.post(undo.group(1), data={"previous": undo.group(2)})
        assert undone.status_code == 200 and "Undone" in undone.text
        assert "back to what you said before: more like this" in undone.text
        assert judgements(engine) == [(reader.id, PAPER, "liked", "email")]

        # An old tab's undo does not touch a verdict changed since.
        stale = client.post(f"{less}/undo", data={"previous": "none"})
        assert stale.status_code == 200 and "You already said more like this" in stale.text
        assert judgements(engine) == [(reader.id, PAPER, "liked", "email")]

        # Undoing the first judgement of a paper removes it.
        client.post(path_of(settings, reader.key, OTHER, "less"))
        client.post(
            f"{path_of(settings, reader.key, OTHER, 'less')}/undo", data={"previous": "none"}
        )
        assert judgements(engine) == [(reader.id, PAPER, "liked", "email")]


def test_hostile_feedback_links_get_a_404_page_and_change_nothing(
    site: tuple[str, Settings], reader: Subscriber, engine: Engine
) -> None:
    base_url, settings = site
    secret = settings.secret_key
    good = make_feedback_token(secret, reader.key, PAPER, "more")
    key, paper, verdict, mac = good.split(".")
    with Session(engine) as session:
        gone = Subscriber(email="gone@example.org", status=SubscriberStatus.CONFIRMED)
        session.add(gone)
        session.commit()
        gone_key = gone.key
        session.delete(gone)
        session.commit()
    hostile = [
        f"{key}.{paper}.l.{mac}",  # the choice altered
        f"{'B' if key[0] != 'B' else 'C'}{key[1:]}.{paper}.{verdict}.{mac}",  # the reader altered
        f"{key}.{paper}.{verdict}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        make_feedback_token(secret, reader.key, "2603.99999", "more"),  # a paper never stored
        make_feedback_token(secret, gone_key, PAPER, "more"),  # a reader who is gone
        make_feedback_token("some-other-secret-key", reader.key, PAPER, "more"),
        make_preferences_token(secret, reader.key),
        make_unsubscribe_token(secret, reader.key),
        "x" * 3000,
        "%00%0d%0aSet-Cookie:%20a=b",
        "..%2F..%2Fetc%2Fpasswd",
        "%E2%80%AE%F0%9F%98%80.%FF.m.x",
        f"{good}%00",
    ]
    before = (snapshot(engine), judgements(engine))
    with httpx.Client(base_url=base_url) as client:
        for token in hostile:
            for method in ("GET", "POST"):
                answer = client.request(method, f"/feedback/{token}")
                assert answer.status_code == 404, (method, token, answer.status_code)
                # Ours, or the router's own 404 page when the path no longer matches.
                assert "This link does not work" in answer.text or "Page not found" in answer.text
                assert "Traceback" not in answer.text
            undo = client.post(f"/feedback/{token}/undo", data={"previous": "none"})
            assert undo.status_code == 404
        # A good link with an altered undo form changes nothing either.
        client.post(f"/feedback/{good}")
        after_post = judgements(engine)
        for previous in ("liked:admin", "x" * 40, "none;drop", "disliked"):
            answer = client.post(f"/feedback/{good}/undo", data={"previous": previous})
            assert answer.status_code == 422 and "Traceback" not in answer.text
        assert judgements(engine) == after_post == [(reader.id, PAPER, "liked", "email")]
    assert before[1] == []


def test_the_preferences_page_lists_judged_papers_to_remove_or_flip(
    site: tuple[str, Settings], reader: Subscriber, engine: Engine
) -> None:
    base_url, settings = site
    prefs = preferences_url("", settings.secret_key, reader.key)
    with Session(engine, expire_on_commit=False) as session:
        stranger = Subscriber(email="eve@example.org", status=SubscriberStatus.CONFIRMED)
        session.add(stranger)
        session.commit()
    with httpx.Client(base_url=base_url) as client:
        empty = client.get(prefs)
        assert "Papers you liked and disliked" in empty.text and "None yet." in empty.text

        client.post(path_of(settings, reader.key, PAPER, "more"))
        client.post(path_of(settings, reader.key, OTHER, "less"))
        client.post(path_of(settings, stranger.key, PAPER, "more"))
        page = client.get(prefs)
        assert page.status_code == 200
        listed = re.findall(
            r"<strong>(More|Less) like this:</strong>\s*<a href=\"([^\"]+)\"", page.text
        )
        assert sorted(listed) == [
            ("Less", f"https://arxiv.org/abs/{OTHER}"),
            ("More", f"https://arxiv.org/abs/{PAPER}"),
        ]
        assert "from a digest" in page.text

        flipped = client.post(
            f"{prefs}/papers", data={"paper_key": PAPER, "action": "flip"}, follow_redirects=True
        )
        assert flipped.status_code == 200 and flipped.url.path == prefs
        assert "Change to more like this" in flipped.text
        assert (reader.id, PAPER, "disliked", "email") in judgements(engine)

        removed = client.post(f"{prefs}/papers", data={"paper_key": OTHER, "action": "remove"})
        assert removed.status_code == 303
        assert removed.headers["location"] == f"{prefs}#your-papers"

        # Hostile: an unknown action, a paper never judged, a forged preferences token.
        assert (
            client.post(f"{prefs}/papers", data={"paper_key": PAPER, "action": "drop"}).status_code
            == 422
        )
        client.post(f"{prefs}/papers", data={"paper_key": "2603.77777", "action": "remove"})
        forged = client.post(
            f"{prefs[:-1]}{'A' if prefs[-1] != 'A' else 'B'}/papers",
            data={"paper_key": PAPER, "action": "remove"},
        )
        assert forged.status_code == 400 and "This link does not work" in forged.text
    # Only this reader's rows changed; the stranger's judgement of the same paper stands.
    assert judgements(engine) == [
        (reader.id, PAPER, "disliked", "email"),
        (stranger.id, PAPER, "liked", "email"),
    ]
