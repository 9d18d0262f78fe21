"""Amazon SNS as the tests play it: a signing key and certificate, messages signed as SNS
signs them, and SES notifications shaped as SES writes them."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-feedback"

# AWS, "Verifying the signatures of Amazon SNS messages": these fields, in this order,
# each as "Name\nvalue\n"; a Notification's Subject only when it has one.
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


@dataclass(frozen=True)
class SnsSigner:
    """An RSA key and its self-signed certificate (PEM), standing in for SNS's."""

    key: rsa.RSAPrivateKey
    certificate_pem: bytes

    @classmethod
    def create(cls, *, valid_days: int = 1) -> SnsSigner:
        """A fresh 2048-bit key and a certificate valid from two days ago until `valid_days` on."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=2))
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, certificate_pem=certificate.public_bytes(serialization.Encoding.PEM))

    def sign(self, message: dict[str, Any], *, cert_url: str, version: str = "1") -> dict[str, Any]:
        """The message with SignatureVersion, Signature and SigningCertURL, as SNS posts it."""
        fields = _NOTIFICATION_FIELDS if message["Type"] == "Notification" else _CONFIRMATION_FIELDS
        canonical = "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(canonical.encode("utf-8"), padding.PKCS1v15(), algorithm)
        return {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode("ascii"),
            "SigningCertURL": cert_url,
        }


def notification(
    payload: dict[str, Any], *, topic_arn: str = TOPIC_ARN, **extra: Any
) -> dict[str, Any]:
    """An unsigned SNS Notification carrying `payload` (an SES notification) as its Message."""
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic_arn,
        "Message": json.dumps(payload),
        "Timestamp": "2026-03-02T07:01:03.123Z",
        "UnsubscribeURL": (
            "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
            f"{topic_arn}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55"
        ),
        **extra,
    }


def subscription_confirmation(subscribe_url: str, *, topic_arn: str = TOPIC_ARN) -> dict[str, Any]:
    """An unsigned SNS SubscriptionConfirmation."""
    token = "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a7" * 2
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic_arn,
        "Message": (
            f"You have chosen to subscribe to the topic {topic_arn}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-03-02T06:59:00.000Z",
    }


def _mail(recipient: str, message_id: str) -> dict[str, Any]:
    return {
        "timestamp": "2026-03-02T07:00:58.000Z",
        "source": "digest@news.example.org",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/news.example.org",
        "sourceIp": "192.0.2.10",
        "sendingAccountId": "123456789012",
        "messageId": "0100018e0a1b2c3d-4e5f6a7b-8c9d-0e1f-2a3b-4c5d6e7f8a9b-000000",
        "destination": [recipient],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": "Daily ML Papers <digest@news.example.org>"},
            {"name": "To", "value": recipient},
            {"name": "Subject", "value": "Papers of the day"},
            {"name": "Message-ID", "value": message_id},
        ],
        "commonHeaders": {
            "from": ["Daily ML Papers <digest@news.example.org>"],
            "to": [recipient],
            "messageId": message_id,
            "subject": "Papers of the day",
        },
    }


def ses_bounce(
    recipient: str, message_id: str, *, bounce_type: str = "Permanent"
) -> dict[str, Any]:
    """An SES Bounce notification for one recipient of the message `message_id`."""
    return {
        "notificationType": "Bounce",
        "bounce": {
            "feedbackId": "0100018e0a1b2c3d-aaaa-bbbb-cccc-dddddddddddd-000000",
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": recipient,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-03-02T07:01:02.000Z",
            "remoteMtaIp": "192.0.2.25",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        },
        "mail": _mail(recipient, message_id),
    }


def ses_complaint(recipient: str, message_id: str) -> dict[str, Any]:
    """An SES Complaint notification (a feedback loop's abuse report) from one recipient."""
    return {
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": recipient}],
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2026-03-02T09:14:00.000Z",
            "timestamp": "2026-03-02T09:15:00.000Z",
            "feedbackId": "0100018e0a1b2c3d-eeee-ffff-0000-111111111111-000000",
        },
        "mail": _mail(recipient, message_id),
    }
