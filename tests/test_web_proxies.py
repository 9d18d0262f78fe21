"""Who the client is behind proxies, and which sign-ups count against its rate limit."""

from __future__ import annotations

import logging

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine

from newsletter.core.errors import ConfigurationError
from newsletter.core.settings import Settings, load_settings
from newsletter.web.app import uvicorn_config
from newsletter.web.proxies import TrustedProxies, parse_hop
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import (
    ADMIN_TOKEN,
    confirmation_path,
    live_server,
    running_app,
    send_queued_confirmations,
    store_papers,
    subscriber,
    web_settings,
)


def _served(settings: Settings, **overrides: object) -> uvicorn.Config:
    """The uvicorn config `newsletter serve` uses, for these settings."""
    config = uvicorn_config(web_settings(settings, **overrides), host="127.0.0.1", port=0)
    config.log_level = "warning"
    return config


def _sign_ups(base_url: str, forwarded_for: list[str]) -> list[int]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        return [
            client.post(
                "/subscribe",
                json={"email": f"reader{n}@example.org"},
                headers={"X-Forwarded-For": value},
            ).status_code
            for n, value in enumerate(forwarded_for)
        ]


def test_served_without_trusted_proxies_a_forged_header_changes_nothing(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    with live_server(_served(settings, signup_rate_limit=2)) as base_url:
        # Each request claims another client; all come from 127.0.0.1 and share its bucket.
        codes = _sign_ups(base_url, ["198.51.100.1", "198.51.100.2", "198.51.100.3"])
    assert codes == [202, 202, 429]


def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    config = _served(settings, signup_rate_limit=2, trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    with live_server(config) as base_url:
        codes = _sign_ups(
            base_url,
            [
                # What the client wrote sits left of what the proxies appended.
                "1.1.1.1, 198.51.100.7",
                "2.2.2.2, 198.51.100.7, 10.1.2.3",
                "3.3.3.3, 198.51.100.7",  # the same client, whatever it claims: refused
                "198.51.100.8",  # another client, its own bucket
            ],
        )
    assert codes == [202, 202, 429, 202]


async def test_the_confirming_address_and_the_scheme_come_from_the_trusted_proxy(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    import datetime as dt

    store_papers(engine, dt.date(2026, 3, 5))
    config = web_settings(settings, trusted_proxies=["203.0.113.0/24"])
    async with running_app(config, engine, client_address="203.0.113.7") as (_, client):
        await client.post("/subscribe", json={"email": "ada@example.org"})
        await send_queued_confirmations(config, engine)
        await client.post(
            confirmation_path(smtp_server), headers={"X-Forwarded-For": "192.0.2.1, 198.51.100.20"}
        )
        started = await client.post(
            "/admin/editions/2026-03-05/send",
            headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-For": "198.51.100.20",
            },
        )
    stored = subscriber(engine, "ada@example.org")
    assert stored is not None and stored.confirmed_ip == "198.51.100.20"
    assert started.json()["status_url"].startswith("https://")


async def test_a_trusted_proxy_without_the_header_is_reported_once(
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = web_settings(settings, trusted_proxies=["203.0.113.7"])
    with caplog.at_level(logging.WARNING, logger="newsletter.web.proxies"):
        async with running_app(config, engine, client_address="203.0.113.7") as (_, client):
            for _ in range(3):
                assert (await client.get("/")).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "sent no X-Forwarded-For" in r.message]
    assert len(warnings) == 1 and "203.0.113.7" in warnings[0]


async def test_a_local_proxy_left_untrusted_is_reported_once(
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="newsletter.web.proxies"):
        async with running_app(web_settings(settings), engine, client_address="127.0.0.1") as (
            _,
            client,
        ):
            for _ in range(3):
                await client.get("/", headers={"X-Forwarded-For": "198.51.100.1"})
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "NEWSLETTER_TRUSTED_PROXIES" in m]) == 1


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("198.51.100.7:5000", "198.51.100.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("6.6.6.6, 198.51.100.7, 10.0.0.2", "198.51.100.7"),
        ("unknown", "10.0.0.1"),  # not an address: nobody we trust wrote it
        ("198.51.100.7, garbage, 10.0.0.2", "10.0.0.2"),
        ("10.0.0.3, 10.0.0.2", "10.0.0.3"),  # every hop a trusted proxy
        ("", "10.0.0.1"),
    ],
)
def test_reading_x_forwarded_for(forwarded_for: str, client: str) -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    peer = parse_hop("10.0.0.1")
    assert peer is not None
    assert str(proxies.client_address(peer, forwarded_for)) == client


def test_trusted_proxies_must_be_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8, ::1")
    assert load_settings().trusted_proxies == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    monkeypatch.setenv("NEWSLETTER_TRUSTED_PROXIES", "127.0.0.1,proxy.internal")
    with pytest.raises(ConfigurationError, match=r"NEWSLETTER_TRUSTED_PROXIES.*proxy\.internal"):
        load_settings()


async def test_only_valid_sign_ups_count_against_the_limit(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    limited = web_settings(settings, signup_rate_limit=2)
    async with running_app(limited, engine) as (_, client):
        typos = [
            await client.post("/subscribe", json={"email": f"typo{n}@@example.org"})
            for n in range(5)
        ]
        too_big = await client.post(
            "/subscribe",
            content=b'{"email": "' + b"x" * 20_000 + b'"}',
            headers={"content-type": "application/json"},
        )
        valid = [
            await client.post("/subscribe", json={"email": f"fine{n}@example.org"})
            for n in range(3)
        ]
    assert [answer.status_code for answer in typos] == [422] * 5
    assert too_big.status_code == 413
    assert [answer.status_code for answer in valid] == [202, 202, 429]


async def test_a_filled_honeypot_counts_like_a_real_sign_up(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    limited = web_settings(settings, signup_rate_limit=2)
    async with running_app(limited, engine) as (_, client):
        bots = [
            await client.post(
                "/subscribe", json={"email": f"bot{n}@example.org", "website": "http://spam"}
            )
            for n in range(2)
        ]
        after = await client.post("/subscribe", json={"email": "person@example.org"})
        invalid_bot = await client.post(
            "/subscribe", json={"email": "not-an-address", "website": "http://spam"}
        )
    assert [answer.status_code for answer in bots] == [202, 202]
    assert after.status_code == 429
    assert invalid_bot.status_code == 422  # the same answer a person would get
    assert smtp_server.messages == []


async def test_an_ipv6_client_is_limited_by_its_64(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    limited = web_settings(settings, signup_rate_limit=1)
    async with running_app(limited, engine, client_address="2001:db8:1:1::1") as (app, client):
        first = await client.post("/subscribe", json={"email": "same64-a@example.org"})
        transport = httpx.ASGITransport(app=app, client=("2001:db8:1:1::abcd", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=limited.base_url) as neighbour:
            second = await neighbour.post("/subscribe", json={"email": "same64-b@example.org"})
        transport = httpx.ASGITransport(app=app, client=("2001:db8:1:2::1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=limited.base_url) as other:
            third = await other.post("/subscribe", json={"email": "other64@example.org"})
    assert (first.status_code, second.status_code, third.status_code) == (202, 429, 202)
