"""The gate a change to personal ranking must pass: the labelled set, as the benchmark scores it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# The benchmark scores 36 readers over several days: minutes on a loaded 2-core machine.
@pytest.mark.timeout(300)
def test_personal_ranking_beats_trending_and_feedback_helps() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "relevance.py"), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    figures = json.loads(result.stdout)
    variants = figures["variants"]

    assert figures["papers"] == 240 and figures["readers"] == 36
    # Today's figures (see benchmarks/README.md) with a little room, so that a
    # change that makes readers' digests worse fails here.
    assert variants["profile"]["ndcg_at_10"] >= 0.92
    assert variants["profile"]["precision_at_5"] >= 0.64
    assert variants["profile+feedback"]["ndcg_at_10"] >= variants["profile"]["ndcg_at_10"]
    assert variants["trending"]["ndcg_at_10"] < 0.5 * variants["profile"]["ndcg_at_10"]
    assert figures["clicks_to_beat_trending"] is not None
    assert figures["clicks_to_beat_trending"] <= 2
    # "For you" is mostly right and rarely empty for a reader with a profile.
    assert figures["for_you"]["precision"] >= 0.65
    assert figures["for_you"]["empty_share"] <= 0.05
