"""Text rules: what outside text may carry once it reaches a line, a header or a page.

One home for the character classes every stage cares about, so a feed title,
a sign-up name and a setting are all cleaned by the same rule.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "BIDI_CONTROLS",
    "CONTROL_CHARACTERS",
    "UNSTORABLE",
    "XML_INVALID",
    "has_control_characters",
    "single_line",
]

# C0, DEL, C1 and the Unicode line/paragraph separators: the email package and
# some mail clients treat several of these as line breaks inside headers.
CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Bidi embeddings, overrides, isolates and marks make text display differently
# from what it says (a subject that reads backwards, a link that hides its host).
BIDI_CONTROLS: Final = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Characters XML 1.0 forbids, lone surrogates among them: MRML refuses a
# document holding any, and no UTF-8 encoder can write a surrogate.
XML_INVALID: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# NUL (PostgreSQL text cannot hold it) and lone surrogates (no UTF-8 encoder
# can write one): text holding either cannot be stored by any database we run on.
UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


def single_line(text: str) -> str:
    """The text on one line: controls and unencodable characters become spaces, bidi controls
    go, and runs of whitespace collapse to one space."""
    text = CONTROL_CHARACTERS.sub(" ", XML_INVALID.sub(" ", text))
    return " ".join(BIDI_CONTROLS.sub("", text).split())


def has_control_characters(text: str) -> bool:
    """Whether the text holds a line break, another control character or an unencodable one."""
    return CONTROL_CHARACTERS.search(text) is not None or XML_INVALID.search(text) is not None
