"""Signed link tokens: they round-trip, and anything altered, misused or too old is refused."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable

import pytest

from newsletter.core.errors import ExpiredTokenError, InvalidTokenError
from subscribers.models import new_subscriber_key
from subscribers.tokens import (
    confirm_url,
    feedback_url,
    make_confirm_token,
    make_feedback_token,
    make_preferences_token,
    make_unsubscribe_token,
    make_view_token,
    read_confirm_token,
    read_confirm_token_issued,
    read_feedback_token,
    read_preferences_token,
    read_unsubscribe_token,
    read_view_token,
    unsubscribe_url,
    view_url,
)

SECRET = "a-test-secret-of-reasonable-length"
KEY = "reader-key-00000"
ISSUED = dt.datetime(2026, 3, 2, 7, 0, 0, tzinfo=dt.UTC)
A_WEEK = 7 * 24 * 3600


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


def test_links_already_sent_keep_working() -> None:
    # KEY.MAC as every digest sent so far carries it: the scheme must not change them.
    assert make_unsubscribe_token(SECRET, KEY) == f"{KEY}.ET11Ax85jcvby3tUAhIlpQGr"
    assert make_preferences_token(SECRET, KEY) == f"{KEY}.tq0mA4qTF3RnnLrGqMyj85vc"


def test_a_confirmation_token_is_key_issue_time_and_mac() -> None:
    token = make_confirm_token(SECRET, KEY, issued_at=ISSUED + dt.timedelta(microseconds=999))
    key, issued, mac = token.split(".")
    assert key == KEY
    assert int(issued, 36) == int(ISSUED.timestamp()) and issued == issued.lower()
    assert len(mac) == 24
    assert read_confirm_token_issued(SECRET, token, max_age_seconds=A_WEEK, now=ISSUED) == (
        KEY,
        ISSUED,  # whole seconds
    )
    url = confirm_url("https://news.example.org", SECRET, KEY, issued_at=ISSUED)
    assert url == f"https://news.example.org/confirm/{token}"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature altered
        lambda t: ("X" if t[0] != "X" else "Y") + t[1:],  # key altered
        lambda t: t + "x",
        lambda t: t.replace(".", ""),
        lambda t: "",
        lambda t: "../../etc/passwd",
        lambda t: t + "\r\nSet-Cookie: x=1",
    ],
)
def test_altered_tokens_are_refused(mangle: Callable[[str], str]) -> None:
    token = make_unsubscribe_token(SECRET, new_subscriber_key())
    with pytest.raises(InvalidTokenError, match="not valid"):
        read_unsubscribe_token(SECRET, mangle(token))


def _a_day_later(issued: str) -> str:
    """The issue time a day later, in base 36: what would make a link live longer."""
    digits, number, text = "0123456789abcdefghijklmnopqrstuvwxyz", int(issued, 36) + 86400, ""
    while number:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
    return text


@pytest.mark.parametrize(
    ("part", "change"),
    [
        (0, lambda key: ("X" if key[0] != "X" else "Y") + key[1:]),  # another subscriber
        (1, _a_day_later),  # a later issue time, to outlive the expiry
        (1, lambda issued: "0" + issued),  # the same time, written differently
        (2, lambda mac: ("B" if mac[0] == "A" else "A") + mac[1:]),
    ],
)
def test_each_part_of_a_confirmation_token_is_covered_by_its_mac(
    part: int, change: Callable[[str], str]
) -> None:
    parts = make_confirm_token(SECRET, KEY, issued_at=ISSUED).split(".")
    parts[part] = change(parts[part])
    with pytest.raises(InvalidTokenError, match="not valid") as refused:
        read_confirm_token(SECRET, ".".join(parts), max_age_seconds=A_WEEK, now=ISSUED)
    assert not isinstance(refused.value, ExpiredTokenError)


def test_a_token_works_only_for_its_purpose_and_secret() -> None:
    key = new_subscriber_key()
    confirm = make_confirm_token(SECRET, key, issued_at=ISSUED)
    unsubscribe = make_unsubscribe_token(SECRET, key)
    with pytest.raises(InvalidTokenError):
        read_preferences_token(SECRET, unsubscribe)
    with pytest.raises(InvalidTokenError):
        read_unsubscribe_token("another-secret", unsubscribe)
    with pytest.raises(InvalidTokenError):
        read_unsubscribe_token(SECRET, confirm)
    with pytest.raises(InvalidTokenError):
        read_preferences_token(SECRET, confirm)
    for lasting in (unsubscribe, make_preferences_token(SECRET, key)):
        with pytest.raises(InvalidTokenError):
            read_confirm_token(SECRET, lasting, max_age_seconds=A_WEEK, now=ISSUED)
    with pytest.raises(InvalidTokenError):
        read_confirm_token("another-secret", confirm, max_age_seconds=A_WEEK, now=ISSUED)
    # Put together from an unsubscribe token's key and MAC around an issue time: no.
    key_part, mac = unsubscribe.split(".")
    spliced = f"{key_part}.{confirm.split('.')[1]}.{mac}"
    with pytest.raises(InvalidTokenError):
        read_confirm_token(SECRET, spliced, max_age_seconds=A_WEEK, now=ISSUED)


def test_confirmation_tokens_expire_by_the_clock_they_are_given() -> None:
    token = make_confirm_token(SECRET, KEY, issued_at=ISSUED)

    def read_at(now: dt.datetime) -> str:
        return read_confirm_token(SECRET, token, max_age_seconds=3600, now=now)

    assert read_at(ISSUED) == KEY
    assert read_at(ISSUED + dt.timedelta(seconds=3600)) == KEY  # the last valid second
    with pytest.raises(ExpiredTokenError, match="expired; sign up again"):
        read_at(ISSUED + dt.timedelta(seconds=3601))
    with pytest.raises(ExpiredTokenError):
        read_at(ISSUED + dt.timedelta(days=400))


def test_a_confirmation_token_from_the_future_is_refused_beyond_clock_skew() -> None:
    token = make_confirm_token(SECRET, KEY, issued_at=ISSUED)
    # Another server's clock a few seconds behind still takes it.
    assert (
        read_confirm_token(SECRET, token, max_age_seconds=60, now=ISSUED - dt.timedelta(seconds=30))
        == KEY
    )
    with pytest.raises(InvalidTokenError, match="not valid"):
        read_confirm_token(
            SECRET, token, max_age_seconds=A_WEEK, now=ISSUED - dt.timedelta(hours=1)
        )


def test_old_itsdangerous_confirmation_tokens_are_refused_cleanly() -> None:
    # A genuine token of the previous scheme, for KEY under SECRET:
    # URLSafeTimedSerializer(SECRET, salt="confirm").dumps(KEY), itsdangerous 2.2.
    old = "InJlYWRlci1rZXktMDAwMDAi.awz9bw.YsLR7d3oOsswphu1jVFzq2b1Ld4"
    with pytest.raises(InvalidTokenError, match="not valid") as refused:
        read_confirm_token(SECRET, old, max_age_seconds=A_WEEK, now=ISSUED)
    assert not isinstance(refused.value, ExpiredTokenError)


def test_making_a_token_refuses_what_no_link_can_carry() -> None:
    with pytest.raises(ValueError, match="URL-safe"):
        make_unsubscribe_token(SECRET, "gone+a-key-00000")
    with pytest.raises(ValueError, match="URL-safe"):
        make_confirm_token(SECRET, "a.b", issued_at=ISSUED)
    with pytest.raises(ValueError, match="timezone-aware"):
        make_confirm_token(SECRET, KEY, issued_at=dt.datetime(2026, 3, 2, 7, 0))


def test_a_feedback_token_names_one_reader_one_paper_and_one_choice() -> None:
    for arxiv_id in ("2411.01234", "2411.01234v2", "hep-th/9901001"):
        for verdict in ("more", "less"):
            token = make_feedback_token(SECRET, KEY, arxiv_id, verdict)
            assert read_feedback_token(SECRET, token) == (KEY, arxiv_id, verdict)
            assert "/" not in token and "@" not in token
            url = feedback_url("https://news.example.org", SECRET, KEY, arxiv_id, verdict)
            assert url == f"https://news.example.org/feedback/{token}"
    more = make_feedback_token(SECRET, KEY, "2411.01234", "more")
    less = make_feedback_token(SECRET, KEY, "2411.01234", "less")
    other_paper = make_feedback_token(SECRET, KEY, "2411.01235", "more")
    assert len({more, less, other_paper}) == 3


def test_an_altered_or_misused_feedback_token_is_refused() -> None:
    token = make_feedback_token(SECRET, KEY, "2411.01234", "more")
    key, paper, verdict, mac = token.split(".")
    less_mac = make_feedback_token(SECRET, KEY, "2411.01234", "less").rsplit(".", 1)[1]
    forged = [
        f"{key}.{paper}.l.{mac}",  # "more" turned into "less"
        f"{key}.{paper}.l.{less_mac[:-1]}{'A' if less_mac[-1] != 'A' else 'B'}",
        f"other-reader.{paper}.{verdict}.{mac}",  # another reader's key
        f"{key}.MjQxMS4wMTIzNQ.{verdict}.{mac}",  # another paper
        make_feedback_token("another-secret-entirely", KEY, "2411.01234", "more"),
        make_preferences_token(SECRET, KEY),  # another purpose
        make_unsubscribe_token(SECRET, KEY),
        f"{token}.",
        f"{key}.{paper}=.{verdict}.{mac}",
        "",
        "x" * 5000,
        "\u202e.\u202e.m.\u202e",
    ]
    for bad in forged:
        with pytest.raises(InvalidTokenError):
            read_feedback_token(SECRET, bad)
    # Preferences and unsubscribe never accept a feedback token either.
    with pytest.raises(InvalidTokenError):
        read_preferences_token(SECRET, token)


@pytest.mark.parametrize(
    ("arxiv_id", "verdict"),
    [("2411.01234", "like"), ("", "more"), ("a b", "less"), ("x" * 33, "more")],
)
def test_a_feedback_token_is_made_only_for_an_arxiv_id_and_more_or_less(
    arxiv_id: str, verdict: str
) -> None:
    with pytest.raises(ValueError):
        make_feedback_token(SECRET, KEY, arxiv_id, verdict)


def test_a_view_token_names_one_reader_and_one_edition() -> None:
    key = new_subscriber_key()
    day = dt.date(2026, 11, 5)
    token = make_view_token(SECRET, key, day)

    assert read_view_token(SECRET, token) == (key, day)
    assert view_url("https://x.org", SECRET, key, day) == f"https://x.org/view/{token}"
    other_day = token.replace("20261105", "20261106")
    for altered in (other_day, token[:-1] + ("A" if token[-1] != "A" else "B"), "x", ""):
        with pytest.raises(InvalidTokenError):
            read_view_token(SECRET, altered)
    with pytest.raises(InvalidTokenError):
        read_view_token("another-secret", token)
    # Another purpose's MAC of the same reader makes no view token.
    unsubscribe_mac = make_unsubscribe_token(SECRET, key).split(".")[1]
    with pytest.raises(InvalidTokenError):
        read_view_token(SECRET, f"{key}.20261105.{unsubscribe_mac}")


def test_a_feedback_token_made_with_hmac_before_blake2b_still_works() -> None:
    # Made as digests sent before BLAKE2b made them: HMAC-SHA256 under the derived key.
    purpose_key = hmac.new(SECRET.encode(), b"newsletter-link:feedback", hashlib.sha256).digest()
    paper = base64.urlsafe_b64encode(b"2411.01234").decode().rstrip("=")
    signed = f"{KEY}.{paper}.l"
    tag = hmac.new(purpose_key, signed.encode(), hashlib.sha256).digest()[:18]
    old = f"{signed}.{base64.urlsafe_b64encode(tag).decode()}"

    assert old != make_feedback_token(SECRET, KEY, "2411.01234", "less")
    assert read_feedback_token(SECRET, old) == (KEY, "2411.01234", "less")
    with pytest.raises(InvalidTokenError):
        read_feedback_token(SECRET, old.replace(".l.", ".m."))
    with pytest.raises(InvalidTokenError):
        read_feedback_token("another-secret-entirely", old)
