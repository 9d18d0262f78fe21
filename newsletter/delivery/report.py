"""What a send reports: the `SendProgress` a worker calls as it goes, and its `SendReport`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from newsletter.models import DeliveryStatus


@dataclass(frozen=True)
class SendReport:
    """What one send or worker run did.

    `queued` is how many rows were waiting when the run began; `sent`,
    `failed` and `bounced` count this run's final outcomes; `already_done`
    counts rows that were final before it began.
    """

    edition_date: dt.date | None
    queued: int
    sent: int
    failed: int
    bounced: int
    already_done: int
    paused_reason: str | None
    elapsed_seconds: float
    skipped: int = 0  # rows ended unsent because their subscriber left meanwhile


class SendProgress(Protocol):
    """What the engine reports while it sends; called from the event loop, so keep it cheap."""

    def started(self, total: int, already_done: int) -> None:
        """The run begins: `total` recipients, `already_done` of them final before it."""

    def advanced(self, status: DeliveryStatus, count: int = 1) -> None:
        """`count` recipients reached a final status (sent, failed or bounced)."""

    def waiting(self, count: int, until: dt.datetime, last_reply: str | None) -> None:
        """Nothing can go out now: `count` recipients wait to be retried, the first at `until`."""

    def finished(self, report: SendReport) -> None:
        """The run ended with this report."""
