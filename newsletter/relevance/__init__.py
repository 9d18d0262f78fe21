"""Personal relevance: today's papers ranked for each reader's profile (pure, no database).

The values (`profiles`) load at once; the model and its term statistics, with
numpy and scipy, load when first asked for, so code that only reads profiles
and picks (a sending worker, the web) starts without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from newsletter.relevance.profiles import PaperText, Pick, ReaderProfile, Topic

if TYPE_CHECKING:
    from newsletter.relevance.model import RelevanceModel
    from newsletter.relevance.terms import TermStatistics

__all__ = ["PaperText", "Pick", "ReaderProfile", "RelevanceModel", "TermStatistics", "Topic"]


def __getattr__(name: str) -> Any:
    if name == "RelevanceModel":
        from newsletter.relevance.model import RelevanceModel

        return RelevanceModel
    if name == "TermStatistics":
        from newsletter.relevance.terms import TermStatistics

        return TermStatistics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
