"""Signed link tokens: they round-trip, and anything altered or misused is refused."""

from __future__ import annotations

import time

import pytest
from itsdangerous import TimestampSigner

from newsletter.core.errors import ExpiredTokenError, InvalidTokenError
from subscribers.models import new_subscriber_key
from subscribers.tokens import (
    make_confirm_token,
    make_preferences_token,
    make_unsubscribe_token,
    read_confirm_token,
    read_preferences_token,
    read_unsubscribe_token,
    unsubscribe_url,
)

SECRET = "a-test-secret-of-reasonable-length"


def test_tokens_round_trip_and_do_not_reveal_the_address() -> None:
    key = new_subscriber_key()
    unsubscribe = make_unsubscribe_token(SECRET, key)
    preferences = make_preferences_token(SECRET, key)
    assert read_unsubscribe_token(SECRET, unsubscribe) == key
    assert read_preferences_token(SECRET, preferences) == key
    assert unsubscribe != preferences
    assert "@" not in unsubscribe
    url = unsubscribe_url("https://news.example.org", SECRET, key)
    assert url == f"https://news.example.org/unsubscribe/{unsubscribe}"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature altered
        lambda t: "X" + t[1:],  # key altered
        lambda t: t + "x",
        lambda t: t.replace(".", ""),
        lambda t: "",
        lambda t: "../../etc/passwd",
        lambda t: t + "\r\nSet-Cookie: x=1",
    ],
)
def test_altered_tokens_are_refused(mangle: object) -> None:
    token = make_unsubscribe_token(SECRET, new_subscriber_key())
    assert callable(mangle)
    with pytest.raises(InvalidTokenError, match="not valid"):
        read_unsubscribe_token(SECRET, mangle(token))


def test_a_token_works_only_for_its_purpose_and_secret() -> None:
    key = new_subscriber_key()
    with pytest.raises(InvalidTokenError):
        read_preferences_token(SECRET, make_unsubscribe_token(SECRET, key))
    with pytest.raises(InvalidTokenError):
        read_unsubscribe_token("another-secret", make_unsubscribe_token(SECRET, key))
    with pytest.raises(InvalidTokenError):
        read_unsubscribe_token(SECRET, make_confirm_token(SECRET, key))


def test_confirmation_tokens_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_confirm_token(SECRET, "some-key")
    assert read_confirm_token(SECRET, token, max_age_seconds=60) == "some-key"
    # A token signed two minutes ago, instead of waiting for one to age.
    with monkeypatch.context() as clock:
        clock.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 120)
        old_token = make_confirm_token(SECRET, "some-key")
    with pytest.raises(ExpiredTokenError, match="expired"):
        read_confirm_token(SECRET, old_token, max_age_seconds=60)
    assert read_confirm_token(SECRET, old_token, max_age_seconds=600) == "some-key"
