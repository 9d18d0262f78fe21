"""A message as SMTP DATA carries it: CRLF line ends and dot-stuffing, done before sending.

RFC 5321 4.5.2 (transparency): a line of the message that starts with "." is
sent with one more "." in front, so no line of the message can end DATA
early; the server removes it again. Line ends on the wire are CRLF, never a
bare CR or LF. A client library does both with two passes over every message;
`PreparedMessage` carries bytes that already have them, so the connection
writes them as they are.

The digest's fixed chunks are stuffed once per edition (`stuff`, in the
digest's wire plan) and only its few personal values are checked per reader
(`prepared_value`, or a dot doubled where a value starts a line);
`prepare_message` is the one-pass form for a message built whole (a
confirmation, a test copy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "END_OF_DATA",
    "PreparedMessage",
    "normalise_line_ends",
    "prepare_message",
    "prepared_value",
    "stuff",
]

END_OF_DATA: Final = b".\r\n"  # the line that ends DATA, after the message's last CRLF
# A bare CR, a bare LF, or a line (after a line end) that starts with a dot.
_NEEDS_WORK: Final = re.compile(rb"\r(?!\n)|(?<!\r)\n|\n\.")
_LINE_END: Final = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A message ready for DATA.

    `data` is what goes on the wire after the server's 354: the message
    with CRLF line ends, dot-stuffed, then the lone "." line that ends DATA;
    the connection writes it as it is. `size` is the message's own
    length (without the stuffing dots), which RFC 1870's SIZE parameter
    declares. `eight_bit` says whether any byte is above 127 (then the
    message needs BODY=8BITMIME).
    """

    data: bytes
    size: int
    eight_bit: bool


def normalise_line_ends(data: bytes) -> bytes:
    """Every line end (CRLF, bare CR, bare LF) as CRLF."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") == crlf and data.count(b"\n") == crlf:
        # Already so (quoted-printable output always is): three counts in C
        # instead of a substitution that rebuilds the bytes at every line end.
        return data
    return _LINE_END.sub(b"\r\n", data)


def stuff(chunk: bytes, *, at_line_start: bool) -> bytes:
    """A CRLF-normalised chunk with a dot doubled at the start of each line it starts.

    `at_line_start` says whether the chunk itself begins a line (it follows a
    line end or opens the message).
    """
    stuffed = chunk.replace(b"\n.", b"\n..")
    if at_line_start and stuffed.startswith(b"."):
        return b"." + stuffed
    return stuffed


def prepared_value(value: bytes, *, at_line_start: bool) -> tuple[bytes, bytes]:
    """(the value with CRLF line ends, the same dot-stuffed) for one personal value.

    Personal values are short and almost never need either, so the common
    case is one search and no copy.
    """
    if _NEEDS_WORK.search(value) is None and not (at_line_start and value.startswith(b".")):
        return value, value
    normal = normalise_line_ends(value)
    return normal, stuff(normal, at_line_start=at_line_start)


def prepare_message(message: bytes) -> PreparedMessage:
    """A whole message prepared in one pass (for messages not built from prepared chunks)."""
    normal = normalise_line_ends(message)
    if not normal.endswith(b"\r\n"):
        normal += b"\r\n"
    return PreparedMessage(
        data=stuff(normal, at_line_start=True) + END_OF_DATA,
        size=len(normal),
        eight_bit=not normal.isascii(),
    )
