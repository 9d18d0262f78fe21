"""Rewrite the bundled `sample_day.json`: `python -m newsletter.sample_data.make_sample_day`.

The output depends only on the seed, so re-running it leaves the file unchanged
unless the generator itself changed.
"""

from __future__ import annotations

import json
from pathlib import Path

from newsletter.sample_data import (
    SAMPLE_DAY,
    SAMPLE_PAPER_COUNT,
    SAMPLE_SEED,
    generate_daily_papers,
    sample_day_path,
)


def render_sample_day() -> str:
    """The exact text of the bundled sample file."""
    # The demo shows this day to a new user: no markup or template syntax in its titles.
    papers = generate_daily_papers(SAMPLE_DAY, SAMPLE_PAPER_COUNT, seed=SAMPLE_SEED, hostile=False)
    return json.dumps(papers, indent=2, ensure_ascii=False) + "\n"


def write_sample_day(path: Path) -> None:
    """Write the sample day to `path`."""
    path.write_text(render_sample_day(), encoding="utf-8")


def main() -> None:
    """Regenerate the bundled file and say where it went."""
    path = sample_day_path()
    write_sample_day(path)
    print(f"wrote {SAMPLE_PAPER_COUNT} papers for {SAMPLE_DAY.isoformat()} to {path}")


if __name__ == "__main__":
    main()
