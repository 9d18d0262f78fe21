"""What a bounce or complaint report says, whatever brought it: one `FeedbackEvent` each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class FeedbackKind(StrEnum):
    """What happened to a delivered message."""

    HARD_BOUNCE = "hard_bounce"  # permanent (5.x.x, Action: failed): the mailbox is gone
    SOFT_BOUNCE = "soft_bounce"  # transient (4.x.x, Action: delayed): counted, N in M days bounce
    COMPLAINT = "complaint"  # the reader reported it as spam (ARF Feedback-Type abuse or fraud)


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One recipient's bounce or complaint, as a report (DSN, ARF, SES, ...) tells it.

    `address` is "" when the report withholds it (Microsoft's complaints do);
    the delivery named by `delivery_id` or `message_id` then says whose it is.
    """

    kind: FeedbackKind
    address: str  # the recipient the report is about
    reason: str  # one line: status code + diagnostic, or the feedback type
    source: str  # "dsn", "bounce-text", "arf", "ses", ...
    occurred_at: datetime  # aware UTC
    delivery_id: int | None = None  # from a verified VERP token
    message_id: str | None = None  # our Message-ID if the report quotes it


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    """What `record_feedback` did with a batch of events."""

    recorded: int = 0  # new events, stored and acted on
    duplicates: int = 0  # seen before (the same report again): nothing changed
    unknown: int = 0  # naming no delivery or subscriber of ours: counted, nothing written
    bounced: int = 0  # readers newly made `bounced` (a hard bounce, or too many soft ones)
    complained: int = 0  # readers newly made `complained`

    def __add__(self, other: FeedbackSummary) -> FeedbackSummary:
        """Both summaries together."""
        return FeedbackSummary(
            recorded=self.recorded + other.recorded,
            duplicates=self.duplicates + other.duplicates,
            unknown=self.unknown + other.unknown,
            bounced=self.bounced + other.bounced,
            complained=self.complained + other.complained,
        )
