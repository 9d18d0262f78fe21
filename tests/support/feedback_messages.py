"""Bounce and complaint messages shaped like the ones real servers send back.

`postfix_dsn` is what Postfix's bounce daemon writes (RFC 3464, with the
original headers), `abuse_report` a feedback-loop complaint (ARF, RFC 5965,
as Yahoo's and Microsoft's loops send them), each as delivered into a mailbox:
with the `Delivered-To` and `Return-Path` lines the final server adds.
"""

from __future__ import annotations

from email.message import EmailMessage

CRLF = "\r\n"


def _lines(*lines: str) -> bytes:
    return (CRLF.join(lines) + CRLF).encode("utf-8")


def original_headers(sent: EmailMessage) -> list[str]:
    """The headers of a message we sent, as a report quotes them."""
    return [
        f"{name}: {sent[name]}"
        for name in ("From", "To", "Subject", "Date", "Message-ID")
        if sent[name] is not None
    ]


def postfix_dsn(
    *,
    verp_address: str,
    recipient: str,
    sent: EmailMessage,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 <{recipient}>: Recipient address rejected: User unknown",
) -> bytes:
    """A Postfix delivery status notification for `recipient`, delivered to `verp_address`."""
    subject = (
        "Undelivered Mail Returned to Sender"
        if action == "failed"
        else "Delayed Mail (still being retried)"
    )
    return _lines(
        "Return-Path: <>",
        f"Delivered-To: {verp_address}",
        "Received: by mx.example.net (Postfix) id 4F1A2B3C4D;",
        "\tMon,  2 Mar 2026 07:01:02 +0000 (UTC)",
        "Date: Mon,  2 Mar 2026 07:01:02 +0000 (UTC)",
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)",
        f"Subject: {subject}",
        f"To: {verp_address}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        '\tboundary="4F1A2B3C4D.1772434862/mx.example.net"',
        "Content-Transfer-Encoding: 7bit",
        "Message-Id: <20260302070102.4F1A2B3C4D@mx.example.net>",
        "",
        "This is a MIME-encapsulated message.",
        "",
        "--4F1A2B3C4D.1772434862/mx.example.net",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This is the mail system at host mx.example.net.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients.",
        "",
        f"<{recipient}>: host mx.example.org[192.0.2.25] said: "
        + diagnostic.format(recipient=recipient),
        "",
        "--4F1A2B3C4D.1772434862/mx.example.net",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.example.net",
        "X-Postfix-Queue-ID: 4F1A2B3C4D",
        f"X-Postfix-Sender: rfc822; {verp_address}",
        "Arrival-Date: Mon,  2 Mar 2026 07:00:58 +0000 (UTC)",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        f"Original-Recipient: rfc822;{recipient}",
        f"Action: {action}",
        f"Status: {status}",
        "Remote-MTA: dns; mx.example.org",
        f"Diagnostic-Code: smtp; {diagnostic.format(recipient=recipient)}",
        "",
        "--4F1A2B3C4D.1772434862/mx.example.net",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        "",
        f"Return-Path: <{verp_address}>",
        *original_headers(sent),
        "",
        "--4F1A2B3C4D.1772434862/mx.example.net--",
    )


def abuse_report(*, to: str, recipient: str, envelope_sender: str, sent: EmailMessage) -> bytes:
    """A feedback-loop complaint (ARF) about `sent`, which `recipient` marked as spam."""
    return _lines(
        "Return-Path: <fbl-bounces@feedback.example.net>",
        f"Delivered-To: {to}",
        "From: Feedback Loop <fbl@feedback.example.net>",
        f"To: {to}",
        "Date: Mon, 2 Mar 2026 09:15:00 +0000",
        "Subject: Complaint about a message from news.example.org",
        "Message-ID: <fbl-20260302-0915-1@feedback.example.net>",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=feedback-report; boundary="fbl_part_1"',
        "",
        "--fbl_part_1",
        'Content-Type: text/plain; charset="US-ASCII"',
        "Content-Transfer-Encoding: 7bit",
        "",
        "This is an email abuse report for an email message received from IP",
        "192.0.2.10 on Mon, 2 Mar 2026 07:00:58 +0000.",
        "",
        "--fbl_part_1",
        "Content-Type: message/feedback-report",
        "",
        "Feedback-Type: abuse",
        "User-Agent: ExampleFBL/1.0",
        "Version: 1",
        f"Original-Mail-From: <{envelope_sender}>",
        f"Original-Rcpt-To: <{recipient}>",
        "Arrival-Date: Mon, 2 Mar 2026 07:00:58 +0000",
        "Reported-Domain: news.example.org",
        "Source-IP: 192.0.2.10",
        "",
        "--fbl_part_1",
        "Content-Type: text/rfc822-headers",
        "",
        f"Return-Path: <{envelope_sender}>",
        *original_headers(sent),
        "",
        "--fbl_part_1--",
    )


def garbage_message(to: str) -> bytes:
    """Something a bounce mailbox also gets: neither a bounce nor a complaint."""
    return _lines(
        f"Delivered-To: {to}",
        "From: Someone <someone@example.net>",
        f"To: {to}",
        "Subject: Out of office",
        "Date: Mon, 2 Mar 2026 08:00:00 +0000",
        "Message-ID: <ooo-1@example.net>",
        "",
        "I am away until Monday.",
    )
