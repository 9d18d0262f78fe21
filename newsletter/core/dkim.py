"""DKIM signatures for every message the product sends, in one place.

A `DkimSigner` is built once from the settings (per edition, per process):
reading the key file, detecting its algorithm and converting it to the form
dkimpy takes happen there. `sign` then adds a DKIM-Signature header at the
top of one message's bytes. The body hash cannot be shared between readers:
each body carries that reader's own unsubscribe and preferences links.

RFC 8058 requires the signature to cover List-Unsubscribe and
List-Unsubscribe-Post; a header listed but absent (a confirmation has no
List-Unsubscribe) is signed as absent, so nobody can add it later.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

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
_CANONICALIZE: Final = (b"relaxed", b"relaxed")


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A private key as dkimpy signs with it, its algorithm, and its public DNS record value."""

    algorithm: bytes  # b"rsa-sha256" or b"ed25519-sha256"
    private: bytes  # PKCS#1 PEM (RSA) or the base64 seed (ed25519), as dkimpy reads them
    dns_value: str  # the TXT record: 'v=DKIM1; k=rsa; p=...'


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
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return DkimKey(b"rsa-sha256", private, _dns_value("rsa", public))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return DkimKey(b"ed25519-sha256", base64.b64encode(seed), _dns_value("ed25519", public))
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

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature header added at the top."""
        signer = dkim.DKIM(message, signature_algorithm=self.key.algorithm, linesep=b"\r\n")
        header: bytes = signer.sign(
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self.key.private,
            canonicalize=_CANONICALIZE,
            include_headers=list(SIGNED_HEADERS),
        )
        return header + message
