"""Personal digests sent through the real paths: `newsletter send` to a recording SMTP server.

Readers with different profiles (added with `newsletter subscribers add`)
receive different "For you" sections, each paper with its why line and signed
feedback links; "Trending today" never repeats them; the ledger records each
delivery's selection; a reader without a profile gets today's digest byte for
byte. The papers are the labelled relevance set (tests/data/relevance).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from email.message import EmailMessage
from html import escape
from pathlib import Path

import httpx
import pytest
from markupsafe import escape as markup_escape
from sqlalchemy import Engine, select, update

from newsletter.core.settings import load_settings
from newsletter.delivery.control import start_edition
from newsletter.delivery.ledger import deliveries, editions, subscribers
from newsletter.delivery.selections import selections
from newsletter.editions.content import prepare_edition
from newsletter.editions.personal import papers
from newsletter.models import ReaderPaper
from newsletter.values import fill_personal_links
from newsletter.web.app import create_app
from subscribers.tokens import preferences_url, read_feedback_token, unsubscribe_url
from tests.support.cli import cli_environment, run_cli, send_day
from tests.support.postgres import postgres_database_or_skip
from tests.support.relevance_corpus import labelled_database
from tests.support.smtp_server import ReceivedMessage, RecordingSmtpServer
from tests.support.web import live_server

DAY = dt.date(2026, 11, 5)
SECRET = "cli-test-secret"
BASE_URL = "https://news.example.org"
GMAIL_CLIP_BYTES = 102 * 1024


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    """A migrated SQLite database holding the six days of labelled papers."""
    with labelled_database(f"sqlite:///{tmp_path / 'personal.db'}") as database:
        yield database


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    """The same on SQLite, then on a temporary PostgreSQL database."""
    if request.param == "sqlite":
        with labelled_database(f"sqlite:///{tmp_path / 'personal.db'}") as database:
            yield database
    else:
        with postgres_database_or_skip() as url, labelled_database(url) as database:
            yield database


READERS = {
    "legs@example.org": ["--topics", "Robotics", "--interests", "legged locomotion, sim-to-real"],
    "speech@example.org": ["--interests", "speech recognition for low-resource languages"],
    "erase@example.org": ["--interests", "concept erasure and unlearning in diffusion models"],
    "plain@example.org": [],
}


def _add_readers(env: dict[str, str]) -> None:
    for address, profile in READERS.items():
        run_cli("subscribers", "add", address, "--confirmed", *profile, env=env)


def _sections(
    text: str, trending_heading: str = "TRENDING TODAY"
) -> tuple[list[tuple[str, str]], list[str]]:
    """(title, why) of each "For you" paper and the titles under "Trending today" (or the week)."""
    text = text.replace("\r\n", "\n")
    _, _, rest = text.partition("\nFOR YOU\n")
    if not rest:  # no "For you" section
        rest = text[text.index(f"\n{trending_heading}\n") :]
    for_you_part, _, trending_part = rest.partition(f"\n{trending_heading}\n")
    trending_part = trending_part.split("\n--\n")[0]
    # Positions are right-aligned (" 9." above "10.") and the lines under them indented 4.
    entry = re.compile(r"^ ?\d+\. (.+)\n    (.+)$", re.MULTILINE)
    for_you = [(m.group(1), m.group(2)) for m in entry.finditer(for_you_part)]
    trending = re.findall(r"^ ?\d+\. (.+)$", trending_part, re.MULTILINE)
    return for_you, trending


def _parts(message: EmailMessage) -> tuple[str, str]:
    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None and text is not None
    return str(html.get_content()), str(text.get_content())


def _html_wire_size(raw: bytes) -> int:
    """Bytes of the HTML part as encoded on the wire (what Gmail's clipping counts)."""
    start = raw.index(b"Content-Type: text/html")
    body = raw[raw.index(b"\r\n\r\n", start) + 4 :]
    return body.index(b"\r\n--")


def test_three_profiles_get_their_own_digests_and_the_ledger_records_them(
    any_database: tuple[Engine, str],
) -> None:
    engine, url = any_database
    with RecordingSmtpServer() as server:
        env = cli_environment(url, server.port)
        _add_readers(env)
        expected_for_you = {
            address: json.loads(
                run_cli(
                    "preview", "--date", DAY.isoformat(), "--json", "--for", address, env=env
                ).stdout
            )["sections"]
            for address in READERS
        }
        result = run_cli("send", "--date", DAY.isoformat(), env=env)
        assert server.handler.wait_for_messages(len(READERS), timeout=30), result.stdout
        received: dict[str, ReceivedMessage] = {m.rcpt_tos[0]: m for m in server.messages}

    with engine.connect() as connection:
        titles = dict(connection.execute(select(papers.c.arxiv_id, papers.c.title)).all())
        rows = {
            row.email: row
            for row in connection.execute(
                select(
                    deliveries.c.email,
                    deliveries.c.status,
                    deliveries.c.selection_id,
                    subscribers.c.key,
                ).join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            )
        }
        picks_of = {
            row.id: row.picks
            for row in connection.execute(select(selections.c.id, selections.c.picks))
        }
        edition = connection.execute(select(editions)).mappings().one()

    shown_for_you: dict[str, list[str]] = {}
    for address in ("legs@example.org", "speech@example.org", "erase@example.org"):
        row = rows[address]
        assert row.status == "sent" and row.selection_id is not None
        picks = picks_of[row.selection_id]
        # The ledger holds exactly what the preview ranks for that reader.
        [for_you_section, _] = expected_for_you[address]
        assert [p["arxiv_id"] for p in picks] == [p["arxiv_id"] for p in for_you_section["papers"]]
        html, text = _parts(received[address].message)
        for_you, trending = _sections(text)
        assert for_you == [(titles[p["arxiv_id"]], p["why"]) for p in picks]
        assert for_you and all(why for _, why in for_you)
        assert not {title for title, _ in for_you} & set(trending)
        # Everything else from today's ranking, in its order, under "Trending today".
        assert trending and len(trending) == len(set(trending))
        for title, why in for_you:
            assert str(markup_escape(title)) in html and escape(why, quote=True) in html
        # Feedback links carry the reader's own signed token for that paper.
        more = re.search(r"More like this: (\S+)", text)
        assert more is not None
        token = more.group(1).removeprefix(f"{BASE_URL}/feedback/")
        assert read_feedback_token(SECRET, token) == (row.key, picks[0]["arxiv_id"], "more")
        assert more.group(1) in html
        assert "NLCUT" not in html + text and "NLPERSONAL" not in html + text
        assert _html_wire_size(received[address].raw) < GMAIL_CLIP_BYTES
        shown_for_you[address] = [p["arxiv_id"] for p in picks]

    # The email's "More like this" link opens the feedback page for that paper.
    _, text = _parts(received["legs@example.org"].message)
    more = re.search(r"More like this: \S+/feedback/(\S+)", text)
    assert more is not None
    settings = load_settings(_env_file=None, database_url=url, secret_key=SECRET, base_url=BASE_URL)
    with live_server(create_app(settings, engine=engine)) as site:
        page = httpx.get(f"{site}/feedback/{more.group(1)}")
    first = shown_for_you["legs@example.org"][0]
    assert page.status_code == 200 and str(markup_escape(titles[first])) in page.text

    # Different profiles, different digests.
    assert len({tuple(ids) for ids in shown_for_you.values()}) == 3
    assert len({rows[a].selection_id for a in shown_for_you}) == 3

    # No profile: today's trending digest, byte for byte, with their own links.
    plain = rows["plain@example.org"]
    assert plain.selection_id is None
    html, text = _parts(received["plain@example.org"].message)
    want_html, want_text = fill_personal_links(
        edition["html"],
        edition["text"],
        link_marker=edition["link_marker"],
        unsubscribe_url=unsubscribe_url(BASE_URL, SECRET, plain.key),
        preferences_url=preferences_url(BASE_URL, SECRET, plain.key),
    )
    # The MIME part ends in a line end the stored rendering may lack.
    assert html.replace("\r\n", "\n").rstrip("\n") == want_html.replace("\r\n", "\n").rstrip("\n")
    assert text.replace("\r\n", "\n").rstrip("\n") == want_text.replace("\r\n", "\n").rstrip("\n")
    assert "FOR YOU" not in text and "More like this" not in text


def test_readers_of_one_selection_share_it_and_a_started_edition_keeps_its_selections(
    stored: tuple[Engine, str],
) -> None:
    engine, url = stored
    settings = load_settings(_env_file=None, database_url=url, secret_key=SECRET, base_url=BASE_URL)
    with RecordingSmtpServer() as server:
        env = cli_environment(url, server.port)
        run_cli(
            "subscribers", "add", "a@example.org", "--confirmed", "--topics", "Robotics", env=env
        )
        run_cli(
            "subscribers", "add", "b@example.org", "--confirmed", "--interests", "speech", env=env
        )
        run_cli(
            "subscribers", "add", "c@example.org", "--confirmed", "--topics", "Robotics", env=env
        )
        prepare_edition(settings, engine, day=DAY)
        assert start_edition(engine, DAY, settings=settings) == 3
        # Profiles change after the start: the started edition ranks nothing anew.
        with engine.begin() as connection:
            connection.execute(update(subscribers).values(topics=["LLMs"], interests="agents"))
        run_cli("send", "--date", DAY.isoformat(), env=env)
        assert server.handler.wait_for_messages(3, timeout=30)
        received = {m.rcpt_tos[0]: m for m in server.messages}

    with engine.connect() as connection:
        rows = {
            row.email: row
            for row in connection.execute(
                select(deliveries.c.id, deliveries.c.email, deliveries.c.selection_id)
            )
        }
        picks_of = dict(connection.execute(select(selections.c.id, selections.c.picks)).all())
        titles = dict(connection.execute(select(papers.c.arxiv_id, papers.c.title)).all())
    assert len(picks_of) == 2
    a, b, c = rows["a@example.org"], rows["b@example.org"], rows["c@example.org"]
    assert a.selection_id == c.selection_id != b.selection_id
    # Rows are numbered selection by selection: a worker meets a selection's readers together.
    assert abs(a.id - c.id) == 1
    for address, row in rows.items():
        _, text = _parts(received[address].message)
        for_you, _ = _sections(text)
        assert [t for t, _ in for_you] == [
            titles[p["arxiv_id"]] for p in picks_of[row.selection_id]
        ]


def test_nothing_above_the_floor_says_so_in_one_line(
    stored: tuple[Engine, str],
) -> None:
    engine, url = stored
    with RecordingSmtpServer() as server:
        env = cli_environment(url, server.port)
        run_cli(
            "subscribers",
            "add",
            "odd@example.org",
            "--confirmed",
            "--interests",
            "quokka husbandry and sourdough fermentation",
            env=env,
        )
        run_cli("send", "--date", DAY.isoformat(), env=env)
        assert server.handler.wait_for_messages(1, timeout=30)
        [message] = server.messages
    html, text = _parts(message.message)
    for_you, trending = _sections(text)
    assert for_you == []
    assert "Nothing today matched your interests closely enough" in text
    assert "Nothing today matched your interests closely enough" in html
    assert trending
    with engine.connect() as connection:
        [picks] = connection.execute(select(selections.c.picks)).scalars().all()
    assert picks == []


def test_preview_for_a_reader_writes_their_html_and_text(
    stored: tuple[Engine, str], tmp_path: Path
) -> None:
    _, url = stored
    env = cli_environment(url, 25)
    _add_readers(env)
    out = tmp_path / "legs.html"

    result = run_cli(
        "preview",
        "--date",
        DAY.isoformat(),
        "--for",
        "legs@example.org",
        "--out",
        str(out),
        env=env,
    )

    assert str(out) in result.stdout
    html = out.read_text(encoding="utf-8")
    text = out.with_suffix(".txt").read_text(encoding="utf-8")
    for_you, trending = _sections(text)
    sections = json.loads(
        run_cli(
            "preview", "--date", DAY.isoformat(), "--json", "--for", "legs@example.org", env=env
        ).stdout
    )["sections"]
    assert [title for title, _ in for_you] == [p["title"] for p in sections[0]["papers"]]
    assert [why for _, why in for_you] == [p["why"] for p in sections[0]["papers"]]
    assert trending == [p["title"] for p in sections[1]["papers"]]
    assert "More like this" in html and "NLPERSONAL" not in html + text
    # A reader without a profile: today's preview.
    plain = tmp_path / "plain.html"
    run_cli(
        "preview",
        "--date",
        DAY.isoformat(),
        "--for",
        "plain@example.org",
        "--out",
        str(plain),
        env=env,
    )
    assert "FOR YOU" not in plain.with_suffix(".txt").read_text(encoding="utf-8")


def test_papers_shown_and_passed_over_count_as_skipped_the_next_day(
    stored: tuple[Engine, str],
) -> None:
    from newsletter.editions.personal import load_readers

    engine, url = stored
    with RecordingSmtpServer() as server:
        env = cli_environment(url, server.port)
        run_cli(
            "subscribers",
            "add",
            "legs@example.org",
            "--confirmed",
            *READERS["legs@example.org"],
            env=env,
        )
        run_cli("send", "--date", DAY.isoformat(), env=env)
        assert server.handler.wait_for_messages(1, timeout=30)

    with engine.connect() as connection:
        [picks] = connection.execute(select(selections.c.picks)).scalars().all()
        reader_id = connection.execute(select(subscribers.c.id)).scalar_one()
    shown = [pick["arxiv_id"] for pick in picks]
    assert len(shown) >= 2  # the reader's "For you" held papers
    with engine.begin() as connection:  # they liked the first one from the email
        connection.execute(
            ReaderPaper.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "subscriber_id": reader_id,
                    "paper_key": shown[0],
                    "arxiv_id": shown[0],
                    "title": "",
                    "abstract": "",
                    "verdict": "liked",
                    "source": "email",
                    "created_at": dt.datetime.now(dt.UTC),
                    "updated_at": dt.datetime.now(dt.UTC),
                }
            ],
        )

    with engine.connect() as connection:
        [reader], library = load_readers(connection, [reader_id])
        [later], _ = load_readers(
            connection, [reader_id], now=dt.datetime.now(dt.UTC) + dt.timedelta(days=15)
        )

    assert reader.profile.liked == (shown[0],)
    assert reader.profile.skipped == tuple(shown[1:])  # shown, neither liked nor disliked
    assert all(library[arxiv_id].title for arxiv_id in shown[1:])  # their words are known
    assert later.profile.skipped == ()  # two weeks on, what was shown no longer counts


WEDNESDAY, SATURDAY = dt.date(2026, 11, 4), dt.date(2026, 11, 7)


def _make_weekly(engine: Engine, address: str, weekday: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(subscribers)
            .where(subscribers.c.email == address)
            .values(frequency="weekly", weekly_day=weekday)
        )


def test_weekly_readers_get_the_best_of_the_week_on_their_day_and_nothing_repeats(
    stored: tuple[Engine, str],
) -> None:
    engine, url = stored
    with engine.connect() as connection:
        day_of = {
            str(r.title): r.daily_date
            for r in connection.execute(select(papers.c.title, papers.c.daily_date))
        }
    legs = READERS["legs@example.org"]
    with RecordingSmtpServer() as server:
        env = cli_environment(url, server.port)
        run_cli("subscribers", "add", "daily@example.org", "--confirmed", *legs, env=env)
        # Daily on Wednesday; weekly on Saturdays from then on.
        run_cli("subscribers", "add", "weekly@example.org", "--confirmed", *legs, env=env)
        run_cli("subscribers", "add", "popular@example.org", "--confirmed", env=env)
        run_cli("subscribers", "add", "monday@example.org", "--confirmed", *legs, env=env)
        _make_weekly(engine, "popular@example.org", SATURDAY.weekday())
        _make_weekly(engine, "monday@example.org", 0)
        with engine.begin() as connection:
            connection.execute(
                update(subscribers)
                .where(subscribers.c.email == "popular@example.org")
                .values(digest_mode="trending")
            )

        wednesday = send_day(server, env, WEDNESDAY, 2)
        assert set(wednesday) == {"daily@example.org", "weekly@example.org"}
        _make_weekly(engine, "weekly@example.org", SATURDAY.weekday())
        thursday = send_day(server, env, WEDNESDAY + dt.timedelta(days=1), 1)
        assert set(thursday) == {"daily@example.org"}  # not a weekly reader's day
        # Wednesday's papers become the week's most popular: what the weekly
        # reader already received would lead "Trending this week" if it could repeat.
        with engine.begin() as connection:
            connection.execute(
                update(papers)
                .where(papers.c.daily_date == WEDNESDAY)
                .values(upvotes=papers.c.upvotes + 5000)
            )
        saturday = send_day(server, env, SATURDAY, 3)

    # The Monday reader is in no audience of the week; the others only on their day.
    assert set(saturday) == {"daily@example.org", "weekly@example.org", "popular@example.org"}
    assert all(m.rcpt_tos != ["monday@example.org"] for m in server.messages)

    # The daily reader: that day's papers, "Trending today".
    _, daily_text = _parts(saturday["daily@example.org"].message)
    daily_for_you, daily_trending = _sections(daily_text)
    assert daily_for_you and daily_trending
    assert {day_of[t] for t, _ in daily_for_you} | {day_of[t] for t in daily_trending} == {SATURDAY}

    # The weekly personal reader: "For you" from the whole week, "Trending this
    # week", and nothing Wednesday's digest already sent them.
    html, text = _parts(saturday["weekly@example.org"].message)
    assert "TRENDING THIS WEEK" in text and "TRENDING TODAY" not in text
    assert "Trending this week" in html
    for_you, trending = _sections(text, "TRENDING THIS WEEK")
    assert for_you and all(why for _, why in for_you) and trending
    shown = [title for title, _ in for_you] + trending
    assert len(shown) == len(set(shown))
    assert all(WEDNESDAY - dt.timedelta(days=2) <= day_of[t] <= SATURDAY for t in shown)
    assert len({day_of[t] for t in shown}) > 1
    _, sent_on_wednesday = _parts(wednesday["weekly@example.org"].message)
    before_for_you, before_trending = _sections(sent_on_wednesday)
    already = {title for title, _ in before_for_you} | set(before_trending)
    assert already and not already & set(shown)
    assert "NLCUT" not in html + text and "NLPERSONAL" not in html + text
    assert _html_wire_size(saturday["weekly@example.org"].raw) < GMAIL_CLIP_BYTES

    # The weekly reader of the trending digest: the week's most popular, no "For you".
    _, popular_text = _parts(saturday["popular@example.org"].message)
    assert "FOR YOU" not in popular_text
    popular_for_you, popular_trending = _sections(popular_text, "TRENDING THIS WEEK")
    assert popular_for_you == [] and len(popular_trending) == 10
    assert len({day_of[t] for t in popular_trending}) > 1

    # The ledger records what each weekly digest carried.
    with engine.connect() as connection:
        rows = connection.execute(
            select(deliveries.c.email, selections.c.for_you, selections.c.trending)
            .join(selections, selections.c.id == deliveries.c.selection_id)
            .join(editions, editions.c.id == deliveries.c.edition_id)
            .where(editions.c.date == SATURDAY)
        ).all()
    by_address = {row.email: row for row in rows}
    assert by_address["popular@example.org"].for_you is False
    assert by_address["weekly@example.org"].trending
    assert "daily@example.org" in by_address and by_address["daily@example.org"].trending is None


def test_view_in_browser_shows_the_readers_own_copy_as_sent(
    stored: tuple[Engine, str],
) -> None:
    engine, url = stored
    with RecordingSmtpServer() as server:
        env = cli_environment(url, server.port)
        for address in ("legs@example.org", "speech@example.org", "plain@example.org"):
            run_cli("subscribers", "add", address, "--confirmed", *READERS[address], env=env)
        received = send_day(server, env, DAY, 3)
    # The profile changes after the send: the reader's copy stays what was sent.
    with engine.begin() as connection:
        connection.execute(update(subscribers).values(interests="quokka husbandry", topics=[]))

    def view_link(address: str) -> str:
        html, text = _parts(received[address].message)
        found = re.search(r"View in browser: (\S+)", text)
        assert found is not None
        assert escape(found.group(1), quote=True) in html  # the HTML's link is the same
        return found.group(1).removeprefix(BASE_URL)

    legs, speech, plain = (
        view_link(a) for a in ("legs@example.org", "speech@example.org", "plain@example.org")
    )
    assert legs.startswith("/view/") and legs != speech
    assert plain == f"/editions/{DAY.isoformat()}"  # the trending digest's public page
    settings = load_settings(_env_file=None, database_url=url, secret_key=SECRET, base_url=BASE_URL)
    with live_server(create_app(settings, engine=engine)) as site:
        pages = {path: httpx.get(f"{site}{path}") for path in (legs, speech)}
        public = httpx.get(f"{site}/editions/{DAY.isoformat()}")
        altered = httpx.get(f"{site}{legs[:-3]}AAA")
        other_day = httpx.get(f"{site}{legs.replace('20261105', '20261106')}")

    for address, path in (("legs@example.org", legs), ("speech@example.org", speech)):
        page = pages[path]
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert "noindex" in page.headers["x-robots-tag"]
        _, sent_text = _parts(received[address].message)
        for_you, _ = _sections(sent_text)
        assert for_you
        for title, why in for_you:  # their own "For you", as sent
            assert str(markup_escape(title)) in page.text
            assert escape(why, quote=True) in page.text
        # Their own links: the feedback links of the email, the same view link.
        more = re.search(r"More like this: (\S+)", sent_text)
        assert more is not None and escape(more.group(1), quote=True) in page.text
        assert escape(f"{BASE_URL}{path}", quote=True) in page.text
        assert "NLPERSONAL" not in page.text and "NLCUT" not in page.text
    legs_titles = {t for t, _ in _sections(_parts(received["legs@example.org"].message)[1])[0]}
    speech_titles = {t for t, _ in _sections(_parts(received["speech@example.org"].message)[1])[0]}
    assert not any(str(markup_escape(t)) in pages[speech].text for t in legs_titles - speech_titles)
    # The public archive stays the trending edition; a bad token shows nothing.
    assert public.status_code == 200 and "For you" not in public.text
    assert altered.status_code == 404 and other_day.status_code == 404
    assert "For you" not in altered.text
