"""The sending engine: works an edition's delivery ledger over a pool of SMTP connections.

How one worker runs (`send_edition` and `run_worker` share it):

- a claimer leases batches of ledger rows and keeps a local queue topped up
  (it claims the next batch while half of the current one is still waiting);
- one task per transport lane takes rows from that queue, fills the compiled
  digest in for the recipient and sends it on the lane's open connection (a
  row whose message cannot be filled in ends `failed`, and the lane goes on);
  while a message goes out, the lane takes its next row, and the next
  envelope follows this content in the same write (one round trip per
  message; an envelope is no message, so the crash promise below is as it was);
- outcomes collect in memory and a flusher writes them in one transaction
  every FLUSH_INTERVAL_SECONDS or every FLUSH_MAX_ROWS outcomes, renews the
  worker's leases and notices editions paused or cancelled elsewhere.

A worker that could not renew within a lease (its loop blocked, its machine
paused) may have lost rows to another worker: before its next message it
renews and learns from the ledger which rows are still its own, and sends,
and records, none of the others.

A task that raises stops the whole run at once (the task group cancels the
others): outcomes in hand are written, the worker's rows go back to the queue
and the error reaches the caller, so a bug never leaves a send hanging.

The crash promise. Every queued recipient ends `sent`, `failed` or `bounced`:
a row leaves `queued` only through a written outcome or an operator's
cancel, and rows held by a worker that died return to the queue when its
lease (NEWSLETTER_SEND_LEASE_SECONDS) expires. A message is sent twice only
when the server accepted it but its `sent` mark was not yet committed when
the worker died; per worker, that is at most the messages in flight (one per
lane: `smtp_concurrency` × relays) plus the accepted-but-unwritten outcomes.
The backpressure below caps those two together at FLUSH_MAX_ROWS + lanes - 1
while no batch is being written, and as much again while one is. So after a
crash, duplicates ≤ 2 × (lanes + FLUSH_MAX_ROWS) per worker that died, in
practice the messages of the last ~0.2 s. A resent message carries the same
Message-ID (derived from the ledger row), so receiving servers that remember
Message-IDs drop the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import NoReturn, Protocol, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from newsletter.core.clock import utc_now
from newsletter.core.db import SQLITE_LOCK_TIMEOUT_SECONDS, try_begin_write
from newsletter.core.errors import DeliveryError, NewsletterError
from newsletter.core.memory import freeze_what_lives_on
from newsletter.core.scheduling import as_batch_work
from newsletter.core.settings import Settings
from newsletter.core.wire import PreparedMessage
from newsletter.delivery import ledger, pacing
from newsletter.delivery.assemble import CompiledDigest, Recipient, make_message_id
from newsletter.delivery.breaker import (
    EARLY_TRIP_ATTEMPTS,
    BreakerCheck,
    BreakerState,
    pause_sending_edition,
    record_attempts,
)
from newsletter.delivery.control import (
    CANCELLED_BY_OPERATOR,
    cancel_edition,
    load_rendered_edition,
    pause_edition,
    picks_if_draft,
    resume_edition,
    start_edition,
    start_with_selections,
)
from newsletter.delivery.ledger import (
    LEFT_BEFORE_SENDING,
    ClaimedDelivery,
    MessageIdParts,
    Outcome,
    OutcomeKind,
    clean_error_text,
)
from newsletter.delivery.one_copy import send_test_copy
from newsletter.delivery.pacing import PaceRates
from newsletter.delivery.report import SendProgress, SendReport
from newsletter.delivery.selections import PersonalDigests
from newsletter.delivery.transport import (
    NextMessage,
    NextMessageSource,
    SmtpPool,
    SmtpReply,
    SmtpStage,
)
from newsletter.delivery.verp import EnvelopeSenders
from newsletter.models import DeliveryStatus, Edition, EditionStatus

# The operator's controls and the test copy live in `control` and `one_copy` (which the
# web app uses without importing this module); they are re-exported for the CLI.
__all__ = [
    "CANCELLED_BY_OPERATOR",
    "EARLY_TRIP_ATTEMPTS",
    "FLUSH_INTERVAL_SECONDS",
    "FLUSH_MAX_ROWS",
    "POLICY_STREAK",
    "Blame",
    "MessageTransport",
    "SendReport",
    "SendStart",
    "blame_reply",
    "cancel_edition",
    "classify_reply",
    "pause_edition",
    "prepare_send",
    "resume_edition",
    "run_worker",
    "send_edition",
    "send_test_copy",
    "start_edition",
]

logger = logging.getLogger("newsletter.delivery")

FLUSH_INTERVAL_SECONDS = 0.2
# The first wait for rows another worker has in flight (see `_idle_and_done`).
IN_FLIGHT_FIRST_WAIT_SECONDS = 0.01
FLUSH_MAX_ROWS = 128
IDLE_POLL_SECONDS = 1.0
# How long a worker waits before asking again for SQLite's write lock held by another process.
LOCK_RETRY_FIRST_SECONDS = 0.0005
LOCK_RETRY_MAX_SECONDS = 0.004
STATUS_CHECK_SECONDS = 1.0
MAX_RETRY_DELAY_SECONDS = 6 * 3600.0
# Temporary codes named by the issue; any other 4xx is temporary as well.
_BOUNCE_CODES = frozenset({550, 551, 553})
# Policy refusals (5.7.x) of this many different readers in a row are the relay's, not theirs.
POLICY_STREAK = 3

T = TypeVar("T")

Clock = Callable[[], dt.datetime]
# Picks a retry delay between its two bounds; `random.uniform` unless a test fixes it.
Jitter = Callable[[float, float], float]


class MessageTransport(Protocol):
    """What the engine needs to deliver bytes: `lanes` sends may run at once, one per lane."""

    @property
    def lanes(self) -> int:
        """How many messages may be in flight at once."""
        ...

    async def send(
        self,
        lane: int,
        sender: str,
        recipient: str,
        message: PreparedMessage,
        *,
        next_message: NextMessageSource | None = None,
    ) -> SmtpReply:
        """Deliver one message on the lane and report the server's answer.

        `next_message` may be asked, once, for the lane's next message while this
        one goes out (its envelope can then follow this content: one round trip).
        """
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


class Blame(StrEnum):
    """Whom a refusal concerns (see `blame_reply`)."""

    READER = "reader"  # this recipient: the row retries, fails or bounces
    RELAY = "relay"  # the sender or the session, every reader alike: pause, touch no row
    POLICY = "policy"  # a 5.7.x refusal of one recipient: the relay's once it repeats


def enhanced_status(text: str) -> str:
    """The RFC 3463 enhanced status code a reply's text begins with ("5.7.1"), or ""."""
    head = text.lstrip().split(" ", 1)[0]
    parts = head.split(".")
    if len(parts) == 3 and parts[0] in ("2", "4", "5") and all(part.isdigit() for part in parts):
        return head
    return ""


def blame_reply(reply: SmtpReply) -> Blame:
    """Whom a refusal concerns: the rules, from RFC 5321 reply codes and RFC 3463 statuses.

    The relay (every reader alike), whatever the code: no session at all
    (refused, unreachable, a 4xx/5xx greeting, EHLO or STARTTLS refused); AUTH
    refused; 530 at any stage (authentication required, RFC 4954); 5xx to MAIL
    FROM (the sender is refused). A 5xx with a 5.7.x status (security or
    policy) at RCPT or DATA is POLICY: the relay's once it repeats for
    POLICY_STREAK readers in a row, else that reader's. Anything else (4xx,
    5.1.x, a connection lost mid-message) concerns the reader. The README's
    "How a send works" has the same rules as a table.
    """
    code = reply.code
    if reply.stage in (SmtpStage.CONNECT, SmtpStage.LOGIN) or code == 530:
        return Blame.RELAY
    if code is None or code < 500:
        return Blame.READER
    if reply.stage is SmtpStage.MAIL:
        return Blame.RELAY
    if reply.stage in (SmtpStage.RCPT, SmtpStage.DATA) and enhanced_status(reply.text).startswith(
        "5.7."
    ):
        return Blame.POLICY
    return Blame.READER


def classify_reply(reply: SmtpReply, *, attempt: int, max_attempts: int) -> OutcomeKind:
    """What a refusal that concerns the reader means for its row (the rules of the ledger)."""
    code = reply.code
    if code is None or 400 <= code < 500:
        return OutcomeKind.RETRY if attempt < max_attempts else OutcomeKind.FAILED
    status = enhanced_status(reply.text)
    if (
        reply.stage is SmtpStage.RCPT
        and not status.startswith("5.7.")  # a policy refusal says nothing of the mailbox
        and (code in _BOUNCE_CODES or status.startswith("5.1."))
    ):
        return OutcomeKind.BOUNCED
    return OutcomeKind.FAILED


def describe_relay_refusal(reply: SmtpReply, *, repeated: int = 1) -> str:
    """One line for the operator: what the relay refused (no reader's row was touched)."""
    said = f"{reply.code} {reply.text}" if reply.code is not None else reply.text
    if reply.stage in (SmtpStage.CONNECT, SmtpStage.LOGIN):
        what = reply.text
    elif reply.code == 530:
        what = (
            f"the SMTP relay asks for authentication ({said}); "
            "set NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD"
        )
    elif repeated > 1:
        what = f"the SMTP relay refused {repeated} readers in a row by policy (last: {said})"
    else:
        what = f"the SMTP relay refused the sender at MAIL FROM ({said})"
    return clean_error_text(what)


def retry_delay(base_seconds: float, attempt: int, *, jitter: Jitter = random.uniform) -> float:
    """Exponential backoff with jitter: about base × 2^(attempt-1), between half and all of it."""
    if base_seconds <= 0:
        return 0.0
    ceiling = min(MAX_RETRY_DELAY_SECONDS, base_seconds * 2 ** (attempt - 1))
    return jitter(ceiling / 2, ceiling)


def _host_name() -> str:
    return socket.gethostname()[:40]


def default_worker_id() -> str:
    """host:pid:random, unique per process even when a pid is reused."""
    return f"{_host_name()}:{os.getpid()}:{secrets.token_hex(3)}"


def is_dead_local_worker(worker_id: str) -> bool:
    """True for a default worker id of this machine whose process no longer exists.

    A send killed and restarted by hand would otherwise wait a whole lease
    (NEWSLETTER_SEND_LEASE_SECONDS) for the rows the dead process held. Only
    ids of this host count, and a pid that is alive (or reused) counts as
    alive: the safe direction, since then the lease simply runs out.
    """
    host, _, rest = worker_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _host_name() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return False


# ---- the worker ----------------------------------------------------------------------------


# A delivery id no real row reaches, used to cut `make_message_id`'s output in two.
_ID_MARKER = 987_654_321_987_654_321


@dataclass(frozen=True, slots=True)
class _CompiledEdition:
    edition_date: dt.date
    digest: CompiledDigest
    message_ids: MessageIdParts
    senders: EnvelopeSenders
    # The edition's personal digests (None: no row has a selection).
    personal: PersonalDigests | None = None

    def digest_for(self, selection_id: int | None) -> CompiledDigest:
        """The compiled digest a row gets: its selection's, or the trending one."""
        if selection_id is None or self.personal is None:
            return self.digest
        return self.personal.digest(selection_id)

    @classmethod
    def compile(
        cls,
        settings: Settings,
        edition: Edition,
        *,
        clock: Clock,
        personal: PersonalDigests | None = None,
    ) -> _CompiledEdition:
        """Compile the digest once, and the Message-ID format around the delivery id."""
        digest = CompiledDigest.compile(
            settings,
            subject=edition.subject,
            html=edition.html,
            text=edition.text,
            edition_date=edition.date,
            link_marker=edition.link_marker,
            clock=clock,
        )
        # make_message_id parses the From address on every call; per message
        # that costs more than the rest of the bookkeeping, so cut it once.
        sample = make_message_id(settings, edition_date=edition.date, delivery_id=_ID_MARKER)
        prefix, marker, suffix = sample.partition(str(_ID_MARKER))
        compiled = cls(
            edition.date,
            digest,
            MessageIdParts(prefix, suffix),
            EnvelopeSenders(settings),
            personal,
        )
        expected = make_message_id(settings, edition_date=edition.date, delivery_id=42)
        if not marker or compiled.message_id(42) != expected:
            raise DeliveryError(f"cannot derive Message-IDs from the format of {sample!r}")
        return compiled

    def message_id(self, delivery_id: int) -> str:
        """The Message-ID of a delivery row: what `make_message_id` gives, cheaply."""
        return self.message_ids.format(delivery_id)


@dataclass(frozen=True, slots=True)
class _PreparedDelivery:
    """One row's message as it goes out."""

    message_id: str
    sender: str  # the envelope sender (VERP: it names the row)
    message: PreparedMessage


@dataclass(slots=True)
class _TakenAhead:
    """A row a lane took while its last message went out; prepared once offered, or before."""

    job: ClaimedDelivery
    prepared: _PreparedDelivery | None = None


class _Worker:
    """One worker's claimer, lanes and flusher around one transport."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        transport: MessageTransport,
        worker_id: str,
        progress: SendProgress | None,
        edition_id: int | None,
        stop_when_idle: bool,
        stop: asyncio.Event,
        clock: Clock,
        jitter: Jitter,
    ) -> None:
        self.settings = settings
        self.clock = clock  # every time the ledger records, and each message's Date
        self.jitter = jitter
        self.engine = engine
        self.transport = transport
        self.worker_id = worker_id[:64]
        self.progress = progress
        self.edition_id = edition_id  # None: any edition that is sending
        self.stop_when_idle = stop_when_idle
        self.stop = stop  # set: finish the messages in flight, hand back the rest, return
        # The relay's pace, shared with every other worker through the database.
        self.pace = PaceRates.from_limits(
            per_second=settings.send_rate_per_second, per_hour=settings.send_rate_per_hour
        )
        self.batch_size = settings.send_batch_size
        # Claim the next batch while half of this one still waits, except under a shared pace:
        # there rows are paid for when claimed, and rows paid for but held back here would go
        # out later in a bunch, so the next batch is claimed only once the queue is empty.
        self.low_water = (
            max(settings.send_batch_size // 2, 2 * transport.lanes) if self.pace.unlimited else 1
        )
        self.jobs: asyncio.Queue[ClaimedDelivery | None] = asyncio.Queue()
        self.hungry = asyncio.Event()
        self.hungry.set()
        self.pending: list[Outcome] = []
        self.held: set[int] = set()  # claimed rows whose outcome is not yet written
        # Rows in hand that another worker took over while this one could not renew
        # (a stalled loop): never sent from here, no outcome written for them.
        self.lost: set[int] = set()
        # Per lane, the row it took while its last message went out (see `_lane`).
        self.taken_ahead: dict[int, _TakenAhead] = {}
        # Per lane, the row after that one, prepared while the lane waited for the relay.
        self.prepared_ahead: dict[int, _TakenAhead] = {}
        self.leased_until = 0.0  # monotonic time until which every held row is surely ours
        self.flush_now = asyncio.Event()
        self.out_of_rows = False  # the last claim found nothing while rows were in hand
        # How long to wait before looking again at rows another worker is sending.
        self.in_flight_wait = IN_FLIGHT_FIRST_WAIT_SECONDS
        self.flushed = asyncio.Event()
        self.room = asyncio.Event()
        self.flush_lock = asyncio.Lock()
        self.finished = False
        self.compiled: dict[int, _CompiledEdition] = {}
        self.edition_dates: set[dt.date] = set()  # every edition this run worked on
        self.stopped: dict[int, str | None] = {}  # edition id → why it stopped (paused/cancelled)
        self.pausing: set[int] = set()  # editions whose pause this worker is writing
        # Per edition, the shared breaker's counters as last read, and this worker's attempts
        # (True = failed) since, written with their outcomes (see `breaker`).
        self.breakers: dict[int, BreakerState] = {}
        self.attempt_log: dict[int, list[bool]] = {}
        self.last_errors: dict[int, str] = {}
        # Per edition, policy refusals (5.7.x) held unwritten until the next outcome shows
        # whether they concern their readers or, repeated, the relay (see `blame_reply`).
        self.suspects: dict[int, list[tuple[ClaimedDelivery, str, SmtpReply]]] = {}
        self.sent = self.failed = self.bounced = self.skipped = 0
        self.paused_reason: str | None = None
        self.last_refusal: str | None = None  # the last reply that sent a row to wait for a retry

    # -- database calls run on the event loop, between sends --

    async def _db(self, work: Callable[[Connection], T]) -> T:
        # Measured at 32 connections: handing each statement to a thread made
        # the GIL bounce between that thread and the loop's socket calls, about
        # 150 µs of CPU per message, more than all the other bookkeeping. These
        # statements are short and batched, and never wait on another worker's
        # rows (SKIP LOCKED), so running them inline costs far less. On SQLite
        # another process may hold the one write lock: rather than sleep in
        # SQLite's busy handler, which stalled every lane (two processes slept
        # 2.4 s in all over 10,000 messages), the loop goes on sending and asks again.
        waited, pause = 0.0, LOCK_RETRY_FIRST_SECONDS
        while True:
            with self.engine.begin() as connection:
                # Past the timeout, SQLite's own busy wait decides (and its error is raised).
                if waited >= SQLITE_LOCK_TIMEOUT_SECONDS or try_begin_write(connection):
                    return work(connection)
            await asyncio.sleep(pause)
            waited += pause
            pause = min(2 * pause, LOCK_RETRY_MAX_SECONDS)

    # -- the run --

    async def run(self) -> None:
        """Claim, send and record until nothing is claimable (or for ever, or until stopped).

        A task that fails stops the run: the task group cancels the others, the
        outcomes in hand are written, this worker's rows go back to the queue, and
        the error is raised (see `_raise_stopped_by`), never left in a task.
        """
        watcher = asyncio.create_task(self._wake_on_stop())
        failure: ExceptionGroup[Exception] | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._flush_loop())
                lanes = [
                    tasks.create_task(self._lane(lane)) for lane in range(self.transport.lanes)
                ]
                await self._claim_loop()
                self._release_waiting()
                for _ in lanes:
                    self.jobs.put_nowait(None)
                await asyncio.gather(*lanes)
                self.finished = True
                self.flush_now.set()
        except ExceptionGroup as group:
            failure = group
        finally:
            watcher.cancel()
            self.finished = True
            self._write_everything_left()
        if failure is not None:
            self._hand_back_leases()
            self._raise_stopped_by(failure)

    def _hand_back_leases(self) -> None:
        # Rows a lane held when the run stopped would otherwise wait out the lease
        # (this process is alive, so a restart here does not take them back at once).
        try:
            with self.engine.begin() as connection:
                released = ledger.release_leases(connection, [self.worker_id])
        except Exception:
            logger.exception("worker %s could not hand back its recipients", self.worker_id)
            return
        if released:
            logger.warning("worker %s handed %d recipients back", self.worker_id, released)

    def _raise_stopped_by(self, group: ExceptionGroup[Exception]) -> NoReturn:
        """Raise the error that stopped the run, out of the task group's wrapping.

        Errors that already say what went wrong (the product's own, the database's,
        the file system's) pass as they are; anything else is a bug, logged with its
        traceback and raised as a DeliveryError that says what to do.
        """
        first, *others = dict.fromkeys(group.exceptions)  # a lane's error can come twice
        for other in others:
            logger.error("worker %s: another error as it stopped", self.worker_id, exc_info=other)
        if isinstance(first, NewsletterError | SQLAlchemyError | OSError):
            raise first
        logger.error("worker %s stopped on an unexpected error", self.worker_id, exc_info=first)
        raise DeliveryError(
            f"the send stopped on an unexpected error ({type(first).__name__}: {first}); "
            "its unsent recipients are back in the queue: run the same command again to continue"
        ) from first

    async def _wake_on_stop(self) -> None:
        await self.stop.wait()
        self.hungry.set()

    def _release_waiting(self) -> None:
        """Hand back the claimed rows no lane has taken yet (when stopping; else none wait)."""
        while not self.jobs.empty():
            job = self.jobs.get_nowait()
            if job is not None:
                self._add_outcome(Outcome(job.id, OutcomeKind.RELEASED))

    def _write_everything_left(self) -> None:
        # Runs on the way out, also on cancellation or a crash of a task:
        # write every outcome we have and hand back rows we never tried.
        while not self.jobs.empty():
            job = self.jobs.get_nowait()
            if job is not None and job.id not in self.lost:
                self.pending.append(Outcome(job.id, OutcomeKind.RELEASED))
        # A lane stopped before it could send them.
        for ahead in [*self.taken_ahead.values(), *self.prepared_ahead.values()]:
            if ahead.job.id not in self.lost:
                self.pending.append(Outcome(ahead.job.id, OutcomeKind.RELEASED))
        self.taken_ahead.clear()
        self.prepared_ahead.clear()
        for streak in self.suspects.values():
            # Undecided on the way out: back to the queue as they were.
            self.pending.extend(Outcome(job.id, OutcomeKind.RELEASED) for job, _, _ in streak)
        self.suspects.clear()
        attempts, self.attempt_log = self.attempt_log, {}
        if self.pending or attempts:
            batch, self.pending = self.pending, []
            with self.engine.begin() as connection:
                checks = self._write_outcomes(connection, batch, attempts, self.clock())
            self.held.difference_update(outcome.delivery_id for outcome in batch)
            for edition_id, check in checks.items():
                if check.tripped is not None:  # tripped on the way out: pause it all the same
                    _in_transaction(self.engine, partial(_pause_tripped, edition_id, check.tripped))

    async def _claim_loop(self) -> None:
        while True:
            await self.hungry.wait()
            self.hungry.clear()
            if self.stop.is_set():
                return
            claimed_at = time.monotonic()
            rows, pace_wait = await self._db(self._claim)
            if rows is None:
                # The shared pace has no tokens for now: ask again when it will.
                await _wait_briefly(self.stop, pace_wait)
                self.hungry.set()
                continue
            if rows:
                self.out_of_rows = False
                self.in_flight_wait = IN_FLIGHT_FIRST_WAIT_SECONDS
                claimed_editions = {row.edition_id for row in rows}
                await self._compile_missing(claimed_editions)
                self._read_selections(rows)
                for edition_id in claimed_editions - self.pausing:
                    # Only sending editions have claimable rows: resumed since we stopped
                    # (unless this worker's own pause is still being written).
                    self.stopped.pop(edition_id, None)
                if not self.held:
                    self.leased_until = claimed_at + self.settings.send_lease_seconds
                for row in rows:
                    # After a stall our own lapsed rows can come back: keep one copy in hand.
                    if row.id not in self.held:
                        self.held.add(row.id)
                        self.lost.discard(row.id)
                        self.jobs.put_nowait(row)
                if self.jobs.qsize() < self.low_water:
                    self.hungry.set()
                continue
            if self.held:
                if self.suspects and self._only_suspects_in_hand():
                    # No other reader left to tell: the held policy refusals are their own.
                    await self._settle_suspects()
                # Rows still in our hands may come back as retries once written: ask
                # again after the next flush, which comes at once when the last of them
                # is done (`_add_outcome`). Asking sooner finds nothing, and every claim
                # is a write transaction on the loop the lanes need: the last rows of a
                # run went out slower while empty claims followed each other.
                self.out_of_rows = True
                self.flushed.clear()
                if self._every_outcome_in_hand():
                    self.flush_now.set()
                await _wait_briefly(self.flushed, FLUSH_INTERVAL_SECONDS)
                self.hungry.set()
                continue
            if await self._idle_and_done():
                return
            self.hungry.set()

    def _claim(self, connection: Connection) -> tuple[list[ClaimedDelivery] | None, float]:
        """Lease a batch, no larger than the shared pace allows, in one transaction."""
        now = self.clock()
        return pacing.claim_paced(
            connection,
            self.pace,
            want=self.batch_size,
            now=now,
            claim=lambda limit: ledger.claim_batch(
                connection,
                edition_id=self.edition_id,
                worker_id=self.worker_id,
                limit=limit,
                now=now,
                lease_seconds=self.settings.send_lease_seconds,
            ),
        )

    def _only_suspects_in_hand(self) -> bool:
        """True when every held row is a held policy refusal or has its outcome waiting."""
        settled = {outcome.delivery_id for outcome in self.pending}
        settled.update(job.id for streak in self.suspects.values() for job, _, _ in streak)
        return self.held <= settled

    async def _idle_and_done(self) -> bool:
        """Nothing claimable and nothing in hand: finish editions, stop, or wait for retries."""
        edition_id = self.edition_id
        if edition_id is not None:
            status, reason = await self._db(lambda c: _edition_status(c, edition_id))
            if status is not EditionStatus.SENDING:
                if status is EditionStatus.PAUSED:
                    self.paused_reason = reason or "paused"
                return True
        waiting, wake, in_flight = await self._db(
            lambda c: ledger.queued_and_next_wake_time(c, edition_id=edition_id)
        )
        if wake is None:
            await self._db(
                lambda c: ledger.finish_editions(c, edition_id=edition_id, now=self.clock())
            )
            if self.stop_when_idle or edition_id is not None:
                return True
            # Running for ever: nothing is in hand, so forget finished editions' digests
            # (a later claim compiles them again), then look for new work every poll.
            self.compiled.clear()
            self.breakers.clear()
            self.last_errors.clear()
            self.stopped.clear()
            await _wait_briefly(self.stop, IDLE_POLL_SECONDS)
            return False
        if in_flight:
            # Another worker is sending the rows left: look again soon, since it
            # finishes them in moments (it is the lease's end only if it died),
            # and a whole poll would keep the send from ending for a second. Soon
            # is 10 ms at first, then twice as long each time up to a flush
            # interval: with two processes, one always ends first, and it waited
            # a whole interval after the other's last messages before it ended.
            await _wait_briefly(self.stop, self.in_flight_wait)
            self.in_flight_wait = min(2 * self.in_flight_wait, FLUSH_INTERVAL_SECONDS)
            return False
        delay = (wake - self.clock()).total_seconds()
        if delay > 0 and self.progress is not None:
            # Every row left waits on its backoff: say so rather than sit silent.
            self.progress.waiting(waiting, wake, self.last_refusal)
        await _wait_briefly(self.stop, min(max(delay, 0.01), IDLE_POLL_SECONDS))
        return False

    async def _compile_missing(self, edition_ids: set[int]) -> None:
        missing = sorted(edition_ids - self.compiled.keys())
        if not missing:
            return
        editions = await self._db(lambda c: _load_editions(c, missing))
        for edition in editions:
            edition_id = edition.id
            assert edition_id is not None
            personal = await asyncio.to_thread(
                PersonalDigests.load,
                self.settings,
                self.engine,
                edition_id=edition_id,
                clock=self.clock,
            )
            self.compiled[edition_id] = _CompiledEdition.compile(
                self.settings, edition, clock=self.clock, personal=personal
            )
            self.edition_dates.add(edition.date)

    def _read_selections(self, rows: Sequence[ClaimedDelivery]) -> None:
        """Read the selections the claimed rows point at, one query per edition.

        Inline, as `_db` runs its statements: a short read by primary key
        that no writer blocks (a lane reads one itself if it was dropped since).
        """
        wanted: dict[int, set[int]] = {}
        for row in rows:
            if row.selection_id is not None:
                wanted.setdefault(row.edition_id, set()).add(row.selection_id)
        for edition_id, selection_ids in wanted.items():
            personal = self.compiled[edition_id].personal
            if personal is not None:
                personal.prefetch(selection_ids)

    async def _lane(self, lane: int) -> None:
        jobs = self.jobs
        transport = self.transport
        progress = self.progress
        ended = False  # the end of the queue was taken while a message went out

        def take() -> _TakenAhead | None:
            """The lane's next row from the queue, if one is there now (None at its end)."""
            nonlocal ended
            if ended or jobs.empty():
                return None
            job = jobs.get_nowait()
            if jobs.qsize() < self.low_water:
                self.hungry.set()
            if job is None:
                ended = True
                return None
            return _TakenAhead(job)

        def may_go_out(job: ClaimedDelivery) -> bool:
            """The checks that need no waiting (the loop below makes them all again)."""
            return not (
                self.stop.is_set()
                or self.lost
                or time.monotonic() >= self.leased_until
                or job.edition_id in self.stopped
                or not job.still_subscribed
            )

        def prepare_once(ahead: _TakenAhead) -> _PreparedDelivery | None:
            if ahead.prepared is None:
                try:
                    ahead.prepared = self._prepare(ahead.job)
                except Exception:
                    return None  # prepared again below, which records why it cannot be
            return ahead.prepared

        def prepare_following() -> None:
            """While this lane's message is with the relay: take and prepare the one after.

            Called soon after the content went out, so the lane's next message is
            ready the moment the relay answers, rather than prepared then while
            the relay waits: with several sending processes on few cores, each
            one often idles for the relay, which then idles for it.
            """
            if lane in self.prepared_ahead or lane not in self.taken_ahead:
                return
            ahead = take()
            if ahead is None:
                return
            self.prepared_ahead[lane] = ahead
            if may_go_out(ahead.job):
                prepare_once(ahead)

        def next_message() -> NextMessage | None:
            """Take the next row while this lane's message goes out, and offer it if ready.

            Asked by the transport once the current envelope is accepted, so the
            next envelope can follow the content. The row is the lane's next
            whatever this answers: the loop below checks it again as it checks
            every row (the checks here are the ones that need no waiting) and
            sends the message prepared here, or hands the row back.
            """
            if lane in self.taken_ahead:
                return None
            ahead = self.prepared_ahead.pop(lane, None) or take()
            if ahead is None:
                return None
            self.taken_ahead[lane] = ahead
            if not may_go_out(ahead.job) or len(self.pending) >= FLUSH_MAX_ROWS - 1:
                return None
            ready = prepare_once(ahead)
            if ready is None:
                return None
            asyncio.get_running_loop().call_soon(prepare_following)
            return NextMessage(ready.sender, ahead.job.email, ready.message)

        while True:
            ahead = self.taken_ahead.pop(lane, None) or self.prepared_ahead.pop(lane, None)
            if ahead is not None:
                job = ahead.job
                prepared = ahead.prepared
            else:
                if ended:
                    return
                next_job = await jobs.get()
                if next_job is None:
                    return
                job, prepared = next_job, None
                if jobs.qsize() < self.low_water:
                    self.hungry.set()
            if (self.lost or time.monotonic() >= self.leased_until) and await self._taken_over(job):
                continue
            if job.edition_id in self.stopped:
                self._add_outcome(Outcome(job.id, OutcomeKind.RELEASED))
                continue
            if not job.still_subscribed:
                # They left after the audience was fixed: honour it now, not next edition.
                self._add_outcome(Outcome(job.id, OutcomeKind.SKIPPED, error=LEFT_BEFORE_SENDING))
                self.skipped += 1
                if progress is not None:
                    progress.advanced(DeliveryStatus.SKIPPED)
                continue
            while len(self.pending) >= FLUSH_MAX_ROWS:
                # Backpressure: accepted messages must not pile up unwritten.
                self.room.clear()
                self.flush_now.set()
                await self.room.wait()
            if self.stop.is_set():
                # Stopping: this row waited for room and has not gone out; hand it back.
                self._add_outcome(Outcome(job.id, OutcomeKind.RELEASED))
                continue
            # Checked again: it may have waited for room meanwhile.
            if (self.lost or time.monotonic() >= self.leased_until) and await self._taken_over(job):
                continue
            compiled = self.compiled[job.edition_id]
            if prepared is None:
                try:
                    prepared = self._prepare(job)
                except Exception as error:
                    # One bad row (an address no header can carry, a key no link can) fails
                    # for good, with the reason; it must not stop the others' messages.
                    reply = SmtpReply(None, f"message not prepared: {error}", SmtpStage.PREPARE)
                    await self._refused(job, compiled.message_id(job.id), reply, permanent=True)
                    continue
            message_id = prepared.message_id
            reply = await transport.send(
                lane, prepared.sender, job.email, prepared.message, next_message=next_message
            )
            if reply.accepted:
                self._add_outcome(
                    Outcome(
                        job.id,
                        OutcomeKind.SENT,
                        message_id=message_id,
                        message_id_parts=compiled.message_ids,
                    )
                )
                self.sent += 1
                if progress is not None:
                    progress.advanced(DeliveryStatus.SENT)
                self.attempt_log.setdefault(job.edition_id, []).append(False)
                if self.suspects:
                    await self._settle_suspects(job.edition_id)
            else:
                await self._refused(job, message_id, reply)

    def _prepare(self, job: ClaimedDelivery) -> _PreparedDelivery:
        """The row's message, its Message-ID and its envelope sender; raises if it cannot be."""
        compiled = self.compiled[job.edition_id]
        message_id = compiled.message_id(job.id)
        digest = compiled.digest_for(job.selection_id)
        message = digest.prepare(Recipient(job.email, job.name, job.subscriber_key, message_id))
        # VERP: the bounce names this row.
        return _PreparedDelivery(message_id, compiled.senders.for_delivery(job.id), message)

    async def _refused(
        self, job: ClaimedDelivery, message_id: str, reply: SmtpReply, *, permanent: bool = False
    ) -> None:
        edition_id = job.edition_id
        blame = Blame.READER if permanent else blame_reply(reply)
        if blame is not Blame.READER and edition_id in self.stopped:
            # Paused meanwhile (by this relay's refusal, most likely): the row goes back as it was.
            self._add_outcome(Outcome(job.id, OutcomeKind.RELEASED))
            return
        if blame is Blame.RELAY:
            # It concerns the sender or the session, every reader alike: hand the row back
            # untried and stop the edition at once (before a relay locks us out, too).
            self._add_outcome(Outcome(job.id, OutcomeKind.RELEASED))
            self._release_suspects(edition_id)
            await self._pause_for(edition_id, describe_relay_refusal(reply))
            return
        if blame is Blame.POLICY:
            # One reader's policy refusal, or the relay's: hold the row unwritten until
            # the next reader's outcome tells which.
            streak = self.suspects.setdefault(edition_id, [])
            streak.append((job, message_id, reply))
            if len(streak) >= POLICY_STREAK:
                self._release_suspects(edition_id)
                await self._pause_for(
                    edition_id, describe_relay_refusal(reply, repeated=len(streak))
                )
            return
        await self._settle_suspects(edition_id)
        await self._record_refusal(job, message_id, reply, permanent=permanent)

    def _release_suspects(self, edition_id: int) -> None:
        for job, _, _ in self.suspects.pop(edition_id, []):
            self._add_outcome(Outcome(job.id, OutcomeKind.RELEASED))

    async def _settle_suspects(self, edition_id: int | None = None) -> None:
        """Record held policy refusals as their readers' own (the streak was broken)."""
        editions = list(self.suspects) if edition_id is None else [edition_id]
        for each in editions:
            if each in self.stopped:
                # Paused or cancelled meanwhile: undecided, so back to the queue as they were.
                self._release_suspects(each)
                continue
            for job, message_id, reply in self.suspects.pop(each, []):
                await self._record_refusal(job, message_id, reply)

    async def _record_refusal(
        self, job: ClaimedDelivery, message_id: str, reply: SmtpReply, *, permanent: bool = False
    ) -> None:
        attempt = job.attempts + 1
        settings = self.settings
        kind = (
            OutcomeKind.FAILED
            if permanent
            else classify_reply(reply, attempt=attempt, max_attempts=settings.send_max_attempts)
        )
        text = clean_error_text(reply.text)
        next_attempt_at = None
        if kind is OutcomeKind.RETRY:
            self.last_refusal = f"{reply.code if reply.code is not None else 'no reply'} {text}"
            failed_at = self.clock()
            delay = retry_delay(settings.send_retry_base_seconds, attempt, jitter=self.jitter)
            next_attempt_at = failed_at + dt.timedelta(seconds=delay)
        self._add_outcome(
            Outcome(
                job.id,
                kind,
                message_id=message_id,
                code=reply.code,
                error=text,
                next_attempt_at=next_attempt_at,
                subscriber_key=job.subscriber_key,
            )
        )
        compiled = self.compiled[job.edition_id]
        logger.warning(
            "send failure edition=%s delivery=%d email=%s code=%s stage=%s attempt=%d "
            "outcome=%s error=%r",
            compiled.edition_date.isoformat(),
            job.id,
            clean_error_text(job.email),
            reply.code if reply.code is not None else "-",
            reply.stage.value,
            attempt,
            kind.value,
            text,
        )
        final_status = {
            OutcomeKind.FAILED: DeliveryStatus.FAILED,
            OutcomeKind.BOUNCED: DeliveryStatus.BOUNCED,
        }.get(kind)
        if final_status is DeliveryStatus.FAILED:
            self.failed += 1
        elif final_status is DeliveryStatus.BOUNCED:
            self.bounced += 1
        if final_status is not None and self.progress is not None:
            self.progress.advanced(final_status)
        edition_id = job.edition_id
        self.attempt_log.setdefault(edition_id, []).append(True)
        code = reply.code if reply.code is not None else "no reply"
        self.last_errors[edition_id] = f"{code} {text}"
        if edition_id not in self.stopped and self._may_trip(edition_id):
            # Written now rather than at the next flush: the shared breaker decides, and
            # every message sent meanwhile would be one more to a failing relay.
            await self._flush()

    def _may_trip(self, edition_id: int) -> bool:
        """Whether the breaker as last read, plus this worker's unwritten attempts, trips."""
        known = self.breakers.get(edition_id, BreakerState())
        _, reason = known.after(
            self.attempt_log.get(edition_id, ()),
            window=self.settings.send_failure_window,
            threshold=self.settings.send_failure_threshold,
        )
        return reason is not None

    async def _pause_for(self, edition_id: int, reason: str) -> None:
        edition_date = self.compiled[edition_id].edition_date
        self.stopped[edition_id] = reason
        self.paused_reason = clean_error_text(reason)
        logger.error("send paused edition=%s reason=%r", edition_date.isoformat(), reason)
        self.pausing.add(edition_id)
        try:
            # Only a sending edition pauses: one paused, cancelled or finished meanwhile
            # stopped either way, and keeps the reason it has.
            await asyncio.to_thread(
                _in_transaction,
                self.engine,
                lambda c: pause_sending_edition(c, edition_id=edition_id, reason=reason),
            )
        finally:
            self.pausing.discard(edition_id)

    async def _taken_over(self, job: ClaimedDelivery) -> bool:
        """True for a row another worker took over while this one could not renew its lease.

        Renewals come every third of a lease; past `leased_until` this worker stalled
        (its loop blocked, its machine paused), so it asks the ledger which rows are
        still its own before sending anything.
        """
        if time.monotonic() >= self.leased_until:
            await self._renew_leases()
        if job.id in self.lost:
            self.lost.discard(job.id)
            return True
        return False

    async def _renew_leases(self) -> None:
        started = time.monotonic()
        lease = self.settings.send_lease_seconds
        ours = await self._db(
            lambda c: ledger.renew_leases(
                c, worker_id=self.worker_id, now=self.clock(), lease_seconds=lease
            )
        )
        self.leased_until = started + lease
        lost = self.held - ours
        if not lost:
            return
        # Taken over (or ended by an operator) meanwhile: not ours to send, nor to record,
        # except a `sent` already known, which is the truth whoever holds the row.
        self.held -= lost
        self.lost |= lost
        self.pending = [
            o for o in self.pending if o.kind is OutcomeKind.SENT or o.delivery_id not in lost
        ]
        logger.warning(
            "worker %s could not renew its lease in time; %d recipients were taken over "
            "or ended meanwhile, and it leaves them alone",
            self.worker_id,
            len(lost),
        )

    def _add_outcome(self, outcome: Outcome) -> None:
        if self.lost and outcome.delivery_id in self.lost:
            # Its send began before the row was found taken over.
            self.lost.discard(outcome.delivery_id)
            if outcome.kind is not OutcomeKind.SENT:
                return
        pending = self.pending
        pending.append(outcome)
        # With nothing left to claim, the last outcome in hand is flushed at once.
        if len(pending) >= FLUSH_MAX_ROWS or (self.out_of_rows and self._every_outcome_in_hand()):
            self.flush_now.set()

    def _every_outcome_in_hand(self) -> bool:
        """Whether every row held has its outcome waiting to be written (none still sending)."""
        return len(self.pending) >= len(self.held)

    async def _flush(self) -> None:
        async with self.flush_lock:
            if self.pending and time.monotonic() >= self.leased_until:
                # Back from a stall: drop the outcomes of rows taken over meanwhile first.
                await self._renew_leases()
            attempts, self.attempt_log = self.attempt_log, {}
            if self.pending or attempts:
                batch, self.pending = self.pending, []
                # The outcomes are the batch's now: lanes held back by a full `pending`
                # go on while it is written, however long another process holds
                # SQLite's write lock (up to FLUSH_MAX_ROWS more, then they wait again).
                self.room.set()
                now = self.clock()
                checks = await self._db(lambda c: self._write_outcomes(c, batch, attempts, now))
                self.held.difference_update(outcome.delivery_id for outcome in batch)
                if await self._take_checks(checks):
                    await self._notice_stopped_editions()
            self.room.set()
            self.flushed.set()

    def _write_outcomes(
        self,
        connection: Connection,
        batch: list[Outcome],
        attempts: dict[int, list[bool]],
        now: dt.datetime,
    ) -> dict[int, BreakerCheck]:
        """Write outcomes and count their attempts in the shared breakers, in one transaction."""
        if batch:
            ledger.record_outcomes(connection, batch, now)
        return {
            edition_id: record_attempts(
                connection,
                edition_id=edition_id,
                failed_attempts=failed,
                window=self.settings.send_failure_window,
                threshold=self.settings.send_failure_threshold,
                last_error=self.last_errors.get(edition_id),
                now=now,
            )
            for edition_id, failed in attempts.items()
            if failed
        }

    async def _take_checks(self, checks: dict[int, BreakerCheck]) -> bool:
        """Learn the shared breakers' state, pause what tripped; True if one stopped elsewhere."""
        stopped_elsewhere = False
        for edition_id, check in checks.items():
            self.breakers[edition_id] = check.state
            if check.tripped is not None:
                self.stopped[edition_id] = check.tripped  # no more of its messages from here
                if await self._db(partial(_pause_tripped, edition_id, check.tripped)):
                    compiled = self.compiled.get(edition_id)
                    day = compiled.edition_date.isoformat() if compiled else str(edition_id)
                    logger.error("send paused edition=%s reason=%r", day, check.tripped)
                    if self.edition_id in (None, edition_id):
                        self.paused_reason = check.tripped
                    continue
                del self.stopped[edition_id]  # paused, cancelled or finished meanwhile
                stopped_elsewhere = True
            elif not check.sending and edition_id not in self.stopped:
                stopped_elsewhere = True
        return stopped_elsewhere

    async def _flush_loop(self) -> None:
        renew_every = self.settings.send_lease_seconds / 3
        last_renewal = last_status_check = time.monotonic()
        while not self.finished:
            await _wait_briefly(self.flush_now, FLUSH_INTERVAL_SECONDS)
            self.flush_now.clear()
            await self._flush()
            clock = time.monotonic()
            if clock - last_renewal >= renew_every:
                last_renewal = clock
                await self._renew_leases()
            if clock - last_status_check >= STATUS_CHECK_SECONDS and self.compiled:
                last_status_check = clock
                await self._notice_stopped_editions()

    async def _notice_stopped_editions(self) -> None:
        watched = sorted(self.compiled.keys() - self.stopped.keys())
        if not watched:
            return
        statuses = await self._db(lambda c: _edition_statuses(c, watched))
        for edition_id, (status, reason) in statuses.items():
            if status is not EditionStatus.SENDING:
                self.stopped[edition_id] = reason
                if status is EditionStatus.PAUSED and self.edition_id == edition_id:
                    self.paused_reason = reason or "paused"

    def report(
        self, *, edition_date: dt.date | None, queued: int, already_done: int, started: float
    ) -> SendReport:
        """The run's report."""
        return SendReport(
            edition_date=edition_date,
            queued=queued,
            sent=self.sent,
            failed=self.failed,
            bounced=self.bounced,
            already_done=already_done,
            paused_reason=self.paused_reason,
            elapsed_seconds=time.monotonic() - started,
            skipped=self.skipped,
        )


async def _wait_briefly(event: asyncio.Event, seconds: float) -> None:
    """Wait until the event is set or the seconds pass, whichever comes first.

    `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` swallows a
    cancellation that arrives as the event is set, and a task group whose
    flusher missed its cancel then waited for ever after a lane failed.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _pause_tripped(edition_id: int, reason: str, connection: Connection) -> bool:
    """Pause an edition whose shared breaker tripped (only if still sending); whether it did."""
    return pause_sending_edition(connection, edition_id=edition_id, reason=reason)


def _edition_status(connection: Connection, edition_id: int) -> tuple[EditionStatus, str | None]:
    return _edition_statuses(connection, [edition_id])[edition_id]


def _edition_statuses(
    connection: Connection, edition_ids: Sequence[int]
) -> dict[int, tuple[EditionStatus, str | None]]:
    table = ledger.editions
    rows = connection.execute(
        select(table.c.id, table.c.status, table.c.status_reason).where(table.c.id.in_(edition_ids))
    ).all()
    return {row[0]: (EditionStatus(row[1]), row[2]) for row in rows}


def _load_editions(connection: Connection, edition_ids: Sequence[int]) -> list[Edition]:
    rows = connection.execute(
        select(ledger.editions).where(ledger.editions.c.id.in_(edition_ids))
    ).mappings()
    return [Edition.model_validate(dict(row)) for row in rows]


async def _run_worker(
    settings: Settings,
    engine: Engine,
    *,
    edition_id: int | None,
    worker_id: str | None,
    progress: SendProgress | None,
    stop_when_idle: bool,
    transport: MessageTransport | None,
    stop: asyncio.Event | None = None,
    clock: Clock,
    jitter: Jitter,
) -> _Worker:
    freeze_what_lives_on()
    released = await asyncio.to_thread(_release_dead_local_leases, engine)
    if released:
        logger.warning(
            "took back %d recipients held by a worker that died on this machine", released
        )
    own_transport = transport is None
    active: MessageTransport = SmtpPool(settings) if transport is None else transport
    worker = _Worker(
        settings,
        engine,
        transport=active,
        worker_id=worker_id or default_worker_id(),
        progress=progress,
        edition_id=edition_id,
        stop_when_idle=stop_when_idle,
        stop=stop or asyncio.Event(),
        clock=clock,
        jitter=jitter,
    )
    logger.info(
        "worker %s started; it %s",
        worker.worker_id,
        "stops when nothing is left to send" if stop_when_idle else "runs until stopped",
    )
    try:
        with as_batch_work():  # see there: the relay and the web server come first
            await worker.run()
    finally:
        if own_transport:
            await active.aclose()
    return worker


def _release_dead_local_leases(engine: Engine) -> int:
    # Read, then write in a transaction of its own: on SQLite a transaction that reads and
    # then writes fails at once when another process wrote in between (several workers
    # starting together), while one that begins with its write waits for the lock.
    owners = _in_transaction(engine, ledger.lease_owners)
    dead = [owner for owner in owners if is_dead_local_worker(owner)]
    if not dead:
        return 0
    return _in_transaction(engine, lambda c: ledger.release_leases(c, dead))


# ---- the public entry points ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendStart:
    """An edition ready to be worked: its id, its rows still queued and those already final."""

    edition_id: int
    queued: int
    already_done: int
    finished: bool  # sent or finished_with_failures: nothing to do


def prepare_send(
    engine: Engine,
    *,
    edition_date: dt.date,
    now: Clock = utc_now,
    settings: Settings | None = None,
    ranking_processes: int = 1,
) -> SendStart:
    """Start a draft edition (fixing its audience) or check that one started may go on.

    With `settings`, a draft's personal readers are ranked before the start's
    transaction, in `ranking_processes` forked processes (only from a caller
    that runs no thread yet: the CLI), and their selections stored with the
    audience in it (see `control.start_edition`). Raises
    DeliveryError for a paused or cancelled edition, saying what to do.
    `send_edition` begins with it; `newsletter send --processes N` calls it
    once before starting the sending processes.
    """
    picks = picks_if_draft(engine, edition_date, settings, ranking_processes=ranking_processes)

    def prepare(connection: Connection) -> tuple[Edition, dict[DeliveryStatus, int]]:
        edition = load_rendered_edition(connection, edition_date)
        assert edition.id is not None
        if edition.status is EditionStatus.DRAFT:
            start_with_selections(connection, edition_id=edition.id, picks=picks, now=now())
            edition = load_rendered_edition(connection, edition_date)
        edition_id = edition.id
        assert edition_id is not None
        return edition, ledger.count_by_status(connection, edition_id=edition_id)

    edition, counts = _in_transaction(engine, prepare)
    assert edition.id is not None
    day = edition_date.isoformat()
    if edition.status is EditionStatus.PAUSED:
        raise DeliveryError(
            f"the edition of {day} is paused ({edition.status_reason or 'no reason given'}); "
            f"resume it with `newsletter resume --date {day}`"
        )
    if edition.status is EditionStatus.CANCELLED:
        raise DeliveryError(f"the edition of {day} was cancelled; it cannot be sent")
    queued = counts[DeliveryStatus.QUEUED]
    return SendStart(
        edition_id=edition.id,
        queued=queued,
        already_done=sum(counts.values()) - queued,
        finished=edition.status in (EditionStatus.SENT, EditionStatus.FINISHED_WITH_FAILURES),
    )


async def send_edition(
    settings: Settings,
    engine: Engine,
    *,
    edition_date: dt.date,
    progress: SendProgress | None = None,
    worker_id: str | None = None,
    transport: MessageTransport | None = None,
    stop: asyncio.Event | None = None,
    clock: Clock = utc_now,
    jitter: Jitter = random.uniform,
) -> SendReport:
    """Start (or continue) an edition's send and work its queue until every row is final.

    Setting `stop` ends the run early, as for `run_worker`. `clock` is the time the
    ledger records and leases and retries are measured by; `jitter` picks each
    retry's delay within its bounds. Tests pass their own.
    """
    started = time.monotonic()
    begun = await asyncio.to_thread(
        prepare_send, engine, edition_date=edition_date, now=clock, settings=settings
    )
    queued = begun.queued
    already_done = begun.already_done
    if progress is not None:
        progress.started(queued + already_done, already_done)
    if begun.finished:
        report = SendReport(edition_date, 0, 0, 0, 0, already_done, None, 0.0)
        if progress is not None:
            progress.finished(report)
        return report
    worker = await _run_worker(
        settings,
        engine,
        edition_id=begun.edition_id,
        worker_id=worker_id,
        progress=progress,
        stop_when_idle=True,
        transport=transport,
        stop=stop,
        clock=clock,
        jitter=jitter,
    )
    report = worker.report(
        edition_date=edition_date, queued=queued, already_done=already_done, started=started
    )
    if progress is not None:
        progress.finished(report)
    return report


async def run_worker(
    settings: Settings,
    engine: Engine,
    *,
    worker_id: str | None = None,
    progress: SendProgress | None = None,
    stop_when_idle: bool = True,
    transport: MessageTransport | None = None,
    stop: asyncio.Event | None = None,
    clock: Clock = utc_now,
    jitter: Jitter = random.uniform,
) -> SendReport:
    """Work the queue of every edition that is sending; return when idle (or run for ever).

    Setting `stop` ends the run gracefully: the messages in flight finish and
    are recorded, every other claimed row goes back to the queue at once.
    `clock` and `jitter` are as for `send_edition`.
    """
    started = time.monotonic()
    totals = await asyncio.to_thread(_in_transaction, engine, ledger.count_sending)
    queued = totals[DeliveryStatus.QUEUED]
    already_done = sum(totals.values()) - queued
    if progress is not None:
        progress.started(sum(totals.values()), already_done)
    worker = await _run_worker(
        settings,
        engine,
        edition_id=None,
        worker_id=worker_id,
        progress=progress,
        stop_when_idle=stop_when_idle,
        transport=transport,
        stop=stop,
        clock=clock,
        jitter=jitter,
    )
    dates = sorted(worker.edition_dates)
    report = worker.report(
        edition_date=dates[0] if len(dates) == 1 else None,
        queued=queued,
        already_done=already_done,
        started=started,
    )
    if progress is not None:
        progress.finished(report)
    return report


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as connection:
        return work(connection)
