"""DKIM signatures for every message the product sends, in one place.

A `DkimSigner` is built once from the settings (per edition, per process):
reading and parsing the key and detecting its algorithm happen there. `sign`
then adds a DKIM-Signature header at the top of one message's bytes.

The body hash cannot be shared between readers: each body carries that
reader's own unsubscribe and preferences links. dkimpy's own `sign` parses the
key, splits and canonicalises the whole ~60 KB message again for every
signature and signs RSA in pure Python, about 7 ms (ed25519) to 26 ms (RSA)
per digest. So the canonicalisation is dkimpy's (relaxed/relaxed) but applied
in pieces: `canonical_lines` canonicalises the digest's fixed body segments
once per edition (they all start and end at line ends, so relaxed body
canonicalisation, which works line by line, gives the same bytes), and
`signature_header` hashes them with the reader's few personal lines. The
signature itself is computed by `cryptography` (OpenSSL) with the key parsed
once. Tests verify every kind of message with dkimpy's verifier.

RFC 8058 requires the signature to cover List-Unsubscribe and
List-Unsubscribe-Post; a header listed but absent (a confirmation has no
List-Unsubscribe) is signed as absent, so nobody can add it later.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import Relaxed, compress_whitespace, strip_trailing_whitespace

from newsletter.core.errors import ConfigurationError
from newsletter.core.settings import Settings

__all__ = ["SIGNED_HEADERS", "DkimKey", "DkimSigner", "load_dkim_key"]

SIGNED_HEADERS: Final = (
    b"From",
    b"Reply-To",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
    b"List-Id",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)
_SIGNED_LOWER: Final = tuple(name.lower() for name in SIGNED_HEADERS)
_BASE64_LINE: Final = 72


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A private key as dkimpy signs with it, its algorithm, and its public DNS record value."""

    algorithm: bytes  # b"rsa-sha256" or b"ed25519-sha256"
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    dns_value: str  # the TXT record: 'v=DKIM1; k=rsa; p=...'

    def signature(self, digest: bytes) -> bytes:
        """The signature of a SHA-256 digest: RSASSA-PKCS1-v1_5, or Ed25519 (RFC 8463)."""
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return self.private.sign(digest)


def load_dkim_key(path: Path) -> DkimKey:
    """Read a PEM private key file (RSA or ed25519); ConfigurationError if it is neither."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(
            f"cannot read the DKIM key NEWSLETTER_DKIM_KEY_FILE={path}: {error.strerror}"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(
            f"NEWSLETTER_DKIM_KEY_FILE={path} is not an unencrypted PEM private key: {error}"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return DkimKey(b"rsa-sha256", key, _dns_value("rsa", public))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return DkimKey(b"ed25519-sha256", key, _dns_value("ed25519", public))
    raise ConfigurationError(
        f"NEWSLETTER_DKIM_KEY_FILE={path} holds a {type(key).__name__}; DKIM needs RSA or ed25519"
    )


def _dns_value(kind: str, public: bytes) -> str:
    return f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode('ascii')}"


class DkimSigner:
    """Signs whole messages for one selector and domain with a key loaded once."""

    __slots__ = ("domain", "key", "selector")

    def __init__(self, *, selector: str, domain: str, key: DkimKey) -> None:
        """Store the parsed key; use `from_settings` to build one from the configuration."""
        self.selector = selector
        self.domain = domain
        self.key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        """The configured signer, or None when DKIM is not configured."""
        if settings.dkim_selector is None or settings.dkim_key_file is None:
            return None
        return cls(
            selector=settings.dkim_selector,
            domain=settings.dkim_signing_domain,
            key=load_dkim_key(settings.dkim_key_file),
        )

    @property
    def dns_name(self) -> str:
        """Where the public key is published: `selector._domainkey.domain`."""
        return f"{self.selector}._domainkey.{self.domain}"

    @staticmethod
    def canonical_lines(data: bytes) -> bytes:
        """Relaxed body canonicalisation of whole lines from inside a body (no end rule)."""
        canonical: bytes = compress_whitespace(strip_trailing_whitespace(data))
        return canonical

    @staticmethod
    def canonical_body_end(data: bytes) -> bytes:
        """Relaxed body canonicalisation of the body's last lines (trailing empty lines go)."""
        canonical: bytes = Relaxed.canonicalize_body(data)
        return canonical

    def signature_header(self, header_block: bytes, body_hash: bytes) -> bytes:
        """The DKIM-Signature line for these headers (CRLF-ended lines) and this body hash."""
        headers, _ = dkim.rfc822_parse(header_block + b"\r\n")
        # Every name is signed, present or not: a signed absent header (List-Unsubscribe on a
        # confirmation, Reply-To) cannot be added later without breaking the signature.
        signed = list(_SIGNED_LOWER)
        fields = (
            f"v=1; a={self.key.algorithm.decode()}; c=relaxed/relaxed; d={self.domain};\r\n"
            f" s={self.selector}; t={int(time.time())};\r\n"
            f" h={':'.join(name.decode() for name in signed)};\r\n"
            f" bh={base64.b64encode(body_hash).decode()};\r\n"
            " b="
        ).encode("ascii")
        hasher = hashlib.sha256()
        for name, value in Relaxed.canonicalize_headers(dkim.select_headers(headers, signed)):
            hasher.update(name + b":" + value)
        [(name, value)] = Relaxed.canonicalize_headers([(b"DKIM-Signature", b" " + fields)])
        hasher.update(name + b":" + value.rstrip())
        encoded = base64.b64encode(self.key.signature(hasher.digest())).decode("ascii")
        lines = [encoded[i : i + _BASE64_LINE] for i in range(0, len(encoded), _BASE64_LINE)]
        return b"DKIM-Signature: " + fields + "\r\n   ".join(lines).encode("ascii") + b"\r\n"

    def sign(self, message: bytes) -> bytes:
        """The message (CRLF line ends) with a DKIM-Signature header added at the top."""
        header_block, separator, body = message.partition(b"\r\n\r\n")
        if not separator:
            header_block, body = message.removesuffix(b"\r\n"), b""
        canonical = Relaxed.canonicalize_body(body)
        header = self.signature_header(header_block + b"\r\n", hashlib.sha256(canonical).digest())
        return header + message
