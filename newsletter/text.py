"""Rules for text from outside (forms, JSON, feeds): what may reach a page, a header or XML.

One home for the character classes the product refuses or removes, so a name
typed into a form, a title read from a feed and a subject in the Atom feed
obey the same rules.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: the
# email package and some mail clients treat several of these as line breaks.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Bidi embeddings, overrides and isolates: they make text read differently from
# what it says ("\u202eexe.pdf"), and nothing a reader types needs them.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
# Halves of a UTF-16 pair on their own (JSON can spell them as "\ud800"): no
# UTF-8 encoder accepts them, so they fail at the database, the page or the wire.
LONE_SURROGATES = re.compile("[\ud800-\udfff]")
# Characters XML 1.0 forbids (surrogates and U+FFFE/U+FFFF included).
XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def has_unsafe_characters(text: str) -> bool:
    """Whether the text holds control, bidi or XML-invalid characters (a value to refuse)."""
    return bool(
        CONTROL_CHARACTERS.search(text) or BIDI_CONTROLS.search(text) or XML_INVALID.search(text)
    )


def one_line(text: str) -> str:
    """The text on one line: controls become spaces, bidi and invalid characters go."""
    spaced = CONTROL_CHARACTERS.sub(" ", XML_INVALID.sub(" ", text))
    return " ".join(BIDI_CONTROLS.sub("", spaced).split())


def xml_text(text: str) -> str:
    """The text without the characters an XML 1.0 document cannot carry."""
    return XML_INVALID.sub("", text)
