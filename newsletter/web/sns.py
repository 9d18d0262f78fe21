"""Amazon SNS HTTP(S) messages: the envelope, its signature, and SNS's own URLs.

SNS signs each message it posts with RSA over a canonical string of some of
its fields (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA), and names the
certificate in `SigningCertURL`. Anyone can post a message naming a certificate
of their own, so the certificate is fetched only from an https URL on an SNS
host (`sns.REGION.amazonaws.com`), checked before any request is made, and
kept by URL. `SnsGateway` is the one thing that talks to SNS: tests give it a
local server and a looser URL rule; the app builds it with the strict one.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.core.errors import (
    SnsMessageError,
    SnsSignatureError,
    SnsUnavailableError,
)

logger = logging.getLogger(__name__)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# The fields each type signs, in this order (AWS: "Verifying the signatures of Amazon SNS
# messages"); a Notification signs its Subject only when it has one.
_SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS[UNSUBSCRIBE_CONFIRMATION] = _SIGNED_FIELDS[SUBSCRIPTION_CONFIRMATION]
_REQUIRED_FIELDS = ("Type", "MessageId", "TopicArn", "Message", "Timestamp")
_SIGNATURE_FIELDS = ("SignatureVersion", "Signature", "SigningCertURL")
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

SNS_HOST = re.compile(r"sns\.[a-z0-9]+(?:-[a-z0-9]+)+\.amazonaws\.com")
# A signing certificate is a couple of KiB; an answer larger than this is not one.
MAX_CERTIFICATE_BYTES = 64 * 1024
FETCH_TIMEOUT_SECONDS = 10.0
CACHED_CERTIFICATES = 32


def is_sns_url(url: str) -> bool:
    """Whether `url` is https on an SNS host (`sns.REGION.amazonaws.com`), port 443, no userinfo.

    The URL is read by httpx, the parser that would make the request, so what is
    checked is what would be fetched.
    """
    if any(character.isspace() or not character.isprintable() for character in url):
        return False
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return (
        parsed.scheme == "https"
        and not parsed.userinfo
        and parsed.port in (None, 443)
        and SNS_HOST.fullmatch(parsed.host) is not None
    )


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """One message SNS posted: its type, topic, payload and signature fields."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    signature_version: str
    signature: bytes
    signing_cert_url: str
    subscribe_url: str | None
    fields: dict[str, str]

    @classmethod
    def parse(cls, body: bytes) -> SnsMessage:
        """The message in a request body; `SnsMessageError` when it is not an SNS message."""
        document = parse_json(body, what="the request body")
        if not isinstance(document, dict):
            raise SnsMessageError("the request body is not a JSON object")
        kind = document.get("Type")
        if not isinstance(kind, str) or kind not in _SIGNED_FIELDS:
            raise SnsMessageError(f"unknown SNS message type {str(kind)[:40]!r}")
        needed: tuple[str, ...] = (*_REQUIRED_FIELDS, *_SIGNATURE_FIELDS)
        if kind != NOTIFICATION:
            needed = (*needed, "SubscribeURL", "Token")
        fields: dict[str, str] = {}
        for name in (*needed, "Subject"):
            value = document.get(name)
            if value is None and name not in needed:
                continue
            if not isinstance(value, str):
                raise SnsMessageError(f"the SNS field {name} is missing or not a string")
            fields[name] = value
        try:
            signature = base64.b64decode(fields["Signature"], validate=True)
        except (binascii.Error, ValueError):
            raise SnsMessageError("the SNS field Signature is not base64") from None
        return cls(
            type=kind,
            message_id=fields["MessageId"],
            topic_arn=fields["TopicArn"],
            message=fields["Message"],
            signature_version=fields["SignatureVersion"],
            signature=signature,
            signing_cert_url=fields["SigningCertURL"],
            subscribe_url=fields.get("SubscribeURL"),
            fields=fields,
        )

    def canonical_string(self) -> bytes:
        """What SNS signed: "Name\\nvalue\\n" for each signed field present, in order."""
        lines = []
        for name in _SIGNED_FIELDS[self.type]:
            if name in self.fields:
                lines.append(f"{name}\n{self.fields[name]}\n")
        return "".join(lines).encode("utf-8")

    def verify(self, public_key: rsa.RSAPublicKey) -> None:
        """Check the signature with the signing certificate's key; `SnsSignatureError` if bad."""
        algorithm = _HASHES.get(self.signature_version)
        if algorithm is None:
            raise SnsSignatureError(
                f"unsupported SNS SignatureVersion {self.signature_version[:10]!r} (1 or 2)"
            )
        try:
            public_key.verify(
                self.signature, self.canonical_string(), padding.PKCS1v15(), algorithm()
            )
        except InvalidSignature:
            raise SnsSignatureError("the SNS signature does not match the message") from None


def parse_json(body: bytes | str, *, what: str) -> Any:
    """JSON text as Python values; `SnsMessageError` for anything that is not plain JSON.

    Hostile input stays a 400: bad UTF-8, deep nesting (RecursionError), numbers
    with more digits than Python converts, and the non-standard NaN and Infinity.
    """

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(body, parse_constant=refuse_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        problem = "nested too deeply" if isinstance(error, RecursionError) else "not valid JSON"
        raise SnsMessageError(f"{what} is {problem}") from None


Fetch = Callable[[str], Awaitable[bytes]]


async def https_get(url: str) -> bytes:
    """GET `url` (no redirects), at most `MAX_CERTIFICATE_BYTES` of answer, which must be 200."""
    async with (
        httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client,
        client.stream("GET", url) as response,
    ):
        if response.status_code != 200:
            raise SnsUnavailableError(f"{url} answered {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body.extend(chunk)
            if len(body) > MAX_CERTIFICATE_BYTES:
                raise SnsUnavailableError(f"{url} answered more than a certificate")
        return bytes(body)


class SnsGateway:
    """Signing certificates (fetched once per URL) and subscription confirmations.

    `url_allowed` decides which URLs may be fetched at all (by default
    `is_sns_url`), before `fetch` is ever called.
    """

    def __init__(
        self,
        *,
        url_allowed: Callable[[str], bool] = is_sns_url,
        fetch: Fetch = https_get,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.url_allowed = url_allowed
        self.fetch = fetch
        self.now = now
        # URL -> the certificate's key and the end of its validity.
        self._keys: OrderedDict[str, tuple[rsa.RSAPublicKey, dt.datetime]] = OrderedDict()

    async def verify(self, message: SnsMessage) -> None:
        """Check that SNS signed `message`; `SnsSignatureError` if not (nothing fetched when
        the certificate URL is not allowed)."""
        if not self.url_allowed(message.signing_cert_url):
            raise SnsSignatureError("the SigningCertURL is not an https URL of Amazon SNS")
        message.verify(await self._public_key(message.signing_cert_url))

    async def confirm_subscription(self, message: SnsMessage) -> bool:
        """Visit the SubscribeURL if it is one of SNS's; whether it was visited."""
        url = message.subscribe_url
        if url is None or not self.url_allowed(url):
            return False
        try:
            await self.fetch(url)
        except httpx.HTTPError as error:
            raise SnsUnavailableError(f"cannot confirm the subscription: {error}") from None
        return True

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._keys.get(url)
        if cached is not None and self.now() <= cached[1]:
            self._keys.move_to_end(url)
            return cached[0]
        try:
            pem = await self.fetch(url)
        except httpx.HTTPError as error:
            raise SnsUnavailableError(
                f"cannot fetch the SNS signing certificate: {error}"
            ) from None
        key, valid_until = self._certificate_key(pem)
        self._keys[url] = (key, valid_until)
        self._keys.move_to_end(url)
        while len(self._keys) > CACHED_CERTIFICATES:
            self._keys.popitem(last=False)
        return key

    def _certificate_key(self, pem: bytes) -> tuple[rsa.RSAPublicKey, dt.datetime]:
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise SnsSignatureError("the SigningCertURL does not hold a certificate") from None
        now = self.now()
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SnsSignatureError("the SNS signing certificate is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsSignatureError("the SNS signing certificate does not hold an RSA key")
        return key, certificate.not_valid_after_utc
