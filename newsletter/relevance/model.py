"""Which of the day's papers each reader should see first, and why, in one pass for all readers.

A reader's profile is a handful of documents: the free text of what they work
on, the descriptions of the topics they chose, and the papers they liked
(pasted ids, a BibTeX library, "More like this" clicks). A candidate paper's
score is a weighted sum, over those kinds, of its best cosine similarity to a
document of that kind, minus its similarity to papers the reader disliked and
a small penalty for resembling what they were shown and passed over:

    score = (Σ_kind W_kind · max_{d ∈ kind} cos(d, p)) / Σ_{kinds present} W_kind
            − W_disliked · max_{d ∈ disliked} cos(d, p)
            − W_skipped · mean_{d ∈ skipped} cos(d, p)

The max (not the mean) per kind keeps a reader with two unrelated interests
from getting papers halfway between them; the division makes a reader with
only topics and one with a long profile comparable to one relevance floor.
Every similarity is a dot product of L2-normalised TF-IDF vectors, so a day is
one sparse matrix product: unique profile documents × candidate papers.
The constants were chosen with `benchmarks/relevance.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from newsletter.relevance.terms import TermSpace, TermStatistics, WeightedTerms, paper_text


class Source(StrEnum):
    """Where a profile document came from; it names the "why" line."""

    INTERESTS = "interests"
    TOPIC = "topic"
    LIKED = "liked"


# Relative weight of each kind of positive document (see the module's formula).
KIND_WEIGHTS: Mapping[Source, float] = {
    Source.INTERESTS: 1.0,
    Source.TOPIC: 0.6,
    Source.LIKED: 1.0,
}
DISLIKED_WEIGHT = 0.5
SKIPPED_WEIGHT = 0.15
# Below this score a paper is not "for you", however few clear it.
RELEVANCE_FLOOR = 0.08
# A two-word phrase says more than a word: "concept erasure" over "concept".
BIGRAM_PREFERENCE = 1.5
# A chunk of readers scored at once: bounds memory at chunk × documents × candidates.
READERS_PER_CHUNK = 2_000


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


@dataclass(frozen=True, slots=True)
class Pick:
    """One paper chosen for a reader: its score and the one line that says why."""

    arxiv_id: str
    score: float
    why: str


@dataclass(frozen=True, slots=True)
class _Document:
    source: Source | None  # None: a negative document
    label: str  # the topic's name, the liked paper's title, or the interest text


class RelevanceModel:
    """Today's candidates against any number of reader profiles.

    `library` holds the texts of every paper a profile may name (liked,
    disliked, skipped); ids it lacks are ignored.
    """

    def __init__(
        self,
        statistics: TermStatistics,
        candidates: Sequence[PaperText],
        *,
        topics: Sequence[Topic] = (),
        library: Mapping[str, PaperText] | None = None,
    ) -> None:
        self.statistics = statistics
        self.candidates = tuple(candidates)
        self.topics = {topic.name.casefold(): topic for topic in topics}
        self.library = dict(library or {})
        for paper in self.candidates:
            self.library.setdefault(paper.arxiv_id, paper)
        self._candidate_terms = [WeightedTerms.of(p.text(), statistics) for p in self.candidates]
        self._space = TermSpace(self._candidate_terms)
        # Candidates as columns: documents @ this = cosine similarities.
        self._candidate_columns = self._space.matrix(self._candidate_terms).T.tocsr()
        self._positions = {paper.arxiv_id: i for i, paper in enumerate(self.candidates)}
        self._paper_vectors: dict[str, WeightedTerms] = {}
        self._topic_vectors: dict[str, WeightedTerms] = {}

    def rank(
        self,
        profiles: Sequence[ReaderProfile],
        *,
        count: int = 5,
        floor: float = RELEVANCE_FLOOR,
    ) -> list[list[Pick]]:
        """Each reader's best `count` candidates above `floor`, best first (empty: no profile)."""
        picks: list[list[Pick]] = []
        for start in range(0, len(profiles), READERS_PER_CHUNK):
            chunk = profiles[start : start + READERS_PER_CHUNK]
            picks.extend(self._rank_chunk(chunk, count=count, floor=floor))
        return picks

    def scores(self, profile: ReaderProfile) -> NDArray[np.float64]:
        """One reader's score for every candidate, in candidate order (for evaluation)."""
        total, _, _ = self._score_chunk([profile])
        row: NDArray[np.float64] = total[0]
        return row

    # ---- internals -----------------------------------------------------------------------

    def _paper_vector(self, arxiv_id: str) -> WeightedTerms | None:
        vector = self._paper_vectors.get(arxiv_id)
        if vector is None:
            paper = self.library.get(arxiv_id)
            if paper is None:
                return None
            vector = self._paper_vectors[arxiv_id] = WeightedTerms.of(paper.text(), self.statistics)
        return vector

    def _topic_vector(self, name: str) -> tuple[Topic, WeightedTerms] | None:
        topic = self.topics.get(name.casefold())
        if topic is None:
            return None
        vector = self._topic_vectors.get(topic.name)
        if vector is None:
            vector = self._topic_vectors[topic.name] = WeightedTerms.of(
                topic.text(), self.statistics
            )
        return topic, vector

    def _score_chunk(
        self, profiles: Sequence[ReaderProfile]
    ) -> tuple[NDArray[np.float64], NDArray[np.int64], list[list[_Document]]]:
        """Scores (readers × candidates), the best positive document per cell, and the documents.

        Documents shared by readers (topics, papers) are projected once per chunk.
        """
        unique: dict[tuple[str, str], int] = {}
        vectors: list[WeightedTerms] = []

        def row_of(key: tuple[str, str], vector: WeightedTerms) -> int:
            row = unique.get(key)
            if row is None:
                row = unique[key] = len(vectors)
                vectors.append(vector)
            return row

        # Per reader: (row, kind) of each positive document; rows of negatives.
        layouts: list[list[tuple[int, Source, _Document]]] = []
        disliked_rows: list[list[int]] = []
        skipped_rows: list[list[int]] = []
        for index, profile in enumerate(profiles):
            positives: list[tuple[int, Source, _Document]] = []
            if profile.interests.strip():
                vector = WeightedTerms.of(profile.interests, self.statistics)
                if vector:
                    key = ("interests", str(index))
                    positives.append(
                        (row_of(key, vector), Source.INTERESTS, _Document(Source.INTERESTS, ""))
                    )
            for name in profile.topics:
                found = self._topic_vector(name)
                if found is not None and found[1]:
                    topic, vector = found
                    positives.append(
                        (
                            row_of(("topic", topic.name), vector),
                            Source.TOPIC,
                            _Document(Source.TOPIC, topic.name),
                        )
                    )
            for arxiv_id in profile.liked:
                paper_vector = self._paper_vector(arxiv_id)
                if paper_vector:
                    positives.append(
                        (
                            row_of(("paper", arxiv_id), paper_vector),
                            Source.LIKED,
                            _Document(Source.LIKED, self.library[arxiv_id].title),
                        )
                    )
            layouts.append(positives)
            disliked_rows.append(self._paper_rows(profile.disliked, row_of))
            skipped_rows.append(self._paper_rows(profile.skipped, row_of))

        readers, candidates = len(profiles), len(self.candidates)
        total = np.zeros((readers, candidates))
        best_document = np.full((readers, candidates), -1, dtype=np.int64)
        documents: list[list[_Document]] = [[d for _, _, d in layout] for layout in layouts]
        if not vectors or not candidates:
            return total, best_document, documents
        similarity = (self._space.matrix(vectors) @ self._candidate_columns).toarray()

        for reader, positives in enumerate(layouts):
            if not positives:
                continue
            kinds = {kind for _, kind, _ in positives}
            weight_sum = sum(KIND_WEIGHTS[kind] for kind in kinds)
            best_contribution = np.full(candidates, -np.inf)
            for position, (row, kind, _) in enumerate(positives):
                contribution = similarity[row] * (KIND_WEIGHTS[kind] / weight_sum)
                better = contribution > best_contribution
                best_document[reader, better] = position
                best_contribution = np.maximum(best_contribution, contribution)
            for kind in kinds:
                rows = [row for row, k, _ in positives if k is kind]
                total[reader] += similarity[rows].max(axis=0) * (KIND_WEIGHTS[kind] / weight_sum)
            if disliked_rows[reader]:
                total[reader] -= DISLIKED_WEIGHT * similarity[disliked_rows[reader]].max(axis=0)
            if skipped_rows[reader]:
                total[reader] -= SKIPPED_WEIGHT * similarity[skipped_rows[reader]].mean(axis=0)
        return total, best_document, documents

    def _paper_rows(
        self,
        arxiv_ids: Sequence[str],
        row_of: Callable[[tuple[str, str], WeightedTerms], int],
    ) -> list[int]:
        rows = []
        for arxiv_id in arxiv_ids:
            vector = self._paper_vector(arxiv_id)
            if vector:
                rows.append(row_of(("paper", arxiv_id), vector))
        return rows

    def _rank_chunk(
        self, profiles: Sequence[ReaderProfile], *, count: int, floor: float
    ) -> list[list[Pick]]:
        total, best_document, documents = self._score_chunk(profiles)
        picks: list[list[Pick]] = []
        for reader, profile in enumerate(profiles):
            if profile.is_empty or not documents[reader]:
                picks.append([])
                continue
            scores = total[reader].copy()
            for arxiv_id in (*profile.liked, *profile.disliked):
                position = self._candidate_position(arxiv_id)
                if position is not None:
                    scores[position] = -np.inf  # already judged: not news to them
            order = np.argsort(-scores, kind="stable")[:count]
            chosen = []
            for position in order:
                score = float(scores[position])
                if score < floor:
                    break
                document = documents[reader][int(best_document[reader, position])]
                paper = self.candidates[int(position)]
                chosen.append(Pick(paper.arxiv_id, score, self._why(document, profile, paper)))
            picks.append(chosen)
        return picks

    def _candidate_position(self, arxiv_id: str) -> int | None:
        return self._positions.get(arxiv_id)

    def _why(self, document: _Document, profile: ReaderProfile, paper: PaperText) -> str:
        if document.source is Source.LIKED:
            return f"like “{document.label}”, which you liked"
        if document.source is Source.TOPIC:
            return f"in your topic {document.label}"
        phrases = self._shared_phrases(profile.interests, paper)
        if not phrases:
            return "matches your interests"
        return f"matches your interest in {' and '.join(phrases)}"

    def _shared_phrases(self, interests: str, paper: PaperText, most: int = 2) -> list[str]:
        """The terms that link the reader's words to the paper most, bigrams before their words."""
        mine = WeightedTerms.of(interests, self.statistics).weights
        theirs = self._paper_vector(paper.arxiv_id)
        if theirs is None:
            return []
        shared = sorted(
            (
                (mine[term] * weight * (BIGRAM_PREFERENCE if " " in term else 1.0), term)
                for term, weight in theirs.weights.items()
                if term in mine
            ),
            reverse=True,
        )
        chosen: list[str] = []
        used: set[str] = set()
        for _, term in shared:
            words = set(term.split())
            if words & used:
                continue  # "diffusion" says nothing more after "diffusion models"
            chosen.append(term)
            used |= words
            if len(chosen) == most:
                break
        return chosen
