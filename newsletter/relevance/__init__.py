"""Personal relevance: today's papers ranked for each reader's profile (pure, no database)."""

from newsletter.relevance.model import (
    PaperText,
    Pick,
    ReaderProfile,
    RelevanceModel,
    Topic,
)
from newsletter.relevance.terms import TermStatistics

__all__ = ["PaperText", "Pick", "ReaderProfile", "RelevanceModel", "TermStatistics", "Topic"]
