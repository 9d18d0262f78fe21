"""The rank stage: order the day's papers by popularity that fades with age.

A paper's score is

    (UPVOTE_WEIGHT·ln(1+upvotes) + COMMENT_WEIGHT·ln(1+comments) + STAR_WEIGHT·ln(1+stars))
        · 2^(−age_hours / HALF_LIFE_HOURS)

Why these choices:

- Logarithms, because popularity is heavy-tailed (a typical day has a median of
  about 6 upvotes and a maximum near 150): going from 1 to 10 upvotes should
  count about as much as going from 10 to 100, so one viral paper cannot make
  every other signal irrelevant.
- ``UPVOTE_WEIGHT = 1.0``: upvotes are the community's direct "worth reading"
  vote on Hugging Face Daily Papers, so they set the scale.
- ``COMMENT_WEIGHT = 0.5``: comments show discussion, but they are sparse and
  include the authors' own replies, so one comment is worth less than one vote.
- ``STAR_WEIGHT = 0.25``: GitHub stars show that usable code exists, but a repository
  often predates the paper (a famous library's 10 000 stars are not a vote for
  this paper), so stars only nudge: 10 000 stars weigh about as much as 9 upvotes.
- ``HALF_LIFE_HOURS = 72``: arXiv announces nothing at weekends, so a Monday
  edition routinely competes with three-day-old Friday papers; at half weight a
  strong Friday paper still beats a weak fresh one, while a week-old paper needs
  about five times the log-signal of a fresh one to make the list again.

Age is measured from midnight UTC of ``daily_date`` (the day Hugging Face
featured the paper), else from ``published_at``; a paper with neither does not
decay, and a date in the future counts as age 0 (clock skew must never boost a
paper). Naive datetimes are read as UTC. Hugging Face often features a paper
days after arXiv published it: measured from publication, the decay buried the
day's most upvoted papers under quieter fresh ones (#3 with 12 upvotes above #4
with 149). A day's papers share their featured day, so within one edition the
order is their popularity, as a reader expects; the decay only weighs papers of
earlier days against today's.

Ties (equal scores) go to more upvotes, then to the smaller arXiv id, then to
the title, so the result never depends on the order of the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time

from newsletter.core.clock import as_utc
from newsletter.core.errors import ConfigurationError
from newsletter.values import PaperRecord, RankedPaper

UPVOTE_WEIGHT = 1.0
COMMENT_WEIGHT = 0.5
STAR_WEIGHT = 0.25
HALF_LIFE_HOURS = 72.0


def paper_age_hours(paper: PaperRecord, *, now: datetime) -> float | None:
    """Hours since Hugging Face featured the paper (never negative), or None without a date."""
    if paper.daily_date is not None:
        appeared = _start_of_day_utc(paper.daily_date)
    elif paper.published_at is not None:
        appeared = as_utc(paper.published_at)
    else:
        return None
    return max(0.0, (as_utc(now) - appeared).total_seconds() / 3600.0)


def _start_of_day_utc(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def score_paper(paper: PaperRecord, *, now: datetime) -> float:
    """The paper's popularity score at `now`, by the formula in this module's docstring."""
    # Counts from a feed are never meaningfully negative; clamping keeps ln defined.
    upvotes = max(0, paper.upvotes)
    comments = max(0, paper.num_comments)
    stars = max(0, paper.github_stars or 0)
    popularity = (
        UPVOTE_WEIGHT * math.log1p(upvotes)
        + COMMENT_WEIGHT * math.log1p(comments)
        + STAR_WEIGHT * math.log1p(stars)
    )
    age_hours = paper_age_hours(paper, now=now)
    if age_hours is None:
        return popularity
    return popularity * math.pow(2.0, -age_hours / HALF_LIFE_HOURS)


def rank_papers(
    papers: Sequence[PaperRecord], *, now: datetime, top_n: int
) -> tuple[RankedPaper, ...]:
    """The `top_n` best papers, best first, with positions 1..top_n."""
    if top_n < 1:
        raise ConfigurationError(f"top_n must be at least 1, got {top_n}")
    scored = [(score_paper(paper, now=now), paper) for paper in papers]
    scored.sort(key=lambda item: (-item[0], -item[1].upvotes, item[1].arxiv_id, item[1].title))
    return tuple(
        RankedPaper(paper=paper, score=score, position=position)
        for position, (score, paper) in enumerate(scored[:top_n], start=1)
    )


_EXAMPLE_NOW = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
_EXAMPLE_PAPER = PaperRecord(
    arxiv_id="2611.00001",
    title="Example",
    upvotes=20,
    num_comments=3,
    github_stars=100,
    published_at=datetime(2026, 11, 20, 12, 0, tzinfo=UTC),
    daily_date=date(2026, 11, 26),
)


def _describe_ranking() -> str:
    u, c, s, h = (
        f"{value:g}" for value in (UPVOTE_WEIGHT, COMMENT_WEIGHT, STAR_WEIGHT, HALF_LIFE_HOURS)
    )
    example = score_paper(_EXAMPLE_PAPER, now=_EXAMPLE_NOW)
    return f"""\
## How papers are ranked

Each candidate paper gets a score; the edition shows the highest `top_n`
(setting `NEWSLETTER_TOP_N`).

```
score = ( {u} · ln(1 + upvotes)
        + {c} · ln(1 + comments)
        + {s} · ln(1 + github_stars) ) · 2^(−age_hours / {h})
```

| constant | value | why |
|---|---|---|
| `UPVOTE_WEIGHT` | {u} | upvotes are the direct "worth reading" vote |
| `COMMENT_WEIGHT` | {c} | comments are sparse and include authors' replies |
| `STAR_WEIGHT` | {s} | stars show code exists but often predate the paper |
| `HALF_LIFE_HOURS` | {h} | a Monday edition still weighs Friday's papers at half |

- Logarithms keep one viral paper from drowning every other signal.
- `age_hours` counts from midnight UTC of the day Hugging Face featured the
  paper (its Daily Papers date), else from its arXiv publication time; with
  neither there is no decay, and a future date counts as age 0. A day's papers
  share their featured day, so one edition lists them by popularity (most
  upvoted first, as a reader expects), whenever arXiv published them; the decay
  weighs earlier days' papers against today's.
- Ties go to more upvotes, then to the smaller arXiv id, so the order of the
  input never matters.

Example: 20 upvotes, 3 comments, 100 stars, featured 24 hours ago:
`({u}·ln 21 + {c}·ln 4 + {s}·ln 101) · 2^(−24/{h})` = {example:.3f}.
"""


# Built from the constants above, so the README section cannot drift from the code.
RANKING_FORMULA_MARKDOWN = _describe_ranking()
