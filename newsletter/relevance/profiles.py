"""What personal ranking takes and gives: plain values, without the numerical libraries.

Topics, papers' words, readers' profiles and picks are read and written by
code that never ranks (a sending worker reading stored selections, the web's
preferences page), so they live apart from the model (`model`, `terms`),
whose numpy and scipy cost a sending process a third of its start-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def paper_text(title: str, abstract: str, keywords: Iterable[str] = ()) -> str:
    """What a paper is about, as one text: the title counts twice, it is the densest part."""
    return "\n".join([title, title, abstract, ", ".join(keywords)])


@dataclass(frozen=True, slots=True)
class Topic:
    """A configured topic: what the sign-up form shows and what it means for ranking."""

    name: str
    description: str
    keywords: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    def text(self) -> str:
        return "\n".join([self.name, self.description, ", ".join(self.keywords)])


@dataclass(frozen=True, slots=True)
class PaperText:
    """The words of one paper, by arXiv id."""

    arxiv_id: str
    title: str
    abstract: str = ""
    keywords: tuple[str, ...] = ()

    def text(self) -> str:
        return paper_text(self.title, self.abstract, self.keywords)


@dataclass(frozen=True, slots=True)
class ReaderProfile:
    """What one reader asked for and told us; papers by arXiv id."""

    topics: tuple[str, ...] = ()
    interests: str = ""
    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # shown in an earlier digest, neither liked nor disliked

    @property
    def is_empty(self) -> bool:
        """No positive signal at all: such a reader gets the trending digest."""
        return not (self.topics or self.interests.strip() or self.liked)

    @property
    def judgements(self) -> int:
        """How many papers the reader has judged: enough of them train their own model."""
        return len(self.liked) + len(self.disliked)


@dataclass(frozen=True, slots=True)
class Pick:
    """One paper chosen for a reader: its score and the one line that says why."""

    arxiv_id: str
    score: float
    why: str
