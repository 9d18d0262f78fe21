"""`POST /hooks/ses`: SNS-signed SES notifications, and everything that is not one.

The test plays SNS: its own RSA key and certificate, served by a local HTTP
server, and messages signed exactly as SNS signs them. The app's gateway is
told to fetch from that server only; the strict production rule is proven on
its own, and with the app's default gateway (which must refuse before any request).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from newsletter.core.errors import SnsSignatureError
from newsletter.core.settings import Settings
from newsletter.delivery.feedback.recording import feedback_events
from newsletter.delivery.worker import send_edition
from newsletter.models import DeliveryStatus
from newsletter.web.app import create_app
from newsletter.web.body_limit import HOOK_BODY_LIMIT
from newsletter.web.routes.hooks import get_sns_gateway
from newsletter.web.sns import MAX_CERTIFICATE_BYTES, SnsGateway, SnsMessage, is_sns_url
from subscribers.models import SubscriberStatus
from tests.support.feed_server import FeedResponse, FeedServer, running_feed_server
from tests.support.sending import (
    DAY,
    ledger_rows,
    make_edition,
    seed_subscribers,
    subscriber_status,
)
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.sns import (
    TOPIC_ARN,
    SnsSigner,
    notification,
    ses_bounce,
    ses_complaint,
    subscription_confirmation,
)
from tests.support.web import live_server, running_app

CERT_PATH = "/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
CONFIRM_PATH = "/confirm"
SECRET = "ses-hook-secret-for-tests-0123456789"


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    """The stand-in for SNS's signing key (one per module: RSA keys take a moment)."""
    return SnsSigner.create()


@pytest.fixture
def sns_server(signer: SnsSigner) -> Iterator[FeedServer]:
    """A local HTTP server holding the signing certificate and a SubscribeURL."""
    with running_feed_server() as server:
        server.serve(
            CERT_PATH, FeedResponse(body=signer.certificate_pem, content_type="text/plain")
        )
        server.serve(CONFIRM_PATH, FeedResponse(body=b"<ConfirmSubscriptionResponse/>"))
        yield server


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    """Settings with the hook on for the test topic."""
    return settings.model_copy(update={"ses_topic_arns": [TOPIC_ARN]})


def local_gateway(server: FeedServer) -> SnsGateway:
    """A gateway that fetches only from the test's server (in place of SNS's hosts)."""
    return SnsGateway(url_allowed=lambda url: url.startswith(server.base_url + "/"))


async def hook_client(
    settings: Settings, engine: Engine, gateway: SnsGateway | None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (its gateway replaced when `gateway` is given) and a client."""
    async with running_app(settings, engine) as (app, client):
        if gateway is not None:
            app.dependency_overrides[get_sns_gateway] = lambda: gateway
        yield app, client


@pytest.fixture
async def client(
    hook_settings: Settings, engine: Engine, sns_server: FeedServer
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with the hook on and the local SNS stand-in."""
    async for _, client in hook_client(hook_settings, engine, local_gateway(sns_server)):
        yield client


async def post(
    client: httpx.AsyncClient,
    message: dict[str, Any] | bytes,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """POST as SNS does: JSON in a text/plain body, the type in a header."""
    headers = {"content-type": "text/plain; charset=UTF-8", **(headers or {})}
    if isinstance(message, dict):
        headers["x-amz-sns-message-type"] = str(message.get("Type"))
        body = json.dumps(message).encode()
    else:
        body = message
    return await client.post("/hooks/ses", content=body, headers=headers, params=params)


async def sent_message_ids(settings: Settings, engine: Engine, count: int) -> dict[str, str]:
    """Send an edition to `count` readers; each reader's Message-ID."""
    seed_subscribers(engine, count)
    make_edition(engine)
    await send_edition(settings, engine, edition_date=DAY)
    return {row.email: row.message_id for row in ledger_rows(engine) if row.message_id}


def row_status(engine: Engine, address: str) -> DeliveryStatus:
    """The status of this reader's ledger row."""
    [row] = [row for row in ledger_rows(engine) if row.email == address]
    return row.status


def event_count(engine: Engine) -> int:
    """How many feedback events are stored."""
    with engine.connect() as connection:
        return len(connection.execute(select(feedback_events.c.id)).all())


# ---- the strict URL rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.eu-west-3.amazonaws.com:443/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.ap-southeast-2.amazonaws.com/?Action=ConfirmSubscription&Token=x",
    ],
)
def test_sns_urls_are_https_on_an_sns_host(url: str) -> None:
    assert is_sns_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com.evil.com/cert.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://evil.com/sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com@evil.com/cert.pem",
        "https://user:pass@sns.us-east-1.amazonaws.com/cert.pem",
        "https://evil.com#@sns.us-east-1.amazonaws.com/cert.pem",
        "https://evil.com\\@sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
        "https://sqs.us-east-1.amazonaws.com/cert.pem",
        "https://sns.amazonaws.com/cert.pem",
        "https://xsns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com./cert.pem",
        "https://sns.us-east-1.amazonaws.com /cert.pem",
        "https://sns.us-east-1.amazonaws.com\r\n/cert.pem",
        "https://127.0.0.1/cert.pem",
        "file:///etc/passwd",
        "//sns.us-east-1.amazonaws.com/cert.pem",
        "not a url",
        "",
    ],
)
def test_anything_else_is_not_an_sns_url(url: str) -> None:
    assert not is_sns_url(url)


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.us-east-1.amazonaws.com.evil.com/cert.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://evil.example.org/SimpleNotificationService-abc.pem",
    ],
)
async def test_the_apps_own_gateway_refuses_a_foreign_certificate_url_before_any_request(
    hook_settings: Settings, engine: Engine, signer: SnsSigner, cert_url: str
) -> None:
    requested: list[str] = []

    async def recording_fetch(url: str) -> bytes:
        requested.append(url)
        return signer.certificate_pem

    strict = SnsGateway(fetch=recording_fetch)  # the production URL rule
    message = signer.sign(notification(ses_bounce("a@example.org", "<x@y>")), cert_url=cert_url)
    async for _, client in hook_client(hook_settings, engine, strict):
        answer = await post(client, message)
    assert answer.status_code == 403
    assert "SigningCertURL" in answer.json()["detail"]
    assert requested == []
    assert event_count(engine) == 0


# ---- notifications ----------------------------------------------------------------------------


async def test_a_signed_bounce_and_complaint_change_the_readers_and_their_rows(
    hook_settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    sns_server: FeedServer,
    signer: SnsSigner,
    client: httpx.AsyncClient,
) -> None:
    message_ids = await sent_message_ids(hook_settings, engine, 3)
    gone, complainer, fine = sorted(message_ids)
    cert_url = sns_server.url(CERT_PATH)
    bounce = signer.sign(
        notification(ses_bounce(gone, message_ids[gone])), cert_url=cert_url, version="1"
    )
    complaint = signer.sign(
        notification(ses_complaint(complainer, message_ids[complainer]), Subject="Complaint"),
        cert_url=cert_url,
        version="2",
    )

    bounced = await post(client, bounce)
    complained = await post(client, complaint)
    again = await post(client, bounce)  # SNS delivers at least once

    assert bounced.status_code == 200, bounced.text
    assert bounced.json()["events"] == {"hard_bounce": 1, "soft_bounce": 0, "complaint": 0}
    assert bounced.json()["new"] == 1
    assert complained.status_code == 200, complained.text
    assert complained.json()["events"]["complaint"] == 1
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    assert subscriber_status(engine, gone) is SubscriberStatus.BOUNCED
    assert subscriber_status(engine, complainer) is SubscriberStatus.COMPLAINED
    assert subscriber_status(engine, fine) is SubscriberStatus.CONFIRMED
    assert row_status(engine, gone) is DeliveryStatus.BOUNCED
    assert row_status(engine, complainer) is DeliveryStatus.COMPLAINED
    assert event_count(engine) == 2
    # The certificate was fetched once and kept.
    assert len(sns_server.requests(CERT_PATH)) == 1


async def test_over_real_http_a_signed_bounce_bounces_the_reader(
    hook_settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    sns_server: FeedServer,
    signer: SnsSigner,
) -> None:
    message_ids = await sent_message_ids(hook_settings, engine, 1)
    [(reader, message_id)] = message_ids.items()
    bounce = signer.sign(
        notification(ses_bounce(reader, message_id)), cert_url=sns_server.url(CERT_PATH)
    )
    app = create_app(hook_settings, engine=engine)
    app.dependency_overrides[get_sns_gateway] = lambda: local_gateway(sns_server)
    with live_server(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as http:
            answer = await post(http, bounce)
    assert answer.status_code == 200, answer.text
    assert subscriber_status(engine, reader) is SubscriberStatus.BOUNCED


async def test_a_transient_bounce_is_soft_and_a_delivery_records_nothing(
    hook_settings: Settings,
    engine: Engine,
    smtp_server: RecordingSmtpServer,
    sns_server: FeedServer,
    signer: SnsSigner,
    client: httpx.AsyncClient,
) -> None:
    message_ids = await sent_message_ids(hook_settings, engine, 1)
    [(reader, message_id)] = message_ids.items()
    cert_url = sns_server.url(CERT_PATH)
    soft = signer.sign(
        notification(ses_bounce(reader, message_id, bounce_type="Transient")), cert_url=cert_url
    )
    delivery = signer.sign(
        notification({"notificationType": "Delivery", "mail": {}, "delivery": {}}),
        cert_url=cert_url,
    )

    answer = await post(client, soft)
    nothing = await post(client, delivery)

    assert answer.json()["events"]["soft_bounce"] == 1
    assert nothing.status_code == 200 and nothing.json()["detail"] == "nothing to record"
    assert subscriber_status(engine, reader) is SubscriberStatus.CONFIRMED
    assert row_status(engine, reader) is DeliveryStatus.SENT
    assert event_count(engine) == 1


async def test_a_tampered_message_is_refused(
    engine: Engine, sns_server: FeedServer, signer: SnsSigner, client: httpx.AsyncClient
) -> None:
    seed_subscribers(engine, 1)
    signed = signer.sign(
        notification(ses_bounce("someone@example.org", "<a@b>")), cert_url=sns_server.url(CERT_PATH)
    )
    tampered = {**signed, "Message": json.dumps(ses_bounce("reader00000@example.org", "<a@b>"))}
    other_key = SnsSigner.create().sign(
        notification(ses_bounce("reader00000@example.org", "<a@b>")),
        cert_url=sns_server.url(CERT_PATH),
    )
    unknown_version = {**signed, "SignatureVersion": "3"}

    for message in (tampered, other_key, unknown_version):
        answer = await post(client, message)
        assert answer.status_code == 403, answer.text
    assert subscriber_status(engine, "reader00000@example.org") is SubscriberStatus.CONFIRMED
    assert event_count(engine) == 0


async def test_a_topic_not_allowed_is_refused_before_the_certificate_is_fetched(
    engine: Engine, sns_server: FeedServer, signer: SnsSigner, client: httpx.AsyncClient
) -> None:
    other_topic = "arn:aws:sns:us-east-1:210987654321:someone-elses"
    message = signer.sign(
        notification(ses_bounce("reader@example.org", "<a@b>"), topic_arn=other_topic),
        cert_url=sns_server.url(CERT_PATH),
    )
    answer = await post(client, message)
    assert answer.status_code == 403
    assert "topic" in answer.json()["detail"]
    assert sns_server.requests(CERT_PATH) == []


async def test_an_expired_certificate_is_refused(hook_settings: Settings, engine: Engine) -> None:
    expired = SnsSigner.create(valid_days=-1)
    with running_feed_server() as server:
        server.serve(CERT_PATH, FeedResponse(body=expired.certificate_pem))
        message = expired.sign(
            notification(ses_bounce("a@example.org", "<a@b>")), cert_url=server.url(CERT_PATH)
        )
        async for _, client in hook_client(hook_settings, engine, local_gateway(server)):
            answer = await post(client, message)
    assert answer.status_code == 403
    assert "not valid now" in answer.json()["detail"]


async def test_a_kept_certificate_is_not_used_past_its_validity(
    sns_server: FeedServer, signer: SnsSigner
) -> None:
    clock = [dt.datetime.now(dt.UTC)]
    gateway = SnsGateway(
        url_allowed=lambda url: url.startswith(sns_server.base_url + "/"), now=lambda: clock[0]
    )
    message = SnsMessage.parse(
        json.dumps(signer.sign(notification({}), cert_url=sns_server.url(CERT_PATH))).encode()
    )
    await gateway.verify(message)
    await gateway.verify(message)
    assert len(sns_server.requests(CERT_PATH)) == 1  # kept
    clock[0] += dt.timedelta(days=2)  # past the certificate's end
    with pytest.raises(SnsSignatureError, match="not valid now"):
        await gateway.verify(message)
    assert len(sns_server.requests(CERT_PATH)) == 2  # fetched again, and refused


async def test_an_unreachable_certificate_is_502_so_sns_retries(
    hook_settings: Settings, engine: Engine, signer: SnsSigner
) -> None:
    with running_feed_server() as server:
        server.serve(CERT_PATH, FeedResponse(status=503))
        message = signer.sign(
            notification(ses_bounce("a@example.org", "<a@b>")), cert_url=server.url(CERT_PATH)
        )
        async for _, client in hook_client(hook_settings, engine, local_gateway(server)):
            answer = await post(client, message)
    assert answer.status_code == 502


@pytest.mark.parametrize(
    ("served", "status"),
    [
        (FeedResponse(body=b"x" * (MAX_CERTIFICATE_BYTES + 1)), 502),  # no certificate is that big
        (FeedResponse(body=b"<html>not a certificate</html>"), 403),
        (FeedResponse(status=302, headers={"location": "https://evil.example.org/c.pem"}), 502),
    ],
)
async def test_what_is_no_certificate_is_not_trusted(
    hook_settings: Settings, engine: Engine, signer: SnsSigner, served: FeedResponse, status: int
) -> None:
    with running_feed_server() as server:
        server.serve(CERT_PATH, served)
        message = signer.sign(
            notification(ses_bounce("a@example.org", "<a@b>")), cert_url=server.url(CERT_PATH)
        )
        async for _, client in hook_client(hook_settings, engine, local_gateway(server)):
            answer = await post(client, message)
    assert answer.status_code == status
    assert event_count(engine) == 0


async def test_a_type_header_that_contradicts_the_body_is_refused(
    sns_server: FeedServer, signer: SnsSigner, client: httpx.AsyncClient
) -> None:
    message = signer.sign(notification({}), cert_url=sns_server.url(CERT_PATH))
    answer = await client.post(
        "/hooks/ses",
        content=json.dumps(message).encode(),
        headers={"x-amz-sns-message-type": "SubscriptionConfirmation"},
    )
    assert answer.status_code == 400


# ---- subscription confirmation -----------------------------------------------------------------


async def test_a_subscription_is_confirmed_by_visiting_the_subscribe_url(
    sns_server: FeedServer, signer: SnsSigner, client: httpx.AsyncClient
) -> None:
    message = signer.sign(
        subscription_confirmation(sns_server.url(CONFIRM_PATH) + "?Action=ConfirmSubscription"),
        cert_url=sns_server.url(CERT_PATH),
    )
    answer = await post(client, message)
    assert answer.status_code == 200
    assert answer.json()["detail"] == "subscription confirmed"
    [visit] = sns_server.requests(CONFIRM_PATH)
    assert visit.query == {"Action": "ConfirmSubscription"}


async def test_an_unsubscribe_confirmation_is_noted_and_nothing_visited(
    sns_server: FeedServer, signer: SnsSigner, client: httpx.AsyncClient
) -> None:
    unsubscribed = subscription_confirmation(sns_server.url(CONFIRM_PATH))
    unsubscribed["Type"] = "UnsubscribeConfirmation"
    answer = await post(client, signer.sign(unsubscribed, cert_url=sns_server.url(CERT_PATH)))
    assert answer.status_code == 200
    assert sns_server.requests(CONFIRM_PATH) == []


async def test_a_subscribe_url_off_sns_is_not_visited(
    sns_server: FeedServer, signer: SnsSigner, client: httpx.AsyncClient
) -> None:
    message = signer.sign(
        subscription_confirmation("https://evil.example.org/?Action=ConfirmSubscription"),
        cert_url=sns_server.url(CERT_PATH),
    )
    answer = await post(client, message)
    assert answer.status_code == 400
    assert sns_server.requests(CONFIRM_PATH) == []


async def test_without_auto_confirmation_the_url_is_logged_not_visited(
    hook_settings: Settings,
    engine: Engine,
    sns_server: FeedServer,
    signer: SnsSigner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = hook_settings.model_copy(update={"ses_confirm_subscriptions": False})
    subscribe_url = sns_server.url(CONFIRM_PATH) + "?Action=ConfirmSubscription"
    message = signer.sign(
        subscription_confirmation(subscribe_url), cert_url=sns_server.url(CERT_PATH)
    )
    async for _, client in hook_client(settings, engine, local_gateway(sns_server)):
        answer = await post(client, message)
    assert answer.status_code == 200
    assert sns_server.requests(CONFIRM_PATH) == []
    assert subscribe_url in caplog.text


# ---- the secret, the hook switched off ---------------------------------------------------------


async def test_the_secret_is_required_when_set(
    hook_settings: Settings, engine: Engine, sns_server: FeedServer, signer: SnsSigner
) -> None:
    settings = hook_settings.model_copy(update={"ses_hook_secret": SECRET})
    message = signer.sign(
        notification({"notificationType": "Delivery"}), cert_url=sns_server.url(CERT_PATH)
    )
    basic = base64.b64encode(f"ses:{SECRET}".encode()).decode()
    wrong = base64.b64encode(b"ses:guess").decode()
    async for _, client in hook_client(settings, engine, local_gateway(sns_server)):
        missing = await post(client, message)
        wrong_basic = await post(client, message, headers={"authorization": f"Basic {wrong}"})
        wrong_query = await post(client, message, params={"secret": "guess"})
        right_basic = await post(client, message, headers={"authorization": f"Basic {basic}"})
        right_query = await post(client, message, params={"secret": SECRET})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Basic realm="ses"'
    assert (wrong_basic.status_code, wrong_query.status_code) == (403, 403)
    assert (right_basic.status_code, right_query.status_code) == (200, 200)


async def test_the_hook_is_off_without_topics(
    settings: Settings, engine: Engine, signer: SnsSigner
) -> None:
    message = signer.sign(notification({}), cert_url="https://sns.us-east-1.amazonaws.com/x.pem")
    async for _, client in hook_client(settings, engine, None):
        answer = await post(client, message)
    assert answer.status_code == 404


# ---- hostile bodies -----------------------------------------------------------------------------


def _bodies(signer: SnsSigner, cert_url: str) -> list[bytes]:
    def signed_payload(payload: Any) -> bytes:
        message = notification({})
        message["Message"] = payload if isinstance(payload, str) else json.dumps(payload)
        return json.dumps(signer.sign(message, cert_url=cert_url)).encode()

    def signed_field(**fields: Any) -> bytes:
        return json.dumps({**signer.sign(notification({}), cert_url=cert_url), **fields}).encode()

    return [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"Type": NaN}',
        b'{"Type": ' + b"9" * 5000 + b"}",
        json.dumps({"Type": ["Notification"]}).encode(),
        json.dumps({"Type": "Notification", "Message": 5}).encode(),
        json.dumps({"Type": "Telegram"}).encode(),
        signed_field(Signature="***not base64***"),
        signed_field(Message={"notificationType": "Bounce"}),
        signed_field(TopicArn=None),
        signed_payload("not json"),
        signed_payload("[" * 100_000 + "]" * 100_000),
        signed_payload([]),
        signed_payload({"notificationType": 7}),
        signed_payload({"notificationType": "Bounce"}),
        signed_payload({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"}}),
        signed_payload(
            {
                "notificationType": "Bounce",
                "bounce": {"bounceType": "Permanent", "bouncedRecipients": "a@example.org"},
            }
        ),
        signed_payload(
            {
                "notificationType": "Bounce",
                "bounce": {"bounceType": "Sideways", "bouncedRecipients": []},
            }
        ),
        signed_payload(
            {
                "notificationType": "Complaint",
                "complaint": {"complainedRecipients": [7, None, ["x"]]},
            }
        ),
        signed_payload({"notificationType": "Bounce", "mail": "x", "bounce": {}}),
    ]


async def test_hostile_bodies_get_4xx_never_5xx(
    engine: Engine, sns_server: FeedServer, signer: SnsSigner, client: httpx.AsyncClient
) -> None:
    for body in _bodies(signer, sns_server.url(CERT_PATH)):
        answer = await post(client, body)
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text, body[:80])
        assert answer.headers["content-type"].startswith("application/json")
    assert event_count(engine) == 0


async def test_recipients_that_are_no_address_are_skipped(
    engine: Engine, sns_server: FeedServer, signer: SnsSigner, client: httpx.AsyncClient
) -> None:
    payload = ses_bounce("reader00000@example.org", "<a@b>")
    payload["bounce"]["bouncedRecipients"] = [
        {"emailAddress": 7},
        {"emailAddress": "no at sign"},
        {"emailAddress": "x" * 400 + "@example.org"},
        {},
    ]
    message = signer.sign(notification(payload), cert_url=sns_server.url(CERT_PATH))
    answer = await post(client, message)
    assert answer.status_code == 200
    assert answer.json()["detail"] == "nothing to record"


async def test_a_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    answer = await post(client, b"{" + b" " * HOOK_BODY_LIMIT + b"}")
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("application/json")
