"""A per-client sliding-window rate limit for the sign-up endpoint.

The window lives in this process's memory, keyed by client address: right for
one `newsletter serve` process. Several processes behind a load balancer each
keep their own window, so the effective limit multiplies by their number; a
shared store (Redis, the database) would be the next step if that matters.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

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
