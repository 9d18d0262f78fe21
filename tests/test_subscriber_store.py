"""The subscriber store: addresses are validated, normalised and unique ignoring case."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from newsletter.core.db import session_scope
from newsletter.core.errors import InvalidEmailError, SubscriberNotFoundError
from subscribers.models import SubscriberStatus
from subscribers.store import (
    add_subscriber,
    clean_name,
    count_by_status,
    iter_subscribers,
    normalise_email,
    remove_subscriber,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ada@Example.ORG ", "Ada@example.org"),
        ("reader@bücher.de", "reader@xn--bcher-kva.de"),
    ],
)
def test_addresses_are_normalised(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "required"),
        ("no-at-sign", "not a valid email address"),
        ("a@b.org\r\nBcc: victim@example.org", "line breaks"),
        ("zoë@example.org", "not a valid email address"),
        ("x" * 250 + "@example.org", "longer than 254"),
        ("a@localhost", "not a valid email address"),
    ],
)
def test_bad_addresses_are_refused_with_a_reason(raw: str, message: str) -> None:
    with pytest.raises(InvalidEmailError, match=message):
        normalise_email(raw)


def test_names_lose_control_characters_and_are_capped() -> None:
    assert clean_name("Ada\r\nBcc: x@y.org") == "Ada Bcc: x@y.org"
    assert clean_name("   ") is None
    assert len(clean_name("n" * 500) or "") == 100


def test_the_same_address_in_another_case_is_the_same_subscriber(engine: Engine) -> None:
    with session_scope(engine) as session:
        first = add_subscriber(session, email="Ada@example.org", name="Ada")
        again = add_subscriber(session, email="ada@EXAMPLE.org", confirmed=True)
        assert again.id == first.id
        assert again.status == SubscriberStatus.CONFIRMED
    with session_scope(engine) as session:
        assert [s.email for s in iter_subscribers(session, batch_size=1)] == ["Ada@example.org"]


def test_remove_unsubscribes_and_unknown_addresses_are_named(engine: Engine) -> None:
    with session_scope(engine) as session:
        for index in range(5):
            add_subscriber(session, email=f"r{index}@example.org", confirmed=True)
        remove_subscriber(session, email="R3@example.org")
        counts = count_by_status(session)
    assert counts[SubscriberStatus.CONFIRMED] == 4
    assert counts[SubscriberStatus.UNSUBSCRIBED] == 1
    with session_scope(engine) as session, pytest.raises(SubscriberNotFoundError, match="nobody"):
        remove_subscriber(session, email="nobody@example.org")
