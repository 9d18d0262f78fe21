"""VERP envelope senders: `bounces+TOKEN@bounce-domain`, one per delivery.

A bounce goes back to the envelope sender, so a signed token there names the
delivery (ledger row) it is about without parsing the returned message
(`subscribers.tokens.make_bounce_token`). Digests and test copies carry one
(both have a ledger row); confirmation emails carry the plain bounce address.
Without `NEWSLETTER_BOUNCE_ADDRESS` every message's envelope sender is the
From address and nothing is matched this way.
"""

from __future__ import annotations

from newsletter.core.settings import Settings
from subscribers.tokens import make_bounce_token, read_bounce_token

__all__ = ["EnvelopeSenders", "is_bounce_address", "verp_delivery_id"]


class EnvelopeSenders:
    """The envelope sender of each delivery, built once from the settings (cheap per message)."""

    def __init__(self, settings: Settings) -> None:
        self._secret_key = settings.secret_key
        self._fixed = settings.envelope_sender
        self._mailbox = settings.bounce_mailbox

    @property
    def verp(self) -> bool:
        """Whether each delivery gets its own (VERP) envelope sender."""
        return self._mailbox is not None

    def for_delivery(self, delivery_id: int) -> str:
        """`local+TOKEN@domain` naming this delivery; the fixed sender without a bounce address."""
        if self._mailbox is None:
            return self._fixed
        local, domain = self._mailbox
        return f"{local}+{make_bounce_token(self._secret_key, delivery_id)}@{domain}"


def is_bounce_address(settings: Settings, address: str) -> bool:
    """Whether an address is the bounce address or one of its VERP forms (any letter case)."""
    mailbox = settings.bounce_mailbox
    if mailbox is None:
        return False
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at or domain.lower() != mailbox[1]:
        return False
    base, _, _ = local.lower().partition("+")
    return base == mailbox[0]


def verp_delivery_id(settings: Settings, address: str) -> int | None:
    """The delivery a VERP address names; None when it carries no token.

    Raises InvalidTokenError when it carries one whose signature does not match
    (forged, or altered on the way).
    """
    if not is_bounce_address(settings, address):
        return None
    local = address.strip().strip("<>").rpartition("@")[0]
    _, plus, token = local.partition("+")
    if not plus:
        return None
    return read_bounce_token(settings.secret_key, token)
