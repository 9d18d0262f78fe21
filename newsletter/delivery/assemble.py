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

The body is quoted-printable broken exactly where the `email` package breaks
it (`core.mime.qp_line_spans`), and a line that holds a URL breaks by the
URL's length. So the lines that hold personal values are laid out once per
set of value lengths (`_Layout`; all readers usually share one): the lines
without a value become fixed bytes, and those with one become regions that
each reader's URLs are sliced into. Every body line stays within 76
characters and every line ends in CRLF.

With DKIM configured, the key is loaded once at `compile`, and so is the
relaxed canonical form of every fixed body segment (each starts and ends at a
line end); each message's signature then hashes those with the reader's few
personal lines instead of canonicalising the whole body again.

`prepare` gives the same message ready for SMTP DATA (`core.wire`): the fixed
chunks got CRLF line ends and their dot-stuffing once, at compile; only the
personal values are checked per reader, and the size is the sum of known
lengths, so nothing scans the whole message again before it is written.

A personal digest (`compile_units`) is compiled from units, whole lines each,
that recur across an edition's selections (a paper's block at its place, the
header, the footer): each is encoded once, and prepared for DATA once per
set of value shapes, in an `EncodingCache` shared by the edition's digests.
Compiling a selection then costs a lookup per unit, and its wire plan a
splice per unit; only the readers' why lines are new.

`build_message` is the slow reference built entirely with the `email`
package, for well-formed input only; tests check the two are the same byte
for byte (but for a display name in encoded-words, which reads the same).
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime
from functools import lru_cache
from html import escape
from itertools import accumulate, chain, compress
from operator import attrgetter
from typing import Any, Final, TypeVar

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
    QP_LINE_MAX,
    LineSpan,
    closing_boundary,
    multipart_header,
    new_boundary,
    normalised_body,
    part_header,
    qp_body_characters,
    qp_break,
    qp_characters,
    qp_lines,
    qp_url_safe,
)
from newsletter.core.settings import Settings
from newsletter.core.text import single_line
from newsletter.core.wire import (
    END_OF_DATA,
    PreparedMessage,
    prepare_message,
    prepared_value,
    stuff,
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
    "EncodingCache",
    "Recipient",
    "build_message",
    "make_message_id",
]

# A test send has no subscriber; its links carry this key, which matches no
# subscriber, so they open the "link not recognised" page and change nothing.
TEST_SEND_KEY: Final = "test-send"
TEST_SUBJECT_PREFIX: Final = "[TEST] "

_Key = TypeVar("_Key")
_Made = TypeVar("_Made")

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
# The email package breaks quoted-printable lines at the policy's line length,
# 78 for headers; RFC 2045 allows 76, so the parts are encoded with that.
_PART_POLICY: Final = _REFERENCE_POLICY.clone(max_line_length=QP_LINE_MAX)


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
    boundary: str | None = None,
) -> EmailMessage:
    """One recipient's message built fully with the email package (the slow reference).

    Only for trusted, well-formed input (tests and the benchmark): the email
    package's folding is what `newsletter.core.headers` exists to avoid.
    `boundary` is the multipart boundary (by default the email package's own).
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
    message.make_alternative(boundary)
    for body, subtype in ((personal_text, "plain"), (personal_html, "html")):
        part = EmailMessage(policy=_PART_POLICY)
        part.set_content(body, subtype=subtype, charset="utf-8", cte="quoted-printable")
        del part["MIME-Version"]  # set_content's, which only the message needs
        message.attach(part)
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
# The slots before this one are whole header lines; from it on, values in the body.
_FIRST_BODY_SLOT: Final = _SLOT_TEXT_UNSUBSCRIBE
# Layouts and wire plans kept per digest: one per set of value shapes (`_Shape`).
_LAYOUTS_KEPT: Final = 64


@dataclass(frozen=True, slots=True)
class _SlotLine:
    """A line of a body that holds personal values, not yet broken into physical lines.

    `fixed` is its text around the slots as quoted-printable characters
    (`qp_characters`), one more than `slots`. Where the line breaks depends on
    the values' lengths, so it is laid out per set of value shapes (`_line_layout`).
    """

    fixed: tuple[str, ...]
    slots: tuple[int, ...]
    shape_indices: tuple[int, ...]  # where in a reader's shapes (`_shapes`) its values' stand

    @classmethod
    def of(cls, fixed: tuple[str, ...], slots: tuple[int, ...]) -> _SlotLine:
        """The line of this text around these slots."""
        return cls(fixed, slots, tuple(slot - _FIRST_BODY_SLOT for slot in slots))

    def shapes_of(self, shapes: tuple[_Shape, ...]) -> tuple[_Shape, ...]:
        """The shapes of this line's values, out of a reader's."""
        return tuple(map(shapes.__getitem__, self.shape_indices))


# A part of a region: fixed bytes, or (place, start, end): a slice of the value at
# that place in its line (0 for the line's first value).
_RegionItem = bytes | tuple[int, int, int]
_Region = tuple[_RegionItem, ...]
# What decides where a line holding a value breaks: the value's length alone
# (the common case: no "=" in it and no space or tab at its end), else that
# length, where its escapes start and its last character if it is a space or tab.
_Shape = int | tuple[int, tuple[int, ...], str]


def _shapes(personal: tuple[bytes, ...], joined: bytes) -> tuple[_Shape, ...]:
    """The shapes of a reader's body values (`_Shape`): usually their lengths alone.

    `joined` is the body values joined (the common case is told from it).
    """
    values = personal[_FIRST_BODY_SLOT:]
    if b"=" not in joined and b" " not in joined and b"\t" not in joined:
        return tuple(map(len, values))
    return tuple(map(_shape, values))


def _shape(value: bytes) -> _Shape:
    last = value[-1:]
    if b"=" not in value and last not in (b" ", b"\t"):
        return len(value)
    escapes = tuple(index for index, byte in enumerate(value) if byte == ord("="))
    return len(value), escapes, last.decode("ascii") if last in (b" ", b"\t") else ""


def _stand_in(shape: _Shape) -> str:
    """Characters that break as a value of this shape does (breaking looks only at those)."""
    if isinstance(shape, int):
        return "x" * shape
    length, escapes, last = shape
    characters = ["x"] * length
    for index in escapes:
        characters[index] = "="
    if last:
        characters[-1] = last
    return "".join(characters)


def _line_layout(fixed: tuple[str, ...], shapes: tuple[_Shape, ...]) -> list[bytes | _Region]:
    """A line's physical lines: fixed bytes, and regions (whole lines) that hold values.

    `fixed` is the line's text around its values, `shapes` theirs. The line is
    broken with stand-ins for the values; each physical line that holds a
    character of a value belongs to a region, whose items name a value by its
    place in the line (0 for the first), for `_Layout` to map to its slot.
    """
    parts = [fixed[0]]
    places: list[tuple[int, int, int]] = []  # (place, start, end) of each value in the line
    position = len(fixed[0])
    for place, (shape, after_value) in enumerate(zip(shapes, fixed[1:], strict=True)):
        stand_in = _stand_in(shape)
        places.append((place, position, position + len(stand_in)))
        position += len(stand_in) + len(after_value)
        parts += (stand_in, after_value)
    text = "".join(parts)
    broken = qp_break(text)
    soft, tail = broken.soft, broken.tail
    # Each physical line's span: the soft-broken ones, then the tail's.
    ends = [*accumulate(map(len, soft)), *(end for _, end, _ in tail)]
    starts = [0, *ends[: len(soft)], *(start for start, _, _ in tail)][: len(ends)]
    # The physical lines each value touches, merged where they meet or overlap,
    # with the values in them: [first line, last line, values].
    touched: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    for value in places:
        _, start, end = value
        if start == end:
            continue  # an empty value touches no line
        first, last = bisect_right(ends, start), bisect_left(starts, end) - 1
        if touched and first <= touched[-1][1] + 1:
            touched[-1] = (touched[-1][0], max(touched[-1][1], last), [*touched[-1][2], value])
        else:
            touched.append((first, last, [value]))

    def span(index: int) -> LineSpan:
        if index < len(soft):
            return starts[index], ends[index], "="
        return tail[index - len(soft)]

    layout: list[bytes | _Region] = []

    def fixed_lines(first: int, last: int) -> None:
        """Physical lines no value touches, as they are."""
        if first > last:
            return
        soft_end = min(last + 1, len(soft))
        lines = "=\r\n".join(soft[first:soft_end]) + "=\r\n" if first < soft_end else ""
        for start, end, after in tail[max(first, soft_end) - len(soft) : last + 1 - len(soft)]:
            lines += text[start:end] + after + "\r\n"
        layout.append(lines.encode("ascii"))

    done = 0
    for first, last, values in touched:
        fixed_lines(done, first - 1)
        items: list[_RegionItem] = []
        for index in range(first, last + 1):
            start, end, after = span(index)
            cursor = start
            for place, value_start, value_end in values:
                if value_end <= cursor or value_start >= end:
                    continue
                if value_start > cursor:
                    items.append(text[cursor:value_start].encode("ascii"))
                cut_end = min(end, value_end)
                items.append((place, max(cursor, value_start) - value_start, cut_end - value_start))
                cursor = cut_end
            items.append((text[cursor:end] + after + "\r\n").encode("ascii"))
        layout.append(_merged(items))
        done = last + 1
    fixed_lines(done, len(ends) - 1)
    return layout


def _merged(items: list[_RegionItem]) -> _Region:
    """Adjacent fixed bytes joined."""
    merged: list[_RegionItem] = []
    for item in items:
        if isinstance(item, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += item
        elif item != b"":
            merged.append(item)
    return tuple(merged)


def _render(region: _Region, line_slots: tuple[int, ...], values: tuple[bytes, ...]) -> bytes:
    """A region's bytes for one reader; `line_slots` are the slots of its line's values."""
    return b"".join(
        [
            item if isinstance(item, bytes) else values[line_slots[item[0]]][item[1] : item[2]]
            for item in region
        ]
    )


# A value slice on the wire: (place or slot, start, end, whether it starts a
# physical line, so that its first dot is doubled per reader).
_WireSlice = tuple[int, int, int, bool]


class _LineLayout:
    """A line that holds values, laid out for their shapes (`_line_layout`), in both forms.

    `parts` as `_line_layout` gives them. For DATA, the same flattened: `head`,
    the fixed bytes before the first value slice, and `tail`, those after the
    last (both to be joined with what stands around the line, then dot-stuffed),
    and between them `middle`: the slices (by place) and the fixed bytes
    between them, dot-stuffed already (they never start the line).
    `middle_size` is the middle's size before stuffing, values included.
    """

    __slots__ = ("head", "middle", "middle_ascii", "middle_size", "parts", "tail")

    def __init__(self, parts: list[bytes | _Region]) -> None:
        self.parts = parts
        flat: list[bytes | _WireSlice] = []
        fixed: list[bytes] = []
        value_size = 0
        line_start = True
        for item in parts:
            for piece in (item,) if isinstance(item, bytes) else item:
                if isinstance(piece, bytes):
                    fixed.append(piece)
                    if piece:
                        line_start = piece.endswith(b"\n")
                    continue
                flat.append(b"".join(fixed))
                fixed.clear()
                place, start, end = piece
                flat.append((place, start, end, line_start))
                value_size += end - start
                line_start = False
        flat.append(b"".join(fixed))
        # Without a slice (every value empty) the line is all head.
        head, *middle, tail = flat if len(flat) > 1 else [*flat, b""]
        assert isinstance(head, bytes) and isinstance(tail, bytes)
        self.head, self.tail = head, tail
        self.middle = tuple(
            stuff(part, at_line_start=False) if isinstance(part, bytes) else part for part in middle
        )
        between = [part for part in middle if isinstance(part, bytes)]
        self.middle_size = value_size + sum(map(len, between))
        self.middle_ascii = all(map(bytes.isascii, between))


def _kept(table: dict[_Key, _Made], key: _Key, make: Callable[[], _Made], limit: int) -> _Made:
    """`table[key]`, made the first time it is asked for; a full table is emptied first."""
    found = table.get(key)
    if found is None:
        found = make()
        if len(table) >= limit:
            table.clear()
        table[key] = found
    return found


class EncodingCache:
    """What compiling several digests of an edition can share, so it is done once.

    A personal digest is compiled per selection from units that recur across
    selections (`render.PersonalDigest`): each unit encoded (`_EncodedUnit`),
    each piece's quoted-printable characters, each line without values
    encoded, and each line layout (`_line_layout`) are kept here. Bounded:
    the characters and lines are emptied past `limit` each, the units (a
    block's few KB, twice: encoded and prepared for DATA) past `units_kept`,
    those met once apart from those met again;
    the layouts, a few KB each and unique for a reader's own lines, are kept
    for the `layouts_kept` lines met last. The digests compiled with it share
    one multipart boundary per edition, so the runs of header and boundary
    lines between their units are alike, and prepared for DATA once (`fixed_run`).
    """

    __slots__ = (
        "_boundaries",
        "_date",
        "_layouts",
        "_met_once",
        "_runs",
        "characters",
        "layouts_kept",
        "limit",
        "lines",
        "units",
        "units_kept",
    )

    def __init__(
        self, limit: int = 50_000, layouts_kept: int = 4096, units_kept: int = 8192
    ) -> None:
        """An empty cache."""
        self.limit = limit
        self.layouts_kept = layouts_kept
        self.units_kept = units_kept
        self.characters: dict[str, str] = {}
        self.lines: dict[str, bytes] = {}
        self.units: dict[tuple[str, str, str], _EncodedUnit] = {}
        self._met_once: dict[tuple[str, str, str], _EncodedUnit] = {}
        self._layouts: OrderedDict[tuple[tuple[str, ...], tuple[_Shape, ...]], _LineLayout] = (
            OrderedDict()
        )
        self._boundaries: dict[date, str] = {}
        self._runs: dict[tuple[bytes | int, ...], _FixedRun] = {}
        self._date: tuple[datetime, bytes] | None = None

    def date_header(self, now: datetime) -> bytes:
        """The Date header line for `now`, to the second.

        Formatting a date costs more than the rest of the headers; mail
        within the same second, of any digest sharing this cache, shares one.
        """
        second = now.replace(microsecond=0)
        last = self._date
        if last is None or last[0] != second:
            last = self._date = (second, f"Date: {format_datetime(second)}\r\n".encode("ascii"))
        return last[1]

    def boundary(self, edition_date: date) -> str:
        """The multipart boundary of every digest of the edition compiled with this cache.

        A boundary need only be absent from its own message (`new_boundary`
        makes one that quoted-printable text cannot hold), so readers' messages
        may share it, as every reader of the trending digest does.
        """
        found = self._boundaries.get(edition_date)
        if found is None:
            found = self._boundaries[edition_date] = new_boundary(f"digest_{edition_date:%Y%m%d}")
        return found

    def fixed_run(self, pieces: tuple[bytes | int, ...]) -> _FixedRun:
        """Header lines and fixed lines (no value in the body), prepared once per run."""
        return self._runs.get(pieces) or _kept(
            self._runs, pieces, lambda: _FixedRun(_wire_fragment(pieces, (), self)), _LAYOUTS_KEPT
        )

    def characters_of(self, text: str) -> str:
        """`qp_body_characters` of a piece of a body."""
        return _kept(self.characters, text, lambda: qp_body_characters(text), self.limit)

    def encoded_line(self, line: str) -> bytes:
        """A whole line of quoted-printable characters, broken and ended by CRLF."""
        return _kept(self.lines, line, lambda: qp_lines([line]), self.limit)

    def unit(self, flavour: str, link_marker: str, text: str) -> _EncodedUnit:
        """A unit of a part (whole lines) encoded, once per unit while kept.

        The blocks selections share are the same string objects in every
        digest (`render.DigestBlocks`), whose hash Python keeps: finding one
        never reads its text again.
        """
        key = (flavour, link_marker, text)
        found = self.units.get(key)
        if found is not None:
            return found
        # A unit is kept among the shared ones once met twice: most units met once
        # are a reader's own why line, and emptying a full table of those must
        # not drop the blocks every selection holds (each costs its encoding again).
        met_before = self._met_once.pop(key, None)
        if met_before is not None:
            return _kept(self.units, key, lambda: met_before, self.units_kept)
        return _kept(
            self._met_once,
            key,
            lambda: _EncodedUnit(_unit_pieces(text, flavour, link_marker, self)),
            self.units_kept,
        )

    def line_layout(self, fixed: tuple[str, ...], shapes: tuple[_Shape, ...]) -> _LineLayout:
        """`_line_layout` of a line, once per line and value shapes (while kept)."""
        key = (fixed, shapes)
        found = self._layouts.get(key)
        if found is None:
            found = _LineLayout(_line_layout(fixed, shapes))
            if len(self._layouts) >= self.layouts_kept:
                self._layouts.popitem(last=False)
            self._layouts[key] = found
        else:
            self._layouts.move_to_end(key)
        return found


@lru_cache(maxsize=64)
def _placeholder_slots(
    flavour: str, link_marker: str, feedback_papers: int
) -> tuple[re.Pattern[str], dict[str, int]]:
    """The placeholders a part of a digest with this many feedback papers holds, and their slots."""
    slot_of = {
        field.placeholder(link_marker): slot for field, slot in _FIELD_SLOTS[flavour].items()
    }
    for index in range(feedback_papers):
        for verdict in FEEDBACK_VERDICTS:
            slot_of[feedback_placeholder(link_marker, index, verdict)] = _feedback_slot(
                flavour, index, verdict
            )
    return re.compile("|".join(re.escape(placeholder) for placeholder in slot_of)), slot_of


def _feedback_slot(flavour: str, index: int, verdict: str) -> int:
    return _FEEDBACK_SLOTS_START + 4 * index + _FEEDBACK_SLOT_OFFSET[flavour, verdict]


def _placeholder_start(link_marker: str) -> str:
    """What every placeholder of a rendering with this link marker starts with."""
    return f"NLPERSONAL{link_marker}x"


@lru_cache(maxsize=16)
def _unit_placeholders(link_marker: str) -> re.Pattern[str]:
    """Any placeholder of the rendering: a personal field's, or a feedback link's by index."""
    fields = "|".join(re.escape(field.value) for field in PersonalField)
    return re.compile(
        re.escape(_placeholder_start(link_marker))
        + rf"(?:FB(\d{{1,4}})x(MORE|LESS)|({fields}))xURL"
    )


def _encoded_part_pieces(
    body: str, flavour: str, link_marker: str, feedback_papers: int, cache: EncodingCache
) -> list[bytes | _SlotLine]:
    """A whole part's quoted-printable body (see `_encoded_pieces`)."""
    pattern, slot_of = _placeholder_slots(flavour, link_marker, feedback_papers)
    found = (
        (match.start(), match.end(), slot_of[match.group()]) for match in pattern.finditer(body)
    )
    return _encoded_pieces(body, found, cache)


def _unit_pieces(
    text: str, flavour: str, link_marker: str, cache: EncodingCache
) -> list[bytes | _SlotLine]:
    """A unit of a personal digest's part (whole lines), encoded as the whole part would be.

    Characters do not depend on where they stand and lines are broken whole,
    so a part encoded unit by unit is the part encoded at once. A feedback
    link's slot follows from its index alone (`CompiledDigest.compile_units`
    checks the digest has that paper).
    """
    if not text.endswith("\n"):
        raise ValueError("a unit of a digest must end with a line end")
    body = normalised_body(text)
    if _placeholder_start(link_marker) not in body:
        # No values (a reader's why line, a trending block): its lines encoded as they
        # stand, not kept line by line, as most such units are met once.
        *lines, _ = qp_body_characters(body).split("\n")
        return [qp_lines(lines)]
    placeholders = []
    for match in _unit_placeholders(link_marker).finditer(body):
        index, verdict, field = match.groups()
        slot = (
            _FIELD_SLOTS[flavour][PersonalField(field)]
            if field is not None
            else _feedback_slot(flavour, int(index), verdict.lower())
        )
        placeholders.append((match.start(), match.end(), slot))
    return _encoded_pieces(body, placeholders, cache)


def _encoded_pieces(
    body: str, placeholders: Iterable[tuple[int, int, int]], cache: EncodingCache
) -> list[bytes | _SlotLine]:
    """A body's quoted-printable lines: encoded lines, and the lines that hold personal values.

    `placeholders` are (start, end, slot) of each placeholder in `body`, in
    order. Each piece between them is turned into quoted-printable characters
    on its own, and each line without values encoded, once for every digest
    sharing the cache.
    """
    # The body as quoted-printable characters, a NUL where each slot stands (NUL
    # itself is escaped), then split into lines.
    known = cache.characters
    fragments: list[str] = []
    slots: list[int] = []
    position = 0
    for start, end, slot in placeholders:
        if start > position:
            text = body[position:start]
            fragments.append(known.get(text) or cache.characters_of(text))
        slots.append(slot)
        fragments.append("\0")
        position = end
    text = body[position:]
    fragments.append(known.get(text) or cache.characters_of(text))
    *lines, rest = "".join(fragments).split("\n")
    # The body ends with a line end, so what is left is the empty text after it.
    if rest:
        raise ValueError("a body part must end with a line end")
    pieces: list[bytes | _SlotLine] = []
    plain: list[bytes] = []  # encoded lines without values, joined into one piece
    encoded = cache.lines
    taken = 0
    for line in lines:
        if "\0" not in line:
            plain.append(encoded.get(line) or cache.encoded_line(line))
            continue
        if plain:
            pieces.append(b"".join(plain))
            plain = []
        fixed = tuple(line.split("\0"))
        pieces.append(_SlotLine.of(fixed, tuple(slots[taken : taken + len(fixed) - 1])))
        taken += len(fixed) - 1
    if plain:
        pieces.append(b"".join(plain))
    return pieces


class _EncodedUnit:
    """A unit of a personal digest's part, encoded: shared by every digest that holds it.

    `pieces` as `_encoded_pieces` gives them; `fragment` is its part of a wire
    plan (`_WirePlan`) for the shapes of its own values, made once per shapes.
    A unit starts and ends at a line end, so its dot-stuffing never depends on
    what stands around it. `feedback_papers` is how many papers a digest must
    have for the feedback links it holds.
    """

    __slots__ = (
        "feedback_papers",
        "fragments",
        "last",
        "pieces",
        "shape_indices",
        "slots",
    )

    def __init__(self, pieces: list[bytes | _SlotLine]) -> None:
        self.pieces: tuple[bytes | _SlotLine, ...] = tuple(pieces)
        self.fragments: dict[tuple[_Shape, ...], _WireFragment] = {}
        lines = [piece for piece in pieces if isinstance(piece, _SlotLine)]
        # The shapes last asked for and their fragment: readers' shapes are nearly always
        # alike, and a unit without values has only the one, made now.
        self.last: tuple[tuple[_Shape, ...], _WireFragment] | None = None
        if not lines:
            # Lines without values, as most units met once are (a reader's why line).
            self.slots: frozenset[int] = frozenset()
            self.shape_indices: tuple[int, ...] = ()
            self.feedback_papers = 0
            self.last = ((), _fixed_fragment(pieces))
            return
        self.slots = frozenset(slot for line in lines for slot in line.slots)
        self.shape_indices = tuple(sorted({i for line in lines for i in line.shape_indices}))
        self.feedback_papers = max(
            (
                (slot - _FEEDBACK_SLOTS_START) // 4 + 1
                for line in lines
                for slot in line.slots
                if slot >= _FEEDBACK_SLOTS_START
            ),
            default=0,
        )

    def fragment(self, shapes: tuple[_Shape, ...], cache: EncodingCache) -> _WireFragment:
        """The unit's wire items for a reader's shapes (those of its own values decide)."""
        last = self.last
        if last is not None and (not self.shape_indices or last[0] == shapes):
            return last[1]
        key = tuple(map(shapes.__getitem__, self.shape_indices))
        found = self.fragments.get(key) or _kept(
            self.fragments, key, lambda: _wire_fragment(self.pieces, shapes, cache), _LAYOUTS_KEPT
        )
        self.last = (shapes, found)
        return found


class _FixedRun:
    """The header and boundary lines between a personal digest's units, prepared for DATA.

    They hold no value in the body, so their fragment is the same whatever
    the shapes; the digests of an edition share them (`EncodingCache.fixed_run`).
    """

    __slots__ = ("_fragment",)

    def __init__(self, fragment: _WireFragment) -> None:
        self._fragment = fragment

    def fragment(self, shapes: tuple[_Shape, ...], cache: EncodingCache) -> _WireFragment:
        """The run's wire items, for readers of any shapes."""
        return self._fragment


# A piece of a compiled digest: fixed bytes (whole lines), a header line's slot, a
# line that holds values, or a unit of a personal digest (`_EncodedUnit`).
_Piece = bytes | int | _SlotLine | _EncodedUnit


def _flat(pieces: Iterable[_Piece]) -> Iterator[bytes | int | _SlotLine]:
    """The pieces with each unit's own in its place."""
    for piece in pieces:
        if isinstance(piece, _EncodedUnit):
            yield from piece.pieces
        else:
            yield piece


def _encoded_size(pieces: Iterable[_Piece]) -> int:
    """The part's encoded size with its personal values left empty."""
    return sum(
        len(piece) if isinstance(piece, bytes) else len(qp_lines(["".join(piece.fixed)]))
        for piece in _flat(pieces)
        if not isinstance(piece, int)
    )


def _laid_out(
    pieces: Iterable[_Piece], shapes: tuple[_Shape, ...], cache: EncodingCache
) -> Iterator[bytes | int | tuple[_Region, tuple[int, ...]]]:
    """The digest's pieces with each line that holds values laid out for these shapes.

    Fixed bytes, header slots (int), and regions with the slots of their line.
    """
    for piece in _flat(pieces):
        if not isinstance(piece, _SlotLine):
            yield piece
            continue
        for item in cache.line_layout(piece.fixed, piece.shapes_of(shapes)).parts:
            # A region names its values by their place in the line, so the line's
            # slots go with it (the same line stands at other places in other
            # selections, and its layout is shared).
            yield item if isinstance(item, bytes) else (item, piece.slots)


class _Layout:
    """A digest's whole message for readers whose values have one set of shapes.

    `literals` alternate with `slots` (literal, slot, literal, ..., literal).
    A slot indexes the message's values: the header lines first (To, Date,
    Message-ID, List-Unsubscribe), then the `regions`, whole physical lines
    each reader's values are sliced into (`_render`). Every literal and region
    of the body starts and ends at a line end, so DKIM's relaxed body
    canonicalisation can be done once for the literals (`canonical_body`).
    What goes on the wire is `_WirePlan`'s.
    """

    __slots__ = ("body_start", "canonical_body", "literals", "regions", "slots")

    def __init__(
        self,
        pieces: Sequence[_Piece],
        shapes: tuple[_Shape, ...],
        signer: DkimSigner | None,
        cache: EncodingCache,
    ) -> None:
        chunks: list[list[bytes]] = [[]]
        slots: list[int] = []
        regions: list[tuple[_Region, tuple[int, ...]]] = []
        for item in _laid_out(pieces, shapes, cache):
            if isinstance(item, bytes):
                chunks[-1].append(item)
                continue
            if isinstance(item, int):  # a header line's slot
                slots.append(item)
            else:
                slots.append(_FIRST_BODY_SLOT + len(regions))
                regions.append(item)
            chunks.append([])
        # Every writer of these bytes ends its lines in CRLF (tests check the whole).
        self.literals = tuple(b"".join(chunk) for chunk in chunks)
        self.slots = tuple(slots)
        self.regions = tuple(regions)
        self.body_start, self.canonical_body = _canonical_body_segments(signer, self.literals)

    def values(self, personal: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """The message's values for these personal ones: the header lines, then each region."""
        return (
            *personal[:_FIRST_BODY_SLOT],
            *(_render(region, line_slots, personal) for region, line_slots in self.regions),
        )


# A hole in a wire plan: (slot, start, end), a slice of a reader's value (end None: all of it).
_Hole = tuple[int, int, int | None]


class _WireFragment:
    """DATA bytes of a run of pieces that starts at a line start: fixed bytes and holes.

    `fixed` is one more than `holes`; fixed bytes have their CRLF line ends
    and dot-stuffing done. `headers` are the holes that are whole header
    lines, checked per reader (`prepared_value`); `line_starts` those of the
    body that start a line (their first dot is doubled per reader). A value in
    the body is quoted-printable characters, never a line end, so nothing else
    is looked at per reader. `fixed_size` is the run's size before
    dot-stuffing, values in the body included (their shapes give their
    lengths); `eight_bit` whether a fixed byte is not ASCII.

    `template` and `spliced_holes` are the same, ready to be put end to end
    with other fragments' (`_WirePlan`): the fixed bytes at the even places of
    `template`, and after the last of them one more hole, an empty one, which
    keeps the next fragment's fixed bytes at even places too; `header_mask`
    and `line_start_mask` have a byte per spliced hole, 1 for each of
    `headers` and `line_starts`.
    """

    __slots__ = (
        "eight_bit",
        "fixed",
        "fixed_size",
        "header_mask",
        "headers",
        "holes",
        "line_start_mask",
        "line_starts",
        "spliced_holes",
        "template",
    )

    def __init__(
        self,
        fixed: tuple[bytes, ...],
        holes: tuple[_Hole, ...],
        headers: tuple[int, ...],
        line_starts: tuple[int, ...],
        fixed_size: int,
        eight_bit: bool,
    ) -> None:
        self.fixed = fixed
        self.holes = holes
        self.headers = headers
        self.line_starts = line_starts
        self.fixed_size = fixed_size
        self.eight_bit = eight_bit
        template: list[bytes] = [b""] * (2 * len(fixed))
        template[::2] = fixed
        self.template = tuple(template)
        self.spliced_holes = (*holes, _EMPTY_HOLE)
        self.header_mask = _mask(headers, len(self.spliced_holes))
        self.line_start_mask = _mask(line_starts, len(self.spliced_holes))


def _fixed_fragment(pieces: Sequence[bytes | _SlotLine]) -> _WireFragment:
    """`_wire_fragment` of whole lines that hold no value, made directly."""
    chunk = b"".join(piece for piece in pieces if isinstance(piece, bytes))
    return _WireFragment(
        (stuff(chunk, at_line_start=True),), (), (), (), len(chunk), not chunk.isascii()
    )


def _mask(indices: tuple[int, ...], size: int) -> bytes:
    if not indices:
        return bytes(size)
    mask = bytearray(size)
    for index in indices:
        mask[index] = 1
    return bytes(mask)


# A hole that takes nothing (the To header's value, sliced empty): between spliced fragments.
_EMPTY_HOLE: Final[_Hole] = (0, 0, 0)


def _wire_fragment(
    pieces: Iterable[bytes | int | _SlotLine], shapes: tuple[_Shape, ...], cache: EncodingCache
) -> _WireFragment:
    """The DATA bytes of pieces that start at a line start, for readers of these shapes."""
    fixed: list[bytes] = []
    holes: list[_Hole] = []
    headers: list[int] = []
    line_starts: list[int] = []
    run: list[bytes] = []  # prepared bytes since the last hole
    pending: list[bytes] = []  # fixed bytes waiting to be one chunk, dot-stuffed as one
    size = 0
    eight_bit = False
    # Whether the next chunk starts a line: at the start and after a header line;
    # never after a value slice (values hold no line end).
    at_line_start = True

    def add_chunk() -> None:
        nonlocal size, eight_bit
        chunk = b"".join(pending)
        pending.clear()
        if chunk:
            size += len(chunk)
            eight_bit = eight_bit or not chunk.isascii()
            run.append(stuff(chunk, at_line_start=at_line_start))

    def add_hole(hole: _Hole) -> None:
        fixed.append(b"".join(run))
        run.clear()
        holes.append(hole)

    for piece in pieces:
        if isinstance(piece, bytes):  # whole lines
            pending.append(piece)
        elif isinstance(piece, int):  # a header line, checked per reader
            add_chunk()
            headers.append(len(holes))
            add_hole((piece, 0, None))
            at_line_start = True
        else:
            line = cache.line_layout(piece.fixed, piece.shapes_of(shapes))
            pending.append(line.head)
            if line.middle:
                add_chunk()
                slots = piece.slots
                for part in line.middle:
                    if isinstance(part, bytes):  # dot-stuffed already: never at a line start
                        run.append(part)
                    else:
                        place, start, end, starts_line = part
                        if starts_line:
                            line_starts.append(len(holes))
                        add_hole((slots[place], start, end))
                size += line.middle_size
                eight_bit = eight_bit or not line.middle_ascii
                at_line_start = False
            pending.append(line.tail)
    add_chunk()
    fixed.append(b"".join(run))
    return _WireFragment(
        tuple(fixed), tuple(holes), tuple(headers), tuple(line_starts), size, eight_bit
    )


class _WirePlan:
    """A digest's DATA bytes for readers whose values have one set of shapes, prepared once.

    The message is fixed bytes with holes between them, the end of DATA in
    the last fixed bytes: `template` holds the fixed bytes at its even places,
    and a message fills in the odd ones with its slices, checking the header
    lines and doubling a dot that starts a line. It is fragments
    (`_wire_fragment`) put end to end: the whole digest's, or a personal
    digest's units' and the runs of header and boundary lines between them,
    each made once for every digest that holds it (a unit starts and ends at
    a line end, so its bytes never depend on its neighbours). `fixed_size` is
    the message's size but for its header lines.
    """

    __slots__ = (
        "eight_bit",
        "fixed_size",
        "header_holes",
        "holes",
        "line_start_holes",
        "template",
    )

    def __init__(self, fragments: Sequence[_WireFragment]) -> None:
        # Put end to end without a loop over them in Python: a personal digest has
        # fifty units, and a reader whose selection is their own pays this alone.
        template = list(chain.from_iterable(map(attrgetter("template"), fragments)))
        holes = list(chain.from_iterable(map(attrgetter("spliced_holes"), fragments)))
        every_hole = range(len(holes))
        header_mask = b"".join(map(attrgetter("header_mask"), fragments))
        line_start_mask = b"".join(map(attrgetter("line_start_mask"), fragments))
        # The last fragment's empty hole has nothing after it; DATA's end follows
        # its fixed bytes directly, as every piece ends with a line end.
        del template[-1], holes[-1]
        template[-1] += END_OF_DATA
        self.template = template
        self.holes = tuple(holes)
        self.header_holes = tuple(compress(every_hole, header_mask))
        self.line_start_holes = tuple(compress(every_hole, line_start_mask))
        self.fixed_size = sum(map(attrgetter("fixed_size"), fragments))
        self.eight_bit = any(map(attrgetter("eight_bit"), fragments))

    def prepared(self, personal: tuple[bytes, ...]) -> PreparedMessage:
        """The message for one reader's values, ready for DATA."""
        filled = [personal[slot][start:end] for slot, start, end in self.holes]
        size = self.fixed_size
        eight_bit = self.eight_bit
        for index in self.header_holes:
            normal, wire = prepared_value(filled[index], at_line_start=True)
            size += len(normal)
            eight_bit = eight_bit or not normal.isascii()
            filled[index] = wire
        for index in self.line_start_holes:
            piece = filled[index]
            if piece[:1] == b".":
                filled[index] = b"." + piece
        parts = self.template.copy()
        parts[1::2] = filled
        return PreparedMessage(b"".join(parts), size, eight_bit)


# The header and boundary lines before the text part, before the HTML part and after it.
_Frame = tuple[tuple[bytes | int, ...], tuple[bytes | int, ...], tuple[bytes | int, ...]]


def _framed(
    settings: Settings,
    subject: str,
    boundary: str,
    text_pieces: Sequence[_Piece],
    html_pieces: Sequence[_Piece],
) -> tuple[list[_Piece], _Frame]:
    """A digest's pieces in order, its two parts framed by its header and boundary lines.

    Also the runs of those lines between the parts (`_Frame`), which a
    personal digest's wire plans hold as fixed runs.
    """
    head, (text_head, html_head), closing = _message_frame(settings, subject, boundary)
    pieces: list[_Piece] = [*head, text_head, *text_pieces, html_head, *html_pieces, closing]
    return pieces, ((*head, text_head), (html_head,), (closing,))


def _message_frame(
    settings: Settings, subject: str, boundary: str
) -> tuple[list[bytes | int], tuple[bytes, bytes], bytes]:
    """A digest's header lines (slots for the reader's), its parts' headers and its closing line."""
    multipart, part_heads, closing = _boundary_lines(boundary)
    from_line, reply_to_line, subject_line, list_id_line = _head_lines(
        settings.from_address, settings.reply_to, subject, settings.list_id
    )
    head: list[bytes | int] = [from_line]
    if reply_to_line:
        head.append(reply_to_line)
    head += [
        _SLOT_TO,
        subject_line,
        _SLOT_DATE,
        _SLOT_MESSAGE_ID,
        b"MIME-Version: 1.0\r\n",
        list_id_line,
        _SLOT_LIST_UNSUBSCRIBE,
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        multipart,
    ]
    return head, part_heads, closing


@lru_cache(maxsize=32)
def _boundary_lines(boundary: str) -> tuple[bytes, tuple[bytes, bytes], bytes]:
    """The multipart header, the plain and HTML parts' headers, and the closing boundary."""
    return (
        multipart_header(boundary),
        (part_header(boundary, "plain"), part_header(boundary, "html")),
        closing_boundary(boundary),
    )


@lru_cache(maxsize=32)
def _head_lines(
    from_address: str, reply_to: str | None, subject: str, list_id: str
) -> tuple[bytes, bytes, bytes, bytes]:
    """From, Reply-To (b"" without one), Subject and List-Id: the same for an edition's digests."""
    return (
        mailbox_setting_header("From", from_address),
        mailbox_setting_header("Reply-To", reply_to) if reply_to else b"",
        unstructured_header("Subject", subject),
        list_id_header(list_id),
    )


class CompiledDigest:
    """One digest MIME-encoded once; `assemble` makes each recipient's message from it."""

    __slots__ = (
        "_cache",
        "_clock",
        "_feedback_papers",
        "_groups",
        "_html_pieces",
        "_layouts",
        "_pieces",
        "_plain_base_url",
        "_plans",
        "_settings",
        "_signer",
        "_unsubscribe_extra",
        "_view_date",
        "envelope_from",
    )

    envelope_from: str

    def __init__(
        self,
        settings: Settings,
        pieces: list[_Piece],
        *,
        html_pieces: Sequence[bytes | _SlotLine | _EncodedUnit],
        groups: list[_EncodedUnit | _FixedRun] | None,
        cache: EncodingCache,
        clock: Callable[[], datetime],
        signer: DkimSigner | None = None,
        feedback_papers: tuple[str, ...] = (),
        view_date: date | None = None,
    ) -> None:
        """Use `CompiledDigest.compile`; this only stores what it prepared."""
        self._settings = settings
        self._signer = signer
        self._pieces = pieces
        # A personal digest's pieces as its wire plans are made of (None: the pieces, whole).
        self._groups = groups
        self._layouts: dict[tuple[_Shape, ...], _Layout] = {}
        self._plans: dict[tuple[_Shape, ...], _WirePlan] = {}
        self._clock = clock
        self._unsubscribe_extra = _list_unsubscribe_urls(settings, "")[1:]
        self.envelope_from = settings.envelope_sender
        self._html_pieces = html_pieces
        self._cache = cache
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
    ) -> CompiledDigest:
        """Encode the digest's fixed headers and both parts once, leaving slots for what varies.

        `feedback_papers` are the papers whose "more/less like this"
        placeholders the body holds, by index (`render.feedback_placeholder`):
        each reader's signed links are filled in there.
        """
        cache = EncodingCache()
        count = len(feedback_papers)
        text_pieces = _encoded_part_pieces(normalised_body(text), "text", link_marker, count, cache)
        html_pieces = _encoded_part_pieces(normalised_body(html), "html", link_marker, count, cache)
        pieces, _ = _framed(
            settings,
            _subject_line(subject, is_test=is_test),
            cache.boundary(edition_date),
            text_pieces,
            html_pieces,
        )
        return cls._of_parts(
            settings,
            pieces,
            html_pieces=html_pieces,
            groups=None,
            edition_date=edition_date,
            clock=clock,
            feedback_papers=feedback_papers,
            cache=cache,
            signer=DkimSigner.from_settings(settings),
        )

    @classmethod
    def compile_units(
        cls,
        settings: Settings,
        *,
        subject: str,
        html_units: Sequence[str],
        text_units: Sequence[str],
        edition_date: date,
        link_marker: str,
        feedback_papers: tuple[str, ...],
        cache: EncodingCache,
        signer: DkimSigner | None,
        clock: Callable[[], datetime] = utc_now,
    ) -> CompiledDigest:
        """A personal digest (`render.PersonalDigest`): the same bytes as `compile` on its parts.

        Each unit (whole lines) is encoded once for every digest that shares
        `cache`, and so is its part of each wire plan: compiling a selection
        costs a lookup per unit, not a pass over its 60 KB. `signer` is the
        settings' (`DkimSigner.from_settings`), loaded once for all of them.
        """

        def encoded(units: Sequence[str], flavour: str) -> list[_EncodedUnit]:
            found = [cache.unit(flavour, link_marker, unit) for unit in units]
            needed = max((unit.feedback_papers for unit in found), default=0)
            if needed > len(feedback_papers):
                raise ValueError(
                    f"the digest holds feedback links for {needed} papers, "
                    f"but names {len(feedback_papers)}"
                )
            return found

        text_pieces = encoded(text_units, "text")
        html_pieces = encoded(html_units, "html")
        pieces, (before_text, before_html, after_html) = _framed(
            settings,
            _subject_line(subject, is_test=False),
            cache.boundary(edition_date),
            text_pieces,
            html_pieces,
        )
        return cls._of_parts(
            settings,
            pieces,
            html_pieces=html_pieces,
            groups=[
                cache.fixed_run(before_text),
                *text_pieces,
                cache.fixed_run(before_html),
                *html_pieces,
                cache.fixed_run(after_html),
            ],
            edition_date=edition_date,
            clock=clock,
            feedback_papers=feedback_papers,
            cache=cache,
            signer=signer,
        )

    @classmethod
    def _of_parts(
        cls,
        settings: Settings,
        pieces: list[_Piece],
        *,
        html_pieces: Sequence[bytes | _SlotLine | _EncodedUnit],
        groups: list[_EncodedUnit | _FixedRun] | None,
        edition_date: date,
        clock: Callable[[], datetime],
        feedback_papers: tuple[str, ...],
        cache: EncodingCache,
        signer: DkimSigner | None,
    ) -> CompiledDigest:
        has_view = any(
            _SLOT_HTML_VIEW in piece.slots for piece in html_pieces if not isinstance(piece, bytes)
        )
        return cls(
            settings,
            pieces,
            html_pieces=html_pieces,
            groups=groups,
            cache=cache,
            clock=clock,
            signer=signer,
            feedback_papers=feedback_papers,
            view_date=edition_date if has_view else None,
        )

    @property
    def html_encoded_size(self) -> int:
        """The HTML part's encoded size without its personal links (Gmail clips at 102 KB)."""
        return _encoded_size(self._html_pieces)

    def _date_header(self) -> bytes:
        return self._cache.date_header(self._clock())

    def _personal_values(self, recipient: Recipient) -> tuple[bytes, ...]:
        """What the slots hold for this recipient: header lines, then the body's URLs.

        The URLs are quoted-printable characters, not yet broken into lines
        (`_Layout` does that).
        """
        unsubscribe, preferences = _personal_urls(self._settings, recipient.subscriber_key)
        message_id = single_line(recipient.message_id)
        values = [
            mailbox_header("To", recipient.name, recipient.email),
            self._date_header(),
            f"Message-ID: {message_id}\r\n".encode("ascii", "replace"),
            _list_unsubscribe_header([f"<{unsubscribe}>", *self._unsubscribe_extra]),
            _url_characters(unsubscribe),
            _url_characters(preferences),
            _url_characters(escape(unsubscribe, quote=True)),
            _url_characters(escape(preferences, quote=True)),
        ]
        if self._view_date is not None:
            settings = self._settings
            view = view_url(
                settings.base_url,
                settings.secret_key,
                recipient.subscriber_key or TEST_SEND_KEY,
                self._view_date,
            )
            values += [_url_characters(view), _url_characters(escape(view, quote=True))]
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
                    text_more, text_less = more.encode("ascii"), less.encode("ascii")
                    values += (text_more, text_less, text_more, text_less)
                else:
                    values += (
                        _url_characters(more),
                        _url_characters(less),
                        _url_characters(escape(more, quote=True)),
                        _url_characters(escape(less, quote=True)),
                    )
        return tuple(values)

    def _layout(self, shapes: tuple[_Shape, ...]) -> _Layout:
        """The layout for these shapes of values, made the first time they are met."""
        return _kept(
            self._layouts,
            shapes,
            lambda: _Layout(self._pieces, shapes, self._signer, self._cache),
            _LAYOUTS_KEPT,
        )

    def _plan(self, shapes: tuple[_Shape, ...]) -> _WirePlan:
        """The wire plan for these shapes of values, made the first time they are met."""
        # Once per message: the common case is one dict lookup, no closure made.
        return self._plans.get(shapes) or _kept(
            self._plans, shapes, lambda: self._new_plan(shapes), _LAYOUTS_KEPT
        )

    def _new_plan(self, shapes: tuple[_Shape, ...]) -> _WirePlan:
        cache = self._cache
        if self._groups is None:
            return _WirePlan([_wire_fragment(_flat(self._pieces), shapes, cache)])
        return _WirePlan([group.fragment(shapes, cache) for group in self._groups])

    def _joined(self, layout: _Layout, values: tuple[bytes, ...]) -> tuple[bytes, list[bytes]]:
        literals = layout.literals
        parts = [literals[0]]
        for index, slot in enumerate(layout.slots, start=1):
            parts.append(values[slot])
            parts.append(literals[index])
        return b"".join(parts), parts

    def _signature(
        self, layout: _Layout, message: bytes, parts: list[bytes], values: tuple[bytes, ...]
    ) -> bytes:
        """The DKIM-Signature header for the message, or b"" without a signer."""
        if self._signer is None:
            return b""
        if layout.canonical_body is None:
            return self._signer.sign(message)[: -len(message) or None]
        return self._sign_from_segments(layout, message, parts, values)

    def assemble(self, recipient: Recipient) -> bytes:
        """The recipient's whole RFC 5322 message, CRLF line ends (not dot-stuffed)."""
        personal = self._personal_values(recipient)
        layout = self._layout(_shapes(personal, b"".join(personal[_FIRST_BODY_SLOT:])))
        values = self._normalised(layout.values(personal))
        message, parts = self._joined(layout, values)
        return self._signature(layout, message, parts, values) + message

    @staticmethod
    def _normalised(values: tuple[bytes, ...]) -> tuple[bytes, ...]:
        # Every writer of a value already ends lines in CRLF; this only checks it.
        return tuple(prepared_value(value, at_line_start=False)[0] for value in values)

    def prepare(self, recipient: Recipient) -> PreparedMessage:
        """The recipient's message ready for DATA: the prepared chunks and values joined.

        The same bytes as `assemble`, dot-stuffed, and its size known without a
        scan. Only the personal values are looked at (see `_WirePlan`).
        """
        personal = self._personal_values(recipient)
        body_values = b"".join(personal[_FIRST_BODY_SLOT:])
        if b"\r" in body_values or b"\n" in body_values:
            # Never this class's own values (quoted-printable characters): a value
            # that would break a line is prepared the slow, safe way, whole.
            return prepare_message(self.assemble(recipient))
        shapes = _shapes(personal, body_values)
        message = self._plan(shapes).prepared(personal)
        if self._signer is None:
            return message
        layout = self._layout(shapes)
        values = self._normalised(layout.values(personal))
        whole, parts = self._joined(layout, values)
        normal, wire = prepared_value(
            self._signature(layout, whole, parts, values), at_line_start=True
        )
        return PreparedMessage(
            wire + message.data,
            len(normal) + message.size,
            message.eight_bit or not normal.isascii(),
        )

    def _sign_from_segments(
        self, layout: _Layout, message: bytes, parts: list[bytes], values: tuple[bytes, ...]
    ) -> bytes:
        """The DKIM-Signature header: the fixed canonical segments hashed with the personal ones."""
        assert self._signer is not None and layout.canonical_body is not None
        literal_index, offset = layout.body_start
        # parts alternate literal, value, literal, ...: literal i is parts[2 * i].
        header_length = sum(len(part) for part in parts[: 2 * literal_index]) + offset
        canonical = layout.canonical_body
        hasher = hashlib.sha256(canonical[0])
        for index in range(literal_index + 1, len(layout.literals)):
            hasher.update(self._signer.canonical_lines(values[layout.slots[index - 1]]))
            hasher.update(canonical[index - literal_index])
        header = self._signer.signature_header(message[:header_length], hasher.digest())
        return header


def _url_characters(url: str) -> bytes:
    """A URL as quoted-printable characters; URLs are almost always plain ASCII, a fast case."""
    if qp_url_safe(url):
        return url.encode("ascii")
    return qp_characters(url.encode("utf-8", "replace")).encode("ascii")


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
    # An empty segment (between two regions) starts and ends at a line end too.
    if signer is None or not all(not seg or seg.endswith(b"\r\n") for seg in segments):
        return (index, blank + 2), None
    canonical = [signer.canonical_lines(segment) for segment in segments[:-1]]
    canonical.append(signer.canonical_body_end(segments[-1]))
    return (index, blank + 2), tuple(canonical)


def _list_unsubscribe_header(urls: list[str]) -> bytes:
    return ("List-Unsubscribe: " + ",\r\n ".join(urls) + "\r\n").encode("ascii")
