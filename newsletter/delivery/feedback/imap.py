"""`newsletter bounces fetch`: bounces and complaints read from an IMAP mailbox.

Every message not already flagged deleted is read (without marking it seen),
parsed into events and recorded; a message whose events were recorded is then
flagged `\\Deleted` at once, so a run that dies half-way never records it twice
(the next run skips flagged messages and expunges them). A message that cannot
be parsed stays, and so does one that is not a bounce or complaint at all,
unless asked to remove those. The mailbox is expunged at the end: it is meant
to be a mailbox for bounces only.

The standard library's imaplib, not an async IMAP library: this is a plain
synchronous command with nothing else to do while it waits on the server (no
event loop to block), parsing and recording are synchronous too, and imaplib
ships and is maintained with CPython, so the feature needs no new dependency.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import imaplib
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from sqlalchemy import Engine

from newsletter.core.errors import BounceMailboxError, ConfigurationError
from newsletter.core.settings import ImapSecurity, Settings
from newsletter.delivery.feedback import FeedbackKind, events_from_message, record_feedback

logger = logging.getLogger(__name__)

# Where a delivered message keeps the envelope recipient (the VERP address): Postfix
# and Dovecot's LDA write Delivered-To and X-Original-To, Exim Envelope-To; the
# bounce's To names it too. Each candidate's token is verified, so extra ones are harmless.
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")


@dataclass
class MailboxReport:
    """What one fetch did."""

    read: int = 0
    recorded: int = 0  # messages whose events were recorded
    events: Counter[FeedbackKind] = field(default_factory=Counter)
    unrecognised_kept: int = 0
    unrecognised_removed: int = 0
    failed: int = 0  # messages that could not be parsed; they stay in the mailbox
    deleted: int = 0

    def line(self) -> str:
        """The summary line the command prints."""
        kinds = ", ".join(f"{self.events[kind]} {kind.value.replace('_', ' ')}" for kind in FeedbackKind)
        parts = [
            f"{self.read} message{'s' if self.read != 1 else ''} read",
            f"events: {kinds}",
            f"unrecognised: {self.unrecognised_kept} kept, {self.unrecognised_removed} removed",
        ]
        if self.failed:
            parts.append(f"{self.failed} could not be parsed and stay in the mailbox")
        parts.append(f"{self.deleted} deleted")
        return "; ".join(parts)


def fetch_feedback(
    engine: Engine,
    settings: Settings,
    *,
    keep: bool = False,
    remove_unrecognised: bool = False,
    now: Callable[[], dt.datetime],
) -> MailboxReport:
    """Read the bounce mailbox, record what it holds, delete what was recorded (unless `keep`)."""
    report = MailboxReport()
    with _session(settings) as imap:
        _select(imap, settings.bounce_imap_mailbox, readonly=keep)
        uids = _command("search", imap.uid("SEARCH", "UNDELETED"))[0].split()
        flagged: list[bytes] = []
        try:
            for uid in uids:
                raw = _fetch(imap, uid)
                if raw is None:  # expunged meanwhile by another client
                    continue
                report.read += 1
                deletable = _process(engine, settings, raw, report, remove_unrecognised, now())
                if deletable and not keep:
                    _command("store", imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"))
                    flagged.append(uid)
        except BaseException:
            # What was recorded goes, even when the run stops half-way (the error matters more).
            if flagged:
                with contextlib.suppress(OSError, imaplib.IMAP4.error):
                    imap.expunge()
            raise
        if flagged:
            _command("expunge", imap.expunge())
            report.deleted = len(flagged)
    return report


def _process(
    engine: Engine,
    settings: Settings,
    raw: bytes,
    report: MailboxReport,
    remove_unrecognised: bool,
    now: dt.datetime,
) -> bool:
    """Parse and record one message; whether it may be deleted."""
    try:
        events = events_from_message(
            raw, envelope_recipients=envelope_recipients(raw), settings=settings, now=now
        )
    except Exception:
        # Anyone on the internet can write to a bounce mailbox: a message the parser
        # fails on is kept for the operator and must not stop the others.
        logger.warning("a message in the bounce mailbox could not be parsed; kept", exc_info=True)
        report.failed += 1
        return False
    if not events:
        if remove_unrecognised:
            report.unrecognised_removed += 1
            return True
        report.unrecognised_kept += 1
        return False
    # A database failure stops the whole run (nothing more is read or deleted).
    record_feedback(engine, events, settings=settings, now=now)
    report.recorded += 1
    report.events.update(event.kind for event in events)
    return True


def envelope_recipients(raw: bytes) -> list[str]:
    """The addresses a delivered message was addressed to, from its delivery headers."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    found: list[str] = []
    for name in ENVELOPE_HEADERS:
        values = [str(value) for value in headers.get_all(name, [])]
        for _, address in getaddresses(values):
            if "@" in address and address not in found:
                found.append(address)
    return found


@contextlib.contextmanager
def _session(settings: Settings) -> Iterator[imaplib.IMAP4]:
    """A logged-in session with the bounce mailbox; `BounceMailboxError` in one line otherwise."""
    host, user, password = (
        settings.bounce_imap_host,
        settings.bounce_imap_user,
        settings.bounce_imap_password,
    )
    if not (host and user and password):
        raise ConfigurationError(
            "the bounce mailbox is not configured: set NEWSLETTER_BOUNCE_IMAP_HOST, "
            "NEWSLETTER_BOUNCE_IMAP_USER and NEWSLETTER_BOUNCE_IMAP_PASSWORD"
        )
    port = settings.bounce_imap_port_or_default
    where = f"{host}:{port}"
    try:
        imap = _connect(settings, host, port)
    except (OSError, imaplib.IMAP4.error) as error:
        raise BounceMailboxError(f"cannot reach the bounce mailbox at {where}: {_why(error)}") from None
    try:
        try:
            imap.login(user, password)
        except imaplib.IMAP4.error as error:
            raise BounceMailboxError(
                f"the bounce mailbox at {where} refused the login of {user!r}: {_why(error)}; "
                "check NEWSLETTER_BOUNCE_IMAP_USER and NEWSLETTER_BOUNCE_IMAP_PASSWORD"
            ) from None
        yield imap
    except BounceMailboxError:
        raise
    except (OSError, imaplib.IMAP4.error) as error:
        raise BounceMailboxError(f"the bounce mailbox at {where} failed: {_why(error)}") from None
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()


def _connect(settings: Settings, host: str, port: int) -> imaplib.IMAP4:
    timeout = settings.bounce_imap_timeout_seconds
    if settings.bounce_imap_security is ImapSecurity.TLS:
        return imaplib.IMAP4_SSL(host, port, ssl_context=_tls_context(settings), timeout=timeout)
    imap = imaplib.IMAP4(host, port, timeout=timeout)
    if settings.bounce_imap_security is ImapSecurity.STARTTLS:
        try:
            imap.starttls(ssl_context=_tls_context(settings))
        except BaseException:
            imap.shutdown()
            raise
    return imap


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """The system's trusted CAs, plus NEWSLETTER_BOUNCE_IMAP_CA_FILE when set."""
    context = ssl.create_default_context()
    if settings.bounce_imap_ca_file is not None:
        context.load_verify_locations(cafile=str(settings.bounce_imap_ca_file))
    return context


def _select(imap: imaplib.IMAP4, mailbox: str, *, readonly: bool) -> None:
    quoted = '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
    status, data = imap.select(quoted, readonly=readonly)
    if status != "OK":
        raise BounceMailboxError(
            f"cannot open the mailbox {mailbox!r}: {_detail(data)}; "
            "check NEWSLETTER_BOUNCE_IMAP_MAILBOX"
        )


def _fetch(imap: imaplib.IMAP4, uid: bytes) -> bytes | None:
    """The whole message, read without setting \\Seen; None if it is gone."""
    data = _command("fetch", imap.uid("FETCH", uid, "(BODY.PEEK[])"))
    for part in data:
        if isinstance(part, tuple) and len(part) == 2 and isinstance(part[1], bytes):
            return part[1]
    return None


def _command(name: str, answer: tuple[str, list[Any]]) -> list[Any]:
    status, data = answer
    if status != "OK":
        raise BounceMailboxError(f"the bounce mailbox refused {name}: {_detail(data)}")
    return data


def _detail(data: Sequence[Any]) -> str:
    first = data[0] if data else None
    if isinstance(first, bytes):
        return first.decode("utf-8", "replace")
    return str(first)


def _why(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer within NEWSLETTER_BOUNCE_IMAP_TIMEOUT_SECONDS"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({error.verify_message})"
    text = error.args[0] if error.args else error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split()) or type(error).__name__
