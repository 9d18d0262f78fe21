"""`newsletter bounces fetch`: bounces and complaints read from an IMAP mailbox.

Every message not already flagged deleted is read (without marking it seen),
parsed into events (`events_from_message`) and recorded (`record_feedback`).
A message whose events were recorded is flagged `\\Deleted` at once, so a run
that dies half-way does not read it again (the next run skips flagged messages
and expunges them; recording is idempotent anyway); the mailbox is expunged
at the end, being a mailbox for bounces only. A message that is no bounce or
complaint (an auto-reply, spam, garbage) stays for the operator to look at,
unless asked to remove those; so does every message not yet recorded when
the database fails.

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

from sqlalchemy import Engine

from newsletter.core.errors import BounceMailboxError, ConfigurationError
from newsletter.core.settings import ImapSecurity, Settings
from newsletter.delivery.feedback import (
    FeedbackKind,
    FeedbackSummary,
    events_from_message,
    record_feedback,
)

logger = logging.getLogger(__name__)


@dataclass
class MailboxReport:
    """What one fetch did."""

    read: int = 0
    recorded: int = 0  # messages whose events were recorded
    events: Counter[FeedbackKind] = field(default_factory=Counter)
    unrecognised_kept: int = 0
    unrecognised_removed: int = 0
    deleted: int = 0
    summary: FeedbackSummary = field(default_factory=FeedbackSummary)

    def line(self) -> str:
        """The summary line the command prints."""
        kinds = ", ".join(
            _count(self.events[kind], kind.value.replace("_", " ")) for kind in FeedbackKind
        )
        return "; ".join(
            [
                f"{_count(self.read, 'message')} read",
                f"events: {kinds}",
                f"unrecognised: {self.unrecognised_kept} kept, {self.unrecognised_removed} removed",
                f"{self.summary.recorded} new, {self.summary.duplicates} seen before, "
                f"{self.summary.unknown} about no reader of ours",
                f"{self.deleted} deleted",
            ]
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


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
    remove_unrecognised = remove_unrecognised and not keep
    with _session(settings) as imap:
        _select(imap, settings.bounce_imap_mailbox, readonly=keep)
        found = _command("search", imap.uid("SEARCH", "UNDELETED"))[0]
        uids = found.decode("ascii").split() if isinstance(found, bytes) else []
        flagged: list[str] = []
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
    # A message in a mailbox has no SMTP envelope left: the parser reads the VERP
    # address from the headers the delivering server added (Delivered-To, X-Original-To, ...).
    events = events_from_message(raw, envelope_recipients=(), settings=settings, now=now)
    if not events:
        if remove_unrecognised:
            report.unrecognised_removed += 1
            return True
        report.unrecognised_kept += 1
        return False
    # A database failure stops the whole run: nothing more is read, this message stays.
    report.summary += record_feedback(engine, events, settings=settings, now=now)
    report.recorded += 1
    report.events.update(event.kind for event in events)
    return True


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
        raise BounceMailboxError(
            f"cannot reach the bounce mailbox at {where}: {_why(error)}"
        ) from None
    try:
        try:
            _login(imap, user, password)
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


def _login(imap: imaplib.IMAP4, user: str, password: str) -> None:
    """LOGIN, whose arguments imaplib sends as ASCII; AUTHENTICATE PLAIN (UTF-8) otherwise."""
    if user.isascii() and password.isascii():
        imap.login(user, password)
    else:
        imap.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())


def _connect(settings: Settings, host: str, port: int) -> imaplib.IMAP4:
    timeout = settings.bounce_imap_timeout_seconds
    if settings.bounce_imap_security is ImapSecurity.TLS:
        return imaplib.IMAP4_SSL(host, port, ssl_context=_tls_context(settings), timeout=timeout)
    imap = imaplib.IMAP4(host, port, timeout=timeout)
    if settings.bounce_imap_security is ImapSecurity.STARTTLS:
        try:
            imap.starttls(ssl_context=_tls_context(settings))
        except BaseException:
            with contextlib.suppress(OSError):  # the failed handshake may have closed it
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


def _fetch(imap: imaplib.IMAP4, uid: str) -> bytes | None:
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
    text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
    return " ".join(text.split()).rstrip(".")


def _why(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer within NEWSLETTER_BOUNCE_IMAP_TIMEOUT_SECONDS"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({error.verify_message})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = error.args[0] if error.args else error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split()).rstrip(".") or type(error).__name__
