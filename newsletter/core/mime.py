"""MIME bodies written byte for byte: quoted-printable parts of a multipart/alternative.

The digest's fast path (`send.assemble`) and every one-off message (a
confirmation) share these rules, so both put the same bytes on the wire:
CRLF line ends, quoted-printable lines of at most 76 characters broken where
the `email` package breaks them (so a message is the same byte for byte as
its build), a final newline on every part.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CRLF",
    "QP_LINE_MAX",
    "BrokenLine",
    "LineSpan",
    "OutgoingMessage",
    "compose_alternative",
    "normalised_body",
    "part_header",
    "qp_body_characters",
    "qp_break",
    "qp_characters",
    "qp_encode",
    "qp_lines",
    "qp_url_safe",
]

CRLF: Final = b"\r\n"
QP_LINE_MAX: Final = 76

# Each byte as quoted-printable: printable ASCII except "=", space and tab stand
# for themselves. `_QP_TABLE` is for a value within a line (a line end in it is
# escaped too); `_QP_BODY_TABLE` keeps LF, which ends a line of the body.
_QP_BYTE: Final = tuple(
    chr(byte) if (33 <= byte <= 126 and byte != ord("=")) or byte in (9, 32) else f"={byte:02X}"
    for byte in range(256)
)
_QP_TABLE: Final = dict(enumerate(_QP_BYTE))
_QP_BODY_TABLE: Final = {**_QP_TABLE, 10: "\n"}
_QP_URL_SAFE: Final = re.compile(r"[!-<>-~]*")  # printable ASCII except "=" and space
# A physical line of a long encoded line: 75 characters, or 73 or 74 so that an
# "=XX" escape is never split (greedy: it stops before the first "=" in reach).
_QP_PIECE: Final = re.compile(r".{73}[^=]{0,2}", re.DOTALL)
# The email package breaks a line only while at least this much of it is left.
_QP_BREAK_WHILE: Final = QP_LINE_MAX + 1
_QP_WHITESPACE: Final = {" ": "=20", "\t": "=09"}

# One physical line of an encoded line: its characters [start, end) and what
# follows them ("=" for a soft line break, an escaped final space or tab, or "").
LineSpan = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message ready for SMTP: envelope sender, the one recipient, and the RFC 5322 bytes."""

    envelope_from: str
    recipient: str
    data: bytes


def qp_characters(data: bytes) -> str:
    """Each byte as quoted-printable, line ends included, before any line is broken."""
    return data.decode("latin-1").translate(_QP_TABLE)


def _tail_spans(line: str, start: int) -> list[LineSpan]:
    """The last physical lines of an encoded line, from `start`, where its soft breaks stop.

    A space or tab ending a line would be dropped in transit: the email package
    escapes it, after a soft break if the escape does not fit, and its three
    cases are reproduced exactly (quoprimime.body_encode).
    """
    end = len(line)
    escaped = _QP_WHITESPACE.get(line[-1:])
    if escaped is None:
        return [(start, end, "")]
    if end - start <= QP_LINE_MAX - 2:
        return [(start, end - 1, escaped)]
    if end - start == QP_LINE_MAX - 1:
        return [(start, end, "="), (end, end, "")]
    return [(start, end - 1, "="), (end - 1, end - 1, escaped)]


@dataclass(frozen=True, slots=True)
class BrokenLine:
    """One encoded line (`qp_characters` of a line) broken as the email package breaks it.

    `soft` are its first physical lines, each followed by a soft break ("="),
    and `tail` the spans of the rest (one line, or two when a final space or
    tab is escaped after a soft break), positions in the line.
    """

    soft: list[str]
    tail: list[LineSpan]

    def encoded(self, line: str) -> str:
        """The physical lines joined by CRLF (no CRLF after the last)."""
        rest = "\r\n".join(line[start:end] + after for start, end, after in self.tail)
        return "=\r\n".join([*self.soft, rest])


def qp_break(line: str) -> BrokenLine:
    """Where one encoded line is broken, exactly as `email.quoprimime.body_encode` breaks it.

    Lines of at most 76 characters; a soft break ("=") after 75 characters,
    or after 73 or 74 so as not to split an escape, for as long as 77 or
    more characters are left.
    """
    if len(line) < _QP_BREAK_WHILE:
        return BrokenLine([], _tail_spans(line, 0))
    soft = _QP_PIECE.findall(line)
    done = sum(map(len, soft))
    # The regular expression also breaks the last 73 to 76 characters, which
    # the email package leaves whole.
    if len(line) - (done - len(soft[-1])) < _QP_BREAK_WHILE:
        done -= len(soft.pop())
    return BrokenLine(soft, _tail_spans(line, done))


def _encoded_line(line: str) -> str:
    if len(line) <= QP_LINE_MAX and line[-1:] not in _QP_WHITESPACE:
        return line  # the common case: nothing to break or escape
    return qp_break(line).encoded(line)


def qp_body_characters(text: str) -> str:
    """`qp_characters` of UTF-8 text, its LF line ends kept as they are (to split it into lines)."""
    # A lone surrogate cannot be written in UTF-8; it becomes "?" rather than an exception.
    return text.encode("utf-8", "replace").decode("latin-1").translate(_QP_BODY_TABLE)


def qp_lines(lines: Iterable[str]) -> bytes:
    """Whole lines of `qp_characters`, each broken as `qp_line_spans` says and ended by CRLF."""
    return "".join([_encoded_line(line) + "\r\n" for line in lines]).encode("ascii")


def qp_encode(text: str) -> bytes:
    """Quoted-printable of "\\n"-separated text, byte for byte as the email package writes it.

    CRLF line ends, lines of at most 76 characters, broken where
    `email.quoprimime.body_encode` breaks them (the reference build's encoder).
    """
    lines = qp_body_characters(text).split("\n")
    return "\r\n".join(map(_encoded_line, lines)).encode("ascii")


def qp_url_safe(url: str) -> bool:
    """Whether the URL is printable ASCII without "=" or spaces: its QP is itself."""
    return _QP_URL_SAFE.fullmatch(url) is not None


def normalised_body(text: str) -> str:
    """One line-end convention and a final newline, as the email package gives a text part."""
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    return body if body.endswith("\n") else body + "\n"


def new_boundary(label: str) -> str:
    """A multipart boundary that quoted-printable content can never contain.

    Only QP output follows a boundary line, and in QP "=" is always followed by
    hex digits or a line end, so a boundary starting "=_" cannot collide.
    """
    return f"=_{label}_{secrets.token_hex(12)}"


def multipart_header(boundary: str) -> bytes:
    """The Content-Type header of a multipart/alternative message."""
    return f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode("ascii")


def part_header(boundary: str, subtype: str) -> bytes:
    """The boundary line and headers that open one quoted-printable text part."""
    # The CRLF before a boundary line belongs to the boundary, not the part.
    return (
        f"\r\n--{boundary}\r\n"
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode("ascii")


def closing_boundary(boundary: str) -> bytes:
    """The line that ends a multipart body."""
    return f"\r\n--{boundary}--\r\n".encode("ascii")


def compose_alternative(
    header_lines: Sequence[bytes], *, text: str, html: str, label: str = "message"
) -> bytes:
    """A whole multipart/alternative message (text, then HTML) after the given header lines."""
    boundary = new_boundary(label)
    return b"".join(
        [
            *header_lines,
            b"MIME-Version: 1.0\r\n",
            multipart_header(boundary),
            part_header(boundary, "plain"),
            qp_encode(normalised_body(text)),
            part_header(boundary, "html"),
            qp_encode(normalised_body(html)),
            closing_boundary(boundary),
        ]
    )
