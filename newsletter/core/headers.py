"""Header lines written byte for byte, so outside text can never become a header.

Every header the product sends is written here, not by the `email` package:
its folding decodes RFC 2047 encoded-words and writes the decoded text back
(CVE-2024-6923, fixed only in later patch releases of the Pythons we allow),
so a title like ``=?utf-8?q?Hi=0D=0AReply-To:_x?=`` would come out as a real
line break and a forged header. The rules here are simple enough to check:

- text is first put on one line (`text.single_line`: no CR, LF or controls);
- a word is written as-is only when it is printable ASCII with no ``=?`` in
  it, so a receiver has nothing to decode;
- every run of other words is written as base64 encoded-words, which a
  receiver decodes back to exactly the text we were given, ``=?`` and all
  (the spaces inside a run are encoded with it: a decoder drops the
  whitespace between two encoded-words).
"""

from __future__ import annotations

import re
from base64 import b64encode
from typing import Final

from newsletter.core.errors import InvalidEmailError
from newsletter.core.text import single_line

__all__ = [
    "HEADER_LINE_TARGET",
    "checked_address",
    "mailbox_header",
    "mailbox_setting_header",
    "unstructured_header",
]

HEADER_LINE_TARGET: Final = 78
_FOLD: Final = "\r\n "
# 42 UTF-8 bytes become 56 base64 characters: with the 12 characters of
# "=?utf-8?b?...?=" framing, a word is 68 long and fits after "Reply-To: ".
_ENCODED_WORD_MAX_BYTES: Final = 42
# Characters of an RFC 5322 atom, plus the space between atoms of a phrase.
_PLAIN_PHRASE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+")
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]*")
_ADDRESS: Final = re.compile(r"[\x21-\x7e]+@[\x21-\x7e]+")
_ADDRESS_FORBIDDEN: Final = frozenset('<>()[]\\,;:"')


def _is_literal_safe(text: str) -> bool:
    """Text a receiver shows exactly as written: printable ASCII that nothing would decode."""
    return _PRINTABLE_ASCII.fullmatch(text) is not None and "=?" not in text


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 base64 encoded-words of at most 42 UTF-8 bytes, never splitting a character."""
    words: list[str] = []
    chunk: list[bytes] = []
    size = 0
    for character in text:
        encoded = character.encode("utf-8")
        if size + len(encoded) > _ENCODED_WORD_MAX_BYTES:
            words.append(f"=?utf-8?b?{b64encode(b''.join(chunk)).decode('ascii')}?=")
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded)
    if chunk:
        words.append(f"=?utf-8?b?{b64encode(b''.join(chunk)).decode('ascii')}?=")
    return words


def _fold_words(prefix: str, words: list[str]) -> str:
    """Words joined by spaces after `prefix`, a fold before any word that would pass 78."""
    lines = [prefix + words[0]] if words else [prefix.rstrip()]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > HEADER_LINE_TARGET:
            lines.append(word)
        else:
            lines[-1] += " " + word
    return _FOLD.join(lines)


def _unstructured_words(text: str) -> list[str]:
    """Header words for free text: literal where safe, each run of other words encoded."""
    words: list[str] = []
    run: list[str] = []
    for token in text.split(" "):
        if token and _is_literal_safe(token):
            if run:
                words += _encoded_words(" ".join(run))
                run = []
            words.append(token)
        elif token:
            run.append(token)
    if run:
        words += _encoded_words(" ".join(run))
    return words


def unstructured_header(name: str, value: str) -> bytes:
    """`Name: value` for free text (Subject and the like), CRLF-terminated, safe for any value."""
    words = _unstructured_words(single_line(value))
    return (_fold_words(f"{name}: ", words) + "\r\n").encode("ascii")


def checked_address(address: str) -> str:
    """The address if it can stand in a header as it is; InvalidEmailError otherwise.

    Addresses come from the database or settings: refuse rather than repair one
    that could break the header or needs SMTPUTF8, which the sender does not speak.
    """
    if _ADDRESS.fullmatch(address) is None or _ADDRESS_FORBIDDEN.intersection(address):
        raise InvalidEmailError(
            f"cannot address a message to {address!r}: "
            "it must be a plain ASCII address without spaces or brackets"
        )
    return address


def _phrase_words(display: str) -> list[str]:
    """A display name as header words: an atom phrase, a quoted string or encoded-words."""
    if _is_literal_safe(display):
        if _PLAIN_PHRASE.fullmatch(display):
            return display.split(" ")
        quoted = display.replace("\\", "\\\\").replace('"', '\\"')
        if len(quoted) + 2 <= HEADER_LINE_TARGET - 10:
            return [f'"{quoted}"']
    return _encoded_words(display)


def _angle_header(name: str, display: str | None, bracketed: str) -> bytes:
    words = _phrase_words(single_line(display or ""))
    words = [word for word in words if word]
    return (_fold_words(f"{name}: ", [*words, bracketed]) + "\r\n").encode("ascii")


def mailbox_header(name: str, display_name: str | None, address: str) -> bytes:
    """`Name: Display <address>` (To, From, Reply-To) with the display name made safe."""
    address = checked_address(address)
    if not single_line(display_name or ""):
        return f"{name}: {address}\r\n".encode("ascii")
    return _angle_header(name, display_name, f"<{address}>")


def split_mailbox_setting(value: str) -> tuple[str, str]:
    """`"Display <address>"` or a bare address, as (display, address); no parsing of comments."""
    text = single_line(value)
    display, bracket, rest = text.rpartition("<")
    if not bracket:
        return "", text
    address = rest.removesuffix(">").strip()
    return display.strip().strip('"').strip(), address


def mailbox_setting_header(name: str, value: str) -> bytes:
    """A header from a setting written as `Display <address>`, such as From or Reply-To."""
    display, address = split_mailbox_setting(value)
    return mailbox_header(name, display, address)


def list_id_header(value: str) -> bytes:
    """List-Id from `Display <list.id.domain>` (RFC 2919): the id must be plain ASCII."""
    display, list_id = split_mailbox_setting(value)
    if _PRINTABLE_ASCII.fullmatch(list_id) is None or not list_id or " " in list_id:
        raise InvalidEmailError(f"the list id {list_id!r} must be plain ASCII without spaces")
    return _angle_header("List-Id", display, f"<{list_id}>")
