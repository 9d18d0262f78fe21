"""`newsletter bounces serve`: an SMTP server (aiosmtpd) to be the MX of the bounce domain.

It takes mail only for the bounce address and its VERP forms (`bounces`,
`bounces+TOKEN`), refuses anything larger than `NEWSLETTER_BOUNCE_MAX_BYTES`
(552), and runs each report through `events_from_message` and
`record_feedback` in a worker thread, off the event loop. The answer to DATA:

- 250 once the report is recorded, and also when it is not understood (an
  auto-reply, garbage, a forged token): retrying would not help. Such a
  report is logged and, with `unrecognised_dir`, kept in a Maildir;
- 451 when the database cannot be written, so the sending server tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as SmtpProtocol
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from newsletter.core.clock import utc_now
from newsletter.core.settings import Settings
from newsletter.core.text import single_line
from newsletter.delivery.feedback.events import FeedbackEvent, FeedbackSummary
from newsletter.delivery.feedback.parsing import read_report
from newsletter.delivery.feedback.recording import record_feedback
from newsletter.delivery.verp import is_bounce_address

__all__ = ["BounceHandler", "serve_bounces"]

logger = logging.getLogger(__name__)

MAX_RECIPIENTS = 50  # a bounce has one; a report to many addresses is not one of ours
SESSION_TIMEOUT_SECONDS = 300
DATABASE_UNAVAILABLE = "451 4.3.0 cannot record the report now; try again later"


def describe_outcome(summary: FeedbackSummary) -> str:
    """What recording one event did, in a few words."""
    if summary.duplicates:
        return "seen before: nothing changed"
    if summary.unknown:
        return "no delivery or reader of ours: nothing changed"
    if summary.bounced:
        return "recorded; the reader is now bounced"
    if summary.complained:
        return "recorded; the reader is now complained"
    return "recorded"


def describe_event(event: FeedbackEvent) -> str:
    """One log line for an event: kind, address, delivery, reason."""
    delivery = f" delivery {event.delivery_id}" if event.delivery_id is not None else ""
    address = event.address or "(address withheld)"
    return f"{event.kind.value} {address}{delivery} [{event.source}]: {event.reason}"


@dataclass
class BounceHandler:
    """The aiosmtpd handler: RCPT only to the bounce address, DATA parsed and recorded."""

    settings: Settings
    engine: Engine
    report: Callable[[str], None] = logger.info
    clock: Callable[[], datetime] = utc_now
    unrecognised_dir: Path | None = None
    totals: FeedbackSummary = field(default_factory=FeedbackSummary)
    unrecognised: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self,
        server: SmtpProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept the bounce address and its VERP forms; refuse every other recipient."""
        if not is_bounce_address(self.settings, address):
            return "550 5.1.1 no such recipient here: this server takes bounces only"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SmtpProtocol, session: Session, envelope: Envelope) -> str:
        """Parse and record the report in a thread; 451 if the database cannot take it."""
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not raw:
            raw = envelope.content
        try:
            await asyncio.to_thread(self.process, raw, list(envelope.rcpt_tos))
        except SQLAlchemyError as error:
            logger.error(
                "cannot record a report: %s", single_line(str(error)).split(" [SQL:")[0][:300]
            )
            return DATABASE_UNAVAILABLE
        return "250 2.0.0 OK"

    def process(self, raw: bytes, recipients: Sequence[str]) -> FeedbackSummary:
        """Read one report and record what it tells (synchronous: runs in a worker thread).

        Each event is recorded in its own transaction, so the log line can say
        what it did; a report half recorded when the database fails is
        retried whole by its sender, and what was recorded is a duplicate then.
        """
        now = self.clock()
        events, why_none = read_report(
            raw, envelope_recipients=recipients, settings=self.settings, now=now
        )
        if why_none is not None:
            self._keep_unrecognised(raw, why_none)
            return FeedbackSummary()
        total = FeedbackSummary()
        for event in events:
            summary = record_feedback(self.engine, [event], settings=self.settings, now=now)
            total += summary
            self.report(f"{describe_event(event)} ({describe_outcome(summary)})")
        with self._lock:
            self.totals += total
        return total

    def _keep_unrecognised(self, raw: bytes, why: str) -> None:
        with self._lock:
            self.unrecognised += 1
            if self.unrecognised_dir is not None:
                mailbox.Maildir(self.unrecognised_dir, create=True).add(raw)
        kept = f"kept in {self.unrecognised_dir}" if self.unrecognised_dir else "dropped"
        self.report(f"unrecognised report of {len(raw)} bytes, {kept}: {why}")


def make_protocol(handler: BounceHandler, settings: Settings) -> SmtpProtocol:
    """One SMTP session of the bounce receiver."""
    mailbox_parts = settings.bounce_mailbox
    hostname = mailbox_parts[1] if mailbox_parts else "localhost"
    return SmtpProtocol(
        handler,
        hostname=hostname,
        data_size_limit=settings.bounce_max_bytes,
        enable_SMTPUTF8=True,
        decode_data=False,
        timeout=SESSION_TIMEOUT_SECONDS,
    )


async def serve_bounces(
    handler: BounceHandler,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[str, int], Any] | None = None,
) -> None:
    """Listen on host:port (0: any free port, told to `ready`) until `stop` is set."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: make_protocol(handler, handler.settings), host=host, port=port
    )
    bound_port = int(server.sockets[0].getsockname()[1])
    if ready is not None:
        ready(host, bound_port)
    async with server:
        await stop.wait()
        server.close()
