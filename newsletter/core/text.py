"""Text rules: what outside text (feeds, forms, JSON, settings) may carry once it reaches
a line, a header, a page, XML or the database.

One home for the character classes the product refuses or removes, so a title
read from a feed, a name typed into a form and a subject in the Atom feed obey
the same rules.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "BIDI_CONTROLS",
    "CONTROL_CHARACTERS",
    "UNSTORABLE",
    "XML_INVALID",
    "has_unsafe_characters",
    "single_line",
    "xml_text",
]

# C0, DEL, C1 and the Unicode line/paragraph separators: the email package and
# some mail clients treat several of these as line breaks inside headers.
CONTROL_CHARACTERS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Bidi embeddings, overrides, isolates and marks make text read differently
# from what it says ("\u202eexe.pdf", a subject that reads backwards), and
# nothing a reader types needs them.
BIDI_CONTROLS: Final = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Characters XML 1.0 forbids, lone surrogates and U+FFFE/U+FFFF among them:
# MRML refuses a document holding any, and so does every XML parser.
XML_INVALID: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# NUL (PostgreSQL text cannot hold it) and lone surrogates: text holding either
# cannot be stored by any database we run on.
UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


def single_line(text: str) -> str:
    """The text on one line: controls and XML-invalid characters become spaces, bidi
    controls go, and runs of whitespace collapse to one space."""
    spaced = CONTROL_CHARACTERS.sub(" ", XML_INVALID.sub(" ", text))
    return " ".join(BIDI_CONTROLS.sub("", spaced).split())


def has_unsafe_characters(text: str) -> bool:
    """Whether the text holds control, bidi or XML-invalid characters (a value to refuse)."""
    return bool(
        CONTROL_CHARACTERS.search(text) or BIDI_CONTROLS.search(text) or XML_INVALID.search(text)
    )


def xml_text(text: str) -> str:
    """The text without the characters an XML 1.0 document cannot carry."""
    return XML_INVALID.sub("", text)
