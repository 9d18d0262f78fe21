"""MIME bodies written byte for byte: quoted-printable parts of a multipart/alternative.

The digest's fast path (`send.assemble`) and every one-off message (a
confirmation) share these rules, so both put the same bytes on the wire:
CRLF line ends, quoted-printable lines of at most 76 characters, a final
newline on every part.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CRLF",
    "SOFT_BREAK",
    "OutgoingMessage",
    "compose_alternative",
    "normalised_body",
    "part_header",
    "qp_encode",
    "qp_encode_url",
    "qp_url_safe",
    "qp_wrap_safe",
]

CRLF: Final = b"\r\n"
SOFT_BREAK: Final = b"=\r\n"
QP_LINE_MAX: Final = 76

# Each byte as quoted-printable: printable ASCII except "=" stands for itself.
_QP_BYTE: Final = tuple(
    chr(byte) if (33 <= byte <= 126 and byte != ord("=")) or byte in (9, 32) else f"={byte:02X}"
    for byte in range(256)
)
_QP_URL_SAFE: Final = re.compile(r"[!-<>-~]*")  # printable ASCII except "=" and space


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message ready for SMTP: envelope sender, the one recipient, and the RFC 5322 bytes."""

    envelope_from: str
    recipient: str
    data: bytes


# The same as a `str.translate` table over bytes read as Latin-1 (one character per byte).
_QP_TABLE: Final = dict(enumerate(_QP_BYTE))


def _qp_encode_line(line: bytes) -> list[str]:
    """One line as quoted-printable physical lines, soft-broken to stay within 76 characters."""
    encoded = line.decode("latin-1").translate(_QP_TABLE)
    if line and line[-1] in (9, 32):
        # Whitespace at the end of a line is dropped in transit unless encoded.
        encoded = f"{encoded[:-1]}={line[-1]:02X}"
    if len(encoded) <= QP_LINE_MAX:
        return [encoded]
    physical: list[str] = []
    start = 0
    width = QP_LINE_MAX - 1  # room for the "=" of the soft line break
    while len(encoded) - start > width:
        end = start + width
        # Never split "=XX": "=" only ever starts an escape here.
        if encoded[end - 1] == "=":
            end -= 1
        elif encoded[end - 2] == "=":
            end -= 2
        physical.append(encoded[start:end] + "=")
        start = end
    physical.append(encoded[start:])
    return physical


def qp_encode(text: str) -> bytes:
    """Quoted-printable of "\\n"-separated text: CRLF line ends, lines of at most 76 characters."""
    lines: list[str] = []
    # A lone surrogate cannot be written in UTF-8; it becomes "?" rather than an exception.
    for line in text.encode("utf-8", "replace").split(b"\n"):
        lines += _qp_encode_line(line)
    return "\r\n".join(lines).encode("ascii")


def qp_url_safe(url: str) -> bool:
    """Whether the URL is printable ASCII without "=" or spaces: its QP is itself, wrapped."""
    return _QP_URL_SAFE.fullmatch(url) is not None


def qp_wrap_safe(url: str) -> bytes:
    """A URL `qp_url_safe` accepted, as quoted-printable (soft-wrapped only)."""
    step = QP_LINE_MAX - 1
    return "=\r\n".join([url[start : start + step] for start in range(0, len(url), step)]).encode(
        "ascii"
    )


def qp_encode_url(url: str) -> bytes:
    """A URL as quoted-printable; URLs are almost always plain ASCII, a fast case."""
    if _QP_URL_SAFE.fullmatch(url) is None:
        return qp_encode(url)
    step = QP_LINE_MAX - 1
    return "=\r\n".join([url[start : start + step] for start in range(0, len(url), step)]).encode(
        "ascii"
    )


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
