"""Papers and profile texts as TF-IDF vectors over the stored corpus's vocabulary.

The analyzer is scikit-learn's (lower-cased unigrams and bigrams without
English stop words, accents folded), so a term means the same thing in a
paper, a topic description and a reader's free text. Document frequencies come
from every stored paper (`TermStatistics`); they are kept as plain counts so
that an ingest adds its papers without refitting anything.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from scipy.sparse import csr_matrix

# A word starts with a letter and may hold digits and inner hyphens, so
# "gpt-4", "3d" (kept by the second branch), "sim-to-real" and "kv" are terms.
TOKEN_PATTERN = r"(?u)\b(?:[^\W\d_][\w-]*[^\W_]|[^\W\d_]|\d+[^\W\d_][\w-]*)\b"


@cache
def analyzer() -> Callable[[str], list[str]]:
    """The text → terms function shared by papers, topics and readers' words."""
    # Imported here, once: scikit-learn costs about a second to import, and only
    # commands that rank for readers need it.
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        lowercase=True,
        strip_accents="unicode",
        stop_words="english",
        token_pattern=TOKEN_PATTERN,
        ngram_range=(1, 2),
    )
    analyze: Callable[[str], list[str]] = vectorizer.build_analyzer()
    return analyze


def document_terms(text: str) -> set[str]:
    """The distinct terms of one document, as counted in document frequencies."""
    return set(analyzer()(text))


@dataclass(frozen=True, slots=True)
class TermStatistics:
    """How many stored papers there are, and how many of them hold each term."""

    documents: int
    frequencies: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> TermStatistics:
        counts: Counter[str] = Counter()
        documents = 0
        for text in texts:
            documents += 1
            counts.update(document_terms(text))
        return cls(documents, dict(counts))

    # Computed idf values (the frequencies never change once loaded).
    _idf: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    def idf(self, term: str) -> float:
        """Smoothed inverse document frequency; a term no paper holds counts as rarest."""
        value = self._idf.get(term)
        if value is None:
            frequency = self.frequencies.get(term, 0)
            value = self._idf[term] = math.log((1 + self.documents) / (1 + frequency)) + 1.0
        return value


@dataclass(frozen=True, slots=True)
class WeightedTerms:
    """One document as L2-normalised TF-IDF weights (sublinear term frequency)."""

    weights: Mapping[str, float]

    @classmethod
    def of(
        cls, text: str, statistics: TermStatistics, terms: Sequence[str] | None = None
    ) -> WeightedTerms:
        """The text's vector (`terms`: the text already analysed, if the caller has it)."""
        counts = Counter(analyzer()(text) if terms is None else terms)
        idf = statistics.idf
        raw = {term: (1.0 + math.log(count)) * idf(term) for term, count in counts.items()}
        norm = math.sqrt(sum(value * value for value in raw.values()))
        if norm == 0.0:
            return cls({})
        return cls({term: value / norm for term, value in raw.items()})

    def __bool__(self) -> bool:
        return bool(self.weights)


class TermSpace:
    """Column indices for the terms that matter in one ranking run.

    Only terms of the day's candidate papers can contribute to a dot product
    with a candidate, so the space is those terms; documents are projected
    onto it (their norm was taken over all their terms first).
    """

    def __init__(self, candidates: Sequence[WeightedTerms]) -> None:
        self.index: dict[str, int] = {}
        for document in candidates:
            for term in document.weights:
                self.index.setdefault(term, len(self.index))
        self.terms = list(self.index)  # by column
        # Every term `weigh` has met, in and out of the space (ids past the
        # space's columns), and its idf: a text's norm counts all its terms.
        self._ids: dict[str, int] = dict(self.index)
        self._idf: list[float] = []  # by id; the space's own filled at the first `weigh`

    def matrix(self, documents: Sequence[WeightedTerms]) -> csr_matrix:
        """One row per document, projected onto this space."""
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for document in documents:
            for term, weight in document.weights.items():
                column = self.index.get(term)
                if column is not None:
                    indices.append(column)
                    data.append(weight)
            indptr.append(len(indices))
        return csr_matrix(
            (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int32), indptr),
            shape=(len(documents), len(self.index)),
        )

    def weigh(self, texts: Sequence[Sequence[str]], statistics: TermStatistics) -> csr_matrix:
        """Many analysed texts as rows at once: the same vectors as `WeightedTerms.of`, projected.

        Readers' words are many short texts, one per reader: counting, weighing
        and normalising them as arrays instead of one dict per text is most of
        what makes ranking a hundred thousand readers fast.
        """
        ids, idf = self._ids, self._idf
        if not idf:
            idf.extend(map(statistics.idf, self.terms))
        flat: list[int] = []
        for terms in texts:
            for term in terms:
                column = ids.get(term)
                if column is None:
                    column = ids[term] = len(idf)
                    idf.append(statistics.idf(term))
                flat.append(column)
        width, columns = len(idf), len(self.index)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        pairs, counts = np.unique(
            rows * width + np.asarray(flat, dtype=np.int64), return_counts=True
        )
        rows, columns_of = pairs // width, pairs % width
        weights = (1.0 + np.log(counts)) * np.asarray(idf, dtype=np.float64)[columns_of]
        norms = np.sqrt(np.bincount(rows, weights=weights * weights, minlength=len(texts)))
        weights /= np.where(norms > 0.0, norms, 1.0)[rows]
        inside = columns_of < columns
        return csr_matrix(
            (weights[inside], (rows[inside], columns_of[inside])), shape=(len(texts), columns)
        )
