"""Delivering prepared messages (`core.wire`): a pool of long-lived SMTP connections.

The pool has `lanes`: `settings.smtp_concurrency` connections to the main
relay and as many to each extra relay. A lane's connection is opened on first
use, reused for every later message (MAIL/RCPT/DATA on the open session) and
opened again after the server drops it. Each send answers an `SmtpReply`
(see `connection.transmit`) instead of raising. A send may be given the
lane's next message (`next_message`), whose envelope then goes out behind this
message's content; a lane that gives up that message (its edition paused, say)
gets a new connection for whatever it sends next.
"""

from __future__ import annotations

import asyncio

import aiosmtplib

from newsletter.core.settings import Settings
from newsletter.core.wire import PreparedMessage
from newsletter.delivery.connection import (
    ACCEPTED,
    NextMessage,
    NextMessageSource,
    SmtpReply,
    SmtpStage,
    close_politely,
    connect,
    make_smtp_client,
    parse_relay,
    transmit,
    written_ahead,
)

__all__ = [
    "ACCEPTED",
    "NextMessage",
    "NextMessageSource",
    "NullTransport",
    "SmtpPool",
    "SmtpReply",
    "SmtpStage",
]


class NullTransport:
    """Accepts every message without any network: for dry runs and benchmarks."""

    def __init__(self, lanes: int = 1) -> None:
        self._lanes = lanes
        self.delivered = 0
        self.delivered_bytes = 0

    @property
    def lanes(self) -> int:
        """How many messages may be in flight at once."""
        return self._lanes

    async def send(
        self,
        lane: int,
        sender: str,
        recipient: str,
        message: PreparedMessage,
        *,
        next_message: NextMessageSource | None = None,
    ) -> SmtpReply:
        """Count the message and accept it."""
        self.delivered += 1
        self.delivered_bytes += message.size
        return ACCEPTED

    async def aclose(self) -> None:
        """Nothing to close."""


class SmtpPool:
    """`lanes` SMTP connections spread over the main relay and the extra ones."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        relays = [(settings.smtp_host, settings.smtp_port)] + [
            parse_relay(relay, settings.smtp_port) for relay in settings.smtp_extra_relays
        ]
        self._lane_relays = [
            relays[lane % len(relays)] for lane in range(settings.smtp_concurrency * len(relays))
        ]
        self._clients: list[aiosmtplib.SMTP | None] = [None] * len(self._lane_relays)

    @property
    def lanes(self) -> int:
        """How many connections (and so messages in flight) the pool has."""
        return len(self._lane_relays)

    async def _connected_client(
        self, lane: int, message: PreparedMessage
    ) -> aiosmtplib.SMTP | SmtpReply:
        client = self._clients[lane]
        if client is not None and client.is_connected:
            ahead = written_ahead(client)
            if ahead is None or ahead is message:
                return client
            # Its envelope went out for a message the lane then kept back: the server
            # may be waiting for that content, and only closing the connection ends it.
        if client is not None:
            client.close()
        host, port = self._lane_relays[lane]
        # A fresh client per connection: a dropped one keeps stale ESMTP state.
        client = make_smtp_client(self._settings, host=host, port=port)
        self._clients[lane] = client
        refused = await connect(client)
        return client if refused is None else refused

    def _drop(self, lane: int) -> None:
        client = self._clients[lane]
        if client is not None:
            client.close()
            self._clients[lane] = None

    async def send(
        self,
        lane: int,
        sender: str,
        recipient: str,
        message: PreparedMessage,
        *,
        next_message: NextMessageSource | None = None,
    ) -> SmtpReply:
        """Send one message on the lane's connection and report the server's answer."""
        client = await self._connected_client(lane, message)
        reply = (
            client
            if isinstance(client, SmtpReply)
            else await transmit(client, sender, recipient, message, next_message=next_message)
        )
        if reply.ends_session:
            self._drop(lane)
        return reply

    async def aclose(self) -> None:
        """Say QUIT on every open connection (briefly) and close them all."""
        clients = [client for client in self._clients if client is not None]
        self._clients = [None] * len(self._lane_relays)
        await asyncio.gather(*(close_politely(client) for client in clients))
