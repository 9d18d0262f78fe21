"""Sending the confirmation emails an import leaves due, one per pending reader.

Each reader's slot is claimed first (`subscribers.signup.claim_import_confirmation`,
the sign-up's once-per-interval rule), and handed back if the email cannot be
sent, so a later rerun or sign-up can try again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jinja2 import Environment
from sqlalchemy import Engine

from newsletter.core.clock import utc_now
from newsletter.core.db import session_scope
from newsletter.core.errors import DeliveryError
from newsletter.core.settings import Settings
from newsletter.delivery.connection import send_single_message
from subscribers import store
from subscribers.signup import (
    ConfirmationEmail,
    build_confirmation_message,
    claim_import_confirmation,
)

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ConfirmationsSent:
    """How the confirmations of an import went."""

    sent: int = 0
    not_due: int = 0  # confirmed or left since, or asked within the resend interval
    failed: int = 0


async def send_import_confirmations(
    settings: Settings,
    engine: Engine,
    env: Environment,
    keys: Sequence[str],
    *,
    on_each: Callable[[], None] = lambda: None,
) -> ConfirmationsSent:
    """Send each pending reader named by `keys` a confirmation email, one at a time."""
    outcome = ConfirmationsSent()
    for key in keys:
        confirmation = await asyncio.to_thread(_claim, settings, engine, key)
        if confirmation is None:
            outcome.not_due += 1
        else:
            message = build_confirmation_message(settings, env, confirmation, now=utc_now())
            try:
                await send_single_message(settings, message)
            except DeliveryError as error:
                logger.warning("no confirmation email to %s: %s", confirmation.email, error)
                await asyncio.to_thread(_release, engine, confirmation)
                outcome.failed += 1
            else:
                outcome.sent += 1
        on_each()
    return outcome


def _claim(settings: Settings, engine: Engine, key: str) -> ConfirmationEmail | None:
    with session_scope(engine) as session:
        return claim_import_confirmation(session, settings, key=key, now=utc_now())


def _release(engine: Engine, confirmation: ConfirmationEmail) -> None:
    with session_scope(engine) as session:
        store.release_confirmation_slot(session, claim=confirmation.claim)
