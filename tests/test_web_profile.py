"""The reader's profile on the preferences page and `/api/preferences`, through a real uvicorn:
interests, pasted papers, a BibTeX library, count, mode, frequency; and hostile input."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from newsletter.core.db import session_scope
from newsletter.core.settings import Settings
from newsletter.web.app import create_app
from subscribers.models import ReaderPaper, Subscriber
from subscribers.store import add_subscriber
from subscribers.tokens import make_preferences_token
from tests.support.web import live_server, running_app, store_papers, web_settings

DAY = dt.date(2026, 3, 5)
KNOWN = "2603.05000"  # stored by store_papers(DAY)
KNOWN_TITLE = "Paper 0 on <attention> & scaling"


@pytest.fixture
def site(settings: Settings, engine: Engine) -> Iterator[str]:
    """A real uvicorn serving the app on the test database."""
    with live_server(create_app(web_settings(settings), engine=engine)) as base_url:
        yield base_url


@pytest.fixture
def reader(settings: Settings, engine: Engine) -> str:
    """The preferences path of a confirmed reader (ada@example.org), with papers stored."""
    store_papers(engine, DAY)
    with session_scope(engine) as session:
        key = add_subscriber(session, email="ada@example.org", topics=["LLMs"], confirmed=True).key
    return f"/preferences/{make_preferences_token(settings.secret_key, key)}"


def _profile(engine: Engine) -> tuple[object, ...]:
    found = _stored(engine)
    return (
        found.name,
        found.topics,
        found.interests,
        found.digest_mode,
        found.personal_count,
        found.frequency,
        found.weekly_day,
    )


def _stored(engine: Engine) -> Subscriber:
    with Session(engine) as session:
        found = session.exec(select(Subscriber).where(Subscriber.email == "ada@example.org")).one()
        session.expunge(found)
        return found


def _papers(engine: Engine) -> list[tuple[str | None, str, str, str]]:
    with Session(engine) as session:
        rows = session.exec(select(ReaderPaper).order_by(col(ReaderPaper.id))).all()
        return [(row.arxiv_id, row.title, str(row.verdict), str(row.source)) for row in rows]


FORM = {
    "action": "save",
    "name": "Ada",
    "topics": ["LLMs"],
    "interests": "Concept erasure in diffusion models",
    "papers": "",
    "personal_count": "5",
    "digest_mode": "personal",
    "frequency": "daily",
    "weekly_day": "0",
}


def test_the_form_saves_the_profile_and_the_pasted_papers(
    site: str, reader: str, engine: Engine
) -> None:
    with httpx.Client(base_url=site) as client:
        page = client.get(reader)
        assert page.status_code == 200
        assert "What are you working on?" in page.text and 'maxlength="500"' in page.text
        assert '<script src="/assets/profile.js" defer></script>' in page.text
        assert (
            client.get("/assets/profile.js").headers["content-type"].startswith("text/javascript")
        )
        saved = client.post(
            reader,
            data={
                **FORM,
                "papers": f"{KNOWN}, https://arxiv.org/abs/2603.05001v2\narXiv:2501.99999",
                "personal_count": "8",
                "digest_mode": "trending",
                "frequency": "weekly",
                "weekly_day": "4",
            },
        )
    assert saved.status_code == 200
    assert "preferences are saved" in saved.text and "3 papers added" in saved.text
    stored = _stored(engine)
    assert stored.interests == "Concept erasure in diffusion models"
    assert (stored.personal_count, stored.digest_mode, stored.frequency, stored.weekly_day) == (
        8,
        "trending",
        "weekly",
        4,
    )
    assert _papers(engine) == [
        (KNOWN, KNOWN_TITLE, "liked", "pasted"),
        ("2603.05001", "Paper 1 on <attention> & scaling", "liked", "pasted"),
        ("2501.99999", "", "liked", "pasted"),  # not stored among the papers: kept by id
    ]
    # The page shows the new choices and what is stored, the titles escaped.
    assert re.search(r'<option value="8" selected>', saved.text)
    assert re.search(r'<option value="4" selected>Friday', saved.text)
    assert "Paper 0 on &lt;attention&gt; &amp; scaling" in saved.text
    assert "<attention>" not in saved.text


def test_a_form_without_profile_fields_leaves_the_profile_alone(
    site: str, reader: str, engine: Engine
) -> None:
    with httpx.Client(base_url=site) as client:
        client.post(reader, data={**FORM, "personal_count": "3"})
        answer = client.post(reader, data={"action": "save", "name": "Ada", "topics": ["LLMs"]})
    assert answer.status_code == 200
    assert _stored(engine).personal_count == 3
    assert _stored(engine).interests == "Concept erasure in diffusion models"


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("interests", "x" * 501, "interests are limited to 500 characters (501 given)"),
        ("papers", "2401.1", "&#39;2401.1&#39; is not an arXiv id"),
        ("papers", "javascript:alert(1)", "is not an arXiv id"),
        ("papers", "https://evil.example/abs/2401.01234", "is not an arXiv id"),
        ("papers", "https://arxiv.org/abs/../../etc/passwd", "is not an arXiv id"),
        ("papers", "<script>alert(1)</script>", "is not an arXiv id"),
        ("papers", ", ".join(f"2401.{n:05d}" for n in range(51)), "at most 50 papers"),
        ("personal_count", "0", "between 1 and 10"),
        ("personal_count", "11", "between 1 and 10"),
        ("personal_count", "five", "whole number"),
        ("digest_mode", "everything", "either &#39;personal&#39;"),
        ("frequency", "hourly", "&#39;daily&#39; or &#39;weekly&#39;"),
        ("weekly_day", "7", "0 (Monday) to 6 (Sunday)"),
    ],
)
def test_hostile_profile_input_is_refused_and_changes_nothing(
    site: str, reader: str, engine: Engine, field: str, value: str, said: str
) -> None:
    with httpx.Client(base_url=site) as client:
        client.post(reader, data=FORM)
        before = (_profile(engine), _papers(engine))
        answer = client.post(
            reader,
            data={**FORM, field: value, "interests": "changed"}
            if field != "interests"
            else {**FORM, field: value},
        )
    assert answer.status_code == 422
    assert "Nothing was changed" in answer.text and said in answer.text
    assert "<script>alert" not in answer.text
    assert (_profile(engine), _papers(engine)) == before


def test_interests_lose_control_and_bidi_characters_and_markup_stays_text(
    site: str, reader: str, engine: Engine
) -> None:
    typed = "RL\u202e for\x00 robots\r\nand <script>alert(1)</script>\u2028grasping"
    with httpx.Client(base_url=site) as client:
        answer = client.post(reader, data={**FORM, "interests": typed})
    assert answer.status_code == 200
    stored = _stored(engine).interests
    assert stored == "RL for robots and <script>alert(1)</script> grasping"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    assert "<script>alert(1)" not in answer.text


ZOTERO = rb"""
@article{vaswani_attention_2017,
  title = {Attention {Is} {All} {You} {Need}},
  abstract = {The dominant sequence transduction models are based on recurrent networks.},
  journal = {arXiv},
  doi = {10.48550/arXiv.1706.03762},
  year = {2017},
}
@inproceedings{erasure,
  title = {Erasing {Concepts} from \textit{Diffusion} Models},
  eprint = {2303.07345},
  archivePrefix = {arXiv},
  abstract = {Motivated by recent advancements in text-to-image diffusion, we study erasure.},
}
@book{untitled, author = {Someone}}
@misc{local, title = {A workshop paper without an arXiv id}}
"""


def _upload(
    client: httpx.Client, reader: str, data: bytes, name: str = "lib.bib"
) -> httpx.Response:
    return client.post(f"{reader}/library", files={"library": (name, data, "text/x-bibtex")})


def test_a_bibtex_library_becomes_liked_library_papers(
    site: str, reader: str, engine: Engine
) -> None:
    with httpx.Client(base_url=site) as client:
        answer = _upload(client, reader, ZOTERO)
        again = _upload(client, reader, ZOTERO)
    assert answer.status_code == 200
    assert "Your library is read: 3 papers, 3 new to your profile" in answer.text
    assert "3 papers, 0 new" in again.text
    assert _papers(engine) == [
        ("1706.03762", "Attention Is All You Need", "liked", "library"),
        ("2303.07345", "Erasing Concepts from Diffusion Models", "liked", "library"),
        (None, "A workshop paper without an arXiv id", "liked", "library"),
    ]
    with Session(engine) as session:
        abstracts = session.exec(select(ReaderPaper.abstract)).all()
    assert "recurrent networks" in abstracts[0]


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"@article{a, title={" + b"{" * 5000 + b"x" + b"}" * 5000 + b"}}", "nests braces"),
        (b"@article{a, title={Caf\xe9}}", "not UTF-8"),
        (b"@article{a, title={x}}\x00\x01\x02", "binary data"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not UTF-8"),
        (b"this is not bibtex at all", "no BibTeX entry with a title"),
        (b"@article{a, title={unterminated", "no BibTeX entry with a title"),
        ("".join(f"@misc{{k{n}, title={{T{n}}}}}\n" for n in range(501)).encode(), "more than 500"),
        (b"@misc{a, title={" + b"x" * (1024 * 1024) + b"}}", "larger than 1024 KiB"),
        (b"", "choose a BibTeX file"),
    ],
)
def test_hostile_bibtex_gets_a_clear_error_never_a_500(
    site: str, reader: str, engine: Engine, data: bytes, said: str
) -> None:
    with httpx.Client(base_url=site) as client:
        answer = _upload(client, reader, data, name="lib.bib" if data else "")
    assert answer.status_code == 422, answer.text[:300]
    assert "Nothing was added" in answer.text and said in answer.text
    assert _papers(engine) == []


def test_a_library_body_over_the_limit_is_refused_before_it_is_read(site: str, reader: str) -> None:
    with httpx.Client(base_url=site) as client:
        answer = _upload(client, reader, b"%" * (2 * 1024 * 1024))
        form = client.post(reader, data={**FORM, "interests": "x" * (20 * 1024)})
    assert answer.status_code == 413
    assert form.status_code == 413


def test_the_json_api_reads_and_changes_the_same_profile(
    site: str, reader: str, engine: Engine, settings: Settings
) -> None:
    api = "/api" + reader
    with httpx.Client(base_url=site) as client:
        shown = client.get(api)
        changed = client.put(
            api,
            json={"interests": "sparse autoencoders", "personal_count": 3, "papers": [KNOWN]},
        )
        partial = client.put(api, json={"frequency": "weekly", "weekly_day": 6})
        refused = [
            client.put(api, json=body)
            for body in (
                {"personal_count": 42},
                {"papers": ["not-an-id"]},
                {"interests": "y" * 501},
                {"topics": ["Astrology"]},
                {"name": "<b>x</b>"},
                {"weekly_day": True},
            )
        ]
        forged = client.get("/api/preferences/forged.token")
        after = client.get(api)
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    assert shown.json() == {
        "email": "ada@example.org",
        "name": None,
        "status": "confirmed",
        "paused": False,
        "topics": ["LLMs"],
        "interests": "",
        "digest_mode": "personal",
        "personal_count": 5,
        "frequency": "daily",
        "weekly_day": 0,
        "papers": [],
    }
    assert changed.status_code == 200
    assert changed.json()["interests"] == "sparse autoencoders"
    assert changed.json()["papers"][0] | {"updated_at": None} == {
        "arxiv_id": KNOWN,
        "title": KNOWN_TITLE,
        "verdict": "liked",
        "source": "pasted",
        "updated_at": None,
    }
    assert partial.json()["personal_count"] == 3  # left out: kept
    assert (partial.json()["frequency"], partial.json()["weekly_day"]) == ("weekly", 6)
    assert [answer.status_code for answer in refused] == [422] * 6
    assert "between 1 and 10" in refused[0].json()["detail"]
    assert "'not-an-id' is not an arXiv id" in refused[1].json()["detail"]
    assert forged.status_code == 400
    assert after.json() == partial.json()


# The sign-up form asks the same questions; the answer stays the same for every address.


async def test_a_signup_stores_the_profile_and_the_liked_papers_of_a_new_address(
    settings: Settings, engine: Engine
) -> None:
    store_papers(engine, DAY)
    async with running_app(web_settings(settings), engine) as (_, client):
        page = await client.get("/")
        form = await client.post(
            "/subscribe",
            data={
                "email": "grace@example.org",
                "topics": ["Robotics"],
                "interests": "sim-to-real transfer for grasping",
                "papers": f"{KNOWN}\nhttps://arxiv.org/pdf/2603.05002v1.pdf",
                "personal_count": "3",
                "digest_mode": "personal",
                "frequency": "weekly",
                "weekly_day": "2",
            },
        )
        api = await client.post(
            "/subscribe",
            json={"email": "alan@example.org", "interests": "proof search", "papers": [KNOWN]},
        )
    assert "What are you working on?" in page.text and "<script" not in page.text
    assert form.status_code == 200 and "Check your inbox" in form.text
    assert api.status_code == 202
    with Session(engine) as session:
        grace = session.exec(
            select(Subscriber).where(Subscriber.email == "grace@example.org")
        ).one()
        alan = session.exec(select(Subscriber).where(Subscriber.email == "alan@example.org")).one()
        judged = {
            (row.subscriber_id, row.arxiv_id, row.title, row.source)
            for row in session.exec(select(ReaderPaper)).all()
        }
    assert (grace.status, grace.interests, grace.personal_count, grace.frequency) == (
        "pending",
        "sim-to-real transfer for grasping",
        3,
        "weekly",
    )
    assert grace.weekly_day == 2 and alan.interests == "proof search"
    assert alan.personal_count == 5  # not asked: the default
    assert judged == {
        (grace.id, KNOWN, KNOWN_TITLE, "pasted"),
        (grace.id, "2603.05002", "Paper 2 on <attention> & scaling", "pasted"),
        (alan.id, KNOWN, KNOWN_TITLE, "pasted"),
    }


async def test_a_signup_never_changes_a_confirmed_readers_profile(
    settings: Settings, engine: Engine, reader: str
) -> None:
    before = _profile(engine)
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.post(
            "/subscribe",
            data={"email": "ada@example.org", "interests": "a stranger's words", "papers": KNOWN},
        )
        fresh = await client.post("/subscribe", data={"email": "new@example.org"})
    assert answer.status_code == 200 and answer.text == fresh.text  # the same answer
    assert _profile(engine) == before and _papers(engine) == []


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("interests", "z" * 501, "Please check the interests: interests are limited to 500"),
        ("papers", "2401.01234, see-my-site.example", "Please check the papers you like"),
        ("personal_count", "99", "between 1 and 10"),
        ("weekly_day", "-1", "0 (Monday) to 6 (Sunday)"),
    ],
)
async def test_a_signup_with_a_bad_profile_field_is_refused_with_its_input_kept(
    settings: Settings, engine: Engine, field: str, value: str, said: str
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.post(
            "/subscribe",
            data={"email": "grace@example.org", "interests": "kept words", field: value},
        )
        api = await client.post(
            "/subscribe",
            json={"email": "grace@example.org", field: value if field in ("interests",) else 99},
        )
    assert answer.status_code == 422 and said in answer.text
    if field != "interests":
        assert "kept words" in answer.text
    assert api.status_code == 422
    with Session(engine) as session:
        assert session.exec(select(Subscriber)).all() == []


async def test_a_json_signup_cleans_control_and_bidi_characters_from_the_interests(
    settings: Settings, engine: Engine
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.post(
            "/subscribe",
            json={
                "email": "grace@example.org",
                "interests": "\u202egnippam\u202c of\r\n<b>maps</b>\x07",
                "papers": ["arXiv:2401.01234v3"],
            },
        )
    assert answer.status_code == 202
    with Session(engine) as session:
        grace = session.exec(select(Subscriber)).one()
        judged = session.exec(select(ReaderPaper.arxiv_id, ReaderPaper.title)).all()
    assert grace.interests == "gnippam of <b>maps</b>"
    assert [tuple(row) for row in judged] == [("2401.01234", "")]
