"""Fresh DKIM private keys for tests, written as unencrypted PEM files, and their DNS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from newsletter.core.dkim import DkimSigner


def write_key(directory: Path, kind: str) -> Path:
    """A fresh PEM (PKCS#8) private key of `kind` ("rsa" or "ed25519") in `directory`."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"dkim-{kind}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def dns_for(signer: DkimSigner) -> Callable[..., bytes | None]:
    """A dnsfunc for dkimpy that knows only this signer's public key record."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        wanted = f"{signer.dns_name}.".encode()
        return signer.key.dns_value.encode() if name in (wanted, wanted[:-1]) else None

    return lookup
