"""The configured topics: what the sign-up form offers and what each means for ranking.

They live in a JSON file, a list of `{"name", "description", "keywords",
"categories"}` objects; the one shipped with the package (`topics.json` beside
this module) holds the default topics, and `NEWSLETTER_TOPICS_FILE` points at an
operator's own. A bad file is one clear error at start-up, never a half-read list.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from newsletter.core.errors import ConfigurationError
from newsletter.core.text import has_unsafe_characters
from newsletter.relevance.profiles import Topic

MAX_TOPICS = 50
MAX_TEXT = 1_000


def default_topics_text() -> str:
    """The shipped topics file's text."""
    return files("newsletter.relevance").joinpath("topics.json").read_text(encoding="utf-8")


def load_topics(path: Path | None = None) -> tuple[Topic, ...]:
    """The topics of `path`, or the shipped ones; raises ConfigurationError naming the problem."""
    where = str(path) if path is not None else "the shipped topics.json"
    try:
        text = path.read_text(encoding="utf-8") if path is not None else default_topics_text()
        raw = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigurationError(f"cannot read the topics file {where}: {error}") from error
    return parse_topics(raw, where=where)


def parse_topics(raw: Any, *, where: str) -> tuple[Topic, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_TOPICS:
        raise ConfigurationError(f"{where}: expected a list of 1 to {MAX_TOPICS} topics")
    topics: list[Topic] = []
    seen: set[str] = set()
    for number, entry in enumerate(raw, start=1):
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where}: topic {number} is not an object")
        name = _text(entry.get("name"), where, number, "name", limit=60)
        if name.casefold() in seen:
            raise ConfigurationError(f"{where}: topic {number}: {name!r} appears twice")
        seen.add(name.casefold())
        topics.append(
            Topic(
                name=name,
                description=_text(entry.get("description", ""), where, number, "description"),
                keywords=_texts(entry.get("keywords", []), where, number, "keywords"),
                categories=_texts(entry.get("categories", []), where, number, "categories"),
            )
        )
    return tuple(topics)


def _text(value: Any, where: str, number: int, field: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit or (field == "name" and not value.strip()):
        raise ConfigurationError(
            f"{where}: topic {number}: {field} must be text of at most {limit} characters"
        )
    if has_unsafe_characters(value):
        raise ConfigurationError(
            f"{where}: topic {number}: {field} holds control, bidi or invalid characters"
        )
    return value.strip()


def _texts(value: Any, where: str, number: int, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 100:
        raise ConfigurationError(f"{where}: topic {number}: {field} must be a list of texts")
    return tuple(_text(item, where, number, field, limit=200) for item in value)
