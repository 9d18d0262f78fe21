"""Reading bounce and complaint reports: raw message bytes in, `FeedbackEvent`s out.

These shapes are understood, tried in this order:

1. an abuse report (ARF, RFC 5965): a `message/feedback-report` part;
2. a delivery status notification (RFC 3464): a `message/delivery-status`
   part, one event per recipient block. `Action: failed` with a 5.x.x
   `Status` is a hard bounce, a 4.x.x one (or `Action: delayed`) a soft one;
   `delivered`, `relayed` and `expanded` are no event;
3. Microsoft's older JMRP complaint: our message returned with Hotmail's
   `X-HmXmrOriginalRecipient` header;
4. any other bounce: Mailman's `flufl.bounce` detectors (Exim, qmail, old
   Sendmail, Exchange, Yahoo, ... in plain text), temporary or permanent.

Which delivery a report is about comes from the VERP token in the address it
was sent to (`verp.verp_delivery_id`), checked against the secret key; the
quoted Message-ID (when it is one of ours) and the recipient's address are
kept for `record_feedback` to match when there is no token.

A report sent to a VERP address whose token does not verify is forged (or
mangled): it yields nothing. So does anything not understood (an
auto-reply, garbage, a parser failure): `events_from_message` never raises
on what a stranger can send; it logs one line and returns an empty list.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import datetime

from flufl.bounce import all_failures

from newsletter.core.errors import InvalidTokenError
from newsletter.core.settings import Settings
from newsletter.core.text import single_line
from newsletter.delivery.feedback.events import FeedbackEvent, FeedbackKind
from newsletter.delivery.verp import is_bounce_address, verp_delivery_id

__all__ = ["UnrecognisedReport", "events_from_message", "parse_report", "read_report"]

logger = logging.getLogger(__name__)

MAX_REASON_LENGTH = 300
MAX_PARTS = 200  # a report has a handful; a message with thousands is not one
MAX_RECIPIENT_BLOCKS = 100
MAX_SCANNED_BYTES = 1024 * 1024  # how far a text bounce is searched for our Message-ID
# What a recipient address in a report may look like: no spaces, no controls, one @.
_ADDRESS = re.compile(r"[^\s@<>\"(),;:\\\[\]]{1,64}@[A-Za-z0-9.-]{1,253}")
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")
_QUOTED_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^<>\s]{1,250}>)")
_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
# An SMTP reply in a bounce's text: "550 5.1.1 ..." or "550-5.1.1 ..." or "550 ...".
_SMTP_REPLY = re.compile(r"\b([45]\d\d)[ -](?:#?([45]\.\d{1,3}\.\d{1,3})\s*)?(.*)")
# Headers of a report that may carry the address it was sent to (a VERP token).
_DESTINATION_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "To")
_COMPLAINT_TYPES = frozenset({"abuse", "fraud"})
_NO_EVENT_TYPES = frozenset({"not-spam"})


class UnrecognisedReport(ValueError):
    """A message that is no report we can use; the text says why (for the log)."""


def events_from_message(
    raw: bytes, *, envelope_recipients: Sequence[str], settings: Settings, now: datetime
) -> list[FeedbackEvent]:
    """The bounces and complaints a raw report tells of; [] for anything else (never raises)."""
    events, why_none = read_report(
        raw, envelope_recipients=envelope_recipients, settings=settings, now=now
    )
    if why_none is not None:
        logger.warning("unrecognised report (%d bytes): %s", len(raw), why_none)
    return events


def read_report(
    raw: bytes, *, envelope_recipients: Sequence[str], settings: Settings, now: datetime
) -> tuple[list[FeedbackEvent], str | None]:
    """The events of a report, and when there are none, why (never raises)."""
    try:
        events = parse_report(
            raw, envelope_recipients=envelope_recipients, settings=settings, now=now
        )
    except UnrecognisedReport as why:
        return [], str(why)
    except Exception as error:  # hostile input must never take the receiver down
        return [], f"cannot parse it ({type(error).__name__}: {single_line(str(error))[:200]})"
    return events, None if events else "it reports nothing to act on (delivered, not-spam)"


def parse_report(
    raw: bytes, *, envelope_recipients: Sequence[str], settings: Settings, now: datetime
) -> list[FeedbackEvent]:
    """The events a report tells of, or UnrecognisedReport saying why there are none."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    parts = list(_limited_walk(message))
    delivery_id = _delivery_from_envelope(settings, envelope_recipients)
    if delivery_id is None:
        delivery_id = _delivery_from_headers(settings, message)
    report = _find_part(parts, "message/feedback-report")
    if report is not None:
        return _complaints(report, parts, settings, now=now, delivery_id=delivery_id)
    status = _find_part(parts, "message/delivery-status")
    if status is not None:
        events = _dsn_events(status, parts, settings, now=now, delivery_id=delivery_id)
        if events is not None:
            return events
    legacy = _hotmail_complaint(parts, settings, now=now, delivery_id=delivery_id)
    if legacy is not None:
        return legacy
    return _text_bounce_events(message, raw, settings, now=now, delivery_id=delivery_id)


# ---- which delivery ---------------------------------------------------------------------------


def _delivery_from_envelope(settings: Settings, recipients: Sequence[str]) -> int | None:
    """The delivery named by a token in the envelope recipient; a bad token refuses the report."""
    for recipient in recipients:
        try:
            delivery_id = verp_delivery_id(settings, recipient)
        except InvalidTokenError:
            raise UnrecognisedReport(
                f"the token of {single_line(recipient)[:100]!r} does not verify (forged?)"
            ) from None
        if delivery_id is not None:
            return delivery_id
    return None


def _delivery_from_headers(settings: Settings, message: email.message.Message) -> int | None:
    """A token in the headers that name where the report went (a relay's bounce mailbox)."""
    for name in _DESTINATION_HEADERS:
        for value in message.get_all(name, []):
            for candidate in _ADDRESS.findall(str(value)):
                try:
                    delivery_id = verp_delivery_id(settings, candidate)
                except InvalidTokenError:
                    continue  # a header is anyone's to write; only the envelope refuses
                if delivery_id is not None:
                    return delivery_id
    return None


def _delivery_from_field(settings: Settings, value: str | None) -> int | None:
    """A verified token in a report field such as Original-Mail-From, or None."""
    if not value:
        return None
    for candidate in _ADDRESS.findall(value):
        try:
            delivery_id = verp_delivery_id(settings, candidate)
        except InvalidTokenError:
            continue
        if delivery_id is not None:
            return delivery_id
    return None


# ---- the message's parts ----------------------------------------------------------------------


def _limited_walk(message: email.message.Message) -> Iterator[email.message.Message]:
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            raise UnrecognisedReport(f"more than {MAX_PARTS} MIME parts")
        yield part


def _find_part(
    parts: Sequence[email.message.Message], content_type: str
) -> email.message.Message | None:
    for part in parts:
        if part.get_content_type() == content_type:
            return part
    return None


def _field_blocks(part: email.message.Message) -> list[email.message.Message]:
    """The header blocks of a report part (per-message, then per-recipient)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, email.message.Message)]
    # A part the parser left as text (a broken boundary, base64): read it as header blocks.
    text = part.get_payload(decode=True)
    if not isinstance(text, bytes):
        return []
    blocks = re.split(rb"\r?\n[ \t]*\r?\n", text.strip())
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    return [parser.parsebytes(block + b"\n") for block in blocks if block.strip()]


def _field(block: email.message.Message, name: str) -> str | None:
    value = block.get(name)
    if value is None:
        return None
    return single_line(str(value)).strip() or None


def _typed_address(value: str | None) -> str:
    """The address of `rfc822; user@example.org` (or a bare one); "" when none is there."""
    if not value:
        return ""
    _, semicolon, rest = value.partition(";")
    match = _ADDRESS.search(rest if semicolon else value)
    return match.group(0) if match else ""


def _original_headers(
    parts: Sequence[email.message.Message],
) -> email.message.Message | None:
    """The headers of our returned message: a message/rfc822 or text/rfc822-headers part."""
    for part in parts:
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                first = payload[0]
                if isinstance(first, email.message.Message):
                    return first
        elif content_type == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
                return parser.parsebytes(text)
    return None


def _our_message_id(settings: Settings, value: str | None) -> str | None:
    """A Message-ID of ours (`<...@sender-domain>`) in a header value, else None."""
    if not value:
        return None
    match = _MESSAGE_ID.search(value)
    if match is None:
        return None
    message_id = match.group(0)
    if not message_id.lower().endswith(f"@{settings.sender_domain.lower()}>"):
        return None
    return message_id


def _clip(reason: str) -> str:
    return single_line(reason)[:MAX_REASON_LENGTH]


def _usable_address(settings: Settings, address: str) -> str:
    """The address unless it is ours (a bounce of a bounce); "" when unusable."""
    if not address or is_bounce_address(settings, address):
        return ""
    return address if _ADDRESS.fullmatch(address) else ""


# ---- ARF complaints ---------------------------------------------------------------------------


def _complaints(
    report: email.message.Message,
    parts: Sequence[email.message.Message],
    settings: Settings,
    *,
    now: datetime,
    delivery_id: int | None,
) -> list[FeedbackEvent]:
    blocks = _field_blocks(report)
    if not blocks:
        raise UnrecognisedReport("a feedback report without fields")
    fields = blocks[0]
    feedback_type = (_field(fields, "Feedback-Type") or "").lower()
    if feedback_type in _NO_EVENT_TYPES:
        return []
    if feedback_type not in _COMPLAINT_TYPES:
        raise UnrecognisedReport(f"feedback type {feedback_type[:40]!r} is not a complaint")
    original = _original_headers(parts)
    if delivery_id is None:
        delivery_id = _delivery_from_field(settings, _field(fields, "Original-Mail-From"))
    if delivery_id is None and original is not None:
        delivery_id = _delivery_from_field(settings, _field(original, "Return-Path"))
    message_id = _our_message_id(settings, _field(original, "Message-ID") if original else None)
    recipients = [
        _usable_address(settings, _typed_address(value))
        for value in fields.get_all("Original-Rcpt-To", [])
    ][:MAX_RECIPIENT_BLOCKS]
    recipients = [address for address in recipients if address]
    if not recipients and original is not None and delivery_id is None and message_id is None:
        # Mailbox providers redact To (Microsoft writes a placeholder): a last resort only.
        recipients = [_usable_address(settings, _typed_address(_field(original, "To")))]
    if not recipients:
        recipients = [""]
    if recipients == [""] and delivery_id is None and message_id is None:
        raise UnrecognisedReport("a complaint naming no recipient, delivery or message of ours")
    agent = _field(fields, "User-Agent")
    reason = f"complaint: feedback type {feedback_type}" + (f" ({agent})" if agent else "")
    return [
        FeedbackEvent(
            kind=FeedbackKind.COMPLAINT,
            address=address,
            reason=_clip(reason),
            source="arf",
            occurred_at=now,
            delivery_id=delivery_id,
            message_id=message_id,
        )
        for address in dict.fromkeys(recipients)
    ]


def _hotmail_complaint(
    parts: Sequence[email.message.Message],
    settings: Settings,
    *,
    now: datetime,
    delivery_id: int | None,
) -> list[FeedbackEvent] | None:
    """Microsoft's older JMRP complaint: not ARF, our message attached as it arrived.

    Hotmail/Outlook.com stamp `X-HmXmrOriginalRecipient` on the copy they
    deliver; only their feedback loop sends such a copy back. None when this is not one.
    """
    original = _original_headers(parts)
    if original is None or original.get("X-HmXmrOriginalRecipient") is None:
        return None
    message_id = _our_message_id(settings, _field(original, "Message-ID"))
    if delivery_id is None:
        delivery_id = _delivery_from_field(settings, _field(original, "Return-Path"))
    address = _usable_address(
        settings, _typed_address(_field(original, "X-HmXmrOriginalRecipient"))
    )
    if not address and delivery_id is None and message_id is None:
        raise UnrecognisedReport("a Microsoft complaint naming no recipient or message of ours")
    return [
        FeedbackEvent(
            kind=FeedbackKind.COMPLAINT,
            address=address,
            reason="complaint: Microsoft JMRP (legacy format)",
            source="jmrp",
            occurred_at=now,
            delivery_id=delivery_id,
            message_id=message_id,
        )
    ]


# ---- RFC 3464 delivery status notifications ---------------------------------------------------


def _bounce_kind(action: str, status: str | None) -> FeedbackKind | None:
    """Hard or soft from Action and Status; None for a recipient that was delivered."""
    match = _STATUS.search(status or "")
    status_class = match.group(1) if match else None
    if action == "failed":
        return FeedbackKind.SOFT_BOUNCE if status_class == "4" else FeedbackKind.HARD_BOUNCE
    if action == "delayed":
        return FeedbackKind.SOFT_BOUNCE
    if action in ("delivered", "relayed", "expanded"):
        return None
    # No (or an unknown) Action: the status class decides.
    if status_class == "5":
        return FeedbackKind.HARD_BOUNCE
    if status_class == "4":
        return FeedbackKind.SOFT_BOUNCE
    return None


def _dsn_events(
    status_part: email.message.Message,
    parts: Sequence[email.message.Message],
    settings: Settings,
    *,
    now: datetime,
    delivery_id: int | None,
) -> list[FeedbackEvent] | None:
    """One event per failed or delayed recipient; None when the part holds no recipient."""
    blocks = _field_blocks(status_part)
    recipient_blocks = [
        block for block in blocks if block.get("Final-Recipient") or block.get("Action")
    ][:MAX_RECIPIENT_BLOCKS]
    if not recipient_blocks:
        return None
    original = _original_headers(parts)
    message_id = _our_message_id(settings, _field(original, "Message-ID") if original else None)
    events = []
    for block in recipient_blocks:
        action = (_field(block, "Action") or "").lower()
        status = _field(block, "Status")
        kind = _bounce_kind(action, status)
        if kind is None:
            continue
        address = _usable_address(
            settings,
            _typed_address(_field(block, "Original-Recipient"))
            or _typed_address(_field(block, "Final-Recipient")),
        )
        if not address and delivery_id is None and message_id is None:
            continue
        status_match = _STATUS.search(status or "")
        code = status_match.group(0) if status_match else (action or "failed")
        diagnostic = _field(block, "Diagnostic-Code") or ""
        _, _, diagnostic_text = diagnostic.partition(";")
        said = diagnostic_text.strip() or diagnostic
        reason = said if code in said else f"{code} {said}".strip()
        events.append(
            FeedbackEvent(
                kind=kind,
                address=address,
                reason=_clip(reason),
                source="dsn",
                occurred_at=now,
                delivery_id=delivery_id,
                message_id=message_id,
            )
        )
    if not events and not any(
        (_field(block, "Action") or "").lower() in ("delivered", "relayed", "expanded")
        for block in recipient_blocks
    ):
        raise UnrecognisedReport("a delivery status notification naming nobody of ours")
    return events


# ---- everything else: flufl.bounce's detectors ------------------------------------------------


def _text_bounce_events(
    message: email.message.Message,
    raw: bytes,
    settings: Settings,
    *,
    now: datetime,
    delivery_id: int | None,
) -> list[FeedbackEvent]:
    temporary, permanent = all_failures(message)
    if not temporary and not permanent:
        raise UnrecognisedReport("neither a delivery status notification nor a known bounce")
    message_id = next(
        (
            ours
            for quoted in _QUOTED_MESSAGE_ID.finditer(raw[:MAX_SCANNED_BYTES])
            if (ours := _our_message_id(settings, quoted.group(1).decode("ascii", "replace")))
        ),
        None,
    )
    text = _plain_text(message)
    events = []
    for kind, found in (
        (FeedbackKind.HARD_BOUNCE, permanent),
        (FeedbackKind.SOFT_BOUNCE, temporary - permanent),
    ):
        for item in sorted(found)[:MAX_RECIPIENT_BLOCKS]:
            address = _usable_address(settings, item.decode("utf-8", "replace").strip())
            if not address and delivery_id is None and message_id is None:
                continue
            events.append(
                FeedbackEvent(
                    kind=kind,
                    address=address,
                    reason=_clip(_text_reason(text, address, kind)),
                    source="bounce-text",
                    occurred_at=now,
                    delivery_id=delivery_id,
                    message_id=message_id,
                )
            )
    if not events:
        raise UnrecognisedReport("a bounce naming nobody of ours")
    return events


def _plain_text(message: email.message.Message) -> str:
    chunks = []
    for part in message.walk():
        if part.get_content_maintype() == "text" and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                chunks.append(payload.decode("utf-8", "replace"))
        if sum(map(len, chunks)) > 100_000:
            break
    return "\n".join(chunks)


def _text_reason(text: str, address: str, kind: FeedbackKind) -> str:
    """The SMTP reply a text bounce quotes near the address (or anywhere), else a plain word."""
    lines = text.splitlines()
    start = 0
    if address:
        start = next((i for i, line in enumerate(lines) if address.lower() in line.lower()), 0)
    for line in lines[start : start + 8] + lines[:200]:
        match = _SMTP_REPLY.search(line)
        if match is not None:
            code, status, rest = match.groups()
            return " ".join(piece for piece in (code, status, rest) if piece)
    return "permanent failure" if kind is FeedbackKind.HARD_BOUNCE else "temporary failure"
