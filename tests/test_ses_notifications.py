"""SES notifications read into feedback events: the shapes SES writes, and the odd ones."""

from __future__ import annotations

import datetime as dt

import pytest

from newsletter.core.errors import SnsMessageError
from newsletter.delivery.feedback import FeedbackKind
from newsletter.delivery.feedback.ses import events_from_ses_notification
from tests.support.sns import ses_bounce, ses_complaint

NOW = dt.datetime(2026, 3, 3, 12, 0, tzinfo=dt.UTC)
MESSAGE_ID = "<20260302.17.digest@news.example.org>"


def test_a_permanent_bounce_is_hard_with_its_reason_time_and_message_id() -> None:
    [event] = events_from_ses_notification(ses_bounce("ada@example.org", MESSAGE_ID), now=NOW)
    assert event.kind is FeedbackKind.HARD_BOUNCE
    assert event.address == "ada@example.org"
    assert event.reason == "SES Permanent bounce (General): smtp; 550 5.1.1 user unknown"
    assert event.source == "ses"
    assert event.occurred_at == dt.datetime(2026, 3, 2, 7, 1, 2, tzinfo=dt.UTC)
    assert event.message_id == MESSAGE_ID
    assert event.delivery_id is None


def test_event_publishing_shape_and_common_headers_only() -> None:
    notification = ses_bounce("Ada <ada@example.org>", "20260302.17.digest@news.example.org")
    notification["eventType"] = notification.pop("notificationType")
    del notification["mail"]["headers"]
    [event] = events_from_ses_notification(notification, now=NOW)
    assert event.address == "ada@example.org"
    assert event.message_id == MESSAGE_ID  # SES may drop the angle brackets


@pytest.mark.parametrize(
    ("bounce_type", "kind"),
    [("Transient", FeedbackKind.SOFT_BOUNCE), ("Undetermined", FeedbackKind.SOFT_BOUNCE)],
)
def test_other_bounce_types_are_soft(bounce_type: str, kind: FeedbackKind) -> None:
    notification = ses_bounce("ada@example.org", MESSAGE_ID, bounce_type=bounce_type)
    [event] = events_from_ses_notification(notification, now=NOW)
    assert event.kind is kind


def test_a_complaint_but_not_a_not_spam_report() -> None:
    [event] = events_from_ses_notification(ses_complaint("bob@example.org", MESSAGE_ID), now=NOW)
    assert (event.kind, event.reason) == (FeedbackKind.COMPLAINT, "SES complaint (abuse)")
    not_spam = ses_complaint("bob@example.org", MESSAGE_ID)
    not_spam["complaint"]["complaintFeedbackType"] = "not-spam"
    assert events_from_ses_notification(not_spam, now=NOW) == []


def test_a_time_in_the_future_or_unreadable_is_now() -> None:
    future = ses_bounce("ada@example.org", MESSAGE_ID)
    future["bounce"]["timestamp"] = "2099-01-01T00:00:00Z"
    garbled = ses_bounce("ada@example.org", MESSAGE_ID)
    garbled["bounce"]["timestamp"] = "yesterday"
    for notification in (future, garbled):
        [event] = events_from_ses_notification(notification, now=NOW)
        assert event.occurred_at == NOW


def test_a_hostile_message_id_is_dropped_not_stored() -> None:
    notification = ses_bounce("ada@example.org", "<a b>\r\nX-Injected: yes")
    del notification["mail"]["commonHeaders"]
    [event] = events_from_ses_notification(notification, now=NOW)
    assert event.message_id is None


@pytest.mark.parametrize(
    "notification",
    [None, [], "Bounce", {}, {"notificationType": ["Bounce"]}, {"notificationType": "Bounce"}],
)
def test_what_is_no_ses_notification_is_refused(notification: object) -> None:
    with pytest.raises(SnsMessageError):
        events_from_ses_notification(notification, now=NOW)
