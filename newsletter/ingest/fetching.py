"""GET with retries: exponential backoff with jitter, honouring Retry-After.

Both remote sources (Hugging Face, arXiv) fetch through `get_with_retries`, so
they fail the same way: `SourceUnavailableError` once the retries are spent on
429/5xx answers or transport errors, and `IngestError` for any other refusal.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version

import httpx

from newsletter.core.errors import IngestError, SourceUnavailableError


def _project_version() -> str:
    try:
        return version("paper-newsletter")
    except PackageNotFoundError:
        return "dev"


# Both APIs ask automated clients to say who they are.
USER_AGENT = (
    f"paper-newsletter/{_project_version()} "
    "(daily ML paper digest; +https://github.com/paper-newsletter/paper-newsletter)"
)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retry number `attempt` (from 0): doubling, with jitter.

    Tests inject a tiny `base_seconds` (or their own `sleep`) to stay fast.
    """

    base_seconds: float = 1.0
    max_seconds: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = field(default=_sleep)
    jitter: Callable[[], float] = field(default=random.random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait: the server's Retry-After if it gave one, else jittered doubling."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_seconds)
        ceiling = min(self.max_seconds, self.base_seconds * 2.0**attempt)
        # "Equal jitter": never less than half the step, so retries stay spaced
        # out, but spread enough that many clients do not retry in lockstep.
        return ceiling / 2 + self.jitter() * ceiling / 2


DEFAULT_BACKOFF = Backoff()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


def _is_retryable(status_code: int) -> bool:
    return status_code == 429 or status_code >= 500


async def get_with_retries(
    client: httpx.AsyncClient,
    url: str,
    *,
    source_name: str,
    retries: int,
    params: Mapping[str, str | int] | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    refusal_hints: Mapping[int, str] | None = None,
) -> httpx.Response:
    """A 2xx response for GET `url`, retrying `retries` times on 429, 5xx and network errors."""
    attempts = retries + 1
    last_problem = "no attempt made"
    for attempt in range(attempts):
        retry_after: float | None = None
        try:
            response = await client.get(url, params=params, headers={"User-Agent": USER_AGENT})
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise IngestError(
                f"{source_name}: {url!r} is not a usable http(s) URL; check the settings"
            ) from None
        except httpx.TransportError as error:
            last_problem = f"{type(error).__name__}: {error}".rstrip(": ")
        else:
            if response.is_success:
                return response
            if not _is_retryable(response.status_code):
                raise IngestError(_describe_refusal(source_name, response, refusal_hints or {}))
            last_problem = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if attempt + 1 < attempts:
            await backoff.sleep(backoff.delay(attempt, retry_after))
    raise SourceUnavailableError(
        f"{source_name} at {url} did not answer usefully after {attempts} "
        f"attempt{'s' if attempts != 1 else ''} (last: {last_problem}); try again later"
    )


def _describe_refusal(source_name: str, response: httpx.Response, hints: Mapping[int, str]) -> str:
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    hint = hints.get(response.status_code)
    if hint is None:
        hint = "check the source URL in the settings"
    return f"{source_name} refused {response.request.url} ({status}): {hint}"
