"""Sliding-window limits: sign-ups per client, confirmation emails per mailbox and per domain.

The windows live in this process's memory: right for one `newsletter serve`
process. Several processes behind a load balancer each keep their own
windows, so the effective limits multiply by their number; a shared store
(Redis, the database) would be the next step if that matters.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.core.settings import Settings
from subscribers.addresses import domain_of, mailbox_of

# An IPv6 client is usually given a whole /64 and can pick any address in it.
IPV6_CLIENT_PREFIX = 64


def client_key(address: str) -> str:
    """The rate-limit key for a client address: the address, or its /64 for IPv6."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(parsed)


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer for one attempt: allowed, or refused with seconds until the next slot."""

    allowed: bool
    retry_after_seconds: int = 0


class SlidingWindowRateLimiter:
    """At most `limit` attempts per key in any `window_seconds`; refused attempts do not count.

    Safe to call from the event loop and worker threads alike. Keys whose
    attempts have all aged out are dropped, so memory follows the clients of
    the last window rather than every client ever seen.
    """

    def __init__(
        self,
        *,
        limit: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_seconds <= 0:
            raise ValueError("a rate limit needs limit >= 1 and a positive window")
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def check(self, key: str) -> RateDecision:
        """Whether an attempt by `key` would be allowed now, without recording one."""
        now = self._clock()
        with self._lock:
            attempts = self._attempts.get(key)
            if attempts is None:
                return RateDecision(allowed=True)
            self._expire(attempts, now)
            if len(attempts) >= self.limit:
                wait = attempts[0] + self.window_seconds - now
                return RateDecision(allowed=False, retry_after_seconds=max(1, math.ceil(wait)))
            return RateDecision(allowed=True)

    def attempt(self, key: str) -> RateDecision:
        """Record an attempt by `key` if the window has room; otherwise say how long to wait."""
        now = self._clock()
        with self._lock:
            self._sweep(now)
            attempts = self._attempts.setdefault(key, deque())
            self._expire(attempts, now)
            if len(attempts) >= self.limit:
                wait = attempts[0] + self.window_seconds - now
                return RateDecision(allowed=False, retry_after_seconds=max(1, math.ceil(wait)))
            attempts.append(now)
            return RateDecision(allowed=True)

    def _expire(self, attempts: deque[float], now: float) -> None:
        while attempts and attempts[0] <= now - self.window_seconds:
            attempts.popleft()

    def _sweep(self, now: float) -> None:
        # A full pass at most once per window keeps each attempt O(1) on average.
        if now - self._last_sweep < self.window_seconds:
            return
        self._last_sweep = now
        for key in list(self._attempts):
            attempts = self._attempts[key]
            self._expire(attempts, now)
            if not attempts:
                del self._attempts[key]


class ConfirmationCaps:
    """At most so many confirmation emails per mailbox, and per domain, in their windows.

    Without them a stranger could flood one inbox through plus-addressing
    (`victim+1@`, `victim+2@`, … from as many networks) or one small company's
    mail server with addresses at its domain. Shared providers (Gmail, Outlook,
    …) serve millions of readers, so they get a cap of their own, far larger.
    """

    def __init__(
        self,
        *,
        mailbox_limit: int,
        mailbox_window_seconds: float,
        domain_limit: int,
        shared_domain_limit: int,
        domain_window_seconds: float,
        shared_domains: frozenset[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mailboxes = SlidingWindowRateLimiter(
            limit=mailbox_limit, window_seconds=mailbox_window_seconds, clock=clock
        )
        self._domains = SlidingWindowRateLimiter(
            limit=domain_limit, window_seconds=domain_window_seconds, clock=clock
        )
        self._shared = SlidingWindowRateLimiter(
            limit=shared_domain_limit, window_seconds=domain_window_seconds, clock=clock
        )
        self._shared_domains = shared_domains
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ConfirmationCaps:
        """The caps the settings ask for."""
        return cls(
            mailbox_limit=settings.confirm_mailbox_limit,
            mailbox_window_seconds=settings.confirm_mailbox_window_seconds,
            domain_limit=settings.confirm_domain_limit,
            shared_domain_limit=settings.confirm_shared_domain_limit,
            domain_window_seconds=settings.confirm_domain_window_seconds,
            shared_domains=frozenset(
                domain.casefold() for domain in settings.confirm_shared_domains
            ),
        )

    def reserve(self, address: str) -> str | None:
        """Count one confirmation email to this address if both caps allow it, else say why not."""
        mailbox, domain = mailbox_of(address), domain_of(address)
        domains = self._shared if domain in self._shared_domains else self._domains
        # One lock around both checks and both records: all or nothing.
        with self._lock:
            if not self._mailboxes.check(mailbox).allowed:
                return (
                    f"{mailbox} got {self._mailboxes.limit} confirmation emails in the last "
                    f"{self._mailboxes.window_seconds:g} s"
                )
            if not domains.check(domain).allowed:
                return (
                    f"{domain} got {domains.limit} confirmation emails in the last "
                    f"{domains.window_seconds:g} s"
                )
            self._mailboxes.attempt(mailbox)
            domains.attempt(domain)
        return None
