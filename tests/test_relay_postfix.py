"""A real relay in the loop: `newsletter` sends every kind of message through Debian's Postfix.

Postfix (tests/support/postfix.py) advertises SIZE and PIPELINING as real relays
do, unlike aiosmtpd and smtp-sink. A tap between the two records the
connection. The test checks what a receiving mailbox gets: each message
delivered into the Maildir byte for byte as it was sent, under nothing but the
trace headers Postfix adds (Return-Path, Delivered-To, Received); nothing in
Postfix's log but deliveries; SIZE declared with the message's true size and
MAIL, RCPT and DATA written at once.
"""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest

from tests.support.cli import cli_environment, run_cli
from tests.support.message_kinds import DAY, RECIPIENTS, papers_database, send_every_kind
from tests.support.postfix import (
    MESSAGE_SIZE_LIMIT,
    SmtpTap,
    TappedSession,
    running_postfix,
)

# Postfix starts and stops, and `newsletter` runs five times.
pytestmark = pytest.mark.timeout(300)

# What a delivering MTA puts above a message; anything else above ours is a rewrite.
TRACE_HEADERS = {"return-path", "x-original-to", "delivered-to", "received"}
DELIVERED = "status=sent (delivered to maildir)"
# Postfix's log levels that mean something went wrong (postconf(5), maillog).
COMPLAINTS = re.compile(r"\b(warning|error|fatal|panic|reject|discard|hold):", re.IGNORECASE)
# The edition's deliveries and the test copy (newsletter.delivery.connection.transmit); the
# confirmation and welcome emails go through aiosmtplib's sendmail, which does not pipeline.
PIPELINED = {RECIPIENTS[kind] for kind in ("digest-trending", "digest-personal", "test-copy")}
TRANSACTION = re.compile(
    rb"MAIL FROM:(?P<mail>[^\r]*)\r\nRCPT TO:<(?P<rcpt>[^>\r]*)>\r\nDATA\r\n"
    rb"(?P<data>.*?\r\n)\.\r\n",
    re.DOTALL,
)


def _unstuffed(data: bytes) -> bytes:
    """The message as the client meant it: DATA's dot-stuffing (RFC 5321 4.5.2) undone."""
    return re.sub(rb"(^|\r\n)\.\.", rb"\1.", data)


def _trace_header_names(block: bytes) -> list[str]:
    """The names of the header fields in a header block (continuation lines skipped)."""
    return [
        line.split(b":", 1)[0].decode().lower()
        for line in block.split(b"\r\n")
        if line and not line[:1].isspace()
    ]


def _message_id(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw)["Message-ID"])


def test_every_message_kind_is_delivered_by_postfix_as_it_was_sent(tmp_path: Path) -> None:
    url = papers_database(tmp_path)
    with running_postfix() as relay, SmtpTap(relay.port) as tap:
        send_every_kind(url, tap.port, tmp_path)
        delivered = relay.wait_for_deliveries(len(RECIPIENTS))
        log = relay.wait_for_log(DELIVERED, len(RECIPIENTS))
    sessions = [s for s in tap.sessions if b"MAIL FROM:" in s.sent_by("client")]
    print(log)

    # Postfix accepted and delivered each one, and had nothing to complain about.
    assert len(delivered) == len(RECIPIENTS), log
    assert log.count(DELIVERED) == len(RECIPIENTS), log
    assert [line for line in log.splitlines() if COMPLAINTS.search(line)] == []

    by_id = {_message_id(raw): raw.replace(b"\n", b"\r\n") for raw in delivered}
    recipients = []
    pipelined = 0
    for session in sessions:
        offered = session.sent_by("server")
        assert b"250-PIPELINING\r\n" in offered and b"SIZE %d" % MESSAGE_SIZE_LIMIT in offered
        for sent in TRANSACTION.finditer(session.sent_by("client")):
            recipient = sent["rcpt"].decode()
            recipients.append(recipient)
            data = _unstuffed(sent["data"])
            size = re.search(rb" SIZE=(\d+)", sent["mail"], re.IGNORECASE)
            assert size is not None and int(size.group(1)) == len(data), sent["mail"]
            if recipient in PIPELINED:
                _check_pipelined(session)
                pipelined += 1
            received = by_id[_message_id(data)]
            # Every header and every body byte as sent; above them, trace headers only.
            assert received.endswith(data)
            added = received[: -len(data)]
            assert set(_trace_header_names(added)) <= TRACE_HEADERS, added
            assert b"\r\nReceived: from " in b"\r\n" + added
    assert sorted(recipients) == sorted(RECIPIENTS.values())
    personal = by_id[_message_id(next(m for m in delivered if b"legs@example.org" in m))]
    assert b"FOR YOU" in personal  # the personal digest, not the trending one
    print(
        f"Postfix delivered {len(delivered)} of {len(RECIPIENTS)} messages byte for byte "
        f"under trace headers only; SIZE declared {len(recipients)}, pipelined {pipelined}; "
        "0 complaints in its log"
    )


def _check_pipelined(session: TappedSession) -> None:
    """Each envelope came in one read: MAIL, RCPT and DATA written without waiting for replies."""
    envelopes = [data for side, data in session.reads if side == "client" and b"MAIL FROM" in data]
    assert envelopes
    for envelope in envelopes:
        assert re.fullmatch(rb"MAIL FROM:[^\r]*\r\nRCPT TO:[^\r]*\r\nDATA\r\n", envelope), envelope


def test_a_digest_over_the_relays_size_limit_is_not_offered(tmp_path: Path) -> None:
    url = papers_database(tmp_path)
    limit = 20_000  # the digest is about 40 KB
    with running_postfix(message_size_limit=limit) as relay, SmtpTap(relay.port) as tap:
        env = cli_environment(url, tap.port)
        run_cli("subscribers", "add", RECIPIENTS["digest-trending"], "--confirmed", env=env)
        result = run_cli("send", "--date", DAY.isoformat(), env=env)
        log = relay.log()
        assert relay.delivered() == []
    shown = " ".join((result.stdout + result.stderr).split())
    assert "sent 0 failed 1" in shown, shown
    assert f"over the {limit}-byte limit (SIZE)" in shown, shown
    # Refused before a byte of it was offered: no MAIL FROM reached Postfix.
    assert all(b"MAIL FROM" not in s.sent_by("client") for s in tap.sessions)
    assert "client=" not in log
