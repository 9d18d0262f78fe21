"""A global pace for the whole send: token buckets shared by every SMTP connection.

Each message reserves one token from every bucket before it goes out; a
reservation that drives a bucket below zero tells the caller how long to wait,
so concurrent senders queue up fairly without a lock. The pace holds for one
worker process; several workers each keep their own pace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity` (the largest burst)."""

    def __init__(
        self, rate: float, capacity: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs a positive rate and room for one token")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()

    def reserve(self) -> float:
        """Take one token now; returns the seconds to wait before using it (0 if available)."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class Pacer:
    """Messages per second and per hour (0 = unlimited), across every connection."""

    def __init__(
        self,
        *,
        per_second: float = 0.0,
        per_hour: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._buckets: list[TokenBucket] = []
        if per_second > 0:
            # Bursts of at most one second's worth.
            self._buckets.append(TokenBucket(per_second, max(1.0, per_second), clock=clock))
        if per_hour > 0:
            # Bursts of at most one minute's worth, so an hour never sees much over the limit.
            self._buckets.append(
                TokenBucket(per_hour / 3600.0, max(1.0, per_hour / 60.0), clock=clock)
            )

    @property
    def unlimited(self) -> bool:
        """True when no rate is set and waiting is never needed."""
        return not self._buckets

    def reserve(self) -> float:
        """Reserve the next message's slot; returns how long to wait for it."""
        return max((bucket.reserve() for bucket in self._buckets), default=0.0)

    async def wait_turn(self) -> None:
        """Wait until the next message may go out."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
