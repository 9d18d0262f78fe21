"""`/metrics` for Prometheus and `/healthz` for load balancers and orchestrators."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from newsletter.web.context import WebDep
from newsletter.web.metrics import CONTENT_TYPE, metrics_text

logger = logging.getLogger(__name__)
router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
    summary="The list's figures in the Prometheus text format, counted in the database",
)
def metrics(web: WebDep) -> Response:
    """Deliveries by status, send rate, sign-ups, bounces and complaints, last ingest and sends."""
    return Response(
        metrics_text(lambda: web.database),
        media_type=CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/healthz",
    responses={503: {"description": "The database does not answer."}},
    summary="200 when the database answers, 503 when it does not",
)
def healthz(web: WebDep) -> JSONResponse:
    """Whether this process can reach its database."""
    try:
        with web.database.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        logger.warning("health check: the database does not answer: %s", error)
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable"},
            status_code=503,
            headers={"Cache-Control": "no-store"},
        )
    return JSONResponse({"status": "ok", "database": "ok"}, headers={"Cache-Control": "no-store"})
