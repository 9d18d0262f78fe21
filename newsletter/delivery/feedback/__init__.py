"""Bounces and complaints reported after sending: parse them, record them.

Whatever brings a report in (`newsletter bounces serve`, an IMAP mailbox,
Amazon SES), it goes through the same two steps:

- `events_from_message(raw, ...)` reads a raw report (RFC 3464 DSN, ARF
  complaint, or a non-standard bounce) into `FeedbackEvent`s (`parsing`);
  an SES notification can build `FeedbackEvent`s itself;
- `record_feedback(engine, events, ...)` lands each in its ledger row and acts
  on its reader: bounced, complained, suppressed (`recording`).

`receiver` is the SMTP server of `newsletter bounces serve`; `imap` reads the
bounce mailbox for `newsletter bounces fetch`; `ses` turns Amazon SES
notifications (`POST /hooks/ses`) into events.
"""

from newsletter.delivery.feedback.events import FeedbackEvent, FeedbackKind, FeedbackSummary
from newsletter.delivery.feedback.parsing import events_from_message
from newsletter.delivery.feedback.recording import record_feedback

__all__ = [
    "FeedbackEvent",
    "FeedbackKind",
    "FeedbackSummary",
    "events_from_message",
    "record_feedback",
]
