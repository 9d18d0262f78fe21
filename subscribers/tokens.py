"""Signed, opaque link tokens: unsubscribe and preferences (never expire), confirmation (expires).

Tokens carry the subscriber's random `key`, never the address or row id, and
are signed with `NEWSLETTER_SECRET_KEY`; a different salt per purpose keeps a
confirmation token from working as an unsubscribe token and back.
"""

from __future__ import annotations

from functools import lru_cache

from itsdangerous import BadData, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from newsletter.errors import ExpiredTokenError, InvalidTokenError

_UNSUBSCRIBE_SALT = "unsubscribe"
_PREFERENCES_SALT = "preferences"
_CONFIRM_SALT = "confirm"


@lru_cache(maxsize=16)
def _serializer(secret_key: str, salt: str) -> URLSafeSerializer:
    # Built once per key and purpose: the send path signs two tokens per recipient.
    return URLSafeSerializer(secret_key, salt=salt)


def make_unsubscribe_token(secret_key: str, subscriber_key: str) -> str:
    """The token in a subscriber's one-click unsubscribe URL."""
    return _serializer(secret_key, _UNSUBSCRIBE_SALT).dumps(subscriber_key)


def make_preferences_token(secret_key: str, subscriber_key: str) -> str:
    """The token in a subscriber's manage-preferences URL."""
    return _serializer(secret_key, _PREFERENCES_SALT).dumps(subscriber_key)


def make_confirm_token(secret_key: str, subscriber_key: str) -> str:
    """The expiring token in a double opt-in confirmation link."""
    return URLSafeTimedSerializer(secret_key, salt=_CONFIRM_SALT).dumps(subscriber_key)


def _read(serializer: URLSafeSerializer, token: str) -> str:
    try:
        value = serializer.loads(token)
    except BadData:
        raise InvalidTokenError("this link is not valid; it may have been altered") from None
    if not isinstance(value, str):
        raise InvalidTokenError("this link is not valid; it may have been altered")
    return value


def read_unsubscribe_token(secret_key: str, token: str) -> str:
    """The subscriber key in an unsubscribe token, or InvalidTokenError."""
    return _read(_serializer(secret_key, _UNSUBSCRIBE_SALT), token)


def read_preferences_token(secret_key: str, token: str) -> str:
    """The subscriber key in a preferences token, or InvalidTokenError."""
    return _read(_serializer(secret_key, _PREFERENCES_SALT), token)


def read_confirm_token(secret_key: str, token: str, *, max_age_seconds: int) -> str:
    """The subscriber key in a confirmation token, or InvalidTokenError (also when expired)."""
    serializer = URLSafeTimedSerializer(secret_key, salt=_CONFIRM_SALT)
    try:
        value = serializer.loads(token, max_age=max_age_seconds)
    except SignatureExpired:
        raise ExpiredTokenError(
            "this confirmation link has expired; sign up again to get a new one"
        ) from None
    except BadData:
        raise InvalidTokenError("this link is not valid; it may have been altered") from None
    if not isinstance(value, str):
        raise InvalidTokenError("this link is not valid; it may have been altered")
    return value


def unsubscribe_url(base_url: str, secret_key: str, subscriber_key: str) -> str:
    """The absolute one-click unsubscribe URL for a subscriber."""
    return f"{base_url}/unsubscribe/{make_unsubscribe_token(secret_key, subscriber_key)}"


def preferences_url(base_url: str, secret_key: str, subscriber_key: str) -> str:
    """The absolute manage-preferences URL for a subscriber."""
    return f"{base_url}/preferences/{make_preferences_token(secret_key, subscriber_key)}"


def confirm_url(base_url: str, secret_key: str, subscriber_key: str) -> str:
    """The absolute double opt-in confirmation URL for a subscriber."""
    return f"{base_url}/confirm/{make_confirm_token(secret_key, subscriber_key)}"
