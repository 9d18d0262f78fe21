"""Sending the queued confirmation emails, outside any request.

A sign-up or an import queues the email with its claim in the database
(`subscribers.confirmation_queue`); `newsletter worker` (and so the child of
`newsletter serve`) runs a `ConfirmationSender` beside the digest worker,
which leases due rows, builds each email and sends it on its own connection.
A relay failure retries with a doubling delay; a permanent refusal, or
MAX_ATTEMPTS failures, drops the row and hands the once-per-interval slot
back, so a new sign-up can try again. A reader who confirmed or left meanwhile
gets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import aiosmtplib
from jinja2 import Environment
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import OperationalError

from newsletter.core.clock import utc_now
from newsletter.core.dkim import DkimSigner
from newsletter.core.errors import DeliveryError
from newsletter.core.mime import OutgoingMessage
from newsletter.core.settings import Settings
from newsletter.delivery.connection import send_single_message
from newsletter.delivery.worker import default_worker_id, is_dead_local_worker
from newsletter.editions.content import first_digest_note, latest_public_edition
from subscribers import confirmation_queue
from subscribers.confirmation_queue import LeasedConfirmation
from subscribers.models import QueuedConfirmation, QueuedEmail, SubscriberStatus
from subscribers.signup import (
    ConfirmationEmail,
    build_confirmation_message,
    build_welcome_message,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

POLL_SECONDS = 1.0  # how soon a waiting worker notices a new sign-up
BATCH_SIZE = 8  # emails leased, and sent side by side, at once
MAX_ATTEMPTS = 10
RETRY_BASE_SECONDS = 30.0  # then 1, 2, 4, … minutes, at most MAX_RETRY_DELAY_SECONDS apart
MAX_RETRY_DELAY_SECONDS = 3600.0  # ten attempts span about three hours of relay trouble


@dataclass(slots=True)
class ConfirmationsSent:
    """What a sender did with the rows it leased."""

    sent: int = 0
    retrying: int = 0  # the relay failed; the row waits for its next attempt
    given_up: int = 0  # refused for good, or too many failures: the slot is free again
    not_wanted: int = 0  # confirmed or left before the email went out

    @property
    def anything(self) -> bool:
        """Whether there is anything to report."""
        return bool(self.sent or self.retrying or self.given_up or self.not_wanted)


def is_permanent(error: DeliveryError) -> bool:
    """Whether the relay refused this email for good (a 5xx), so retrying cannot help."""
    cause = error.__cause__
    if isinstance(cause, aiosmtplib.SMTPRecipientsRefused):
        return bool(cause.recipients) and all(item.code >= 500 for item in cause.recipients)
    if isinstance(cause, aiosmtplib.SMTPAuthenticationError):
        return False  # the operator's settings, not the address: retry once they are fixed
    if isinstance(cause, aiosmtplib.SMTPResponseException):
        return cause.code >= 500
    return False


class ConfirmationSender:
    """Leases due confirmation emails, sends them, and records each outcome."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        env: Environment,
        *,
        signer: DkimSigner | None = None,
        worker_id: str | None = None,
        poll_seconds: float = POLL_SECONDS,
        retry_base_seconds: float = RETRY_BASE_SECONDS,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.env = env
        self.signer = signer
        self.worker_id = worker_id or default_worker_id()
        self.poll_seconds = poll_seconds
        self.retry_base_seconds = retry_base_seconds
        self.max_attempts = max_attempts
        self.outcome = ConfirmationsSent()

    async def run(self, *, stop: asyncio.Event, stop_when_idle: bool) -> ConfirmationsSent:
        """Send until `stop` is set, or (with `stop_when_idle`) until nothing is due."""
        await asyncio.to_thread(self._in_transaction, _release_dead_local_leases)
        try:
            while not stop.is_set():
                try:
                    batch = await asyncio.to_thread(self._in_transaction, self._lease)
                except OperationalError as error:  # a locked or unreachable database: wait
                    if stop_when_idle:
                        raise
                    logger.warning("cannot read the confirmation queue, retrying: %s", error)
                    batch = []
                if batch:
                    try:
                        await asyncio.gather(*(self._send(row) for row in batch))
                    except OperationalError as error:  # the rows' leases run out; retried then
                        if stop_when_idle:
                            raise
                        logger.warning("cannot record a confirmation email's outcome: %s", error)
                elif stop_when_idle:
                    break
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_seconds)
        finally:
            # Rows leased but not sent (a stop mid-batch) go back at once, not after the lease.
            await asyncio.shield(asyncio.to_thread(self._in_transaction, self._release))
        return self.outcome

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        with self.engine.begin() as connection:
            return work(connection)

    def _lease(self, connection: Connection) -> list[LeasedConfirmation]:
        return confirmation_queue.lease_due(
            connection,
            worker_id=self.worker_id,
            now=utc_now(),
            lease_seconds=self.settings.send_lease_seconds,
            limit=BATCH_SIZE,
        )

    def _release(self, connection: Connection) -> None:
        confirmation_queue.release_leases(connection, worker_id=self.worker_id)

    async def _send(self, row: LeasedConfirmation) -> None:
        # A confirmation is for a reader still pending; a welcome for one still confirmed.
        welcome = row.kind is QueuedEmail.WELCOME
        wanted = SubscriberStatus.CONFIRMED if welcome else SubscriberStatus.PENDING
        if row.status is not wanted:
            await self._record(confirmation_queue.finish, ids=[row.id])
            self.outcome.not_wanted += 1
            return
        confirmation = ConfirmationEmail(email=row.email, name=row.name, claim=row.claim)
        try:
            if welcome:
                message = await self._welcome(confirmation)
            else:
                message = build_confirmation_message(
                    self.settings, self.env, confirmation, now=utc_now(), signer=self.signer
                )
        except Exception:  # a row that cannot become an email must not stop the worker
            logger.exception("cannot build the confirmation email to %s; dropped", row.email)
            await self._record(confirmation_queue.give_up, row_id=row.id, claim=row.claim)
            self.outcome.given_up += 1
            return
        try:
            await send_single_message(self.settings, message)
        except DeliveryError as error:
            await self._failed(row, error)
            return
        await self._record(confirmation_queue.finish, ids=[row.id])
        self.outcome.sent += 1

    async def _welcome(self, welcome: ConfirmationEmail) -> OutgoingMessage:
        latest = await asyncio.to_thread(latest_public_edition, self.engine)
        base_url = self.settings.base_url.rstrip("/")
        return build_welcome_message(
            self.settings,
            self.env,
            welcome,
            latest_edition_url=None if latest is None else f"{base_url}/editions/{latest.day}",
            first_digest=first_digest_note(latest, timezone=self.settings.timezone),
            now=utc_now(),
            signer=self.signer,
        )

    async def _failed(self, row: LeasedConfirmation, error: DeliveryError) -> None:
        if is_permanent(error) or row.attempts >= self.max_attempts:
            logger.warning(
                "no confirmation email to %s after %d attempt%s: %s",
                row.email,
                row.attempts,
                "" if row.attempts == 1 else "s",
                error,
            )
            await self._record(confirmation_queue.give_up, row_id=row.id, claim=row.claim)
            self.outcome.given_up += 1
            return
        delay = retry_delay(self.retry_base_seconds, row.attempts)
        logger.warning(
            "confirmation email to %s not sent (attempt %d of %d), retrying in %.0f s: %s",
            row.email,
            row.attempts,
            self.max_attempts,
            delay,
            error,
        )
        at = utc_now() + timedelta(seconds=delay)
        await self._record(confirmation_queue.retry_later, row_id=row.id, at=at, error=str(error))
        self.outcome.retrying += 1

    async def _record(self, change: Callable[..., None], **arguments: object) -> None:
        def work(connection: Connection) -> None:
            change(connection, worker_id=self.worker_id, **arguments)

        await asyncio.to_thread(self._in_transaction, work)


def retry_delay(base_seconds: float, attempt: int) -> float:
    """The wait after a failed attempt: doubling, with jitter so retries do not bunch up."""
    ceiling = min(base_seconds * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS)
    return random.uniform(ceiling / 2, ceiling)


def _release_dead_local_leases(connection: Connection) -> None:
    # A worker killed here (the child of `newsletter serve`) leaves its rows to its successor now.
    table = QueuedConfirmation.__table__  # type: ignore[attr-defined]
    owners = connection.execute(
        select(table.c.leased_by).where(table.c.leased_by.is_not(None)).distinct()
    ).scalars()
    for owner in owners:
        if is_dead_local_worker(owner):
            confirmation_queue.release_leases(connection, worker_id=owner)


async def send_due_confirmations(
    settings: Settings, engine: Engine, env: Environment, *, signer: DkimSigner | None = None
) -> ConfirmationsSent:
    """Send every confirmation that is due now, then return (what `subscribers import` runs)."""
    sender = ConfirmationSender(settings, engine, env, signer=signer)
    return await sender.run(stop=asyncio.Event(), stop_when_idle=True)


def waiting_confirmations(engine: Engine) -> int:
    """How many confirmation emails are queued, due now or waiting for a retry."""
    with engine.connect() as connection:
        return confirmation_queue.count_waiting(connection)
