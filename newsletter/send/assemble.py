"""Per-recipient messages from one digest encoded once.

Building and serialising an `EmailMessage` per recipient costs milliseconds
for a 60 KB digest, several times the cost of sending it. `CompiledDigest`
MIME-encodes the digest once into byte segments split at the personal
placeholders; `assemble` then only encodes what differs per recipient (To,
Date, Message-ID, List-Unsubscribe and the two personal URLs) and joins bytes.

Quoted-printable soft line breaks could split a placeholder, so each segment
is encoded on its own starting at column 0 and segments are joined with soft
line breaks ("=" CRLF), which decoders remove. Every body line stays within
76 characters and every line ends in CRLF.

`build_message` is the slow reference built entirely with the `email`
package; tests check the two agree header for header and part for part.
"""

from __future__ import annotations

import re
import secrets
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from email.headerregistry import BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime, parseaddr
from html import escape
from typing import Any, Final

from newsletter.clock import utc_now
from newsletter.errors import InvalidEmailError
from newsletter.settings import Settings
from newsletter.values import PersonalField
from subscribers.tokens import preferences_url, unsubscribe_url

__all__ = [
    "TEST_SEND_KEY",
    "CompiledDigest",
    "Recipient",
    "build_message",
    "make_message_id",
    "sanitize_header_text",
]

# A test send has no subscriber; its links carry this key, which matches no
# subscriber, so they open the "link not recognised" page and change nothing.
TEST_SEND_KEY: Final = "test-send"
TEST_SUBJECT_PREFIX: Final = "[TEST] "

_CRLF: Final = b"\r\n"
_SOFT_BREAK: Final = b"=\r\n"
# C0, DEL, C1 and the Unicode line/paragraph separators: the email package and
# some mail clients treat several of these as line breaks inside headers.
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Characters of an RFC 5322 atom, plus the space between atoms of a phrase.
_PLAIN_PHRASE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+")
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]+")
_ADDRESS: Final = re.compile(r"[\x21-\x7e]+@[\x21-\x7e]+")
_ADDRESS_FORBIDDEN: Final = frozenset('<>()[]\\,;:"')
# 45 UTF-8 bytes become 60 base64 characters: with the 12 characters of
# "=?utf-8?b?...?=" framing and the folding space, a line stays under 78.
_ENCODED_WORD_MAX_BYTES: Final = 45
_HEADER_LINE_TARGET: Final = 78

# Slots: what assemble() fills in per recipient.
_SLOT_TO: Final = 0
_SLOT_DATE: Final = 1
_SLOT_MESSAGE_ID: Final = 2
_SLOT_LIST_UNSUBSCRIBE: Final = 3
_SLOT_TEXT_UNSUBSCRIBE: Final = 4
_SLOT_TEXT_PREFERENCES: Final = 5
_SLOT_HTML_UNSUBSCRIBE: Final = 6
_SLOT_HTML_PREFERENCES: Final = 7

_PERSONAL_PATTERN: Final = re.compile("|".join(re.escape(field.value) for field in PersonalField))


@dataclass(frozen=True, slots=True)
class Recipient:
    """One addressee of a digest: address, display name, link key and fixed Message-ID."""

    email: str
    name: str | None
    subscriber_key: str | None
    message_id: str


def sanitize_header_text(value: str) -> str:
    """The text with control characters (CR, LF, ...) replaced and whitespace collapsed."""
    return " ".join(_CONTROL_CHARACTERS.sub(" ", value).split())


def make_message_id(settings: Settings, *, edition_date: date, delivery_id: int) -> str:
    """The Message-ID of one delivery: stable, so a resend after a crash carries the same id."""
    return f"<{edition_date:%Y%m%d}.{delivery_id}.digest@{settings.sender_domain}>"


def _subject_line(subject: str, *, is_test: bool) -> str:
    cleaned = sanitize_header_text(subject)
    return TEST_SUBJECT_PREFIX + cleaned if is_test else cleaned


def _checked_address(address: str) -> str:
    # The address comes from the database; refuse rather than repair one
    # that could break the header or needs SMTPUTF8, which we do not speak.
    if _ADDRESS.fullmatch(address) is None or _ADDRESS_FORBIDDEN.intersection(address):
        raise InvalidEmailError(
            f"cannot address a message to {address!r}: "
            "it must be a plain ASCII address without spaces or brackets"
        )
    return address


def _mailto_target(mailto: str) -> str:
    target = mailto.removeprefix("mailto:")
    return target if "?" in target else f"{target}?subject=unsubscribe"


def _list_unsubscribe_urls(settings: Settings, one_click_url: str) -> list[str]:
    urls = [f"<{one_click_url}>"]
    if settings.unsubscribe_mailto:
        urls.append(f"<mailto:{_mailto_target(sanitize_header_text(settings.unsubscribe_mailto))}>")
    return urls


def _personal_urls(settings: Settings, subscriber_key: str | None) -> tuple[str, str]:
    key = subscriber_key or TEST_SEND_KEY
    return (
        unsubscribe_url(settings.base_url, settings.secret_key, key),
        preferences_url(settings.base_url, settings.secret_key, key),
    )


# --- the reference: one EmailMessage per recipient -------------------------


class _UrlListHeader(UnstructuredHeader, BaseHeader):
    """List-Unsubscribe as mail clients read it: URLs never RFC 2047-encoded.

    The email package encodes any word longer than a line as encoded-words,
    which turns a long one-click URL into text no client recognises; this
    header folds only between the bracketed URLs instead.
    """

    def fold(self, *, policy: Any) -> str:
        """The header line, folded after each comma between URLs."""
        separator = "," + str(policy.linesep) + " <"
        return f"{self.name}: {str(self).replace(', <', separator)}{policy.linesep}"


def _reference_policy() -> EmailPolicy[EmailMessage]:
    registry = HeaderRegistry()
    registry.map_to_type("list-unsubscribe", _UrlListHeader)
    policy: EmailPolicy[EmailMessage] = SMTP.clone(header_factory=registry)
    assert isinstance(policy, EmailPolicy)
    return policy


_REFERENCE_POLICY: Final = _reference_policy()


def build_message(
    settings: Settings,
    *,
    subject: str,
    html: str,
    text: str,
    edition_date: date,
    recipient: Recipient,
    is_test: bool = False,
    sent_at: datetime | None = None,
) -> EmailMessage:
    """One recipient's message built fully with the email package (the slow reference)."""
    from email.headerregistry import Address

    unsubscribe, preferences = _personal_urls(settings, recipient.subscriber_key)
    message = EmailMessage(policy=_REFERENCE_POLICY)
    message["From"] = sanitize_header_text(settings.from_address)
    if settings.reply_to:
        message["Reply-To"] = sanitize_header_text(settings.reply_to)
    message["To"] = Address(
        display_name=sanitize_header_text(recipient.name or ""),
        addr_spec=_checked_address(recipient.email),
    )
    message["Subject"] = _subject_line(subject, is_test=is_test)
    message["Date"] = format_datetime(sent_at or utc_now())
    message["Message-ID"] = sanitize_header_text(recipient.message_id)
    message["MIME-Version"] = "1.0"
    message["List-Id"] = sanitize_header_text(settings.list_id)
    message["List-Unsubscribe"] = ", ".join(_list_unsubscribe_urls(settings, unsubscribe))
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    personal_text = text.replace(PersonalField.UNSUBSCRIBE_URL, unsubscribe).replace(
        PersonalField.PREFERENCES_URL, preferences
    )
    personal_html = html.replace(
        PersonalField.UNSUBSCRIBE_URL, escape(unsubscribe, quote=True)
    ).replace(PersonalField.PREFERENCES_URL, escape(preferences, quote=True))
    message.set_content(personal_text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(personal_html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


# --- the fast path: encode once, fill in per recipient ---------------------


def _fold_fixed_header(name: str, value: str) -> bytes:
    """A header whose value is the same for every recipient, folded by the email package."""
    header: BaseHeader = _REFERENCE_POLICY.header_factory(name, value)
    return header.fold(policy=_REFERENCE_POLICY).encode("ascii")


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 base64 encoded-words of at most 45 UTF-8 bytes, never splitting a character."""
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


def _to_header(name: str | None, address: str) -> bytes:
    """The To header line: plain, quoted or RFC 2047-encoded display name as needed."""
    display = sanitize_header_text(name) if name else ""
    if not display:
        return f"To: {address}\r\n".encode("ascii")
    line_length = len(display) + len(address) + 8  # "To: " + '"' * 2 + " <>"
    # "=?" in a plain name would read as the start of an encoded-word.
    if line_length <= _HEADER_LINE_TARGET and "=?" not in display:
        if _PLAIN_PHRASE.fullmatch(display):
            return f"To: {display} <{address}>\r\n".encode("ascii")
        if _PRINTABLE_ASCII.fullmatch(display):
            quoted = display.replace("\\", "\\\\").replace('"', '\\"')
            return f'To: "{quoted}" <{address}>\r\n'.encode("ascii")
    lines = _encoded_words(display)
    lines[0] = "To: " + lines[0]
    bracketed = f"<{address}>"
    if len(lines[-1]) + 1 + len(bracketed) <= _HEADER_LINE_TARGET:
        lines[-1] += " " + bracketed
    else:
        lines.append(bracketed)
    return ("\r\n ".join(lines) + "\r\n").encode("ascii")


def _list_unsubscribe_header(urls: list[str]) -> bytes:
    return ("List-Unsubscribe: " + ",\r\n ".join(urls) + "\r\n").encode("ascii")


# Each byte as quoted-printable: printable ASCII except "=" stands for itself.
_QP_BYTE: Final = tuple(
    chr(byte) if (33 <= byte <= 126 and byte != ord("=")) or byte in (9, 32) else f"={byte:02X}"
    for byte in range(256)
)
_QP_LINE_MAX: Final = 76
_QP_URL_SAFE: Final = re.compile(r"[!-<>-~]*")  # printable ASCII except "=" and space


def _qp_encode_line(line: bytes) -> list[str]:
    """One line as quoted-printable physical lines, soft-broken to stay within 76 characters."""
    tokens = [_QP_BYTE[byte] for byte in line]
    if tokens and line[-1] in (9, 32):
        # Whitespace at the end of a line is dropped in transit unless encoded.
        tokens[-1] = f"={line[-1]:02X}"
    encoded = "".join(tokens)
    if len(encoded) <= _QP_LINE_MAX:
        return [encoded]
    physical: list[str] = []
    current = ""
    for token in tokens:
        # Leave room for the "=" of the soft line break; never split "=XX".
        if len(current) + len(token) > _QP_LINE_MAX - 1:
            physical.append(current + "=")
            current = ""
        current += token
    physical.append(current)
    return physical


def _qp_encode(text: str) -> bytes:
    """Quoted-printable of "\n"-separated text: CRLF line ends, lines of at most 76 characters."""
    lines: list[str] = []
    for line in text.encode("utf-8").split(b"\n"):
        lines += _qp_encode_line(line)
    return "\r\n".join(lines).encode("ascii")


def _qp_encode_url(url: str) -> bytes:
    """A personal URL as quoted-printable; URLs are almost always plain ASCII, a fast case."""
    if _QP_URL_SAFE.fullmatch(url) is None:
        return _qp_encode(url)
    step = _QP_LINE_MAX - 1
    return "=\r\n".join([url[start : start + step] for start in range(0, len(url), step)]).encode(
        "ascii"
    )


def _normalised_body(text: str) -> str:
    # What the email package does to a text part: one line-end convention and
    # a final newline, so both paths decode to the same content.
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    return body if body.endswith("\n") else body + "\n"


_FIELD_SLOTS: Final = {
    "text": {
        PersonalField.UNSUBSCRIBE_URL.value: _SLOT_TEXT_UNSUBSCRIBE,
        PersonalField.PREFERENCES_URL.value: _SLOT_TEXT_PREFERENCES,
    },
    "html": {
        PersonalField.UNSUBSCRIBE_URL.value: _SLOT_HTML_UNSUBSCRIBE,
        PersonalField.PREFERENCES_URL.value: _SLOT_HTML_PREFERENCES,
    },
}


def _encoded_part_pieces(body: str, flavour: str) -> list[bytes | int]:
    """A part's quoted-printable body as literal segments and slot numbers for the URLs."""
    pieces: list[bytes | int] = []
    slots = _FIELD_SLOTS[flavour]
    position = 0
    for match in _PERSONAL_PATTERN.finditer(body):
        segment = body[position : match.start()]
        if segment:
            encoded = _qp_encode(segment)
            pieces.append(encoded if encoded.endswith(_CRLF) else encoded + _SOFT_BREAK)
        pieces.append(slots[match.group()])
        position = match.end()
    pieces.append(_qp_encode(body[position:]))
    return pieces


def _merge_literals(pieces: list[bytes | int]) -> tuple[tuple[bytes, ...], tuple[int, ...]]:
    """Adjacent literals joined; the result alternates literal, slot, literal, ..., literal."""
    literals: list[bytes] = [b""]
    slots: list[int] = []
    for piece in pieces:
        if isinstance(piece, bytes):
            literals[-1] += piece
        else:
            slots.append(piece)
            literals.append(b"")
    return tuple(literals), tuple(slots)


class CompiledDigest:
    """One digest MIME-encoded once; `assemble` makes each recipient's message from it."""

    __slots__ = (
        "_clock",
        "_date_cache",
        "_literals",
        "_settings",
        "_slots",
        "_unsubscribe_extra",
        "envelope_from",
        "html_encoded_size",
    )

    envelope_from: str
    html_encoded_size: int

    def __init__(
        self,
        settings: Settings,
        literals: tuple[bytes, ...],
        slots: tuple[int, ...],
        *,
        html_encoded_size: int,
        clock: Callable[[], datetime],
    ) -> None:
        """Use `CompiledDigest.compile`; this only stores what it prepared."""
        self._settings = settings
        self._literals = literals
        self._slots = slots
        self._clock = clock
        self._date_cache: tuple[int, bytes] = (-1, b"")
        self._unsubscribe_extra = _list_unsubscribe_urls(settings, "")[1:]
        self.envelope_from = parseaddr(sanitize_header_text(settings.from_address))[1]
        self.html_encoded_size = html_encoded_size

    @classmethod
    def compile(
        cls,
        settings: Settings,
        *,
        subject: str,
        html: str,
        text: str,
        edition_date: date,
        is_test: bool = False,
        clock: Callable[[], datetime] = utc_now,
    ) -> CompiledDigest:
        """Encode the digest's fixed headers and both parts once, leaving slots for what varies."""
        # Only QP output follows a boundary line, and in QP "=" is always
        # followed by hex digits or a line end, so "=_" can never collide.
        boundary = f"=_digest_{edition_date:%Y%m%d}_{secrets.token_hex(12)}"
        pieces: list[bytes | int] = [
            _fold_fixed_header("From", sanitize_header_text(settings.from_address))
        ]
        if settings.reply_to:
            pieces.append(_fold_fixed_header("Reply-To", sanitize_header_text(settings.reply_to)))
        pieces += [
            _SLOT_TO,
            _fold_fixed_header("Subject", _subject_line(subject, is_test=is_test)),
            _SLOT_DATE,
            _SLOT_MESSAGE_ID,
            b"MIME-Version: 1.0\r\n",
            _fold_fixed_header("List-Id", sanitize_header_text(settings.list_id)),
            _SLOT_LIST_UNSUBSCRIBE,
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode(),
        ]
        html_pieces = _encoded_part_pieces(_normalised_body(html), "html")
        for subtype, part_pieces in (
            ("plain", _encoded_part_pieces(_normalised_body(text), "text")),
            ("html", html_pieces),
        ):
            # The CRLF before a boundary line belongs to the boundary, not the part.
            pieces.append(
                f"\r\n--{boundary}\r\n"
                f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii")
            )
            pieces += part_pieces
        pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
        literals, slots = _merge_literals(pieces)
        html_size = sum(len(piece) for piece in html_pieces if isinstance(piece, bytes))
        return cls(settings, literals, slots, html_encoded_size=html_size, clock=clock)

    def _date_header(self) -> bytes:
        # Formatting a date costs more than the rest of the headers; mail
        # within the same second shares one.
        now = self._clock()
        second = int(now.timestamp())
        cached_second, header = self._date_cache
        if second != cached_second:
            header = f"Date: {format_datetime(now)}\r\n".encode("ascii")
            self._date_cache = (second, header)
        return header

    def assemble(self, recipient: Recipient) -> bytes:
        """The recipient's whole RFC 5322 message, CRLF line ends, ready for SMTP DATA."""
        address = _checked_address(recipient.email)
        unsubscribe, preferences = _personal_urls(self._settings, recipient.subscriber_key)
        message_id = sanitize_header_text(recipient.message_id)
        values = (
            _to_header(recipient.name, address),
            self._date_header(),
            f"Message-ID: {message_id}\r\n".encode("ascii", "replace"),
            _list_unsubscribe_header([f"<{unsubscribe}>", *self._unsubscribe_extra]),
            _qp_encode_url(unsubscribe) + _SOFT_BREAK,
            _qp_encode_url(preferences) + _SOFT_BREAK,
            _qp_encode_url(escape(unsubscribe, quote=True)) + _SOFT_BREAK,
            _qp_encode_url(escape(preferences, quote=True)) + _SOFT_BREAK,
        )
        literals = self._literals
        parts = [literals[0]]
        for index, slot in enumerate(self._slots, start=1):
            parts.append(values[slot])
            parts.append(literals[index])
        return b"".join(parts)
