"""Which of the day's papers each reader should see first, and why, in one pass for all readers.

A reader's profile is a handful of documents: the free text of what they work
on, the descriptions of the topics they chose, and the papers they liked
(pasted ids, a BibTeX library, "More like this" clicks). Every document and
paper is an L2-normalised TF-IDF vector (`terms`), so a similarity is a dot
product and a day is one sparse matrix product: profile documents × papers.

Two scorers, measured against each other with `benchmarks/relevance.py`:

- **The profile formula**, for readers who have judged few papers. A paper's
  score is a weighted sum, over the kinds of positive document, of its best
  cosine to a document of that kind, minus its likeness to disliked papers
  and a little for resembling what was shown and passed over:

      score = Σ_kind W_kind · max_{d ∈ kind} cos(d, p) / Σ_{kinds present} W_kind
              − W_disliked · max_{d ∈ disliked} cos(d, p)
              − W_skipped · mean_{d ∈ skipped} cos(d, p)

  The max (not the mean) keeps a reader with two unrelated interests from
  getting papers halfway between them; the division makes short and long
  profiles comparable.
- **The reader's own linear model** (`_LearnedScorer`), once they have judged
  `LEARNED_MIN_JUDGEMENTS` papers: their documents against a background of
  recent papers, in the way arxiv-sanity-lite trains an SVM per tag.

"For you" holds a paper only if it beats, for this reader, most recent
papers: its score must reach the `FLOOR_QUANTILE` quantile of the scores the
same reader's scorer gives the background, and be above zero. A relative floor
works for both scorers (whose scales differ) and for short and long profiles.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix, vstack

from newsletter.core.memory import cycle_collection_paused
from newsletter.relevance.profiles import PaperText, Pick, ReaderProfile, Topic
from newsletter.relevance.terms import (
    TermSpace,
    TermStatistics,
    WeightedTerms,
    analyzer,
)


class Source(StrEnum):
    """Where a profile document came from; it names the "why" line."""

    INTERESTS = "interests"
    TOPIC = "topic"
    LIKED = "liked"


# ---- the constants, each chosen with benchmarks/relevance.py ---------------------------------

# The profile formula: relative weight of each kind of positive document.
KIND_WEIGHTS: Mapping[Source, float] = {
    Source.INTERESTS: 1.0,
    Source.TOPIC: 0.6,  # a topic is broader than what the reader works on
    Source.LIKED: 1.0,
}
DISLIKED_WEIGHT = 0.5
SKIPPED_WEIGHT = 0.15
# The reader's own model: how many judged papers it needs, its ridge, and how
# much each kind of example counts (background papers: weak "not mine").
LEARNED_MIN_JUDGEMENTS = 3
LEARNED_RIDGE = 1.0
LEARNED_WEIGHTS: Mapping[str, float] = {
    Source.INTERESTS: 1.0,
    Source.TOPIC: 0.6,
    Source.LIKED: 1.0,
    "disliked": 1.0,
    "skipped": 0.3,
    "background": 0.05,
}
# "For you" only holds papers that score above this share of recent papers.
FLOOR_QUANTILE = 0.9
# Without a background to compare with (a new install), an absolute cosine floor.
ABSOLUTE_FLOOR = 0.03
# Two words say more than one: "concept erasure" before "concept".
BIGRAM_PREFERENCE = 1.5
# Readers scored at once: bounds memory at chunk × documents × papers.
READERS_PER_CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class _Positive:
    row: int  # in the chunk's document matrix
    source: Source
    label: str  # the topic's name or the liked paper's title


@dataclass(frozen=True, slots=True)
class _Reader:
    """One profile's documents, as rows of the chunk's document matrix."""

    positives: list[_Positive]
    disliked: list[int]
    skipped: list[int]
    interests: str = ""  # their words, when a positive document: the why line quotes them


@dataclass(frozen=True, slots=True)
class _Chunk:
    """A chunk of readers laid out as rows of one document matrix.

    The rows of the readers' own words come first (one per distinct text),
    then the documents readers share (topics, papers), each once.
    """

    readers: list[_Reader]
    documents: csr_matrix  # rows × the term space
    full: list[WeightedTerms | str]  # per row: a shared document's vector, or a reader's text


@dataclass(frozen=True, slots=True)
class _Gram:
    """Likeness of every two documents some readers hold; `index`: a chunk row's place in it."""

    likeness: NDArray[np.float64]
    index: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class _Scored:
    """One reader's scores per candidate and their floor.

    `strongest` (the learned model's): per candidate, the index of the positive
    document that weighed most; None for the formula, which finds it for the
    picked papers only.
    """

    scores: NDArray[np.float64]
    floor: float
    strongest: NDArray[np.int64] | None = None


class RelevanceModel:
    """Today's candidates against any number of reader profiles.

    `library` holds the texts of every paper a profile may name (liked,
    disliked, skipped); ids it lacks are ignored. `background` is recent
    stored papers other than today's: what "for you" must stand out from.
    """

    def __init__(
        self,
        statistics: TermStatistics,
        candidates: Sequence[PaperText],
        *,
        topics: Sequence[Topic] = (),
        library: Mapping[str, PaperText] | None = None,
        background: Sequence[PaperText] = (),
    ) -> None:
        self.statistics = statistics
        self.candidates = tuple(candidates)
        self.topics = {topic.name.casefold(): topic for topic in topics}
        self.library = dict(library or {})
        for paper in self.candidates:
            self.library.setdefault(paper.arxiv_id, paper)
        self._positions = {paper.arxiv_id: i for i, paper in enumerate(self.candidates)}
        self._paper_vectors: dict[str, WeightedTerms] = {}
        self._topic_vectors: dict[str, WeightedTerms] = {}
        self._projected: dict[tuple[str, str], csr_matrix] = {}  # shared documents' rows
        candidate_terms = [WeightedTerms.of(p.text(), statistics) for p in self.candidates]
        background_terms = [
            WeightedTerms.of(p.text(), statistics)
            for p in background
            if p.arxiv_id not in self._positions
        ]
        # One term space for candidates and background: only their terms can
        # contribute to a document's dot product with either.
        self._space = TermSpace([*candidate_terms, *background_terms])
        self._candidate_rows = self._space.matrix(candidate_terms)
        self._candidate_columns = self._candidate_rows.T.tocsr()
        self._background_columns = self._space.matrix(background_terms).T.tocsr()
        self._shared_terms = _SharedTerms(self._space, self._candidate_rows)
        self._learned = _LearnedScorer(self._space, background_terms, candidate_terms)

    def add_library(self, library: Mapping[str, PaperText]) -> None:
        """More papers profiles may name (a caller ranking readers batch by batch).

        As at construction, a reader's text of a paper comes before the
        candidate's own, unless that paper's vector is made already.
        """
        for arxiv_id, paper in library.items():
            if arxiv_id not in self._paper_vectors:
                self.library[arxiv_id] = paper

    def rank(
        self,
        profiles: Sequence[ReaderProfile],
        *,
        count: int | Sequence[int] = 5,
        analysed: Mapping[str, Sequence[str]] | None = None,
    ) -> list[list[Pick]]:
        """Each reader's best `count` candidates that clear their floor, best first.

        `count` is one for all, or each reader's own. An empty list for a
        reader with no profile, or when nothing clears it. `analysed` may hold
        readers' words already split into terms (`analyzer`).
        """
        counts = [count] * len(profiles) if isinstance(count, int) else list(count)
        picks: list[list[Pick]] = []
        with cycle_collection_paused():
            for start in range(0, len(profiles), READERS_PER_CHUNK):
                end = start + READERS_PER_CHUNK
                picks.extend(
                    self._rank_chunk(profiles[start:end], counts[start:end], analysed or {})
                )
        return picks

    def scores(self, profile: ReaderProfile) -> NDArray[np.float64]:
        """One reader's score for every candidate, in candidate order (for evaluation)."""
        [scored], _, _ = self._score_chunk([profile], {})
        return scored.scores

    def uses_learned_model(self, profile: ReaderProfile) -> bool:
        """Whether this reader is ranked by their own model rather than the formula."""
        return self._learned.ready and profile.judgements >= LEARNED_MIN_JUDGEMENTS

    # ---- documents -----------------------------------------------------------------------

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

    def _layout(
        self, profiles: Sequence[ReaderProfile], analysed: Mapping[str, Sequence[str]]
    ) -> _Chunk:
        """The chunk's distinct documents, and each reader's rows among them.

        Readers' words are weighed together (`TermSpace.weigh`); documents
        shared by readers (topics, papers) appear once, their rows made once
        per model.
        """
        texts: dict[str, int] = {}  # a reader's words → their row
        terms_of_texts: list[Sequence[str]] = []
        for profile in profiles:
            text = profile.interests
            if text not in texts and text.strip():
                terms = analysed.get(text)
                if terms is None:
                    terms = analyzer()(text)
                # Words without a single term are no document (nothing to weigh).
                texts[text] = len(terms_of_texts) if terms else -1
                if terms:
                    terms_of_texts.append(terms)
        shared: dict[tuple[str, str], int] = {}
        shared_vectors: list[WeightedTerms] = []
        first_shared = len(terms_of_texts)

        def row_of(key: tuple[str, str], vector: WeightedTerms) -> int:
            row = shared.get(key)
            if row is None:
                row = shared[key] = first_shared + len(shared_vectors)
                shared_vectors.append(vector)
            return row

        def paper_rows(arxiv_ids: Sequence[str]) -> list[int]:
            if not arxiv_ids:  # most readers judged nothing: the common case, kept cheap
                return []
            found = ((a, self._paper_vector(a)) for a in arxiv_ids)
            return [row_of(("paper", a), v) for a, v in found if v]

        readers = []
        for profile in profiles:
            positives = []
            own = texts.get(profile.interests, -1)
            if own >= 0:
                positives.append(_Positive(own, Source.INTERESTS, ""))
            for name in profile.topics:
                found = self._topic_vector(name)
                if found is not None and found[1]:
                    topic, vector = found
                    row = row_of(("topic", topic.name), vector)
                    positives.append(_Positive(row, Source.TOPIC, topic.name))
            for arxiv_id in profile.liked:
                paper_vector = self._paper_vector(arxiv_id)
                if paper_vector:
                    row = row_of(("paper", arxiv_id), paper_vector)
                    positives.append(_Positive(row, Source.LIKED, self.library[arxiv_id].title))
            readers.append(
                _Reader(
                    positives,
                    paper_rows(profile.disliked),
                    paper_rows(profile.skipped),
                    profile.interests if own >= 0 else "",
                )
            )
        own_rows = self._space.weigh(terms_of_texts, self.statistics)
        shared_rows = [
            self._shared_row(key, vector)
            for key, vector in zip(shared, shared_vectors, strict=True)
        ]
        documents = vstack([own_rows, *shared_rows], format="csr")
        full: list[WeightedTerms | str] = [*(t for t in texts if texts[t] >= 0), *shared_vectors]
        return _Chunk(readers, documents, full)

    def _shared_row(self, key: tuple[str, str], vector: WeightedTerms) -> csr_matrix:
        row = self._projected.get(key)
        if row is None:
            row = self._projected[key] = self._space.matrix([vector])
        return row

    def _full_vector(self, document: WeightedTerms | str) -> WeightedTerms:
        """A row's vector over all its terms (the learned model compares readers' own documents)."""
        if isinstance(document, WeightedTerms):
            return document
        return WeightedTerms.of(document, self.statistics)

    # ---- scoring -------------------------------------------------------------------------

    def _score_chunk(
        self, profiles: Sequence[ReaderProfile], analysed: Mapping[str, Sequence[str]]
    ) -> tuple[list[_Scored], _Chunk, NDArray[np.float64]]:
        """Each reader's scores and floor; the chunk's rows; documents × candidates similarity."""
        chunk = self._layout(profiles, analysed)
        readers, documents = chunk.readers, chunk.documents
        candidates = len(self.candidates)
        nothing = _Scored(np.zeros(candidates), np.inf)
        if not documents.shape[0] or not candidates:
            return [nothing for _ in profiles], chunk, np.zeros((0, candidates))
        to_candidates = (documents @ self._candidate_columns).toarray()
        to_background = (documents @ self._background_columns).toarray()
        scored: list[_Scored | None] = []
        by_formula: list[int] = []
        by_model: list[int] = []
        for index, (profile, reader) in enumerate(zip(profiles, readers, strict=True)):
            if not reader.positives:
                scored.append(nothing)
            else:
                scored.append(None)
                (by_model if self.uses_learned_model(profile) else by_formula).append(index)
        if by_model:
            learners = [readers[i] for i in by_model]
            for index, result in zip(
                by_model,
                self._learned.score_many(
                    learners, self._own_gram(chunk, learners), to_candidates, to_background
                ),
                strict=True,
            ):
                scored[index] = result
        if by_formula:
            totals, floors = _formula(
                [readers[i] for i in by_formula], to_candidates, to_background
            )
            for slot, index in enumerate(by_formula):
                scored[index] = _Scored(totals[slot], float(floors[slot]))
        return [s for s in scored if s is not None], chunk, to_candidates

    def _own_gram(self, chunk: _Chunk, learners: Sequence[_Reader]) -> _Gram:
        """The likeness of every two documents the learned readers hold, over all their terms.

        Their own documents are compared over every term they have, not only
        the candidates' (`TermSpace`).
        """
        needed: set[int] = set()
        for reader in learners:
            needed.update(p.row for p in reader.positives)
            needed.update(reader.disliked)
            needed.update(reader.skipped)
        rows = sorted(needed)
        vectors = [self._full_vector(chunk.full[row]) for row in rows]
        matrix = TermSpace(vectors).matrix(vectors)
        return _Gram((matrix @ matrix.T).toarray(), dict(zip(rows, range(len(rows)), strict=True)))

    def _rank_chunk(
        self,
        profiles: Sequence[ReaderProfile],
        counts: Sequence[int],
        analysed: Mapping[str, Sequence[str]],
    ) -> list[list[Pick]]:
        all_scored, chunk, to_candidates = self._score_chunk(profiles, analysed)
        if not self.candidates or not profiles:
            return [[] for _ in profiles]
        scores = np.stack([scored.scores for scored in all_scored])
        for row, profile in enumerate(profiles):
            for arxiv_id in (*profile.liked, *profile.disliked):
                position = self._positions.get(arxiv_id)
                if position is not None:
                    scores[row, position] = -np.inf  # judged already: not news to them
        # Each reader's best (ties keep candidate order), as deep as their own
        # count, and only what clears their floor: one (reader, paper) pair per pick.
        deepest = min(max(counts, default=0), scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :deepest]
        best_scores = np.take_along_axis(scores, order, axis=1)
        floors = np.array([scored.floor for scored in all_scored])
        wanted = np.array([0 if p.is_empty else c for p, c in zip(profiles, counts, strict=True)])
        cleared = (best_scores >= floors[:, None]) & (np.arange(deepest) < wanted[:, None])
        readers, ranks = np.nonzero(cleared)  # reader by reader, best first
        positions = order[readers, ranks]
        strongest = self._strongest(chunk, all_scored, to_candidates, readers, positions)
        whys = self._whys(chunk, positions, strongest)
        picks: list[list[Pick]] = [[] for _ in profiles]
        candidates = self.candidates
        for reader, position, score, why in zip(
            readers.tolist(),
            positions.tolist(),
            best_scores[readers, ranks].tolist(),
            whys,
            strict=True,
        ):
            picks[reader].append(Pick(candidates[position].arxiv_id, score, why))
        return picks

    def _strongest(
        self,
        chunk: _Chunk,
        all_scored: Sequence[_Scored],
        to_candidates: NDArray[np.float64],
        readers: NDArray[np.int64],
        positions: NDArray[np.int64],
    ) -> list[_Positive]:
        """For each pick, the reader's positive document of largest weighted likeness to it.

        For every pick at once: each (pick, positive document) pair's weighted
        likeness, then the first largest within each pick's segment. The
        learned model found its own (`_Scored.strongest`).
        """
        if not len(readers):
            return []
        positives = [reader.positives for reader in chunk.readers]
        sizes = np.array([len(own) for own in positives], dtype=np.int64)
        starts = np.cumsum(sizes) - sizes
        rows = np.array([p.row for own in positives for p in own], dtype=np.int64)
        weights = np.array([KIND_WEIGHTS[p.source] for own in positives for p in own])
        per_pick = sizes[readers]
        pick_of = np.repeat(np.arange(len(readers)), per_pick)
        pick_starts = np.cumsum(per_pick) - per_pick
        within = np.arange(len(pick_of)) - pick_starts[pick_of]
        document = starts[readers][pick_of] + within
        likeness = to_candidates[rows[document], positions[pick_of]] * weights[document]
        largest = np.maximum.reduceat(likeness, pick_starts)
        first = np.where(likeness == largest[pick_of], within, len(likeness))
        strongest: list[int] = np.minimum.reduceat(first, pick_starts).tolist()
        for pick, (reader, position) in enumerate(
            zip(readers.tolist(), positions.tolist(), strict=True)
        ):
            learned = all_scored[reader].strongest
            if learned is not None:
                strongest[pick] = int(learned[position])
        return [positives[r][s] for r, s in zip(readers.tolist(), strongest, strict=True)]

    def _whys(
        self, chunk: _Chunk, positions: NDArray[np.int64], strongest: Sequence[_Positive]
    ) -> list[str]:
        """Each pick's one line saying why, from the positive document that weighed most."""
        whys: list[str] = []
        by_words: list[int] = []  # picks owed to the reader's own words
        for pick, positive in enumerate(strongest):
            if positive.source is Source.LIKED:
                whys.append(f"like “{positive.label}”, which you liked")
            elif positive.source is Source.TOPIC:
                whys.append(f"in your topic {positive.label}")
            else:
                whys.append("")
                by_words.append(pick)
        if not by_words:
            return whys
        first, second = self._shared_terms.best_two(
            chunk.documents[np.array([strongest[pick].row for pick in by_words])],
            positions[np.asarray(by_words)],
        )
        terms = self._space.terms
        phrases: dict[int, list[tuple[str, frozenset[str]]]] = {}
        quoted: dict[tuple[int, int, int], str] = {}
        for pick, one, other in zip(by_words, first.tolist(), second.tolist(), strict=True):
            if one < 0:
                whys[pick] = "matches your interests"
                continue
            row = strongest[pick].row  # one per distinct text of readers' words
            why = quoted.get((row, one, other))
            if why is None:
                chosen = [terms[one]] if other < 0 else [terms[one], terms[other]]
                if row not in phrases:
                    text = chunk.full[row]
                    assert isinstance(text, str)
                    phrases[row] = _phrases(text)
                phrase = _own_phrase(phrases[row], chosen)
                why = quoted[(row, one, other)] = (
                    f"matches your interest in “{phrase}”"
                    if phrase is not None
                    else f"matches your interest in {' and '.join(chosen)}"
                )
            whys[pick] = why
        return whys


class _SharedTerms:
    """The terms a reader's words share with a candidate, for the why line: the best two.

    A pair's shared terms are weighed as they count in the likeness (the
    reader's weight times the paper's), bigrams preferred; the best is named,
    then the next best sharing no word with it ("diffusion" says nothing more
    after "diffusion models"). Done for a whole chunk's picks at once: each of
    the reader's few terms is looked up among the paper's (sorted keys,
    candidate × width + column), never a paper's row copied per pick.
    """

    def __init__(self, space: TermSpace, candidate_rows: csr_matrix) -> None:
        terms = space.terms
        self.preference = np.array([BIGRAM_PREFERENCE if " " in term else 1.0 for term in terms])
        word_ids: dict[str, int] = {}
        self.words = np.full((len(terms), 2), -1, dtype=np.int64)  # per column: its words' ids
        for column, term in enumerate(terms):
            for place, word in enumerate(term.split()[:2]):
                self.words[column, place] = word_ids.setdefault(word, len(word_ids))
        # Ties between equal weights go to the later term, as sorting (weight, term) would.
        self.order = np.empty(len(terms), dtype=np.int64)
        self.order[np.argsort(np.array(terms, dtype=object))] = np.arange(len(terms))
        by_paper = candidate_rows.copy()
        by_paper.sort_indices()
        self.width = max(len(terms), 1)
        self.keys = (
            np.repeat(np.arange(by_paper.shape[0], dtype=np.int64), np.diff(by_paper.indptr))
            * self.width
            + by_paper.indices
        )
        self.weights = by_paper.data

    def best_two(
        self, readers_words: csr_matrix, positions: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Per pick (its reader's words as a row; its candidate): two terms' columns, -1 none."""
        picks = len(positions)
        first = np.full(picks, -1, dtype=np.int64)
        second = np.full(picks, -1, dtype=np.int64)
        if not picks or not len(self.keys):
            return first, second
        slots = np.repeat(np.arange(picks), np.diff(readers_words.indptr))
        wanted = positions[slots] * self.width + readers_words.indices
        found = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        shared = self.keys[found] == wanted
        slots, columns = slots[shared], readers_words.indices[shared]
        weights = readers_words.data[shared] * self.weights[found[shared]]
        weights *= self.preference[columns]
        order = np.lexsort((-self.order[columns], -weights, slots))  # heaviest first per pick
        slots, columns = slots[order], columns[order]
        starts = np.searchsorted(slots, np.arange(picks))
        some = np.flatnonzero(np.bincount(slots, minlength=picks))
        if not len(some):
            return first, second
        first[some] = columns[starts[some]]
        mine, its = self.words[columns], self.words[first[slots]]
        overlaps = (mine[:, :1] == its).any(axis=1) | (
            (mine[:, 1:] >= 0) & (mine[:, 1:] == its)
        ).any(axis=1)
        entries = len(columns)
        after = np.minimum.reduceat(np.where(overlaps, entries, np.arange(entries)), starts[some])
        second[some] = np.where(after < entries, columns[np.minimum(after, entries - 1)], -1)
        return first, second


# Where a reader's text breaks into phrases: "legged robots, sim-to-real" is two.
_PHRASE_BREAK = re.compile(r"[,;:.!?()\n]|\band\b|\balso\b", re.IGNORECASE)
# A longer phrase is a sentence, not an interest to quote.
MAX_QUOTED_PHRASE = 60


def _own_phrase(phrases: Sequence[tuple[str, frozenset[str]]], terms: Sequence[str]) -> str | None:
    """The phrase of the reader's own words (`_phrases`) holding the most of `terms`, to quote."""
    best: tuple[int, str] | None = None
    for phrase, held in phrases:
        hits = sum(1 for term in terms if term in held)
        if hits and (best is None or hits > best[0]):
            best = (hits, phrase)
    return best[1] if best else None


def _phrases(interests_text: str) -> list[tuple[str, frozenset[str]]]:
    """The quotable phrases of a reader's words, each with its terms."""
    found = []
    for piece in _PHRASE_BREAK.split(interests_text):
        phrase = " ".join(piece.split())
        if phrase and len(phrase) <= MAX_QUOTED_PHRASE:
            found.append((phrase, _phrase_terms(phrase)))
    return found


@lru_cache(maxsize=16_384)
def _phrase_terms(phrase: str) -> frozenset[str]:
    # Readers' phrases recur ("diffusion models", "reinforcement learning").
    return frozenset(analyzer()(phrase))


def _relative_floor(background_scores: NDArray[np.float64], *, at_least: float) -> float:
    """What a paper must score to beat most recent papers for this reader."""
    if background_scores.size == 0:
        return ABSOLUTE_FLOOR
    return max(float(np.quantile(background_scores, FLOOR_QUANTILE)), at_least)


def _formula(
    readers: Sequence[_Reader],
    to_candidates: NDArray[np.float64],
    to_background: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The profile formula of the module's docstring for many readers at once: scores, floors.

    Each max over a reader's documents of one kind is a segment of one gathered
    matrix (`np.maximum.reduceat`), each reader's sum of those a segment again;
    the mean over skipped papers is one sparse product. Scores are computed on
    candidates and background together; the floor comes from the background's.
    """
    similarity = np.hstack([to_candidates, to_background])
    gathered: list[int] = []
    starts: list[int] = []
    weights: list[float] = []
    first_segment: list[int] = []
    skipped: tuple[list[int], list[int], list[float]] = ([], [], [])
    for slot, reader in enumerate(readers):
        first_segment.append(len(starts))
        kinds: dict[Source, list[int]] = {}
        for positive in reader.positives:
            kinds.setdefault(positive.source, []).append(positive.row)
        weight_sum = sum(KIND_WEIGHTS[kind] for kind in kinds)
        segments = [(rows, KIND_WEIGHTS[kind] / weight_sum) for kind, rows in kinds.items()]
        if reader.disliked:
            segments.append((reader.disliked, -DISLIKED_WEIGHT))
        for rows, weight in segments:
            starts.append(len(gathered))
            gathered.extend(rows)
            weights.append(weight)
        for row in reader.skipped:
            skipped[0].append(slot)
            skipped[1].append(row)
            skipped[2].append(-SKIPPED_WEIGHT / len(reader.skipped))
    segment_max = np.maximum.reduceat(similarity[gathered], starts, axis=0)
    segment_max *= np.asarray(weights)[:, None]
    totals = np.add.reduceat(segment_max, first_segment, axis=0)
    if skipped[0]:
        slots, rows, shares = skipped
        mean_of_skipped = csr_matrix(
            (shares, (slots, rows)), shape=(len(readers), similarity.shape[0])
        )
        totals += mean_of_skipped @ similarity
    candidates = to_candidates.shape[1]
    if not to_background.shape[1]:
        return totals[:, :candidates], np.full(len(readers), ABSOLUTE_FLOOR)
    # Above zero too: a paper sharing no word with the profile is never "for you".
    floors = np.maximum(np.quantile(totals[:, candidates:], FLOOR_QUANTILE, axis=1), 1e-9)
    return totals[:, :candidates], floors


class _LearnedScorer:
    """A reader's own linear model: regularised least squares on TF-IDF, solved per reader.

    The reader's documents are examples labelled +1 (interests, topics, liked
    papers) or -1 (disliked, skipped), against recent papers as weak -1
    examples: a linear classifier of "their papers" versus "the rest". With a
    linear kernel K and example weights c, the dual solution is
    α = (K + 1 + λ·diag(1/c))⁻¹ y (the +1 is the intercept), and a paper p
    scores Σ αᵢ (xᵢ·p + 1). The background's block of that matrix is the same
    for every reader, so it is inverted once; each reader then solves only a
    system the size of their own documents (a Schur complement).
    """

    def __init__(
        self,
        space: TermSpace,
        background: Sequence[WeightedTerms],
        candidates: Sequence[WeightedTerms],
    ) -> None:
        self.ready = bool(background) and bool(candidates)
        if not self.ready:
            return
        rows = space.matrix(background)
        weights = np.full(len(background), LEARNED_WEIGHTS["background"])
        self._gram = (rows @ rows.T).toarray() + 1.0  # background × background, intercept in
        self._inverse = np.linalg.inv(self._gram + LEARNED_RIDGE * np.diag(1.0 / weights))
        self._solved = self._inverse @ -np.ones(len(background))
        self._to_candidates = (rows @ space.matrix(candidates).T).toarray() + 1.0

    def score_many(
        self,
        readers: Sequence[_Reader],
        gram: _Gram,
        to_candidates: NDArray[np.float64],
        to_background: NDArray[np.float64],
    ) -> list[_Scored]:
        """Each reader's scores, floor and strongest documents, readers of equal size at once.

        `gram` holds the likeness of every two of their documents' full vectors.
        Readers with the same number of examples solve their systems as one
        stack (`np.linalg.solve` over a batch): solved one reader at a time,
        numpy's overhead per call made the learned model cost about 0.3 ms a
        reader.
        """
        scored: list[_Scored | None] = [None] * len(readers)
        by_size: dict[int, list[int]] = {}
        for index, reader in enumerate(readers):
            size = len(reader.positives) + len(reader.disliked) + len(reader.skipped)
            by_size.setdefault(size, []).append(index)
        for indices in by_size.values():
            group = [readers[i] for i in indices]
            for index, result in zip(
                indices, self._score_group(group, gram, to_candidates, to_background), strict=True
            ):
                scored[index] = result
        return [result for result in scored if result is not None]

    def _score_group(
        self,
        readers: Sequence[_Reader],
        gram: _Gram,
        to_candidates: NDArray[np.float64],
        to_background: NDArray[np.float64],
    ) -> list[_Scored]:
        rows = np.array(
            [[p.row for p in r.positives] + r.disliked + r.skipped for r in readers],
            dtype=np.int64,
        )
        weights = np.array(
            [
                [LEARNED_WEIGHTS[p.source] for p in r.positives]
                + [LEARNED_WEIGHTS["disliked"]] * len(r.disliked)
                + [LEARNED_WEIGHTS["skipped"]] * len(r.skipped)
                for r in readers
            ]
        )
        labels = np.array(
            [
                [1.0] * len(r.positives) + [-1.0] * (len(r.disliked) + len(r.skipped))
                for r in readers
            ]
        )
        positive = labels > 0
        own = np.vectorize(gram.index.__getitem__, otypes=[np.int64])(rows)
        inner = gram.likeness[own[:, :, None], own[:, None, :]] + 1.0
        inner += LEARNED_RIDGE * (np.eye(rows.shape[1]) / weights[:, :, None])
        cross = to_background[rows] + 1.0  # readers × examples × background
        through_background = cross @ self._inverse
        schur = inner - through_background @ cross.transpose(0, 2, 1)
        own_alpha = np.linalg.solve(schur, (labels - cross @ self._solved)[:, :, None])[:, :, 0]
        background_alpha = self._solved - (own_alpha[:, None, :] @ through_background)[:, 0, :]
        examples = to_candidates[rows]  # readers × examples × candidates
        scores = (own_alpha[:, :, None] * (examples + 1.0)).sum(axis=1)
        scores += background_alpha @ self._to_candidates
        background_scores = (own_alpha[:, :, None] * cross).sum(axis=1)
        background_scores += background_alpha @ self._gram
        # The why-line names the positive document whose likeness to the paper
        # weighs most (the intercept's share is the same for every paper).
        likeness = np.where(positive[:, :, None], own_alpha[:, :, None] * examples, -np.inf)
        strongest = likeness.argmax(axis=1)
        # A classifier's scores: only the comparison with the background counts.
        return [
            _Scored(
                scores[i], _relative_floor(background_scores[i], at_least=-np.inf), strongest[i]
            )
            for i in range(len(readers))
        ]


__all__ = [
    "PaperText",
    "Pick",
    "ReaderProfile",
    "RelevanceModel",
    "Topic",
]
