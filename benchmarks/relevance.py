"""How well personal ranking finds what each reader wants: precision@5 and nDCG@10.

The labelled set in tests/data/relevance/ holds invented papers over six days
and invented readers with known relevance (see its README). Days 1–2 are the
readers' past (the papers they paste as liked when they sign up); days 3–6
are evaluated, each day's papers being the candidates of that day's digest.

Variants:
  trending          the day's popularity order (what a reader with no profile gets)
  profile           topics + interests + the papers pasted at sign-up
  profile+feedback  the same, and each evaluated day the reader clicks "More like
                    this" on the shown papers they find core (label 2) and "Less
                    like this" on the shown ones they find irrelevant (label 0);
                    the rest of what was shown counts as skipped
  clicks-only       no profile at all, only likes: after k clicks, beats trending?

    .venv/bin/python benchmarks/relevance.py [--data DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.relevance import (  # noqa: E402
    PaperText,
    ReaderProfile,
    RelevanceModel,
    TermStatistics,
    Topic,
)

DEFAULT_DATA = ROOT / "tests" / "data" / "relevance"
SHOWN = 5  # the "For you" section's length


@dataclass(frozen=True)
class Paper:
    text: PaperText
    day: str
    upvotes: int
    subtopics: tuple[str, ...]


@dataclass(frozen=True)
class Reader:
    id: str
    topics: tuple[str, ...]
    interests: str
    liked_seed: tuple[str, ...]
    relevant: dict[str, int]

    def label(self, paper: Paper) -> int:
        return max((self.relevant.get(s, 0) for s in paper.subtopics), default=0)


def load(data: Path) -> tuple[list[Paper], list[Reader], list[Topic]]:
    papers = []
    for line in (data / "papers.jsonl").read_text().splitlines():
        if line.strip():
            raw = json.loads(line)
            papers.append(
                Paper(
                    PaperText(
                        raw["arxiv_id"], raw["title"], raw["abstract"], tuple(raw["keywords"])
                    ),
                    raw["day"],
                    raw["upvotes"],
                    tuple(raw["subtopics"]),
                )
            )
    readers = [
        Reader(r["id"], tuple(r["topics"]), r["interests"], tuple(r["liked_seed"]), r["relevant"])
        for r in json.loads((data / "readers.json").read_text())
    ]
    topics = [
        Topic(t["name"], t["description"], tuple(t["keywords"]), tuple(t["categories"]))
        for t in json.loads((data / "topics.json").read_text())
    ]
    return papers, readers, topics


def precision_at(labels: Sequence[int], k: int) -> float:
    return sum(1 for label in labels[:k] if label > 0) / k


def ndcg_at(labels: Sequence[int], all_labels: Sequence[int], k: int) -> float:
    def dcg(values: Sequence[int]) -> float:
        return sum((2**v - 1) / math.log2(i + 2) for i, v in enumerate(values[:k]))

    ideal = dcg(sorted(all_labels, reverse=True))
    return dcg(labels) / ideal if ideal > 0 else 0.0


@dataclass
class Scores:
    precision: list[float]
    ndcg: list[float]

    def summary(self) -> dict[str, float]:
        return {
            "precision_at_5": round(statistics.fmean(self.precision), 3),
            "ndcg_at_10": round(statistics.fmean(self.ndcg), 3),
        }


def evaluate(
    papers: list[Paper],
    readers: list[Reader],
    topics: list[Topic],
    order_for: Callable[[RelevanceModel, Reader, ReaderProfile, list[Paper]], list[int]],
    *,
    feedback: bool,
    start_profile: Callable[[Reader], ReaderProfile],
) -> Scores:
    stats = TermStatistics.from_texts(p.text.text() for p in papers)
    library = {p.text.arxiv_id: p.text for p in papers}
    days = sorted({p.day for p in papers})[2:]
    result = Scores([], [])
    for reader in readers:
        profile = start_profile(reader)
        for day in days:
            today = [p for p in papers if p.day == day]
            # The model's background: what was stored before today.
            past = [p.text for p in papers if p.day < day]
            model = RelevanceModel(
                stats, [p.text for p in today], topics=topics, library=library, background=past
            )
            order = order_for(model, reader, profile, today)
            labels = [reader.label(today[i]) for i in order]
            all_labels = [reader.label(p) for p in today]
            result.precision.append(precision_at(labels, SHOWN))
            result.ndcg.append(ndcg_at(labels, all_labels, 10))
            if feedback:
                shown = [today[i] for i in order[:SHOWN]]
                liked = [p.text.arxiv_id for p in shown if reader.label(p) == 2]
                disliked = [p.text.arxiv_id for p in shown if reader.label(p) == 0]
                skipped = [p.text.arxiv_id for p in shown if reader.label(p) == 1]
                profile = replace(
                    profile,
                    liked=profile.liked + tuple(liked),
                    disliked=profile.disliked + tuple(disliked),
                    skipped=profile.skipped + tuple(skipped),
                )
    return result


def trending_order(
    model: RelevanceModel, reader: Reader, profile: ReaderProfile, today: list[Paper]
) -> list[int]:
    return sorted(range(len(today)), key=lambda i: (-today[i].upvotes, today[i].text.arxiv_id))


def personal_order(
    model: RelevanceModel, reader: Reader, profile: ReaderProfile, today: list[Paper]
) -> list[int]:
    """Personal picks first (the model's full order), trending for a reader with no signal."""
    if profile.is_empty:
        return trending_order(model, reader, profile, today)
    scores = model.scores(profile)
    popularity = np.array([p.upvotes for p in today], dtype=float)
    # Ties (a paper no profile word touches) fall back to popularity.
    return sorted(range(len(today)), key=lambda i: (-scores[i], -popularity[i]))


def full_profile(reader: Reader) -> ReaderProfile:
    return ReaderProfile(topics=reader.topics, interests=reader.interests, liked=reader.liked_seed)


def for_you_section(
    papers: list[Paper], readers: list[Reader], topics: list[Topic]
) -> dict[str, float]:
    """What the "For you" section really holds: its length, how much of it is relevant."""
    stats = TermStatistics.from_texts(p.text.text() for p in papers)
    library = {p.text.arxiv_id: p.text for p in papers}
    by_id = {p.text.arxiv_id: p for p in papers}
    lengths: list[int] = []
    precisions: list[float] = []
    for day in sorted({p.day for p in papers})[2:]:
        today = [p for p in papers if p.day == day]
        past = [p.text for p in papers if p.day < day]
        model = RelevanceModel(
            stats, [p.text for p in today], topics=topics, library=library, background=past
        )
        for reader, picks in zip(
            readers, model.rank([full_profile(r) for r in readers], count=SHOWN), strict=True
        ):
            lengths.append(len(picks))
            if picks:
                relevant = sum(1 for pick in picks if reader.label(by_id[pick.arxiv_id]) > 0)
                precisions.append(relevant / len(picks))
    return {
        "mean_length": round(statistics.fmean(lengths), 2),
        "precision": round(statistics.fmean(precisions), 3),
        "empty_share": round(sum(1 for n in lengths if n == 0) / len(lengths), 3),
    }


def clicks_to_beat_trending(
    papers: list[Paper], readers: list[Reader], topics: list[Topic], trending_ndcg: float
) -> int | None:
    """Likes needed (from the readers' past days, best first) for an empty profile to win."""
    past = [p for p in papers if p.day in sorted({p.day for p in papers})[:2]]
    for clicks in range(1, 11):

        def liked_only(reader: Reader, clicks: int = clicks) -> ReaderProfile:
            core = [p.text.arxiv_id for p in past if reader.label(p) == 2][:clicks]
            return ReaderProfile(liked=tuple(core))

        scores = evaluate(
            papers, readers, topics, personal_order, feedback=False, start_profile=liked_only
        )
        if statistics.fmean(scores.ndcg) > trending_ndcg:
            return clicks
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    papers, readers, topics = load(args.data)

    empty = lambda reader: ReaderProfile()  # noqa: E731
    results = {
        "trending": evaluate(
            papers, readers, topics, trending_order, feedback=False, start_profile=empty
        ).summary(),
        "profile": evaluate(
            papers, readers, topics, personal_order, feedback=False, start_profile=full_profile
        ).summary(),
        "profile+feedback": evaluate(
            papers, readers, topics, personal_order, feedback=True, start_profile=full_profile
        ).summary(),
    }
    clicks = clicks_to_beat_trending(papers, readers, topics, results["trending"]["ndcg_at_10"])
    figures = {
        "papers": len(papers),
        "readers": len(readers),
        "evaluated_days": len(sorted({p.day for p in papers})[2:]),
        "variants": results,
        "clicks_to_beat_trending": clicks,
        "for_you": for_you_section(papers, readers, topics),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"{len(papers)} papers, {len(readers)} readers, {figures['evaluated_days']} days evaluated"
    )
    print(f"{'variant':<18} {'precision@5':>12} {'nDCG@10':>9}")
    for name, summary in results.items():
        print(f"{name:<18} {summary['precision_at_5']:>12.3f} {summary['ndcg_at_10']:>9.3f}")
    print(f"likes an empty profile needs to beat trending (nDCG@10): {clicks}")
    section = figures["for_you"]
    print(
        f"'For you' with the full profile: {section['mean_length']} papers on average, "
        f"{section['precision']:.3f} of them relevant, empty for {section['empty_share']:.1%}"
    )


if __name__ == "__main__":
    main()
