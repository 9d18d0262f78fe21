"""Personal picks: where the stored corpus, readers' profiles and the pure relevance model meet.

- `index_corpus` counts the terms of papers stored or changed since the last
  count into `corpus_terms` (each paper remembers what it added, so changed
  text replaces exactly its old terms): the document frequencies of ranking,
  kept up to date at each ingest without refitting anything.
- `ReaderRanking` ranks a day's papers for readers a batch at a time: their
  topics, interests and judged papers against the day's candidates, with
  recent papers as the background "For you" must stand out from;
  `personal_picks` ranks a few given readers with it (a preview).
- `edition_selections` is what each reader of an edition gets beyond the
  trending digest (`ReaderSelection`), yielded a batch of readers at a time so
  the send's start holds one batch: daily personal readers their "For you";
  weekly readers on their weekday the best of the week not yet sent to them.
- `delivered_digest` rebuilds a reader's digest of a day from the selection
  the ledger stored: the "View in browser" page.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain, islice
from typing import TYPE_CHECKING, TypeVar

from jinja2 import Environment
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    Text,
    cast,
    exists,
    false,
    func,
    or_,
    select,
    update,
)
from sqlmodel import Session, col
from sqlmodel import select as sql_select

from newsletter.core.clock import utc_now
from newsletter.core.db import upsert_insert
from newsletter.core.errors import (
    EditionNotFoundError,
    NoDigestThatDayError,
    SubscriberNotFoundError,
)
from newsletter.core.forked import forked_map
from newsletter.core.memory import cycle_collection_paused
from newsletter.core.settings import Settings
from newsletter.core.templating import make_template_environment
from newsletter.editions.content import end_of_day, prepare_edition, stored_ranking
from newsletter.ingest.store import record_from_row
from newsletter.models import (
    CorpusTerm,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionPaper,
    Paper,
    ReaderPaper,
    Selection,
    Subscriber,
)
from newsletter.rank import rank_papers
from newsletter.relevance.profiles import PaperText, Pick, ReaderProfile
from newsletter.relevance.topics import load_topics
from newsletter.render import DigestBlocks, PersonalDigest, render_blocks
from newsletter.values import PaperRecord, RankedPaper, new_link_marker
from subscribers.models import WEEKDAYS, DigestMode, Frequency, SubscriberStatus, Verdict
from subscribers.tokens import feedback_url, preferences_url, unsubscribe_url, view_url

if TYPE_CHECKING:
    from newsletter.relevance.model import RelevanceModel
    from newsletter.relevance.terms import TermStatistics

papers = Paper.__table__  # type: ignore[attr-defined]
deliveries = Delivery.__table__  # type: ignore[attr-defined]
selections = Selection.__table__  # type: ignore[attr-defined]
corpus_terms = CorpusTerm.__table__  # type: ignore[attr-defined]
edition_papers = EditionPaper.__table__  # type: ignore[attr-defined]
reader_papers = ReaderPaper.__table__  # type: ignore[attr-defined]
subscribers = Subscriber.__table__  # type: ignore[attr-defined]
editions = Edition.__table__  # type: ignore[attr-defined]

# Papers counted per transaction while indexing.
INDEX_BATCH = 500
# Readers loaded and ranked at a time: memory for profiles stays flat however many.
READERS_PER_BATCH = 10_000
# How far back a shown-and-passed-over paper still counts as skipped, and how many.
SKIPPED_LOOKBACK = dt.timedelta(days=14)
MAX_SKIPPED = 50
# A weekly digest's days: the weekday's own and the six before.
WEEK_DAYS = 7
# How many recent papers (before the day) form the background of "For you".
BACKGROUND_PAPERS = 300
# A term longer than this is noise (a URL, a pasted formula), not vocabulary.
MAX_TERM_LENGTH = 200


# The columns `paper_text_of` reads.
PAPER_TEXT_COLUMNS = (
    papers.c.arxiv_id,
    papers.c.title,
    papers.c.abstract,
    papers.c.ai_summary,
    papers.c.ai_keywords,
)


def paper_text_of(row: RowMapping) -> PaperText:
    """A stored paper's words: title, abstract (or the AI summary) and keywords."""
    abstract = str(row.get("abstract") or row.get("ai_summary") or "")
    keywords = row.get("ai_keywords") or []
    assert isinstance(keywords, list)
    return PaperText(str(row["arxiv_id"]), str(row["title"]), abstract, tuple(map(str, keywords)))


def index_corpus(engine: Engine, *, now: dt.datetime | None = None) -> int:
    """Count the terms of papers new or changed since they were last counted; how many."""
    from newsletter.relevance.terms import document_terms  # scikit-learn's analyzer: on demand

    counted = 0
    moment = now or utc_now()
    while True:
        with engine.begin() as connection:
            rows = (
                connection.execute(
                    select(
                        papers.c.id,
                        papers.c.arxiv_id,
                        papers.c.title,
                        papers.c.abstract,
                        papers.c.ai_summary,
                        papers.c.ai_keywords,
                        papers.c.indexed_terms,
                    )
                    .where(
                        or_(
                            papers.c.indexed_at.is_(None), papers.c.updated_at > papers.c.indexed_at
                        )
                    )
                    .order_by(papers.c.id)
                    .limit(INDEX_BATCH)
                )
                .mappings()
                .all()
            )
            if not rows:
                return counted
            change: Counter[str] = Counter()
            for row in rows:
                terms = {
                    t
                    for t in document_terms(paper_text_of(row).text())
                    if len(t) <= MAX_TERM_LENGTH
                }
                old = set(row["indexed_terms"] or ())
                change.update(dict.fromkeys(terms - old, 1))
                change.update(dict.fromkeys(old - terms, -1))
                connection.execute(
                    update(papers)
                    .where(papers.c.id == row["id"])
                    .values(indexed_terms=sorted(terms), indexed_at=moment)
                )
            _apply_counts(connection, change)
            counted += len(rows)


def _apply_counts(connection: Connection, change: Counter[str]) -> None:
    rows = [{"term": term, "papers": delta} for term, delta in change.items() if delta]
    for start in range(0, len(rows), 1000):
        statement = upsert_insert(connection.dialect.name, corpus_terms)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["term"],
                set_={"papers": corpus_terms.c.papers + statement.excluded.papers},
            ),
            rows[start : start + 1000],
        )


def term_statistics(connection: Connection, terms: Iterable[str]) -> TermStatistics:
    """Document frequencies of the given terms (the only ones a ranking run needs)."""
    from newsletter.relevance.terms import TermStatistics

    documents = connection.execute(
        select(func.count()).select_from(papers).where(papers.c.indexed_terms.is_not(None))
    ).scalar_one()
    wanted = sorted(set(terms))
    frequencies: dict[str, int] = {}
    for start in range(0, len(wanted), 900):
        chunk = wanted[start : start + 900]
        frequencies.update(
            connection.execute(
                select(corpus_terms.c.term, corpus_terms.c.papers).where(
                    corpus_terms.c.term.in_(chunk)
                )
            ).all()
        )
    return TermStatistics(int(documents), frequencies)


@dataclass(frozen=True, slots=True)
class Reader:
    """A reader as personal ranking sees them."""

    subscriber_id: int
    profile: ReaderProfile
    count: int


def load_readers(
    connection: Connection, subscriber_ids: Sequence[int], *, now: dt.datetime | None = None
) -> tuple[list[Reader], dict[str, PaperText]]:
    """The readers' profiles, and the texts of every paper they judged or were shown.

    A paper their recent "For you" showed and that they neither liked nor
    disliked counts as skipped: a weak "not this" (`relevance.model`).
    """
    readers: list[Reader] = []
    library: dict[str, PaperText] = {}
    judged: dict[int, list[tuple[str, Verdict]]] = {}
    decoded: dict[str | None, tuple[str, ...]] = {}
    for start in range(0, len(subscriber_ids), 900):
        chunk = subscriber_ids[start : start + 900]
        for row in connection.execute(
            select(
                reader_papers.c.subscriber_id,
                reader_papers.c.paper_key,
                reader_papers.c.title,
                reader_papers.c.abstract,
                reader_papers.c.verdict,
            ).where(reader_papers.c.subscriber_id.in_(chunk))
        ).mappings():
            key = str(row["paper_key"])
            library.setdefault(key, PaperText(key, str(row["title"]), str(row["abstract"])))
            judged.setdefault(int(row["subscriber_id"]), []).append((key, Verdict(row["verdict"])))
        shown = _recently_shown(connection, chunk, since=(now or utc_now()) - SKIPPED_LOOKBACK)
        for subscriber_id, topics_json, interests, count in connection.execute(
            select(
                subscribers.c.id,
                # As stored: the same few topic lists recur, each decoded once.
                cast(subscribers.c.topics, Text),
                subscribers.c.interests,
                subscribers.c.personal_count,
            ).where(subscribers.c.id.in_(chunk))
        ):
            topics = decoded.get(topics_json)
            if topics is None:
                topics = decoded[topics_json] = tuple(map(str, json.loads(topics_json or "[]")))
            papers_judged = judged.get(subscriber_id)
            if papers_judged is None and subscriber_id not in shown:
                profile = ReaderProfile(topics=topics, interests=str(interests or ""))
            else:
                judged_keys = {key for key, _ in papers_judged or ()}
                profile = ReaderProfile(
                    topics=topics,
                    interests=str(interests or ""),
                    liked=tuple(k for k, v in papers_judged or () if v is Verdict.LIKED),
                    disliked=tuple(k for k, v in papers_judged or () if v is Verdict.DISLIKED),
                    # Shown in their recent "For you" and neither liked nor disliked.
                    skipped=tuple(a for a in shown.get(subscriber_id, ()) if a not in judged_keys)[
                        :MAX_SKIPPED
                    ],
                )
            readers.append(Reader(int(subscriber_id), profile, int(count)))
    skipped_ids = {a for reader in readers for a in reader.profile.skipped} - library.keys()
    library.update(_stored_texts(connection, sorted(skipped_ids)))
    return readers, library


def _recently_shown(
    connection: Connection, subscriber_ids: Sequence[int], *, since: dt.datetime
) -> dict[int, list[str]]:
    """The papers each reader's "For you" carried in digests sent since `since`, newest first."""
    shown: dict[int, list[str]] = {}
    rows = connection.execute(
        select(deliveries.c.subscriber_id, selections.c.picks)
        .join(selections, selections.c.id == deliveries.c.selection_id)
        .where(
            deliveries.c.subscriber_id.in_(subscriber_ids),
            deliveries.c.status == DeliveryStatus.SENT.value,
            deliveries.c.sent_at >= since,
        )
        .order_by(deliveries.c.sent_at.desc())
    )
    for subscriber_id, picks in rows:
        papers_shown = shown.setdefault(int(subscriber_id), [])
        for pick in picks or ():
            arxiv_id = str(pick.get("arxiv_id", "")) if isinstance(pick, dict) else ""
            if arxiv_id and arxiv_id not in papers_shown:
                papers_shown.append(arxiv_id)
    return shown


def _stored_texts(connection: Connection, arxiv_ids: Sequence[str]) -> dict[str, PaperText]:
    texts: dict[str, PaperText] = {}
    for start in range(0, len(arxiv_ids), 900):
        for row in connection.execute(
            select(*PAPER_TEXT_COLUMNS).where(papers.c.arxiv_id.in_(arxiv_ids[start : start + 900]))
        ).mappings():
            texts[str(row["arxiv_id"])] = paper_text_of(row)
    return texts


class ReaderRanking:
    """The candidates of a day (or a week) fitted once, then readers ranked a batch at a time.

    Only reads, on a connection of its own (the send's start ranks every batch
    before its transaction, `delivery.selections.rank_readers`). The term
    frequencies grow batch by batch with the terms of the batch's readers'
    words and papers (a term's frequency, once loaded, never changes here), so
    a reader's picks do not depend on which batch they are ranked in.
    """

    def __init__(
        self,
        model: RelevanceModel,
        frequencies: dict[str, int],
        looked_up: set[str],
        candidate_ids: frozenset[str],
    ) -> None:
        from newsletter.relevance.terms import analyzer  # with scikit-learn: only when ranking

        self.model = model
        self.frequencies = frequencies
        self.looked_up = looked_up
        self.candidate_ids = candidate_ids
        self.analyze = analyzer()

    @classmethod
    def fit(
        cls, settings: Settings, connection: Connection, *, day: dt.date, days: int = 1
    ) -> ReaderRanking:
        """The model of the papers of the `days` days ending with `day` (the corpus counted)."""
        from newsletter.relevance.model import RelevanceModel
        from newsletter.relevance.terms import TermStatistics, analyzer

        first_day = day - dt.timedelta(days=days - 1)
        columns = PAPER_TEXT_COLUMNS
        candidates = [
            paper_text_of(row)
            for row in connection.execute(
                select(*columns)
                .where(papers.c.daily_date >= first_day, papers.c.daily_date <= day)
                .order_by(papers.c.arxiv_id)
            ).mappings()
        ]
        background = [
            paper_text_of(row)
            for row in connection.execute(
                select(*columns)
                .where(papers.c.daily_date < first_day)
                .order_by(papers.c.daily_date.desc(), papers.c.arxiv_id)
                .limit(BACKGROUND_PAPERS)
            ).mappings()
        ]
        topics = load_topics(settings.topics_file)
        analyze = analyzer()
        needed: set[str] = set()
        for text in (*(p.text() for p in (*candidates, *background)), *(t.text() for t in topics)):
            needed.update(analyze(text))
        loaded = term_statistics(connection, needed)
        frequencies = dict(loaded.frequencies)
        model = RelevanceModel(
            TermStatistics(loaded.documents, frequencies),
            candidates,
            topics=topics,
            background=background,
        )
        return cls(model, frequencies, set(needed), frozenset(p.arxiv_id for p in candidates))

    def selections(self, connection: Connection, subscriber_ids: Sequence[int]) -> SelectionBatch:
        """These daily readers' selections: their "For you" (readers without a profile left out)."""
        with cycle_collection_paused():
            return {
                reader: ReaderSelection(tuple(picks))
                for reader, picks in self.picks(connection, subscriber_ids).items()
            }

    def picks(
        self,
        connection: Connection,
        subscriber_ids: Sequence[int],
        *,
        exclude: Mapping[int, Collection[str]] | None = None,
    ) -> dict[int, list[Pick]]:
        """Each of these readers' "For you", best first, none of `exclude[reader]`.

        Readers without any profile are left out: they get the trending digest.
        """
        with cycle_collection_paused():
            excluded = exclude or {}
            analyze = self.analyze
            readers, library = load_readers(connection, subscriber_ids)
            # Each reader's words analysed once: for the frequencies, and by the model.
            analysed = {r.profile.interests: tuple(analyze(r.profile.interests)) for r in readers}
            new_terms: set[str] = set()
            for terms in analysed.values():
                new_terms.update(terms)
            for paper in library.values():
                new_terms.update(analyze(paper.text()))
            new_terms -= self.looked_up
            self.frequencies.update(term_statistics(connection, new_terms).frequencies)
            self.looked_up |= new_terms
            self.model.add_library(library)
            # Each ranked deep enough that the papers left out still leave them their count.
            ranked = self.model.rank(
                [r.profile for r in readers],
                count=[
                    r.count
                    + len(self.candidate_ids.intersection(excluded.get(r.subscriber_id, ())))
                    for r in readers
                ],
                analysed=analysed,
            )
            picks: dict[int, list[Pick]] = {}
            for reader, chosen in zip(readers, ranked, strict=True):
                if not reader.profile.is_empty:
                    left_out = excluded.get(reader.subscriber_id, ())
                    picks[reader.subscriber_id] = [
                        pick for pick in chosen if pick.arxiv_id not in left_out
                    ][: reader.count]
        return picks


def personal_picks(
    settings: Settings,
    engine: Engine,
    *,
    day: dt.date,
    subscriber_ids: Sequence[int],
    days: int = 1,
    exclude: Mapping[int, Collection[str]] | None = None,
) -> dict[int, list[Pick]]:
    """Each reader's "For you" papers of the day, best first (empty: nothing clears the floor).

    The candidates are the papers of the `days` days ending with `day` (a
    weekly reader's: seven), but none of `exclude[reader]` (papers already
    sent to them). Readers without any profile are left out: they get the
    trending digest. Holds every reader's picks: for a few readers (a
    preview); a send's start streams `edition_selections` instead.
    """
    index_corpus(engine)
    picks: dict[int, list[Pick]] = {}
    with engine.connect() as connection:
        ranking = ReaderRanking.fit(settings, connection, day=day, days=days)
        for start in range(0, len(subscriber_ids), READERS_PER_BATCH):
            batch = subscriber_ids[start : start + READERS_PER_BATCH]
            picks.update(ranking.picks(connection, batch, exclude=exclude))
    return picks


@dataclass(frozen=True, slots=True)
class SectionPaper:
    """One paper as a digest section lists it."""

    arxiv_id: str
    title: str
    score: float
    why: str


@dataclass(frozen=True, slots=True)
class Section:
    """A named part of a digest: "for_you" or "trending"."""

    name: str
    papers: tuple[SectionPaper, ...]


def digest_sections(
    settings: Settings, engine: Engine, *, day: dt.date, email: str | None
) -> list[Section]:
    """What a reader's digest of the day holds: "For you", then trending without those papers.

    Without `email`, or for a reader who chose the trending digest or has no
    profile, only the trending section. A weekly reader on their weekday: their
    weekly digest ("For you" from the week, then the week's trending). Raises
    SubscriberNotFoundError for an unknown address, NoDigestThatDayError for a
    weekly reader on another day.
    """
    chosen = None if email is None else _reader_selection(settings, engine, day=day, email=email)[1]
    edition = prepare_edition(settings, engine, day=day)
    sections: list[Section] = []
    if chosen is not None and chosen.for_you:
        sections.append(_for_you_section(engine, chosen.picks))
    if chosen is not None and chosen.week_trending is not None:
        ranked = {item.paper.arxiv_id: item for item in week_ranked(engine, day=day)}
        week = (ranked[arxiv_id] for arxiv_id in chosen.week_trending)
        trending = tuple(
            SectionPaper(
                item.paper.arxiv_id,
                item.paper.title,
                round(item.score, 4),
                f"trending this week: {item.paper.upvotes} upvotes",
            )
            for item in week
        )
        return [*sections, Section("trending", trending)]
    with engine.connect() as connection:
        trending_rows = (
            connection.execute(
                select(
                    papers.c.arxiv_id,
                    papers.c.title,
                    papers.c.upvotes,
                    edition_papers.c.score,
                )
                .join(edition_papers, edition_papers.c.paper_id == papers.c.id)
                .where(edition_papers.c.edition_id == edition.id)
                .order_by(edition_papers.c.position)
            )
            .mappings()
            .all()
        )
    shown = set() if chosen is None else {pick.arxiv_id for pick in chosen.picks}
    trending = tuple(
        SectionPaper(
            str(row["arxiv_id"]),
            str(row["title"]),
            round(float(row["score"]), 4),
            f"trending today: {row['upvotes']} upvotes",
        )
        for row in trending_rows
        if row["arxiv_id"] not in shown
    )
    sections.append(Section("trending", trending))
    return sections


def _for_you_section(engine: Engine, picks: Sequence[Pick]) -> Section:
    titles = _titles(engine, [pick.arxiv_id for pick in picks])
    return Section(
        "for_you",
        tuple(
            SectionPaper(p.arxiv_id, titles.get(p.arxiv_id, ""), round(p.score, 4), p.why)
            for p in picks
        ),
    )


def _reader_selection(
    settings: Settings, engine: Engine, *, day: dt.date, email: str
) -> tuple[RowMapping, ReaderSelection | None]:
    """The reader with this address, and what a send of the day would give them.

    A daily reader: their "For you" of the day, or None for one who gets the
    trending digest ("trending only", or no profile at all). A weekly reader on
    their weekday: their `weekly_selections` entry, the same rule the send
    follows. Raises SubscriberNotFoundError, and NoDigestThatDayError for a
    weekly reader on another weekday (or one the send would not reach).
    """
    address = email.strip()
    with engine.connect() as connection:
        row = (
            connection.execute(
                select(
                    subscribers.c.id,
                    subscribers.c.key,
                    subscribers.c.digest_mode,
                    subscribers.c.frequency,
                    subscribers.c.weekly_day,
                ).where(func.lower(subscribers.c.email) == address.lower())
            )
            .mappings()
            .first()
        )
    if row is None:
        raise SubscriberNotFoundError(f"no subscriber with the address {address!r}")
    reader = int(row["id"])
    if row["frequency"] == Frequency.WEEKLY.value:
        weekday = int(row["weekly_day"])
        their_day = WEEKDAYS[weekday]
        if weekday != day.weekday():
            raise NoDigestThatDayError(
                f"{address} reads the weekly digest, sent on {their_day}s: no digest on "
                f"{WEEKDAYS[day.weekday()]} {day.isoformat()}",
                weekly_day=weekday,
            )
        index_corpus(engine)
        with engine.connect() as connection:
            weekly = next(
                iter(weekly_selections(settings, engine, connection, day=day, only=[reader])), {}
            ).get(reader)
        if weekly is None:  # not confirmed, or paused: not in the audience
            raise NoDigestThatDayError(
                f"{address} gets no digest on {their_day} {day.isoformat()}: "
                "not confirmed, or paused",
                weekly_day=weekday,
            )
        return row, weekly
    if row["digest_mode"] != DigestMode.PERSONAL.value:
        return row, None
    picks = personal_picks(settings, engine, day=day, subscriber_ids=[reader]).get(reader)
    return row, None if picks is None else ReaderSelection(tuple(picks))


def _titles(engine: Engine, arxiv_ids: Sequence[str]) -> dict[str, str]:
    if not arxiv_ids:
        return {}
    with engine.connect() as connection:
        return dict(
            connection.execute(
                select(papers.c.arxiv_id, papers.c.title).where(papers.c.arxiv_id.in_(arxiv_ids))
            ).all()
        )


# --- what a send of the edition gives each personal reader ----------------------------


def _has_profile() -> ColumnElement[bool]:
    # Readers without topics, interests or liked papers are left out in SQL: a
    # list of a million such readers costs this nothing (and `personal_picks`
    # leaves out any empty profile this lets through).
    return or_(
        subscribers.c.interests != "",
        func.coalesce(cast(subscribers.c.topics, Text), "[]") != "[]",
        exists().where(
            reader_papers.c.subscriber_id == subscribers.c.id,
            reader_papers.c.verdict == Verdict.LIKED.value,
        ),
    )


def _reader_ids(
    connection: Connection,
    *conditions: ColumnElement[bool],
    after: int = 0,
    limit: int | None = None,
) -> list[int]:
    """Confirmed, unpaused readers meeting `conditions`, by id (past `after`, at most `limit`)."""
    return [
        int(reader)
        for reader in connection.execute(
            select(subscribers.c.id)
            .where(
                subscribers.c.status == SubscriberStatus.CONFIRMED.value,
                subscribers.c.paused == false(),
                subscribers.c.id > after,
                *conditions,
            )
            .order_by(subscribers.c.id)
            .limit(limit)
        ).scalars()
    ]


def _reader_id_pages(
    connection: Connection, *conditions: ColumnElement[bool]
) -> Iterator[list[int]]:
    """The readers `_reader_ids` finds, `READERS_PER_BATCH` at a time.

    Keyset pages (ids past the last page's), so not even the ids of a million
    readers are held at once.
    """
    after = 0
    while page := _reader_ids(connection, *conditions, after=after, limit=READERS_PER_BATCH):
        yield page
        after = page[-1]


def _daily_personal() -> tuple[ColumnElement[bool], ...]:
    return (
        subscribers.c.frequency == Frequency.DAILY.value,
        subscribers.c.digest_mode == DigestMode.PERSONAL.value,
        _has_profile(),
    )


def personal_reader_ids(connection: Connection) -> list[int]:
    """Confirmed, unpaused daily readers who chose "personal + trending" and have a profile.

    The other daily readers get exactly the edition's trending digest.
    """
    return _reader_ids(connection, *_daily_personal())


@dataclass(frozen=True, slots=True)
class ReaderSelection:
    """What one reader's digest of an edition holds, when it is not the trending edition."""

    picks: tuple[Pick, ...]
    # False: no "For you" section at all (a weekly reader of the trending digest).
    for_you: bool = True
    # A weekly reader's "Trending this week", best first; None: the edition's ranking.
    week_trending: tuple[str, ...] | None = None

    def assemble(self, blocks: DigestBlocks) -> PersonalDigest:
        """This selection's digest, joined from the edition's blocks."""
        return blocks.assemble(
            [(pick.arxiv_id, pick.why) for pick in self.picks],
            for_you=self.for_you,
            week_trending=self.week_trending,
        )

    def papers(self) -> set[str]:
        """Every paper this selection may show."""
        return {pick.arxiv_id for pick in self.picks} | set(self.week_trending or ())

    def fingerprint(self) -> str:
        """What makes two readers' digests the same: papers, why lines, sections."""
        picked = [[pick.arxiv_id, pick.why] for pick in self.picks]
        # A daily selection's fingerprint is its picks alone, as before weekly digests.
        content: object = picked
        if not self.for_you or self.week_trending is not None:
            content = {"picks": picked, "for_you": self.for_you, "trending": self.week_trending}
        canonical = json.dumps(content, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _weekly(day: dt.date) -> tuple[ColumnElement[bool], ...]:
    """Weekly readers whose weekday `day` is."""
    return (
        subscribers.c.frequency == Frequency.WEEKLY.value,
        subscribers.c.weekly_day == day.weekday(),
    )


def week_ranking(engine: Engine, *, day: dt.date) -> list[str]:
    """The papers of the seven days ending with `day`, by popularity at its end, best first."""
    return [item.paper.arxiv_id for item in week_ranked(engine, day=day)]


def week_ranked(engine: Engine, *, day: dt.date) -> list[RankedPaper]:
    """`week_ranking` with each paper's record and score (what a preview shows of them)."""
    with Session(engine) as session:
        records = [
            record_from_row(paper)
            for paper in session.exec(
                sql_select(Paper).where(
                    col(Paper.daily_date) >= day - dt.timedelta(days=WEEK_DAYS - 1),
                    col(Paper.daily_date) <= day,
                )
            )
        ]
    if not records:
        return []
    return list(rank_papers(records, now=end_of_day(day), top_n=len(records)))


def papers_sent(
    connection: Connection, subscriber_ids: Sequence[int], *, since: dt.datetime
) -> dict[int, set[str]]:
    """Every paper the digests sent to each reader since `since` showed: "For you" and trending."""
    sent: dict[int, set[str]] = {}
    editions_shown: dict[int, list[set[str]]] = {}
    for start in range(0, len(subscriber_ids), 900):
        rows = connection.execute(
            select(
                deliveries.c.subscriber_id,
                deliveries.c.edition_id,
                selections.c.picks,
                selections.c.trending,
            )
            .select_from(
                deliveries.outerjoin(selections, selections.c.id == deliveries.c.selection_id)
            )
            .where(
                deliveries.c.subscriber_id.in_(subscriber_ids[start : start + 900]),
                deliveries.c.status == DeliveryStatus.SENT.value,
                deliveries.c.sent_at >= since,
            )
        )
        for subscriber_id, edition_id, picks, trending in rows:
            shown = sent.setdefault(int(subscriber_id), set())
            shown.update(str(pick["arxiv_id"]) for pick in picks or ())
            if trending is None:  # the edition's own ranking: read once per edition below
                editions_shown.setdefault(int(edition_id), []).append(shown)
            else:
                shown.update(map(str, trending))
    for edition_id, readers in editions_shown.items():
        ranking = connection.execute(
            select(papers.c.arxiv_id)
            .join(edition_papers, edition_papers.c.paper_id == papers.c.id)
            .where(edition_papers.c.edition_id == edition_id)
        ).scalars()
        arxiv_ids = set(map(str, ranking))
        for shown in readers:
            shown.update(arxiv_ids)
    return sent


# One batch of readers' selections: subscriber id -> what their digest holds.
SelectionBatch = dict[int, ReaderSelection]
# What a caller of `ranked_selections` makes of each batch.
Made = TypeVar("Made")


def daily_selections(
    settings: Settings, connection: Connection, *, day: dt.date, days: int = 1
) -> Iterator[SelectionBatch]:
    """The daily personal readers' "For you" of the day, a batch of readers at a time.

    Only reads (`edition_selections` counts the corpus first). The candidates
    are the papers of the `days` days ending with `day`: the day's own for a
    send; `benchmarks/personal_ranking.py` ranks against five days' papers.
    """
    return daily_selections_in_processes(
        settings, connection.engine, connection, day=day, days=days, then=_as_it_is, processes=1
    )


def daily_selections_in_processes(
    settings: Settings,
    engine: Engine,
    connection: Connection,
    *,
    day: dt.date,
    then: Callable[[SelectionBatch], Made],
    processes: int,
    days: int = 1,
) -> Iterator[Made]:
    """`daily_selections` passed through `then`, the pages ranked in `processes` forked processes.

    The model is fitted here, once, before the fork: the children share it.
    A reader's picks do not depend on the page they are ranked with
    (`ReaderRanking`), so each child ranking its own pages gives every reader
    what one process would. With one process, or one page of readers, they
    are ranked here, on `connection`.
    """
    pages = _reader_id_pages(connection, *_daily_personal())
    head = list(islice(pages, 2))
    if not head:
        return
    ranking = ReaderRanking.fit(settings, connection, day=day, days=days)
    pages = chain(head, pages)
    if processes <= 1 or len(head) == 1:
        for page in pages:
            yield then(ranking.selections(connection, page))
        return

    def rank(page: list[int]) -> Made:
        with engine.connect() as own:  # a child's own connection, never the parent's
            return then(ranking.selections(own, page))

    yield from forked_map(
        rank,
        pages,
        processes=processes,
        # The engine's pooled connections are the parent's: a child opens its own.
        in_child=partial(engine.dispose, close=False),
    )


def weekly_selections(
    settings: Settings,
    engine: Engine,
    connection: Connection,
    *,
    day: dt.date,
    only: Collection[int] | None = None,
) -> Iterator[SelectionBatch]:
    """What each weekly reader whose weekday `day` is gets, a batch of readers at a time.

    The best of the week not yet sent: personal readers their "For you" from
    the seven days' papers, then the week's trending; the others the week's
    trending alone. Papers a digest already sent them (since the week's first
    day) are left out of both. Only the readers of `only`, if given: a
    preview's one reader.
    """
    since = dt.datetime.combine(day - dt.timedelta(days=WEEK_DAYS - 1), dt.time(), tzinfo=dt.UTC)
    weekly = list(_weekly(day))
    if only is not None:
        weekly.append(subscribers.c.id.in_(sorted(only)))
    ranking: ReaderRanking | None = None
    week: list[str] | None = None
    for page in _reader_id_pages(connection, *weekly):
        week = week if week is not None else week_ranking(engine, day=day)
        personal = _reader_ids(
            connection,
            *weekly,
            subscribers.c.id.between(page[0], page[-1]),
            subscribers.c.digest_mode == DigestMode.PERSONAL.value,
            _has_profile(),
        )
        sent = papers_sent(connection, page, since=since)
        picks: dict[int, list[Pick]] = {}
        if personal:
            ranking = ranking or ReaderRanking.fit(settings, connection, day=day, days=WEEK_DAYS)
            picks = ranking.picks(connection, personal, exclude=sent)
        chosen: SelectionBatch = {}
        for reader in page:
            own = picks.get(reader)
            left_out = sent.get(reader, set()) | {pick.arxiv_id for pick in own or ()}
            trending = tuple([a for a in week if a not in left_out][: settings.top_n])
            chosen[reader] = ReaderSelection(
                tuple(own or ()), for_you=own is not None, week_trending=trending
            )
        yield chosen


def edition_selections(
    settings: Settings, engine: Engine, *, day: dt.date
) -> Iterator[SelectionBatch]:
    """Every reader's selection of the day's edition, a batch of readers at a time.

    Daily personal readers: their "For you" of the day's papers; then weekly
    readers whose weekday it is (`weekly_selections`). A reader absent from
    every batch gets the trending digest. (Weekly readers on other days are not
    in the audience: `ledger.queue_audience`.)

    The corpus is counted now (a write, which must not wait on the caller's
    transaction); the batches only read, on their own connection, each ranked
    when asked for: a caller may consume them inside a write transaction (the
    send's start does), holding one batch at a time.
    """
    return ranked_selections(settings, engine, day=day, then=_as_it_is)


def ranked_selections(
    settings: Settings,
    engine: Engine,
    *,
    day: dt.date,
    then: Callable[[SelectionBatch], Made],
    processes: int = 1,
) -> Iterator[Made]:
    """`edition_selections`, each batch passed through `then`; the daily readers' in processes.

    With `processes` above one, the daily readers' batches are ranked, and
    passed through `then`, in that many forked processes (`core.forked`), in
    their order: only for a caller that has started no thread of its own (the
    CLI's send). Weekly readers, a seventh of them on any day, are ranked here.
    """
    with engine.connect() as connection:
        if not any(
            _reader_ids(connection, *conditions, limit=1)
            for conditions in (_daily_personal(), _weekly(day))
        ):
            # Everyone gets the trending digest: no ranking, so not even the corpus
            # counted (its analyzer's import alone is 0.15-0.3 s of a send's start).
            return iter(())
    index_corpus(engine)
    return _selection_batches(settings, engine, day=day, then=then, processes=processes)


def _as_it_is(batch: SelectionBatch) -> SelectionBatch:
    return batch


def _selection_batches(
    settings: Settings,
    engine: Engine,
    *,
    day: dt.date,
    then: Callable[[SelectionBatch], Made],
    processes: int,
) -> Iterator[Made]:
    with engine.connect() as connection:
        yield from daily_selections_in_processes(
            settings, engine, connection, day=day, then=then, processes=processes
        )
        for batch in weekly_selections(settings, engine, connection, day=day):
            yield then(batch)


def load_selections(
    connection: Connection, *, edition_id: int, selection_ids: Collection[int] | None = None
) -> dict[int, ReaderSelection]:
    """The edition's stored selections by id (only `selection_ids`, if given)."""
    statement = select(
        selections.c.id, selections.c.picks, selections.c.for_you, selections.c.trending
    ).where(selections.c.edition_id == edition_id)
    if selection_ids is not None:
        statement = statement.where(selections.c.id.in_(sorted(selection_ids)))
    return {
        int(row.id): ReaderSelection(
            tuple(
                Pick(str(p["arxiv_id"]), float(p.get("score", 0.0)), str(p["why"]))
                for p in row.picks
            ),
            for_you=bool(row.for_you),
            week_trending=None if row.trending is None else tuple(map(str, row.trending)),
        )
        for row in connection.execute(statement)
    }


def selection_papers(connection: Connection, *, edition_id: int) -> set[str] | None:
    """Every paper the edition's stored selections may show; None when it has no selection.

    Read in one streamed pass over the selections (a thousand rows at a
    time): only the distinct papers are held, however many selections.
    """
    statement = select(selections.c.picks, selections.c.trending).where(
        selections.c.edition_id == edition_id
    )
    found = False
    shown: set[str] = set()
    for picks, trending in connection.execute(statement.execution_options(yield_per=1000)):
        found = True
        shown.update(str(pick["arxiv_id"]) for pick in picks)
        shown.update(map(str, trending or ()))
    return shown if found else None


def edition_blocks(
    settings: Settings,
    engine: Engine,
    *,
    edition_id: int,
    extra_papers: Iterable[str],
    env: Environment | None = None,
) -> DigestBlocks:
    """The personal-digest blocks of a started (or prepared) edition, rendered once.

    Its trending ranking as stored, and `extra_papers` (those the selections
    picked) as candidates for "For you".
    """
    with Session(engine) as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise EditionNotFoundError(f"no edition with id {edition_id}")
        trending = stored_ranking(session, edition_id)
        wanted = sorted(set(extra_papers) - {item.paper.arxiv_id for item in trending})
        candidates: list[PaperRecord] = []
        for start in range(0, len(wanted), 900):
            candidates += [
                record_from_row(row)
                for row in session.exec(
                    sql_select(Paper)
                    .where(col(Paper.arxiv_id).in_(wanted[start : start + 900]))
                    .order_by(col(Paper.arxiv_id))
                )
            ]
        subject, day = edition.subject, edition.date
    return render_blocks(
        env or make_template_environment(settings.templates_dir),
        trending,
        candidates,
        edition_date=day,
        subject=subject,
        postal_address=settings.postal_address,
        list_name=settings.list_name,
        link_marker=new_link_marker(),
    )


def reader_digest(
    settings: Settings, engine: Engine, *, day: dt.date, email: str
) -> tuple[str, str] | None:
    """A personal or weekly reader's own digest of the day (HTML, text) with their links filled in.

    None for a daily reader who gets today's trending digest (no profile, or
    "trending only"). Raises SubscriberNotFoundError for an unknown address,
    NoDigestThatDayError for a weekly reader on another day.
    """
    row, chosen = _reader_selection(settings, engine, day=day, email=email)
    edition = prepare_edition(settings, engine, day=day)
    assert edition.id is not None
    if chosen is None:
        return None
    blocks = edition_blocks(settings, engine, edition_id=edition.id, extra_papers=chosen.papers())
    return _with_reader_links(settings, chosen.assemble(blocks), key=str(row["key"]), day=day)


def _with_reader_links(
    settings: Settings, digest: PersonalDigest, *, key: str, day: dt.date
) -> tuple[str, str]:
    base, secret = settings.base_url, settings.secret_key
    return digest.personalised(
        unsubscribe_url=unsubscribe_url(base, secret, key),
        preferences_url=preferences_url(base, secret, key),
        feedback_url=lambda arxiv_id, verdict: feedback_url(base, secret, key, arxiv_id, verdict),
        view_url=view_url(base, secret, key, day),
    )


def delivered_digest(
    settings: Settings, engine: Engine, *, day: dt.date, subscriber_key: str
) -> tuple[str, str] | None:
    """The digest a reader was sent on `day` (HTML, text), rebuilt from the ledger's selection.

    Their own "For you" (or weekly digest) with their links, exactly the
    selection their delivery row points at, however their profile changed
    since. None when that delivery carried the edition's trending digest.
    Raises SubscriberNotFoundError when this reader got no delivery of that day.
    """
    with engine.connect() as connection:
        row = connection.execute(
            select(deliveries.c.edition_id, deliveries.c.selection_id)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .join(editions, editions.c.id == deliveries.c.edition_id)
            .where(
                subscribers.c.key == subscriber_key,
                editions.c.date == day,
                deliveries.c.is_test == false(),
            )
        ).first()
        if row is None:
            raise SubscriberNotFoundError(f"no delivery of {day.isoformat()} to this reader")
        if row.selection_id is None:
            return None
        chosen = load_selections(
            connection, edition_id=row.edition_id, selection_ids=[row.selection_id]
        )[row.selection_id]
    blocks = edition_blocks(
        settings, engine, edition_id=row.edition_id, extra_papers=chosen.papers()
    )
    return _with_reader_links(settings, chosen.assemble(blocks), key=subscriber_key, day=day)
