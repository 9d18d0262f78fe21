"""Editions: one day's papers ranked, rendered once and stored for sending and the web.

This is where the pure stages meet the database: it loads the stored papers
of a day, calls `rank_papers` and `render_digest`, and keeps the result in the
`editions` row. Once an edition has started sending its content is frozen, so
every recipient, a resend and the web view all see the same digest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from jinja2 import Environment
from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from newsletter.core.clock import utc_now
from newsletter.core.db import session_scope, upsert_insert
from newsletter.core.errors import EditionNotFoundError
from newsletter.core.settings import Settings
from newsletter.core.templating import make_template_environment
from newsletter.ingest.store import load_papers_for_day
from newsletter.models import Edition, EditionPaper, EditionStatus, Paper
from newsletter.rank import rank_papers
from newsletter.render import render_digest
from newsletter.values import RankedPaper, RenderedDigest, new_link_marker
from subscribers.tokens import preferences_url, unsubscribe_url


def prepare_edition(
    settings: Settings,
    engine: Engine,
    *,
    day: dt.date,
    now: dt.datetime | None = None,
    env: Environment | None = None,
) -> Edition:
    """Rank and render the day's papers into its edition; a started edition stays as it is.

    Ranking is measured at the end of the day unless `now` is given, so the same
    day renders the same digest whenever it is rendered. Processes preparing
    the same day at once all succeed and share one edition.
    """
    with session_scope(engine) as session:
        edition = _find_edition(session, day)
        if edition is not None and edition.status != EditionStatus.DRAFT:
            return edition
        digest = _render_day(settings, session, day=day, now=now or end_of_day(day), env=env)
        edition = _lock_edition_row(session, day)
        if edition.status != EditionStatus.DRAFT:
            return edition  # a send started while this process was rendering
        edition.subject = digest.subject
        edition.html = digest.html
        edition.text = digest.text
        edition.link_marker = digest.link_marker
        edition.rendered_at = utc_now()
        session.flush()
        assert edition.id is not None
        _store_ranking(session, edition.id, digest.papers)
        return edition


def end_of_day(day: dt.date) -> dt.datetime:
    """Midnight UTC after the day: the fixed moment an edition's ages are measured at."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def _render_day(
    settings: Settings, session: Session, *, day: dt.date, now: dt.datetime, env: Environment | None
) -> RenderedDigest:
    papers = load_papers_for_day(session, day)
    if not papers:
        raise EditionNotFoundError(
            f"no papers are stored for {day.isoformat()}; "
            f"run `newsletter ingest --date {day.isoformat()}` first"
        )
    ranked = rank_papers(papers, now=now, top_n=settings.top_n)
    return render_digest(
        env or make_template_environment(settings.templates_dir),
        ranked,
        edition_date=day,
        base_url=settings.base_url,
        postal_address=settings.postal_address,
        list_name=settings.list_name,
        link_marker=new_link_marker(),
    )


def _store_ranking(session: Session, edition_id: int, ranked: tuple[RankedPaper, ...]) -> None:
    session.exec(delete(EditionPaper).where(col(EditionPaper.edition_id) == edition_id))
    ids = [item.paper.arxiv_id for item in ranked]
    paper_ids = dict(
        session.exec(select(Paper.arxiv_id, Paper.id).where(col(Paper.arxiv_id).in_(ids))).all()
    )
    for item in ranked:
        paper_id = paper_ids[item.paper.arxiv_id]
        assert paper_id is not None
        session.add(
            EditionPaper(
                edition_id=edition_id, paper_id=paper_id, position=item.position, score=item.score
            )
        )


def _lock_edition_row(session: Session, day: dt.date) -> Edition:
    """The day's edition row, inserted if missing, locked until the transaction ends.

    Find-then-insert lets two processes preparing a new day both insert, and the
    loser fail on the unique date. Here the losing insert does nothing instead;
    the row lock then makes it wait for the winner to commit, and it re-reads
    the row (a send may have started meanwhile) before writing over it.
    """
    values = Edition(date=day).model_dump(exclude={"id"})
    # On SQLite, the other supported database, writers queue on its file lock.
    insert = upsert_insert(session.get_bind().dialect.name, Edition)
    session.execute(insert.values(values).on_conflict_do_nothing(index_elements=["date"]))
    statement = (
        select(Edition)
        .where(Edition.date == day)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.exec(statement).one()


def _find_edition(session: Session, day: dt.date) -> Edition | None:
    return session.exec(select(Edition).where(Edition.date == day)).first()


def get_edition(engine: Engine, day: dt.date) -> Edition | None:
    """The stored edition of a day, if any."""
    with Session(engine, expire_on_commit=False) as session:
        return _find_edition(session, day)


@dataclass(frozen=True, slots=True)
class EditionStamp:
    """Which version of a day's edition is stored, without its (large) content."""

    id: int
    status: EditionStatus
    rendered_at: dt.datetime | None


def edition_stamp(engine: Engine, day: dt.date) -> EditionStamp | None:
    """The id, status and render time of a day's edition, if any (one small query)."""
    with engine.connect() as connection:
        row = connection.execute(
            select(Edition.id, Edition.status, Edition.rendered_at).where(Edition.date == day)
        ).first()
    if row is None or row[0] is None:
        return None
    return EditionStamp(id=row[0], status=EditionStatus(row[1]), rendered_at=row[2])


def get_edition_by_id(engine: Engine, edition_id: int) -> Edition | None:
    """The stored edition with this id, if any."""
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Edition, edition_id)


def list_editions(engine: Engine, limit: int = 30) -> list[Edition]:
    """The newest editions first."""
    with Session(engine, expire_on_commit=False) as session:
        statement = select(Edition).order_by(col(Edition.date).desc()).limit(limit)
        return list(session.exec(statement).all())


def preview_version(edition: Edition, settings: Settings) -> tuple[str, str]:
    """The edition's HTML and text as a reader gets them, with links for a sample reader."""
    return _as_digest(edition).personalised(
        unsubscribe_url=unsubscribe_url(settings.base_url, settings.secret_key, "preview"),
        preferences_url=preferences_url(settings.base_url, settings.secret_key, "preview"),
    )


def _as_digest(edition: Edition) -> RenderedDigest:
    return RenderedDigest(
        edition_date=edition.date,
        subject=edition.subject,
        html=edition.html,
        text=edition.text,
        link_marker=edition.link_marker,
    )


def web_version(edition: Edition, *, base_url: str) -> tuple[str, str]:
    """The edition's HTML and text with non-personal links where each reader's own would go."""
    return _as_digest(edition).personalised(
        unsubscribe_url=f"{base_url}/#unsubscribe", preferences_url=f"{base_url}/#preferences"
    )


@dataclass(frozen=True)
class RankedEntry:
    """A paper's place and score in a stored edition."""

    position: int
    score: float
    arxiv_id: str
    title: str


def edition_ranking(engine: Engine, edition_id: int, *, limit: int = 10) -> list[RankedEntry]:
    """The first `limit` papers of a stored edition's ranking, best first."""
    with Session(engine) as session:
        rows = session.exec(
            select(EditionPaper.position, EditionPaper.score, Paper.arxiv_id, Paper.title)
            .join(Paper, col(Paper.id) == col(EditionPaper.paper_id))
            .where(col(EditionPaper.edition_id) == edition_id)
            .order_by(col(EditionPaper.position))
            .limit(limit)
        ).all()
    return [RankedEntry(*row) for row in rows]
