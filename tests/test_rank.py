"""The rank stage: the documented formula on hand-computed examples, decay, ties, top_n."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.core.errors import ConfigurationError
from newsletter.rank import (
    COMMENT_WEIGHT,
    HALF_LIFE_HOURS,
    RANKING_FORMULA_MARKDOWN,
    STAR_WEIGHT,
    UPVOTE_WEIGHT,
    rank_papers,
    score_paper,
)
from newsletter.values import PaperRecord

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def paper(arxiv_id: str = "2611.00001", **fields: object) -> PaperRecord:
    """A paper with only the fields a test cares about."""
    return PaperRecord(arxiv_id=arxiv_id, title=f"Paper {arxiv_id}", **fields)  # type: ignore[arg-type]


def test_score_of_the_documented_example_matches_a_hand_computation() -> None:
    example = paper(
        upvotes=20, num_comments=3, github_stars=100, published_at=NOW - timedelta(hours=24)
    )
    # (1·ln 21 + 0.5·ln 4 + 0.25·ln 101) · 2^(−24/72), worked out by hand:
    # (3.044522 + 0.693147 + 1.153782) · 0.793701 = 3.882346
    assert score_paper(example, now=NOW) == pytest.approx(3.882346, abs=1e-6)


def test_undated_paper_does_not_decay() -> None:
    undated = paper(upvotes=6, num_comments=1)
    assert score_paper(undated, now=NOW) == pytest.approx(math.log(7) + 0.5 * math.log(2))


def test_score_halves_every_half_life() -> None:
    counts: dict[str, object] = {"upvotes": 40, "num_comments": 5, "github_stars": 300}
    fresh = score_paper(paper(published_at=NOW, **counts), now=NOW)
    one_half_life = score_paper(
        paper(published_at=NOW - timedelta(hours=HALF_LIFE_HOURS), **counts), now=NOW
    )
    two_half_lives = score_paper(
        paper(published_at=NOW - timedelta(hours=2 * HALF_LIFE_HOURS), **counts), now=NOW
    )
    assert fresh == pytest.approx(score_paper(paper(**counts), now=NOW))
    assert one_half_life == pytest.approx(fresh / 2)
    assert two_half_lives == pytest.approx(fresh / 4)


def test_age_counts_from_midnight_utc_of_the_day_hugging_face_featured_the_paper() -> None:
    on_daily = paper(upvotes=10, daily_date=date(2026, 11, 25))
    # Midnight UTC of 25 Nov to 12:00 on 27 Nov is 60 hours.
    assert score_paper(on_daily, now=NOW) == pytest.approx(math.log(11) * 2 ** (-60 / 72))


def test_the_featured_day_wins_over_the_arxiv_publication_time() -> None:
    # Published on arXiv weeks before Hugging Face featured it on 25 Nov: 60 hours old.
    both = paper(upvotes=10, published_at=NOW - timedelta(days=20), daily_date=date(2026, 11, 25))
    assert score_paper(both, now=NOW) == pytest.approx(math.log(11) * 2 ** (-60 / 72))


def test_a_days_papers_rank_by_popularity_whenever_arxiv_published_them() -> None:
    # The new user's edition: #3 had 12 upvotes and sat above #4 with 149, which
    # arXiv published six days before Hugging Face featured both on the same day.
    day = date(2026, 11, 27)
    featured_late = paper(
        "2611.00004", upvotes=149, published_at=NOW - timedelta(days=6), daily_date=day
    )
    fresh_but_quiet = paper(
        "2611.00003", upvotes=12, published_at=NOW - timedelta(hours=2), daily_date=day
    )
    end_of_day = datetime(2026, 11, 28, tzinfo=UTC)
    ranked = rank_papers([fresh_but_quiet, featured_late], now=end_of_day, top_n=10)
    assert [item.paper.upvotes for item in ranked] == [149, 12]


def test_a_future_date_never_boosts_a_paper() -> None:
    from_the_future = paper(upvotes=10, published_at=NOW + timedelta(days=3))
    assert score_paper(from_the_future, now=NOW) == pytest.approx(math.log(11))


def test_naive_datetimes_are_read_as_utc() -> None:
    naive = paper(upvotes=10, published_at=datetime(2026, 11, 24, 12, 0))
    aware = paper(upvotes=10, published_at=datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    assert score_paper(naive, now=NOW) == pytest.approx(score_paper(aware, now=NOW))
    assert score_paper(aware, now=NOW) == pytest.approx(math.log(11) / 2)


def test_missing_stars_count_as_none_and_negative_counts_as_zero() -> None:
    assert score_paper(paper(github_stars=None), now=NOW) == 0.0
    assert score_paper(paper(upvotes=-5, num_comments=-1, github_stars=-9), now=NOW) == 0.0


def test_ranking_follows_the_formula_with_decay_able_to_overturn_popularity() -> None:
    # Scores by hand (ages from NOW):
    #   old-popular: ln 121 · 2^(−144/72) = 4.796 / 4 = 1.199
    #   fresh-modest: (ln 9 + 0.5 ln 3) · 1 = 2.197 + 0.549 = 2.747
    #   starred: (ln 4 + 0.25 ln 2001) · 2^(−12/72) = (1.386 + 1.900) · 0.891 = 2.928
    #   quiet: ln 2 · 2^(−24/72) = 0.550
    papers = [
        paper("2611.00001", upvotes=120, published_at=NOW - timedelta(hours=144)),
        paper("2611.00002", upvotes=8, num_comments=2, published_at=NOW),
        paper("2611.00003", upvotes=3, github_stars=2000, published_at=NOW - timedelta(hours=12)),
        paper("2611.00004", upvotes=1, published_at=NOW - timedelta(hours=24)),
    ]
    ranked = rank_papers(papers, now=NOW, top_n=10)
    assert [item.paper.arxiv_id for item in ranked] == [
        "2611.00003",
        "2611.00002",
        "2611.00001",
        "2611.00004",
    ]
    assert [item.position for item in ranked] == [1, 2, 3, 4]
    assert [round(item.score, 3) for item in ranked] == [2.928, 2.747, 1.199, 0.55]


def test_equal_scores_go_to_more_upvotes_then_smaller_arxiv_id_whatever_the_input_order() -> None:
    # 1 upvote and 3 comments score the same: ln 2 == 0.5 · ln 4.
    one_upvote = paper("2611.00009", upvotes=1)
    three_comments = paper("2611.00001", num_comments=3)
    assert score_paper(one_upvote, now=NOW) == score_paper(three_comments, now=NOW)
    twins = [paper(f"2611.{n:05d}", upvotes=5, published_at=NOW) for n in (7, 3, 5)]
    papers = [one_upvote, three_comments, *twins, paper("2611.00002")]

    expected = ["2611.00003", "2611.00005", "2611.00007", "2611.00009", "2611.00001", "2611.00002"]
    shuffler = random.Random(20261127)
    for _ in range(25):
        shuffler.shuffle(papers)
        ranked = rank_papers(papers, now=NOW, top_n=10)
        assert [item.paper.arxiv_id for item in ranked] == expected


def test_top_n_keeps_the_best_with_positions_from_one() -> None:
    papers = [paper(f"2611.{n:05d}", upvotes=n) for n in range(1, 31)]
    ranked = rank_papers(papers, now=NOW, top_n=5)
    assert [item.paper.upvotes for item in ranked] == [30, 29, 28, 27, 26]
    assert [item.position for item in ranked] == [1, 2, 3, 4, 5]
    assert len(rank_papers(papers[:3], now=NOW, top_n=5)) == 3
    assert rank_papers([], now=NOW, top_n=5) == ()


def test_top_n_below_one_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigurationError, match="top_n must be at least 1"):
        rank_papers([paper()], now=NOW, top_n=0)


def test_readme_section_shows_the_constants_and_a_correct_example() -> None:
    for constant in (UPVOTE_WEIGHT, COMMENT_WEIGHT, STAR_WEIGHT, HALF_LIFE_HOURS):
        assert f"{constant:g}" in RANKING_FORMULA_MARKDOWN
    for name in ("UPVOTE_WEIGHT", "COMMENT_WEIGHT", "STAR_WEIGHT", "HALF_LIFE_HOURS"):
        assert f"`{name}`" in RANKING_FORMULA_MARKDOWN
    assert "= 3.882." in RANKING_FORMULA_MARKDOWN
    assert "upvotes, then to the smaller arXiv id" in RANKING_FORMULA_MARKDOWN


def test_readme_ranking_section_is_the_one_the_code_describes() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert RANKING_FORMULA_MARKDOWN in readme, (
        "README.md's 'How papers are ranked' section differs from rank.RANKING_FORMULA_MARKDOWN; "
        "paste the generated text into the README"
    )
