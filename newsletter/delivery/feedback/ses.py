"""Amazon SES bounce and complaint notifications (the JSON inside an SNS message) as events.

A `Bounce` of type Permanent is a hard bounce; Transient and Undetermined are
soft. A `Complaint` is a complaint unless its feedback type is `not-spam` (a
reader saying the opposite). Delivery and other notifications carry nothing to
record. Our Message-ID comes from the original headers when SES included them,
else from `commonHeaders.messageId`; SES rewrites the envelope sender, so the
Message-ID is what names the delivery.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any

from newsletter.core.errors import SnsMessageError
from newsletter.core.text import single_line
from newsletter.delivery.feedback import FeedbackEvent, FeedbackKind

SOURCE = "ses"
MAX_REASON_LENGTH = 300
MAX_ADDRESS_LENGTH = 320
MAX_MESSAGE_ID_LENGTH = 255
# SES's bounceType: Permanent is hard; Transient and Undetermined may pass.
_BOUNCE_KINDS = {
    "Permanent": FeedbackKind.HARD_BOUNCE,
    "Transient": FeedbackKind.SOFT_BOUNCE,
    "Undetermined": FeedbackKind.SOFT_BOUNCE,
}


def events_from_ses_notification(notification: Any, *, now: dt.datetime) -> list[FeedbackEvent]:
    """The events in one SES notification (already parsed from JSON); `SnsMessageError` if
    it is not shaped like one."""
    document = _mapping(notification, "the SES notification")
    # Notifications say `notificationType`; event publishing (configuration sets) `eventType`.
    kind = document.get("notificationType", document.get("eventType"))
    if not isinstance(kind, str):
        raise SnsMessageError("the SES notification has no notificationType")
    mail = _mapping(document.get("mail", {}), "mail")
    message_id = _message_id(mail)
    if kind == "Bounce":
        return _bounce_events(_mapping(document.get("bounce"), "bounce"), message_id, now)
    if kind == "Complaint":
        return _complaint_events(_mapping(document.get("complaint"), "complaint"), message_id, now)
    return []


def _bounce_events(
    bounce: Mapping[str, Any], message_id: str | None, now: dt.datetime
) -> list[FeedbackEvent]:
    bounce_type = _text(bounce.get("bounceType"), "bounce.bounceType")
    kind = _BOUNCE_KINDS.get(bounce_type)
    if kind is None:
        raise SnsMessageError(f"unknown SES bounceType {bounce_type[:40]!r}")
    sub_type = _optional_text(bounce.get("bounceSubType")) or "General"
    occurred_at = _timestamp(bounce.get("timestamp"), now)
    events = []
    for recipient in _recipients(bounce.get("bouncedRecipients"), "bounce.bouncedRecipients"):
        detail = _optional_text(recipient.get("diagnosticCode")) or _optional_text(
            recipient.get("status")
        )
        reason = f"SES {bounce_type} bounce ({sub_type})" + (f": {detail}" if detail else "")
        events.append(_event(kind, recipient, reason, occurred_at, message_id))
    return [event for event in events if event is not None]


def _complaint_events(
    complaint: Mapping[str, Any], message_id: str | None, now: dt.datetime
) -> list[FeedbackEvent]:
    feedback_type = _optional_text(complaint.get("complaintFeedbackType"))
    if feedback_type == "not-spam":
        return []
    occurred_at = _timestamp(complaint.get("timestamp"), now)
    reason = f"SES complaint ({feedback_type or 'unspecified'})"
    events = (
        _event(FeedbackKind.COMPLAINT, recipient, reason, occurred_at, message_id)
        for recipient in _recipients(
            complaint.get("complainedRecipients"), "complaint.complainedRecipients"
        )
    )
    return [event for event in events if event is not None]


def _event(
    kind: FeedbackKind,
    recipient: Mapping[str, Any],
    reason: str,
    occurred_at: dt.datetime,
    message_id: str | None,
) -> FeedbackEvent | None:
    address = _address(recipient.get("emailAddress"))
    if address is None:
        return None
    return FeedbackEvent(
        kind=kind,
        address=address,
        reason=single_line(reason)[:MAX_REASON_LENGTH],
        source=SOURCE,
        occurred_at=occurred_at,
        message_id=message_id,
    )


def _recipients(value: Any, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise SnsMessageError(f"the SES notification's {where} is not a list")
    return [_mapping(item, where) for item in value]


def _address(value: Any) -> str | None:
    """The bare address of a recipient entry (SES may write `"Name" <a@b>`), or None."""
    if not isinstance(value, str) or len(value) > MAX_ADDRESS_LENGTH:
        return None
    address = single_line(parseaddr(value)[1])
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or " " in address:
        return None
    return address


def _message_id(mail: Mapping[str, Any]) -> str | None:
    """Our Message-ID, `<…>`, from the original headers or `commonHeaders`, if SES gave it."""
    candidates: list[Any] = []
    headers = mail.get("headers")
    if isinstance(headers, list):
        candidates.extend(
            header.get("value")
            for header in headers
            if isinstance(header, dict)
            and isinstance(header.get("name"), str)
            and header["name"].lower() == "message-id"
        )
    common = mail.get("commonHeaders")
    if isinstance(common, dict):
        candidates.append(common.get("messageId"))
    for candidate in candidates:
        if isinstance(candidate, str):
            cleaned = single_line(candidate).strip("<> ")
            if cleaned and " " not in cleaned and len(cleaned) + 2 <= MAX_MESSAGE_ID_LENGTH:
                return f"<{cleaned}>"
    return None


def _timestamp(value: Any, now: dt.datetime) -> dt.datetime:
    """SES's ISO 8601 time (`2026-03-05T07:00:01.000Z`), else `now`; never in the future."""
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return now
        if moment.tzinfo is not None:
            return min(moment.astimezone(dt.UTC), now)
    return now


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise SnsMessageError(f"the SES notification's {where} is not an object")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SnsMessageError(f"the SES notification's {where} is not a string")
    return value


def _optional_text(value: Any) -> str | None:
    return single_line(value) if isinstance(value, str) and value.strip() else None
