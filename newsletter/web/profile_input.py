"""A reader's profile as the forms and the JSON API send it, turned into checked store values.

Shared by the sign-up form, the preferences page and `/api/preferences`: the
rules live in `subscribers.store.check_profile` and `subscribers.library`;
this module only fills in what a request left out and finds the titles and
abstracts of pasted arXiv ids among the stored papers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from newsletter.core.errors import InvalidSubscriberDetailsError
from newsletter.models import Paper
from subscribers import store
from subscribers.library import LibraryPaper, parse_arxiv_ids
from subscribers.models import JudgementSource, Subscriber, Verdict

papers = Paper.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ProfileFields:
    """The profile fields of one request; None where the request did not send one."""

    interests: str | None = None
    digest_mode: str | None = None
    personal_count: int | str | None = None
    frequency: str | None = None
    weekly_day: int | str | None = None

    def is_empty(self) -> bool:
        """Whether the request sent no profile field at all."""
        return all(
            value is None
            for value in (
                self.interests,
                self.digest_mode,
                self.personal_count,
                self.frequency,
                self.weekly_day,
            )
        )


def _number(value: int | str | None, fallback: int, what: str) -> int:
    if value is None:
        return fallback
    if isinstance(value, bool):
        raise InvalidSubscriberDetailsError(f"{what} must be a whole number")
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 3:
        raise InvalidSubscriberDetailsError(f"{what} must be a whole number")
    return int(text)


def checked_profile(fields: ProfileFields, current: Subscriber | None) -> store.Profile:
    """The checked profile: what the request sent, the reader's current values for the rest."""
    return store.check_profile(
        interests=fields.interests
        if fields.interests is not None
        else (current.interests if current else ""),
        digest_mode=fields.digest_mode
        if fields.digest_mode is not None
        else (str(current.digest_mode) if current else "personal"),
        personal_count=_number(
            fields.personal_count,
            current.personal_count if current else 5,
            "the number of papers",
        ),
        frequency=fields.frequency
        if fields.frequency is not None
        else (str(current.frequency) if current else "daily"),
        weekly_day=_number(fields.weekly_day, current.weekly_day if current else 0, "the weekday"),
    )


def pasted_papers(session: Session, text: str | Sequence[str]) -> list[store.JudgedPaper]:
    """Liked papers from pasted ids or arxiv.org links, titled from the stored papers when known."""
    joined = text if isinstance(text, str) else "\n".join(text)
    ids = parse_arxiv_ids(joined)
    if not ids:
        return []
    known = {
        row.arxiv_id: row
        for row in session.connection().execute(
            select(papers.c.arxiv_id, papers.c.title, papers.c.abstract).where(
                papers.c.arxiv_id.in_(ids)
            )
        )
    }
    liked = []
    for arxiv_id in ids:
        row = known.get(arxiv_id)
        liked.append(
            store.JudgedPaper(
                arxiv_id=arxiv_id,
                title=row.title if row is not None else "",
                abstract=row.abstract if row is not None else "",
                verdict=Verdict.LIKED,
                source=JudgementSource.PASTED,
            )
        )
    return liked


def library_papers(entries: Sequence[LibraryPaper]) -> list[store.JudgedPaper]:
    """A BibTeX library's papers as liked `library` judgements."""
    return [
        store.JudgedPaper(
            arxiv_id=entry.arxiv_id,
            title=entry.title,
            abstract=entry.abstract,
            verdict=Verdict.LIKED,
            source=JudgementSource.LIBRARY,
        )
        for entry in entries
    ]
