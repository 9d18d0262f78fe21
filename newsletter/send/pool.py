"""Delivering prebuilt message bytes: a pool of long-lived SMTP connections.

The pool has `lanes`: `settings.smtp_concurrency` connections to the main
relay and as many to each extra relay. A lane's connection is opened on first
use, reused for every later message (MAIL/RCPT/DATA on the open session) and
opened again after the server drops it. Each send answers an `SmtpReply`
instead of raising, because a refusal is an ordinary outcome the ledger
records, not an error of the program.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib

from newsletter.send.connection import describe_login_refusal, make_smtp_client, parse_relay
from newsletter.settings import Settings

QUIT_TIMEOUT_SECONDS = 2.0


class SmtpStage(StrEnum):
    """Where in the SMTP conversation a reply came from."""

    CONNECT = "connect"
    LOGIN = "login"  # the relay refused our credentials: nothing to do with the recipient
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    CONNECTION = "connection"  # no reply at all: dropped or timed out


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """The server's answer to one message; `code` is None when no answer came."""

    code: int | None
    text: str
    stage: SmtpStage

    @property
    def accepted(self) -> bool:
        """True when the server took responsibility for the message (250 to DATA)."""
        return self.code is not None and 200 <= self.code < 300


ACCEPTED = SmtpReply(250, "OK", SmtpStage.DATA)


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

    async def send(self, lane: int, sender: str, recipient: str, message: bytes) -> SmtpReply:
        """Count the message and accept it."""
        self.delivered += 1
        self.delivered_bytes += len(message)
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

    async def _connected_client(self, lane: int) -> aiosmtplib.SMTP:
        client = self._clients[lane]
        if client is not None and client.is_connected:
            return client
        if client is not None:
            client.close()
        host, port = self._lane_relays[lane]
        # A fresh client per connection: a dropped one keeps stale ESMTP state.
        client = make_smtp_client(self._settings, host=host, port=port)
        self._clients[lane] = client
        await client.connect()
        return client

    def _drop(self, lane: int) -> None:
        client = self._clients[lane]
        if client is not None:
            client.close()
            self._clients[lane] = None

    async def send(self, lane: int, sender: str, recipient: str, message: bytes) -> SmtpReply:
        """Send one message on the lane's connection and report the server's answer."""
        try:
            client = await self._connected_client(lane)
        except aiosmtplib.SMTPAuthenticationError as error:
            self._drop(lane)
            host, port = self._lane_relays[lane]
            return SmtpReply(error.code, describe_login_refusal(host, port, error), SmtpStage.LOGIN)
        except aiosmtplib.SMTPResponseException as error:
            self._drop(lane)
            return SmtpReply(error.code, error.message, SmtpStage.CONNECT)
        except (aiosmtplib.SMTPException, OSError) as error:
            self._drop(lane)
            host, port = self._lane_relays[lane]
            return SmtpReply(None, f"cannot connect to {host}:{port}: {error}", SmtpStage.CONNECT)
        options = [] if recipient.isascii() else ["SMTPUTF8"]
        try:
            await client.sendmail(sender, [recipient], message, mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as error:
            refusal = error.recipients[0]
            return SmtpReply(refusal.code, refusal.message, SmtpStage.RCPT)
        except aiosmtplib.SMTPSenderRefused as error:
            return self._refused(lane, error, SmtpStage.MAIL)
        except aiosmtplib.SMTPDataError as error:
            return self._refused(lane, error, SmtpStage.DATA)
        except aiosmtplib.SMTPResponseException as error:
            return self._refused(lane, error, SmtpStage.MAIL)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            self._drop(lane)
            return SmtpReply(None, f"connection lost: {error}", SmtpStage.CONNECTION)
        except ValueError as error:
            # aiosmtplib refuses an address it cannot put on the wire; no retry helps.
            return SmtpReply(501, f"address cannot be sent: {error}", SmtpStage.RCPT)
        return ACCEPTED

    def _refused(
        self, lane: int, error: aiosmtplib.SMTPResponseException, stage: SmtpStage
    ) -> SmtpReply:
        if error.code == 421:
            # 421 means the server is closing this session.
            self._drop(lane)
        return SmtpReply(error.code, error.message, stage)

    async def aclose(self) -> None:
        """Say QUIT on every open connection (briefly) and close them all."""

        async def quit_politely(client: aiosmtplib.SMTP) -> None:
            try:
                if client.is_connected:
                    await asyncio.wait_for(client.quit(), QUIT_TIMEOUT_SECONDS)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass
            finally:
                client.close()

        clients = [client for client in self._clients if client is not None]
        self._clients = [None] * len(self._lane_relays)
        await asyncio.gather(*(quit_politely(client) for client in clients))
