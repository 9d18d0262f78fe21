"""Per-recipient messages from one digest encoded once.

Building and serialising an `EmailMessage` per recipient costs milliseconds
for a 60 KB digest, several times the cost of sending it. `CompiledDigest`
MIME-encodes the digest once into byte segments split at the personal
placeholders; `assemble` then only encodes what differs per recipient (To,
Date, Message-ID, List-Unsubscribe and the two personal URLs) and joins bytes.

Headers are written by `newsletter.core.headers`, never folded by the `email`
package (which would decode encoded-words in feed text into real line breaks).
Personal URLs go only where the rendering put its own placeholders, which
carry the edition's random link marker: feed text cannot guess it, so it can
never make the send stage paste a reader's link somewhere else.

Quoted-printable soft line breaks could split a placeholder, so each segment
is encoded on its own starting at column 0 and segments are joined with soft
line breaks ("=" CRLF), which decoders remove. Every body line stays within
76 characters and every line ends in CRLF.

With DKIM configured, the key is loaded once at `compile`, and so is the
relaxed canonical form of every fixed body segment (each starts and ends at a
line end); each message's signature then hashes those with the reader's few
personal lines instead of canonicalising the whole body again.

`prepare` gives the same message ready for SMTP DATA (`core.wire`): the fixed
chunks got CRLF line ends and their dot-stuffing once, at compile; only the
personal values are checked per reader, and the size is the sum of known
lengths, so nothing scans the whole message again before it is written.

`build_message` is the slow reference built entirely with the `email`
package, for well-formed input only; tests check the two agree header for
header and part for part.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime
from html import escape
from typing import Any, Final

from newsletter.core.clock import utc_now
from newsletter.core.dkim import DkimSigner
from newsletter.core.headers import (
    checked_address,
    list_id_header,
    mailbox_header,
    mailbox_setting_header,
    unstructured_header,
)
from newsletter.core.mime import (
    CRLF,
    SOFT_BREAK,
    closing_boundary,
    multipart_header,
    new_boundary,
    normalised_body,
    part_header,
    qp_encode,
    qp_encode_url,
    qp_url_safe,
    qp_wrap_safe,
)
from newsletter.core.settings import Settings
from newsletter.core.text import single_line
from newsletter.core.wire import (
    END_OF_DATA,
    PreparedMessage,
    normalise_line_ends,
    prepared_value,
    stuffed_both_ways,
)
from newsletter.render import feedback_placeholder
from newsletter.values import PersonalField, fill_personal_links
from subscribers.tokens import (
    FEEDBACK_VERDICTS,
    feedback_urls,
    preferences_url,
    unsubscribe_url,
    view_url,
)

__all__ = [
    "TEST_SEND_KEY",
    "CompiledDigest",
    "Recipient",
    "build_message",
    "make_message_id",
]

# A test send has no subscriber; its links carry this key, which matches no
# subscriber, so they open the "link not recognised" page and change nothing.
TEST_SEND_KEY: Final = "test-send"
TEST_SUBJECT_PREFIX: Final = "[TEST] "

# Slots: what assemble() fills in per recipient.
_SLOT_TO: Final = 0
_SLOT_DATE: Final = 1
_SLOT_MESSAGE_ID: Final = 2
_SLOT_LIST_UNSUBSCRIBE: Final = 3
_SLOT_TEXT_UNSUBSCRIBE: Final = 4
_SLOT_TEXT_PREFERENCES: Final = 5
_SLOT_HTML_UNSUBSCRIBE: Final = 6
_SLOT_HTML_PREFERENCES: Final = 7
_SLOT_TEXT_VIEW: Final = 8
_SLOT_HTML_VIEW: Final = 9


@dataclass(frozen=True, slots=True)
class Recipient:
    """One addressee of a digest: address, display name, link key and fixed Message-ID."""

    email: str
    name: str | None
    subscriber_key: str | None
    message_id: str


def make_message_id(settings: Settings, *, edition_date: date, delivery_id: int) -> str:
    """The Message-ID of one delivery: stable, so a resend after a crash carries the same id."""
    return f"<{edition_date:%Y%m%d}.{delivery_id}.digest@{settings.sender_domain}>"


def _subject_line(subject: str, *, is_test: bool) -> str:
    cleaned = single_line(subject)
    return TEST_SUBJECT_PREFIX + cleaned if is_test else cleaned


def _mailto_target(mailto: str) -> str:
    target = mailto.removeprefix("mailto:")
    return target if "?" in target else f"{target}?subject=unsubscribe"


def _list_unsubscribe_urls(settings: Settings, one_click_url: str) -> list[str]:
    urls = [f"<{one_click_url}>"]
    if settings.unsubscribe_mailto:
        urls.append(f"<mailto:{_mailto_target(single_line(settings.unsubscribe_mailto))}>")
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
    link_marker: str,
    recipient: Recipient,
    is_test: bool = False,
    sent_at: datetime | None = None,
) -> EmailMessage:
    """One recipient's message built fully with the email package (the slow reference).

    Only for trusted, well-formed input (tests and the benchmark): the email
    package's folding is what `newsletter.core.headers` exists to avoid.
    """
    unsubscribe, preferences = _personal_urls(settings, recipient.subscriber_key)
    message = EmailMessage(policy=_REFERENCE_POLICY)
    message["From"] = single_line(settings.from_address)
    if settings.reply_to:
        message["Reply-To"] = single_line(settings.reply_to)
    message["To"] = Address(
        display_name=single_line(recipient.name or ""),
        addr_spec=checked_address(recipient.email),
    )
    message["Subject"] = _subject_line(subject, is_test=is_test)
    message["Date"] = format_datetime(sent_at or utc_now())
    message["Message-ID"] = single_line(recipient.message_id)
    message["MIME-Version"] = "1.0"
    message["List-Id"] = single_line(settings.list_id)
    message["List-Unsubscribe"] = ", ".join(_list_unsubscribe_urls(settings, unsubscribe))
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    personal_html, personal_text = fill_personal_links(
        html,
        text,
        link_marker=link_marker,
        unsubscribe_url=unsubscribe,
        preferences_url=preferences,
        view_url=view_url(
            settings.base_url,
            settings.secret_key,
            recipient.subscriber_key or TEST_SEND_KEY,
            edition_date,
        ),
    )
    message.set_content(personal_text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(personal_html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message


# --- the fast path: encode once, fill in per recipient ---------------------


_FIELD_SLOTS: Final = {
    "text": {
        PersonalField.UNSUBSCRIBE_URL: _SLOT_TEXT_UNSUBSCRIBE,
        PersonalField.PREFERENCES_URL: _SLOT_TEXT_PREFERENCES,
        PersonalField.VIEW_URL: _SLOT_TEXT_VIEW,
    },
    "html": {
        PersonalField.UNSUBSCRIBE_URL: _SLOT_HTML_UNSUBSCRIBE,
        PersonalField.PREFERENCES_URL: _SLOT_HTML_PREFERENCES,
        PersonalField.VIEW_URL: _SLOT_HTML_VIEW,
    },
}


# Each paper's feedback links take four slots after the fixed ones: text "more",
# text "less", HTML "more", HTML "less".
_FEEDBACK_SLOTS_START: Final = 10
_FEEDBACK_SLOT_OFFSET: Final = {
    ("text", "more"): 0,
    ("text", "less"): 1,
    ("html", "more"): 2,
    ("html", "less"): 3,
}


def _encoded_part_pieces(
    body: str,
    flavour: str,
    link_marker: str,
    feedback_papers: int = 0,
    *,
    cut: str | None = None,
    qp_cache: dict[str, bytes] | None = None,
) -> list[bytes | int]:
    """A part's quoted-printable body as literal segments and slot numbers for the URLs.

    With `cut`, the body is also cut where that text stands (it is dropped):
    each piece is encoded on its own, and with `qp_cache` encoded once for
    every digest sharing the cache (blocks recur across selections).
    """
    slot_of: dict[str, int | None] = {
        field.placeholder(link_marker): slot for field, slot in _FIELD_SLOTS[flavour].items()
    }
    for index in range(feedback_papers):
        for verdict in FEEDBACK_VERDICTS:
            slot_of[feedback_placeholder(link_marker, index, verdict)] = (
                _FEEDBACK_SLOTS_START + 4 * index + _FEEDBACK_SLOT_OFFSET[flavour, verdict]
            )
    if cut:
        slot_of[cut] = None
    cache: dict[str, bytes] = {} if qp_cache is None else qp_cache

    def encoded(segment: str) -> bytes:
        found = cache.get(segment)
        if found is None:
            found = qp_encode(segment)
            if qp_cache is not None:
                cache[segment] = found
        return found

    pattern = re.compile("|".join(re.escape(placeholder) for placeholder in slot_of))
    pieces: list[bytes | int] = []
    position = 0
    for match in pattern.finditer(body):
        segment = body[position : match.start()]
        if segment:
            chunk = encoded(segment)
            pieces.append(chunk if chunk.endswith(CRLF) else chunk + SOFT_BREAK)
        slot = slot_of[match.group()]
        if slot is not None:
            pieces.append(slot)
        position = match.end()
    pieces.append(encoded(body[position:]))
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
        "_body_start",
        "_canonical_body",
        "_clock",
        "_date_cache",
        "_feedback_papers",
        "_literals",
        "_literals_eight_bit",
        "_literals_size",
        "_plain_base_url",
        "_settings",
        "_signer",
        "_slots",
        "_unsubscribe_extra",
        "_view_date",
        "_wire_literals",
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
        signer: DkimSigner | None = None,
        feedback_papers: tuple[str, ...] = (),
        view_date: date | None = None,
    ) -> None:
        """Use `CompiledDigest.compile`; this only stores what it prepared.

        The fixed chunks get CRLF line ends here, and each its dot-stuffed
        wire form twice: as it reads when it starts a line and when it does
        not (they differ only when it begins with "."). `prepare` picks one
        per reader by what the personal value before it ended with.
        """
        literals = tuple(normalise_line_ends(literal) for literal in literals)
        if any(literal.endswith(b"\r") for literal in literals):
            raise ValueError("a fixed chunk of the message ends inside a line end")
        self._wire_literals = tuple(map(stuffed_both_ways, literals))
        self._literals_size = sum(len(literal) for literal in literals)
        self._literals_eight_bit = not all(literal.isascii() for literal in literals)
        self._settings = settings
        self._signer = signer
        self._body_start, self._canonical_body = _canonical_body_segments(signer, literals)
        self._literals = literals
        self._slots = slots
        self._clock = clock
        self._date_cache: tuple[int, bytes] = (-1, b"")
        self._unsubscribe_extra = _list_unsubscribe_urls(settings, "")[1:]
        self.envelope_from = settings.envelope_sender
        self.html_encoded_size = html_encoded_size
        self._feedback_papers = feedback_papers
        # Set when the body holds "View in browser" slots (a personal digest's own copy).
        self._view_date = view_date
        self._plain_base_url = escape(
            settings.base_url, quote=True
        ) == settings.base_url and qp_url_safe(settings.base_url)

    @classmethod
    def compile(
        cls,
        settings: Settings,
        *,
        subject: str,
        html: str,
        text: str,
        edition_date: date,
        link_marker: str,
        is_test: bool = False,
        clock: Callable[[], datetime] = utc_now,
        feedback_papers: tuple[str, ...] = (),
        cut: str | None = None,
        qp_cache: dict[str, bytes] | None = None,
    ) -> CompiledDigest:
        """Encode the digest's fixed headers and both parts once, leaving slots for what varies.

        `feedback_papers` (a personal digest's) are the papers whose "more/less
        like this" placeholders the body holds, by index (`render.feedback_placeholder`):
        each reader's signed links are filled in there. `cut` and `qp_cache`
        (a personal digest's too) let pieces shared by many selections be
        encoded once (see `_encoded_part_pieces`).
        """
        boundary = new_boundary(f"digest_{edition_date:%Y%m%d}")
        pieces: list[bytes | int] = [mailbox_setting_header("From", settings.from_address)]
        if settings.reply_to:
            pieces.append(mailbox_setting_header("Reply-To", settings.reply_to))
        pieces += [
            _SLOT_TO,
            unstructured_header("Subject", _subject_line(subject, is_test=is_test)),
            _SLOT_DATE,
            _SLOT_MESSAGE_ID,
            b"MIME-Version: 1.0\r\n",
            list_id_header(settings.list_id),
            _SLOT_LIST_UNSUBSCRIBE,
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            multipart_header(boundary),
        ]
        count = len(feedback_papers)
        html_pieces = _encoded_part_pieces(
            normalised_body(html), "html", link_marker, count, cut=cut, qp_cache=qp_cache
        )
        text_pieces = _encoded_part_pieces(
            normalised_body(text), "text", link_marker, count, cut=cut, qp_cache=qp_cache
        )
        for subtype, part_pieces in (("plain", text_pieces), ("html", html_pieces)):
            pieces.append(part_header(boundary, subtype))
            pieces += part_pieces
        pieces.append(closing_boundary(boundary))
        literals, slots = _merge_literals(pieces)
        html_size = sum(len(piece) for piece in html_pieces if isinstance(piece, bytes))
        return cls(
            settings,
            literals,
            slots,
            html_encoded_size=html_size,
            clock=clock,
            signer=DkimSigner.from_settings(settings),
            feedback_papers=feedback_papers,
            view_date=edition_date if _SLOT_HTML_VIEW in slots else None,
        )

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

    def _personal_values(self, recipient: Recipient) -> tuple[bytes, ...]:
        """What the slots hold for this recipient, each with CRLF line ends."""
        unsubscribe, preferences = _personal_urls(self._settings, recipient.subscriber_key)
        message_id = single_line(recipient.message_id)
        values = [
            mailbox_header("To", recipient.name, recipient.email),
            self._date_header(),
            f"Message-ID: {message_id}\r\n".encode("ascii", "replace"),
            _list_unsubscribe_header([f"<{unsubscribe}>", *self._unsubscribe_extra]),
            qp_encode_url(unsubscribe) + SOFT_BREAK,
            qp_encode_url(preferences) + SOFT_BREAK,
            qp_encode_url(escape(unsubscribe, quote=True)) + SOFT_BREAK,
            qp_encode_url(escape(preferences, quote=True)) + SOFT_BREAK,
        ]
        if self._view_date is not None:
            settings = self._settings
            view = view_url(
                settings.base_url,
                settings.secret_key,
                recipient.subscriber_key or TEST_SEND_KEY,
                self._view_date,
            )
            values += [
                qp_encode_url(view) + SOFT_BREAK,
                qp_encode_url(escape(view, quote=True)) + SOFT_BREAK,
            ]
        else:
            values += [b"", b""]
        if self._feedback_papers:
            settings = self._settings
            key = recipient.subscriber_key or TEST_SEND_KEY
            for more, less in feedback_urls(
                settings.base_url, settings.secret_key, key, self._feedback_papers
            ):
                # A feedback URL is the base URL and URL-safe token characters: with
                # a plain base URL its HTML-escaped and quoted-printable forms are itself.
                if self._plain_base_url:
                    text_more = qp_wrap_safe(more) + SOFT_BREAK
                    text_less = qp_wrap_safe(less) + SOFT_BREAK
                    values += (text_more, text_less, text_more, text_less)
                else:
                    values += (
                        qp_encode_url(more) + SOFT_BREAK,
                        qp_encode_url(less) + SOFT_BREAK,
                        qp_encode_url(escape(more, quote=True)) + SOFT_BREAK,
                        qp_encode_url(escape(less, quote=True)) + SOFT_BREAK,
                    )
        return tuple(values)

    def _joined(self, values: tuple[bytes, ...]) -> tuple[bytes, list[bytes]]:
        literals = self._literals
        parts = [literals[0]]
        for index, slot in enumerate(self._slots, start=1):
            parts.append(values[slot])
            parts.append(literals[index])
        return b"".join(parts), parts

    def _signature(self, message: bytes, parts: list[bytes], values: tuple[bytes, ...]) -> bytes:
        """The DKIM-Signature header for the message, or b"" without a signer."""
        if self._signer is None:
            return b""
        if self._canonical_body is None:
            return self._signer.sign(message)[: -len(message) or None]
        return self._sign_from_segments(message, parts, values)

    def assemble(self, recipient: Recipient) -> bytes:
        """The recipient's whole RFC 5322 message, CRLF line ends (not dot-stuffed)."""
        values = self._normalised(self._personal_values(recipient))
        message, parts = self._joined(values)
        return self._signature(message, parts, values) + message

    @staticmethod
    def _normalised(values: tuple[bytes, ...]) -> tuple[bytes, ...]:
        # Every writer of a value already ends lines in CRLF; this only checks it.
        return tuple(prepared_value(value, at_line_start=False)[0] for value in values)

    def prepare(self, recipient: Recipient) -> PreparedMessage:
        """The recipient's message ready for DATA: the prepared chunks and checked values joined.

        The same bytes as `assemble`, dot-stuffed, and its size known without a
        scan. Only the personal values are looked at (see `prepared_value`).
        """
        values = self._personal_values(recipient)
        wire = self._wire_literals
        literals = self._literals
        size = self._literals_size
        parts: list[bytes] = []
        if self._signer is not None:
            normal = self._normalised(values)
            message, plain_parts = self._joined(normal)
            header = prepared_value(
                self._signature(message, plain_parts, normal), at_line_start=True
            )
            parts.append(header[1])
            size += len(header[0])
        parts.append(wire[0][0])
        line_start = literals[0].endswith(b"\n") if literals[0] else True
        eight_bit = self._literals_eight_bit
        # A personal digest's feedback links fill two slots each (text and HTML)
        # with the same bytes: each is checked once (unless it starts with a dot,
        # whose stuffing depends on where it stands).
        checked: dict[int, tuple[bytes, bytes]] = {}
        for index, slot in enumerate(self._slots, start=1):
            value = values[slot]
            known = checked.get(id(value))
            if known is None:
                known = prepared_value(value, at_line_start=line_start)
                if not value.startswith(b"."):
                    checked[id(value)] = known
            normal_value, wire_value = known
            size += len(normal_value)
            eight_bit = eight_bit or not normal_value.isascii()
            parts.append(wire_value)
            if normal_value:
                line_start = normal_value.endswith(b"\n")
            literal = literals[index]
            parts.append(wire[index][0 if line_start else 1])
            if literal:
                line_start = literal.endswith(b"\n")
        if not line_start:
            parts.append(b"\r\n")
            size += 2
        parts.append(END_OF_DATA)
        return PreparedMessage(b"".join(parts), size, eight_bit)

    def _sign_from_segments(
        self, message: bytes, parts: list[bytes], values: tuple[bytes, ...]
    ) -> bytes:
        """The DKIM-Signature header: the fixed canonical segments hashed with the personal ones."""
        assert self._signer is not None and self._canonical_body is not None
        literal_index, offset = self._body_start
        # parts alternate literal, value, literal, ...: literal i is parts[2 * i].
        header_length = sum(len(part) for part in parts[: 2 * literal_index]) + offset
        canonical = self._canonical_body
        hasher = hashlib.sha256(canonical[0])
        for index in range(literal_index + 1, len(self._literals)):
            hasher.update(self._signer.canonical_lines(values[self._slots[index - 1]]))
            hasher.update(canonical[index - literal_index])
        header = self._signer.signature_header(message[:header_length], hasher.digest())
        return header


def _canonical_body_segments(
    signer: DkimSigner | None, literals: tuple[bytes, ...]
) -> tuple[tuple[int, int], tuple[bytes, ...] | None]:
    """Where the body starts (literal, offset) and its fixed segments in canonical form.

    None when there is no signer, or when a segment does not end at a line end
    (then relaxed canonicalisation is not piecewise and `sign` does it whole).
    """
    blanks = [literal.find(b"\r\n\r\n") for literal in literals]
    index = next((i for i, blank in enumerate(blanks) if blank >= 0), None)
    if index is None:
        return (0, 0), None
    blank = blanks[index]
    segments = [literals[index][blank + 4 :], *literals[index + 1 :]]
    if signer is None or not all(segment.endswith(b"\r\n") for segment in segments):
        return (index, blank + 2), None
    canonical = [signer.canonical_lines(segment) for segment in segments[:-1]]
    canonical.append(signer.canonical_body_end(segments[-1]))
    return (index, blank + 2), tuple(canonical)


def _list_unsubscribe_header(urls: list[str]) -> bytes:
    return ("List-Unsubscribe: " + ",\r\n ".join(urls) + "\r\n").encode("ascii")
