"""The topics file: the shipped one loads, an operator's bad one is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from newsletter.core.errors import ConfigurationError
from newsletter.relevance.topics import load_topics


def test_the_shipped_topics_are_the_sign_up_forms_and_each_says_what_it_means() -> None:
    from newsletter.core.settings import Settings

    topics = load_topics()

    assert [t.name for t in topics] == Settings().topics
    assert all(t.description and len(t.keywords) >= 10 and t.categories for t in topics)


def test_an_operators_file_replaces_them(tmp_path: Path) -> None:
    path = tmp_path / "topics.json"
    path.write_text(json.dumps([{"name": "Quantum ML", "description": "Qubits that learn."}]))

    [topic] = load_topics(path)

    assert (topic.name, topic.description, topic.keywords) == (
        "Quantum ML",
        "Qubits that learn.",
        (),
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "cannot read the topics file"),
        ("[]", "expected a list of 1 to 50 topics"),
        ('{"name": "x"}', "expected a list"),
        ('["Robotics"]', "topic 1 is not an object"),
        ('[{"name": ""}]', "name must be text"),
        ('[{"name": "A"}, {"name": "a"}]', "'a' appears twice"),
        ('[{"name": "A\\u202eB"}]', "control, bidi or invalid characters"),
        ('[{"name": "A", "keywords": "x"}]', "keywords must be a list"),
        ('[{"name": "A", "keywords": [3]}]', "keywords must be text"),
    ],
)
def test_a_bad_file_is_one_error_naming_the_problem(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "topics.json"
    path.write_text(content)

    with pytest.raises(ConfigurationError, match=message) as raised:
        load_topics(path)
    assert str(path) in str(raised.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the topics file"):
        load_topics(tmp_path / "nope.json")
