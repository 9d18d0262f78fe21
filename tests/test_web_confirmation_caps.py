"""Confirmation emails are capped per mailbox and per domain, whatever networks ask for them."""

from __future__ import annotations

from collections import Counter

import httpx
from sqlalchemy import Engine

from newsletter.core.settings import Settings
from newsletter.web.app import create_app
from subscribers.ratelimit import ConfirmationCaps
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import send_queued_confirmations, subscriber, web_settings


async def _sign_up_from_many_networks(
    settings: Settings, engine: Engine, addresses: list[str]
) -> list[int]:
    """Each address signed up from its own client address (so the per-client limit never bites)."""
    app = create_app(settings, engine=engine)
    codes = []
    async with app.router.lifespan_context(app):
        for n, address in enumerate(addresses):
            transport = httpx.ASGITransport(app=app, client=(f"198.51.100.{n + 1}", 40000))
            async with httpx.AsyncClient(transport=transport, base_url=settings.base_url) as c:
                codes.append((await c.post("/subscribe", json={"email": address})).status_code)
        await send_queued_confirmations(settings, engine)  # what a worker does next
    return codes


async def test_plus_addressing_cannot_flood_one_mailbox(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    flood = [f"victim+{n}@example.org" for n in range(8)] + ["VICTIM@example.org"]
    codes = await _sign_up_from_many_networks(web_settings(settings), engine, flood)
    assert codes == [202] * len(flood)  # the same answer to every request
    assert sorted(smtp_server.handler.recipients()) == sorted(flood[:3])
    # A capped address keeps no claim on its confirmation, so it can get one later.
    capped = subscriber(engine, "victim+5@example.org")
    assert capped is not None and capped.confirmation_sent_at is None


async def test_gmail_dots_and_googlemail_are_one_mailbox(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    flood = ["a.da@gmail.com", "ad.a@gmail.com", "ada@googlemail.com", "A.D.A+x@gmail.com"]
    capped = web_settings(settings, confirm_mailbox_limit=2)
    await _sign_up_from_many_networks(capped, engine, flood)
    assert sorted(smtp_server.handler.recipients()) == sorted(flood[:2])


async def test_a_small_domain_has_a_cap_and_a_shared_provider_a_larger_one(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    caps = web_settings(
        settings,
        confirm_domain_limit=2,
        confirm_shared_domain_limit=4,
        confirm_shared_domains=["gmail.com", "outlook.com"],
    )
    small = [f"person{n}@small.example" for n in range(4)]
    shared = [f"person{n}@gmail.com" for n in range(6)]
    await _sign_up_from_many_networks(caps, engine, small + shared)
    counts = Counter(rcpt.rpartition("@")[2] for rcpt in smtp_server.handler.recipients())
    assert counts == {"small.example": 2, "gmail.com": 4}


def test_the_caps_open_again_when_their_window_has_passed() -> None:
    now = [0.0]
    caps = ConfirmationCaps(
        mailbox_limit=1,
        mailbox_window_seconds=100,
        domain_limit=2,
        shared_domain_limit=10,
        domain_window_seconds=50,
        shared_domains=frozenset({"gmail.com"}),
        clock=lambda: now[0],
    )
    assert caps.reserve("ada@example.org") is None
    refused = caps.reserve("ada+again@example.org")
    assert refused is not None and "ada@example.org" in refused
    assert caps.reserve("grace@example.org") is None
    refused = caps.reserve("linus@example.org")
    assert refused is not None and "example.org" in refused
    now[0] = 60  # the domain window has passed, the mailbox window has not
    assert caps.reserve("linus@example.org") is None
    assert caps.reserve("ada@example.org") is not None
    now[0] = 101
    assert caps.reserve("ada@example.org") is None
    # A refusal by the domain cap does not use up the mailbox's allowance.
    for n in range(10):
        assert caps.reserve(f"p{n}@gmail.com") is None
    assert caps.reserve("new@gmail.com") is not None
    now[0] = 200
    assert caps.reserve("new@gmail.com") is None
