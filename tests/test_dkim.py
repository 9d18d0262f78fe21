"""DKIM: digests, test copies and confirmations arrive signed; dkimpy's verifier accepts them."""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine

from newsletter.core.dkim import DkimSigner, load_dkim_key
from newsletter.core.errors import ConfigurationError
from newsletter.core.settings import Settings, load_settings
from newsletter.delivery.assemble import CompiledDigest, Recipient
from newsletter.delivery.worker import send_edition, send_test_copy
from newsletter.values import PersonalField
from tests.support.dkim_keys import dns_for, write_key
from tests.support.sending import DAY, make_edition, seed_subscribers
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import running_app, send_queued_confirmations, web_settings

SELECTOR = "daily"
HOSTILE_TITLES = [
    "=?utf-8?q?Hi=0D=0AReply-To:_evil@example.com?= and a plain tail",
    "Größte Modelle: " + "a very long subject that must be folded over several lines " * 4,
    'Emoji 🚀 and =?iso-8859-1?b?SGk=?= mixed with (comments) and "quotes"',
]


LINK_MARKER = "0123456789abcdef0123456789abcdef"
UNSUBSCRIBE = PersonalField.UNSUBSCRIBE_URL.placeholder(LINK_MARKER)
PREFERENCES = PersonalField.PREFERENCES_URL.placeholder(LINK_MARKER)


def signed_headers(raw: bytes) -> set[str]:
    """The h= tag of the message's DKIM-Signature, lower-cased."""
    header = re.search(rb"DKIM-Signature:(.*?)\r\n(?! )", raw, re.S)
    assert header is not None
    tags = re.sub(rb"\s+", b"", header.group(1)).decode()
    h = re.search(r"(?:^|;)h=([^;]*)", tags)
    assert h is not None
    return {name.lower() for name in h.group(1).split(":")}


def dkim_settings(settings: Settings, key_file: Path, **overrides: object) -> Settings:
    """The test settings with DKIM configured."""
    return load_settings(
        **{
            **settings.model_dump(),
            "dkim_selector": SELECTOR,
            "dkim_key_file": key_file,
            **overrides,
        }
    )


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_every_digest_arrives_signed_and_verifies(
    kind: str,
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    tmp_path: Path,
) -> None:
    signing = dkim_settings(settings, write_key(tmp_path, kind))
    signer = DkimSigner.from_settings(signing)
    assert signer is not None
    seed_subscribers(engine, 3)
    make_edition(engine)

    await send_edition(signing, engine, edition_date=DAY)

    assert len(smtp_server.messages) == 3
    for arrived in smtp_server.messages:
        assert arrived.raw.startswith(b"DKIM-Signature: v=1; a=" + signer.key.algorithm)
        assert dkim.verify(arrived.raw, dnsfunc=dns_for(signer))
        assert {"list-unsubscribe", "list-unsubscribe-post", "from", "to", "subject"} <= (
            signed_headers(arrived.raw)
        )
        assert {"date", "message-id"} <= signed_headers(arrived.raw)
        assert b"d=news.example.org" in arrived.raw and b"c=relaxed/relaxed" in arrived.raw


async def test_a_tampered_message_does_not_verify(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, tmp_path: Path
) -> None:
    signing = dkim_settings(settings, write_key(tmp_path, "ed25519"))
    signer = DkimSigner.from_settings(signing)
    assert signer is not None
    seed_subscribers(engine, 1)
    make_edition(engine)
    await send_edition(signing, engine, edition_date=DAY)
    [arrived] = smtp_server.messages

    tampered = arrived.raw.replace(b"List-Unsubscribe: <https://", b"List-Unsubscribe: <http://")
    assert tampered != arrived.raw
    assert not dkim.verify(tampered, dnsfunc=dns_for(signer))


@pytest.mark.parametrize("title", HOSTILE_TITLES)
async def test_hostile_subjects_still_verify_on_test_copies(
    title: str,
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    tmp_path: Path,
) -> None:
    signing = dkim_settings(settings, write_key(tmp_path, "rsa"), dkim_domain="mail.example.net")
    signer = DkimSigner.from_settings(signing)
    assert signer is not None and signer.domain == "mail.example.net"
    make_edition(engine, subject=title)

    await send_test_copy(signing, engine, edition_date=DAY, email="editor@example.org")

    [arrived] = smtp_server.messages
    assert b"d=mail.example.net" in arrived.raw
    assert dkim.verify(arrived.raw, dnsfunc=dns_for(signer))
    assert "Reply-To" not in arrived.message


async def test_confirmation_emails_are_signed(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer, tmp_path: Path
) -> None:
    signing = dkim_settings(web_settings(settings), write_key(tmp_path, "ed25519"))
    signer = DkimSigner.from_settings(signing)
    assert signer is not None
    async with running_app(signing, engine) as (_, client):
        response = await client.post(
            "/subscribe", data={"email": "ada@example.org", "name": "=?utf-8?q?Ada=0D=0A?="}
        )
        await send_queued_confirmations(signing, engine)  # the worker signs as it sends
    assert response.status_code < 400
    [arrived] = smtp_server.messages
    assert dkim.verify(arrived.raw, dnsfunc=dns_for(signer))
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= signed_headers(arrived.raw)


async def test_without_dkim_settings_nothing_is_signed(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    seed_subscribers(engine, 1)
    make_edition(engine)
    await send_edition(settings, engine, edition_date=DAY)
    [arrived] = smtp_server.messages
    assert b"DKIM-Signature" not in arrived.raw


def test_selector_without_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="go together"):
        load_settings(dkim_selector=SELECTOR)


def test_a_key_that_is_not_rsa_or_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-a-key.pem"
    path.write_text("hello\n")
    with pytest.raises(ConfigurationError, match="not an unencrypted PEM private key"):
        load_dkim_key(path)


def test_the_dns_record_holds_the_public_key(tmp_path: Path) -> None:
    path = write_key(tmp_path, "rsa")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_dkim_key(path).dns_value == (
        f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    )


async def test_the_bounce_address_is_the_envelope_sender(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    bouncing = load_settings(**{**settings.model_dump(), "bounce_address": "bounces@example.net"})
    seed_subscribers(engine, 1)
    make_edition(engine)
    await send_edition(bouncing, engine, edition_date=DAY)
    [arrived] = smtp_server.messages
    # The VERP form of the bounce address (tests/test_bounces.py checks its token).
    assert re.fullmatch(r"bounces\+[0-9a-z]+-[a-z2-7]{16}@example\.net", arrived.mail_from)
    assert arrived.message["From"] == "Daily ML Papers <digest@news.example.org>"


@pytest.mark.parametrize("field", ["dkim_selector", "dkim_domain"])
def test_a_selector_or_domain_that_is_not_a_dns_name_is_refused(field: str, tmp_path: Path) -> None:
    key = write_key(tmp_path, "ed25519")
    with pytest.raises(ConfigurationError, match=f"NEWSLETTER_{field.upper()}"):
        load_settings(
            **{
                "_env_file": None,
                "dkim_selector": SELECTOR,
                "dkim_key_file": key,
                field: "bad name; x=1",
            }
        )


@pytest.mark.parametrize(
    "text",
    [
        # Two link lines side by side (no fixed line between their regions), a link
        # that starts the part, one that ends it, and a line with trailing spaces.
        f"{UNSUBSCRIBE}\n{PREFERENCES}\nBye   \n",
        f"Leave:  {UNSUBSCRIBE}\n\n\nStay: {PREFERENCES}",
    ],
)
def test_a_digest_signed_from_its_fixed_segments_verifies(
    text: str, settings: Settings, tmp_path: Path
) -> None:
    signing = dkim_settings(settings, write_key(tmp_path, "ed25519"))
    signer = DkimSigner.from_settings(signing)
    assert signer is not None
    digest = CompiledDigest.compile(
        signing,
        subject="Daily ML Papers",
        html=f'<a href="{UNSUBSCRIBE}">leave</a><a href="{PREFERENCES}">stay</a>\n',
        text=text,
        edition_date=DAY,
        link_marker=LINK_MARKER,
        # A fixed Date: assemble and prepare below must make the same message.
        clock=lambda: dt.datetime(2026, 11, 5, 6, 0, tzinfo=dt.UTC),
    )
    for key in ("k" * 22, "j" * 30):
        reader = Recipient("ada@example.org", "Ada", key, "<1.digest@news.example.org>")
        assembled = digest.assemble(reader)
        assert dkim.verify(assembled, dnsfunc=dns_for(signer))
        prepared = digest.prepare(reader).data
        assert prepared[:-3].replace(b"\r\n..", b"\r\n.") == assembled
