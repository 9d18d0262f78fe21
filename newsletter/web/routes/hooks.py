"""`POST /hooks/ses`: Amazon SES bounces and complaints, delivered by Amazon SNS over HTTPS.

The checks, cheapest first, all before anything is recorded or fetched:

1. the hook is on only when `NEWSLETTER_SES_TOPIC_ARNS` lists a topic (else 404);
2. with `NEWSLETTER_SES_HOOK_SECRET`, the request carries it as the basic-auth
   password (`https://ses:SECRET@host/hooks/ses` as the subscription's
   endpoint; SNS sends it after the 401 challenge) or as `?secret=` (401, 403);
3. the body is an SNS message (400) from an allowed topic (403);
4. SNS signed it: the signing certificate comes only from an https URL on
   `sns.REGION.amazonaws.com` (`web.sns.SnsGateway`), else 403.

A SubscriptionConfirmation is then confirmed by visiting its SubscribeURL
(an SNS URL too), unless `NEWSLETTER_SES_CONFIRM_SUBSCRIPTIONS=false`, in which
case the URL is logged for the operator. A Notification's bounces and complaints
are recorded in a worker thread (the event loop never waits on the database);
recording is idempotent, so SNS delivering a message twice changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from newsletter.core.clock import utc_now
from newsletter.core.errors import (
    SnsMessageError,
    SnsSignatureError,
    SnsUnavailableError,
)
from newsletter.core.settings import Settings
from newsletter.core.text import single_line
from newsletter.delivery.feedback import FeedbackKind, record_feedback
from newsletter.delivery.feedback.ses import events_from_ses_notification
from newsletter.web.context import WebDep
from newsletter.web.sns import (
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    SnsGateway,
    SnsMessage,
    parse_json,
)

logger = logging.getLogger(__name__)

SES_HOOK_PATH = "/hooks/ses"

router = APIRouter(prefix="/hooks", tags=["hooks"])


def get_sns_gateway(web: WebDep) -> SnsGateway:
    """What fetches SNS certificates and confirms subscriptions (tests override this)."""
    return web.sns_gateway


SnsGatewayDep = Annotated[SnsGateway, Depends(get_sns_gateway)]


def _answer(status_code: int, detail: str, **extra: object) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status_code)


@router.post(
    "/ses",
    summary="Amazon SES bounces and complaints (an SNS HTTPS subscription)",
    description=(
        "Takes the messages Amazon SNS posts for a topic listed in NEWSLETTER_SES_TOPIC_ARNS: "
        "the subscription confirmation, then SES `Bounce` and `Complaint` notifications. "
        "Every message's SNS signature is verified. 404 when no topic is configured."
    ),
    # SNS posts its JSON as text/plain, so the body is read (and checked) by the handler.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "An Amazon SNS message (JSON): SubscriptionConfirmation or Notification",
        }
    },
    responses={
        200: {"description": "Processed (or nothing to record)"},
        400: {"description": "Not an SNS message, or not an SES notification"},
        401: {"description": "NEWSLETTER_SES_HOOK_SECRET is set and the request lacks it"},
        403: {"description": "Wrong secret, topic not allowed, or not signed by SNS"},
        404: {"description": "The hook is off (no NEWSLETTER_SES_TOPIC_ARNS)"},
        413: {"description": "The body is larger than an SNS message can be"},
        502: {"description": "The SNS signing certificate cannot be fetched now; SNS retries"},
    },
)
async def ses_notification(request: Request, web: WebDep, gateway: SnsGatewayDep) -> JSONResponse:
    """Verify an SNS message and record the SES bounces and complaints it carries."""
    settings = web.settings
    if not settings.ses_topic_arns:
        return _answer(404, "Not Found")
    refusal = _check_secret(request, settings)
    if refusal is not None:
        return refusal
    try:
        message = SnsMessage.parse(await request.body())
    except SnsMessageError as error:
        return _answer(400, str(error))
    announced = request.headers.get("x-amz-sns-message-type")
    if announced is not None and announced != message.type:
        return _answer(400, "x-amz-sns-message-type does not match the message's Type")
    if message.topic_arn not in settings.ses_topic_arns:
        logger.warning("SNS message from a topic not allowed: %s", single_line(message.topic_arn))
        return _answer(403, "this topic is not allowed (NEWSLETTER_SES_TOPIC_ARNS)")
    try:
        await gateway.verify(message)
    except SnsSignatureError as error:
        logger.warning("SNS message refused: %s", error)
        return _answer(403, str(error))
    except SnsUnavailableError as error:
        logger.warning("%s", error)
        return _answer(502, "cannot fetch the SNS signing certificate now; try again later")

    if message.type == SUBSCRIPTION_CONFIRMATION:
        return await _confirm(message, gateway, settings)
    if message.type != NOTIFICATION:  # UnsubscribeConfirmation
        logger.warning("SNS unsubscribed this endpoint from %s", single_line(message.topic_arn))
        return _answer(200, "noted")
    now = utc_now()
    try:
        events = events_from_ses_notification(
            parse_json(message.message, what="the SNS Message"), now=now
        )
    except SnsMessageError as error:
        return _answer(400, str(error))
    if not events:
        return _answer(200, "nothing to record")
    summary = await run_in_threadpool(
        record_feedback, web.database, events, settings=settings, now=now
    )
    kinds = {kind.value: sum(e.kind is kind for e in events) for kind in FeedbackKind}
    return _answer(
        200,
        "recorded",
        events=kinds,
        new=summary.recorded,
        duplicates=summary.duplicates,
        unknown=summary.unknown,
    )


async def _confirm(message: SnsMessage, gateway: SnsGateway, settings: Settings) -> JSONResponse:
    url = single_line(message.subscribe_url or "")
    if not settings.ses_confirm_subscriptions:
        logger.warning(
            "SNS asks to confirm the subscription to %s: visit %s",
            single_line(message.topic_arn),
            url,
        )
        return _answer(200, "subscription not confirmed: the URL is in the log")
    try:
        confirmed = await gateway.confirm_subscription(message)
    except SnsUnavailableError as error:
        logger.warning("cannot confirm the SNS subscription at %s: %s", url, error)
        return _answer(502, "cannot confirm the subscription now; try again later")
    if not confirmed:
        logger.warning("SNS SubscribeURL is not an SNS URL; not visited: %s", url)
        return _answer(400, "the SubscribeURL is not an https URL of Amazon SNS")
    logger.warning("confirmed the SNS subscription to %s", single_line(message.topic_arn))
    return _answer(200, "subscription confirmed")


def _check_secret(request: Request, settings: Settings) -> JSONResponse | None:
    """None when no secret is set or the request carries it; else the 401 or 403 answer."""
    secret = settings.ses_hook_secret
    if secret is None:
        return None
    given = request.query_params.get("secret")
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if given is None and scheme.lower() == "basic":
        try:
            given = base64.b64decode(credentials, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            given = ""
    if given is None:
        return JSONResponse(
            {"detail": "this hook needs its secret (basic auth password or ?secret=)"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="ses"'},
        )
    if not hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode("utf-8")):
        return _answer(403, "wrong secret")
    return None
