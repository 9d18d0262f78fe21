"""One exception hierarchy for the whole product.

Every error a user or operator can cause derives from `NewsletterError`; the CLI
and the web app print its message as one line, never a traceback.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigurationError(NewsletterError, ValueError):
    """A setting is missing or has a value the product cannot run with."""


class IngestError(NewsletterError):
    """A paper source could not be read or is not in the expected shape."""


class SourceUnavailableError(IngestError, ConnectionError):
    """A remote source did not answer usefully after every retry."""


class MalformedSourceError(IngestError, ValueError):
    """A file or response is not in the shape the source promises."""


class RenderError(NewsletterError):
    """A template could not be rendered into an email or a page."""


class EditionNotFoundError(NewsletterError, LookupError):
    """No edition (or no papers) exists for the requested date."""


class SubscriberError(NewsletterError):
    """Base for errors about one subscriber."""


class InvalidEmailError(SubscriberError, ValueError):
    """An address is not a valid email address."""


class SubscriberNotFoundError(SubscriberError, LookupError):
    """No subscriber has the given address."""


class NoDigestThatDayError(SubscriberError, LookupError):
    """A reader gets no digest on the day asked about: a weekly reader on another weekday.

    `weekly_day` is the weekday they do get it (0 = Monday).
    """

    def __init__(self, message: str, *, weekly_day: int) -> None:
        super().__init__(message)
        self.weekly_day = weekly_day


class InvalidSubscriberDetailsError(SubscriberError, ValueError):
    """A name or topic choice sent with a sign-up or preferences form is not acceptable."""


class InvalidTokenError(NewsletterError, ValueError):
    """A signed link token was tampered with, malformed or has expired."""


class ExpiredTokenError(InvalidTokenError):
    """A signed link token is genuine but older than its purpose allows."""


class DeliveryError(NewsletterError):
    """Sending could not start or continue."""


class ImportFileError(SubscriberError, ValueError):
    """A subscriber list that cannot be imported at all (no `email` column, not UTF-8 text)."""


class BounceMailboxError(NewsletterError, ConnectionError):
    """The bounce mailbox (IMAP) could not be reached, logged in to or read."""


class SnsMessageError(NewsletterError, ValueError):
    """An Amazon SNS or SES notification is not in the documented shape."""


class SnsSignatureError(NewsletterError, PermissionError):
    """An Amazon SNS message is not signed by SNS, or comes from a topic not allowed."""


class SnsUnavailableError(NewsletterError, ConnectionError):
    """Amazon SNS could not be reached just now (a signing certificate, a subscription URL)."""
