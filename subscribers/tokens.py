"""Signed, opaque link tokens: unsubscribe, preferences, feedback (lasting); confirmation (expires).

One scheme for every link. A token carries the subscriber's random `key`, never
the address or row id, and ends in a MAC over everything before it:

- `KEY.MAC` for links that do not expire (unsubscribe, preferences);
- `KEY.ISSUED.MAC` for links that do (confirmation), ISSUED being the issue
  time in whole seconds since the Unix epoch, in base 36.

A feedback token ("More like this" / "Less like this" under a paper of a
digest) is `KEY.PAPER.V.MAC`: PAPER the arXiv id in unpadded URL-safe base64
(arXiv ids hold dots and, in the old scheme, slashes), V `m` (more) or `l`
(less). It names one reader, one paper and one choice, and does not expire.

A view token ("View in browser": the reader's own copy of one edition) is
`KEY.YYYYMMDD.MAC`: one reader, one edition date; it does not expire.

The bounce token of a VERP envelope sender (`bounces+TOKEN@bounce-domain`) is
the sibling of these: `ID-MAC`, the delivery (ledger row) id in base 36 and an
80-bit MAC in lower-case base 32. Lower case only, because some mail servers
fold the case of the address a bounce returns to; short, because it lives in an
address's local part (at most 64 characters).

The MAC is HMAC-SHA256 (stdlib `hmac`) cut to 144 bits, under a key derived
from `NEWSLETTER_SECRET_KEY` per purpose, so a confirmation token never works
as an unsubscribe token and back. The send path signs a few tokens per
recipient: each costs a few microseconds where a general serializer costs tens.

Feedback tokens are the exception: a personal digest carries two for every
paper it shows, about thirty per message, so their MAC is keyed BLAKE2b
(RFC 7693, stdlib `hashlib`; 144 bits, under the purpose's own derived key),
one compression per link where HMAC takes two and more Python around them.
Feedback tokens made before that, with HMAC-SHA256, still verify.

There is no hidden clock: making an expiring token takes its `issued_at` and
reading one takes `now`, so callers pass `utc_now()` and tests pass their own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import string
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from newsletter.core.errors import ExpiredTokenError, InvalidTokenError

_UNSUBSCRIBE = "unsubscribe"
_PREFERENCES = "preferences"
_CONFIRM = "confirm"
_FEEDBACK = "feedback"  # HMAC-SHA256 feedback tokens, made until BLAKE2b replaced it
_FEEDBACK_BLAKE2B = "feedback-blake2b"
_VIEW = "view"
_VIEW_TOKEN = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9]{8})\.([A-Za-z0-9_-]{24})")
# "More like this" / "Less like this": the verdicts a feedback link may carry.
FEEDBACK_VERDICTS = ("more", "less")
_FEEDBACK_TOKEN = re.compile(
    r"([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,44})\.([ml])\.([A-Za-z0-9_-]{24})"
)
_ARXIV_ID = re.compile(r"[A-Za-z0-9./-]{1,32}")
_BOUNCE = "bounce"
_BOUNCE_MAC_BYTES = 10  # 80 bits: 16 base-32 characters, no padding
_BOUNCE_TOKEN = re.compile(r"([0-9a-z]{1,13})-([a-z2-7]{16})")
_MAC_BYTES = 18  # 144 bits: 24 URL-safe characters, no padding
_TAG_CHARACTERS = _MAC_BYTES // 3 * 4
_URL_SAFE = bytes.maketrans(b"+/", b"-_")  # standard base64 to its URL-safe alphabet
_SUBSCRIBER_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LASTING = re.compile(r"([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{24})")
# Seven base-36 digits of seconds last until the year 4400 (and stay within `datetime`).
_EXPIRING = re.compile(r"([A-Za-z0-9_-]{1,64}\.([0-9a-z]{1,7}))\.([A-Za-z0-9_-]{24})")
_BASE36 = string.digits + string.ascii_lowercase
# Servers' clocks differ a little; a link "issued" further ahead than this was not.
_CLOCK_SKEW = timedelta(minutes=1)
_NOT_VALID = "this link is not valid; it may have been altered"


@lru_cache(maxsize=16)
def _purpose_key(secret_key: str, purpose: str) -> bytes:
    # One derived key per purpose, so a token of one kind never verifies as another.
    return hmac.new(
        secret_key.encode("utf-8"), b"newsletter-link:" + purpose.encode("ascii"), hashlib.sha256
    ).digest()


@lru_cache(maxsize=16)
def _keyed(secret_key: str, purpose: str) -> hmac.HMAC:
    # Copied per token: the key's own hashing is done once, not per link.
    return hmac.new(_purpose_key(secret_key, purpose), digestmod=hashlib.sha256)


def _mac(secret_key: str, purpose: str, signed: str) -> str:
    mac = _keyed(secret_key, purpose).copy()
    mac.update(signed.encode("ascii"))
    return _tag(mac.digest())


@lru_cache(maxsize=16)
def _keyed_blake2b(secret_key: str, purpose: str) -> hashlib.blake2b:
    # Copied per token, like `_keyed`.
    return hashlib.blake2b(key=_purpose_key(secret_key, purpose), digest_size=_MAC_BYTES)


def _feedback_mac(secret_key: str, signed: str) -> str:
    mac = _keyed_blake2b(secret_key, _FEEDBACK_BLAKE2B).copy()
    mac.update(signed.encode("ascii"))
    return _tag(mac.digest())


def _tag(digest: bytes) -> str:
    """A MAC as the URL-safe base64 of its first bytes (`base64.urlsafe_b64encode`, unpadded)."""
    return _tag_all(digest[:_MAC_BYTES])


def _tag_all(macs: bytes) -> str:
    """MACs of `_MAC_BYTES` each, end to end, as their tags end to end."""
    return binascii.b2a_base64(macs, newline=False).translate(_URL_SAFE).decode()


def _checked_key(subscriber_key: str) -> str:
    if _SUBSCRIBER_KEY.fullmatch(subscriber_key) is None:
        raise ValueError(f"a subscriber key must be 1-64 URL-safe characters: {subscriber_key!r}")
    return subscriber_key


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
        if number == 0:
            return digits


def _sign(secret_key: str, purpose: str, subscriber_key: str) -> str:
    """KEY.MAC: a link that does not expire."""
    signed = _checked_key(subscriber_key)
    return f"{signed}.{_mac(secret_key, purpose, signed)}"


def _sign_issued(secret_key: str, purpose: str, subscriber_key: str, issued_at: datetime) -> str:
    """KEY.ISSUED.MAC: a link whose age can be checked."""
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    seconds = int(issued_at.timestamp())
    if seconds < 0:
        raise ValueError(f"issued_at is before 1970: {issued_at.isoformat()}")
    signed = f"{_checked_key(subscriber_key)}.{_base36(seconds)}"
    return f"{signed}.{_mac(secret_key, purpose, signed)}"


def _verify(secret_key: str, purpose: str, token: str) -> str:
    match = _LASTING.fullmatch(token)
    if match is None:
        raise InvalidTokenError(_NOT_VALID)
    subscriber_key, mac = match.groups()
    if not hmac.compare_digest(mac, _mac(secret_key, purpose, subscriber_key)):
        raise InvalidTokenError(_NOT_VALID)
    return subscriber_key


def _verify_issued(
    secret_key: str, purpose: str, token: str, *, max_age_seconds: int, now: datetime
) -> tuple[str, datetime]:
    match = _EXPIRING.fullmatch(token)
    if match is None:
        raise InvalidTokenError(_NOT_VALID)
    signed, issued, mac = match.groups()
    if not hmac.compare_digest(mac, _mac(secret_key, purpose, signed)):
        raise InvalidTokenError(_NOT_VALID)
    issued_at = datetime.fromtimestamp(int(issued, 36), UTC)
    if issued_at > now + _CLOCK_SKEW:
        raise InvalidTokenError(_NOT_VALID)
    if now - issued_at > timedelta(seconds=max_age_seconds):
        raise ExpiredTokenError(
            "this confirmation link has expired; sign up again to get a new one"
        )
    return signed.partition(".")[0], issued_at


def _bounce_mac(secret_key: str, signed: str) -> str:
    digest = hmac.new(
        _purpose_key(secret_key, _BOUNCE), signed.encode("ascii"), hashlib.sha256
    ).digest()
    return base64.b32encode(digest[:_BOUNCE_MAC_BYTES]).decode("ascii").lower()


def make_bounce_token(secret_key: str, delivery_id: int) -> str:
    """The token of a VERP envelope sender: names one delivery (ledger row), signed."""
    if delivery_id < 0:
        raise ValueError(f"a delivery id is not negative: {delivery_id}")
    signed = _base36(delivery_id)
    return f"{signed}-{_bounce_mac(secret_key, signed)}"


def read_bounce_token(secret_key: str, token: str) -> int:
    """The delivery id a bounce token names (any letter case), or InvalidTokenError."""
    match = _BOUNCE_TOKEN.fullmatch(token.lower())
    if match is None:
        raise InvalidTokenError("not a bounce token")
    signed, mac = match.groups()
    if not hmac.compare_digest(mac, _bounce_mac(secret_key, signed)):
        raise InvalidTokenError("the bounce token's signature does not match")
    return int(signed, 36)


def _checked_arxiv_id(arxiv_id: str) -> str:
    if _ARXIV_ID.fullmatch(arxiv_id) is None:
        raise ValueError(f"an arXiv id is 1-32 characters of [A-Za-z0-9./-]: {arxiv_id!r}")
    return arxiv_id


def make_feedback_token(secret_key: str, subscriber_key: str, arxiv_id: str, verdict: str) -> str:
    """The token of one reader's "more" or "less" link under one paper."""
    if verdict not in FEEDBACK_VERDICTS:
        raise ValueError(f"a feedback verdict is 'more' or 'less': {verdict!r}")
    paper = base64.urlsafe_b64encode(_checked_arxiv_id(arxiv_id).encode("ascii"))
    signed = f"{_checked_key(subscriber_key)}.{paper.decode('ascii').rstrip('=')}.{verdict[0]}"
    return f"{signed}.{_feedback_mac(secret_key, signed)}"


def read_feedback_token(secret_key: str, token: str) -> tuple[str, str, str]:
    """(subscriber key, arXiv id, "more" or "less") of a feedback token, or InvalidTokenError."""
    match = _FEEDBACK_TOKEN.fullmatch(token)
    if match is None:
        raise InvalidTokenError(_NOT_VALID)
    subscriber_key, paper, verdict, mac = match.groups()
    signed = f"{subscriber_key}.{paper}.{verdict}"
    if not (
        hmac.compare_digest(mac, _feedback_mac(secret_key, signed))
        # A link in a digest sent before feedback tokens were MACed with BLAKE2b.
        or hmac.compare_digest(mac, _mac(secret_key, _FEEDBACK, signed))
    ):
        raise InvalidTokenError(_NOT_VALID)
    # Only this module makes a signed token, so a matching MAC means a well-made id;
    # the checks below guard against a leaked key, never against a mistake of ours.
    try:
        arxiv_id = base64.urlsafe_b64decode(paper + "=" * (-len(paper) % 4)).decode("ascii")
    except ValueError as error:
        raise InvalidTokenError(_NOT_VALID) from error
    if _ARXIV_ID.fullmatch(arxiv_id) is None:
        raise InvalidTokenError(_NOT_VALID)
    return subscriber_key, arxiv_id, "more" if verdict == "m" else "less"


def make_view_token(secret_key: str, subscriber_key: str, edition_date: date) -> str:
    """The token of one reader's "View in browser" link of one edition."""
    signed = f"{_checked_key(subscriber_key)}.{edition_date:%Y%m%d}"
    return f"{signed}.{_mac(secret_key, _VIEW, signed)}"


def read_view_token(secret_key: str, token: str) -> tuple[str, date]:
    """(subscriber key, edition date) of a view token, or InvalidTokenError."""
    match = _VIEW_TOKEN.fullmatch(token)
    if match is None:
        raise InvalidTokenError(_NOT_VALID)
    subscriber_key, day, mac = match.groups()
    if not hmac.compare_digest(mac, _mac(secret_key, _VIEW, f"{subscriber_key}.{day}")):
        raise InvalidTokenError(_NOT_VALID)
    try:
        return subscriber_key, datetime.strptime(day, "%Y%m%d").date()
    except ValueError as error:  # only with a leaked key: this module signs real dates only
        raise InvalidTokenError(_NOT_VALID) from error


def make_unsubscribe_token(secret_key: str, subscriber_key: str) -> str:
    """The token in a subscriber's one-click unsubscribe URL."""
    return _sign(secret_key, _UNSUBSCRIBE, subscriber_key)


def make_preferences_token(secret_key: str, subscriber_key: str) -> str:
    """The token in a subscriber's manage-preferences URL."""
    return _sign(secret_key, _PREFERENCES, subscriber_key)


def make_confirm_token(secret_key: str, subscriber_key: str, *, issued_at: datetime) -> str:
    """The expiring token in a double opt-in confirmation link, issued at `issued_at`."""
    return _sign_issued(secret_key, _CONFIRM, subscriber_key, issued_at)


def read_unsubscribe_token(secret_key: str, token: str) -> str:
    """The subscriber key in an unsubscribe token, or InvalidTokenError."""
    return _verify(secret_key, _UNSUBSCRIBE, token)


def read_preferences_token(secret_key: str, token: str) -> str:
    """The subscriber key in a preferences token, or InvalidTokenError."""
    return _verify(secret_key, _PREFERENCES, token)


def read_confirm_token(secret_key: str, token: str, *, max_age_seconds: int, now: datetime) -> str:
    """The subscriber key in a confirmation token, or InvalidTokenError (ExpiredTokenError)."""
    return read_confirm_token_issued(secret_key, token, max_age_seconds=max_age_seconds, now=now)[0]


def read_confirm_token_issued(
    secret_key: str, token: str, *, max_age_seconds: int, now: datetime
) -> tuple[str, datetime]:
    """The subscriber key in a confirmation token and when it was made (to the second)."""
    return _verify_issued(secret_key, _CONFIRM, token, max_age_seconds=max_age_seconds, now=now)


def unsubscribe_url(base_url: str, secret_key: str, subscriber_key: str) -> str:
    """The absolute one-click unsubscribe URL for a subscriber."""
    return f"{base_url}/unsubscribe/{make_unsubscribe_token(secret_key, subscriber_key)}"


def preferences_url(base_url: str, secret_key: str, subscriber_key: str) -> str:
    """The absolute manage-preferences URL for a subscriber."""
    return f"{base_url}/preferences/{make_preferences_token(secret_key, subscriber_key)}"


def view_url(base_url: str, secret_key: str, subscriber_key: str, edition_date: date) -> str:
    """The absolute "View in browser" URL of a reader's own copy of an edition."""
    return f"{base_url}/view/{make_view_token(secret_key, subscriber_key, edition_date)}"


def feedback_url(
    base_url: str, secret_key: str, subscriber_key: str, arxiv_id: str, verdict: str
) -> str:
    """The absolute "More like this" (`verdict` "more") or "Less like this" ("less") URL."""
    return (
        f"{base_url}/feedback/{make_feedback_token(secret_key, subscriber_key, arxiv_id, verdict)}"
    )


@lru_cache(maxsize=4096)
def _paper_segment(arxiv_id: str) -> str:
    paper = base64.urlsafe_b64encode(_checked_arxiv_id(arxiv_id).encode("ascii"))
    return paper.decode("ascii").rstrip("=")


@lru_cache(maxsize=4096)
def _feedback_tails(arxiv_id: str) -> tuple[tuple[bytes, str], tuple[bytes, str]]:
    """Per verdict: what the MAC signs after the reader's key, and the URL after it."""
    paper = _paper_segment(arxiv_id)
    more, less = (f".{paper}.{verdict[0]}" for verdict in FEEDBACK_VERDICTS)
    return (more.encode("ascii"), f"{more[1:]}."), (less.encode("ascii"), f"{less[1:]}.")


def feedback_urls(
    base_url: str, secret_key: str, subscriber_key: str, arxiv_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """("more", "less") URLs of each paper for one reader: `feedback_url`, in bulk.

    The send path calls this per message (two links for each paper shown):
    the MAC state after the reader's key is computed once and copied per link,
    and each paper's part of the token is made once.
    """
    key = _checked_key(subscriber_key)
    reader = _keyed_blake2b(secret_key, _FEEDBACK_BLAKE2B).copy()
    reader.update(key.encode("ascii"))
    prefix = f"{base_url}/feedback/{key}."
    tails = [_feedback_tails(arxiv_id) for arxiv_id in arxiv_ids]
    macs: list[bytes] = []
    for (more_signed, _), (less_signed, _) in tails:
        more = reader.copy()
        more.update(more_signed)
        less = reader.copy()
        less.update(less_signed)
        macs += (more.digest(), less.digest())
    # A MAC is a whole number of base64 groups (18 bytes, 24 characters), so all of
    # them encoded at once are each one encoded, end to end.
    tags = _tag_all(b"".join(macs))
    size = _TAG_CHARACTERS
    return [
        (
            prefix + more_tail + tags[2 * size * index : (2 * index + 1) * size],
            prefix + less_tail + tags[(2 * index + 1) * size : 2 * size * (index + 1)],
        )
        for index, ((_, more_tail), (_, less_tail)) in enumerate(tails)
    ]


def confirm_url(base_url: str, secret_key: str, subscriber_key: str, *, issued_at: datetime) -> str:
    """The absolute double opt-in confirmation URL for a subscriber, issued at `issued_at`."""
    token = make_confirm_token(secret_key, subscriber_key, issued_at=issued_at)
    return f"{base_url}/confirm/{token}"
