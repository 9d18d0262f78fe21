"""Bodies over the limit get 413 before they are read: declared, chunked, or streamed in-process."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine

from newsletter.core.settings import Settings
from newsletter.web.app import create_app
from newsletter.web.body_limit import FORM_BODY_LIMIT, OTHER_BODY_LIMIT
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import ADMIN_TOKEN, live_server, running_app, subscriber, web_settings

# If the server waited for a body it will never get, the read times out and the test fails.
READ_TIMEOUT_SECONDS = 10


def _raw_exchange(base_url: str, head: str, body_parts: list[bytes]) -> tuple[int, bytes]:
    """Send a request head and some body bytes, then read the answer without sending more."""
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port)) as connection:
        connection.settimeout(READ_TIMEOUT_SECONDS)
        connection.sendall(head.encode("ascii"))
        for part in body_parts:
            connection.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
        match = re.search(rb"(?i)content-length: *(\d+)", answer)
        head_bytes, _, rest = answer.partition(b"\r\n\r\n")
        while match and len(rest) < int(match.group(1)):
            chunk = connection.recv(65536)
            if not chunk:
                break
            rest += chunk
    status = int(head_bytes.split(b" ", 2)[1])
    return status, head_bytes + b"\r\n\r\n" + rest


@pytest.mark.parametrize(
    ("path", "content_type", "limit"),
    [
        ("/subscribe", "application/json", FORM_BODY_LIMIT),
        ("/subscribe", "application/x-www-form-urlencoded", FORM_BODY_LIMIT),
        ("/admin/editions/2026-03-05/test-send", "application/json", OTHER_BODY_LIMIT),
        ("/unsubscribe/abc.def", "application/x-www-form-urlencoded", OTHER_BODY_LIMIT),
    ],
)
def test_a_declared_oversize_body_is_refused_before_it_is_sent(
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    path: str,
    content_type: str,
    limit: int,
) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 20000000\r\n\r\n"
    )
    with live_server(create_app(web_settings(settings), engine=engine)) as base_url:
        status, answer = _raw_exchange(base_url, head, [])  # not one byte of the body
    assert status == 413, answer[:300]
    assert f"{limit // 1024} KiB".encode() in answer


@pytest.mark.parametrize(
    ("path", "content_type", "limit"),
    [
        ("/subscribe", "application/json", FORM_BODY_LIMIT),
        ("/admin/editions/2026-03-05/test-send", "application/json", OTHER_BODY_LIMIT),
        ("/preferences/abc.def", "application/x-www-form-urlencoded", FORM_BODY_LIMIT),
    ],
)
def test_a_chunked_body_is_refused_once_it_passes_the_limit(
    settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    path: str,
    content_type: str,
    limit: int,
) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    # Just past the limit, and never the closing zero-length chunk: only a server
    # that stops counting at the limit can answer.
    chunk = b"x" * 1024
    parts = [b"400\r\n" + chunk + b"\r\n"] * (limit // 1024 + 1)
    with live_server(create_app(web_settings(settings), engine=engine)) as base_url:
        status, answer = _raw_exchange(base_url, head, parts)
    assert status == 413, answer[:300]
    assert smtp_server.messages == []


async def test_an_in_process_stream_is_read_no_further_than_the_limit(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    pulled = 0

    async def twenty_megabytes() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(20 * 1024):
            pulled += 1024
            yield b" " * 1024

    async with running_app(web_settings(settings), engine) as (_, client):
        as_json = await client.post(
            "/subscribe", content=twenty_megabytes(), headers={"content-type": "application/json"}
        )
        pulled_for_json, pulled = pulled, 0
        as_form = await client.post(
            "/subscribe",
            content=twenty_megabytes(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert as_json.status_code == 413
    assert "larger than the 16 KiB" in as_json.json()["detail"]
    assert as_form.status_code == 413
    assert "<html" in as_form.text and "larger than the 16 KiB" in as_form.text
    assert as_form.headers["content-security-policy"]  # still gets every security header
    for count in (pulled_for_json, pulled):
        assert count <= FORM_BODY_LIMIT + 1024


def test_a_client_that_sends_its_whole_oversize_body_reads_the_413_and_keeps_its_connection(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    # Closing while the body still arrives would reset the connection under the answer.
    body = b'{"email": "' + b"x" * 200_000 + b'@example.org"}'
    with (
        live_server(create_app(web_settings(settings), engine=engine)) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        answers = [
            client.post(
                "/admin/editions/2026-03-05/test-send",
                content=body,
                headers={
                    "content-type": "application/json",
                    "authorization": f"Bearer {ADMIN_TOKEN}",
                },
            ).status_code
            for _ in range(20)
        ]
        after = client.get("/")
    assert answers == [413] * 20
    assert after.status_code == 200


async def test_a_body_just_under_the_limit_is_served(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    body = {"email": "roomy@example.org", "name": "Roomy"}
    padding = FORM_BODY_LIMIT - len(json.dumps({**body, "padding": ""})) - 1
    content = json.dumps({**body, "padding": "p" * padding}).encode()
    assert len(content) == FORM_BODY_LIMIT - 1
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.post(
            "/subscribe", content=content, headers={"content-type": "application/json"}
        )
    assert answer.status_code == 202, answer.text
    assert subscriber(engine, "roomy@example.org") is not None
