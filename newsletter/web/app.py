"""The FastAPI app factory: settings in, app out; the one place the web side is wired.

Nothing is read at import time. The engine is the caller's when given (tests,
an embedding process), otherwise created at start-up and disposed at shutdown.
The app never sends a digest: /admin only changes the ledger, and workers send.
With `sending_worker` (what `newsletter serve` does unless `--no-worker`) the
app starts one `newsletter worker --forever` child at start-up and stops it at
shutdown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter import __version__
from newsletter.core.db import create_db_engine
from newsletter.core.dkim import DkimSigner
from newsletter.core.settings import Settings
from newsletter.core.templating import make_template_environment
from newsletter.delivery.worker_process import WorkerProcess
from newsletter.web.body_limit import BodySizeLimitMiddleware, body_limits
from newsletter.web.context import WebContext
from newsletter.web.pages import PRIVATE_PAGE_HEADERS, PageRenderer
from newsletter.web.proxies import ForwardedClientMiddleware, TrustedProxies
from newsletter.web.routes import (
    admin,
    confirm,
    console,
    editions,
    feedback,
    hooks,
    monitoring,
    preferences,
    signup,
    unsubscribe,
)
from newsletter.web.routes.console import CONSOLE
from newsletter.web.signup_writer import SignupWriter
from subscribers.ratelimit import ConfirmationCaps, SlidingWindowRateLimiter

logger = logging.getLogger(__name__)

# The app's one task of its own: recording sign-ups a stopped server answered.
LEFT_SIGNUPS_TASK = "record-left-signups"

# Pages carry their CSS inline; their one script (the interests counter,
# /assets/profile.js) is served by this site; forms post back to this site only.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# The interactive API docs run Swagger UI from files of the fastapi-offline
# package, served here (no CDN), and one inline script that starts it.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
DOCS_PATH = "/docs"


class SecurityHeadersMiddleware:
    """Adds the headers every response should carry (pages may set a stricter CSP themselves).

    `Referrer-Policy: no-referrer` matters most: confirmation, unsubscribe and
    preferences URLs carry tokens that must not leak to other sites.
    """

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, adding headers to the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                wanted = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                csp = DOCS_CSP if path.startswith(DOCS_PATH) else PAGE_CSP
                wanted.append((b"content-security-policy", csp.encode()))
                if self.https:
                    wanted.append((b"strict-transport-security", b"max-age=31536000"))
                headers.extend(item for item in wanted if item[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    settings: Settings, *, engine: Engine | None = None, sending_worker: bool = False
) -> FastAPI:
    """The web app for these settings; pass `engine` to share one, else it is made at start-up.

    `sending_worker` starts a `newsletter worker --forever` child for the app's lifetime.
    """
    env = make_template_environment(settings.templates_dir)
    owns_engine = engine is None
    web = WebContext(
        settings=settings,
        env=env,
        pages=PageRenderer(env, settings),
        signup_limiter=SlidingWindowRateLimiter(
            limit=settings.signup_rate_limit, window_seconds=settings.signup_rate_window_seconds
        ),
        confirmation_caps=ConfirmationCaps.from_settings(settings),
        engine=engine,
        dkim_signer=DkimSigner.from_settings(settings),
    )
    web.signup_writer = SignupWriter(
        functools.partial(signup.write_signups, web),
        together=settings.database_url.startswith("sqlite"),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if web.engine is None:
            web.engine = create_db_engine(settings.database_url)
        # Sign-ups answered but not recorded when a server stopped: recorded before
        # this one takes any, then whatever another server leaves, every minute.
        try:
            await asyncio.to_thread(signup.record_left_unrecorded, web, older_than_seconds=0)
        except Exception:  # the app still starts: /healthz says what is wrong
            logger.exception("could not look for sign-ups left unrecorded")
        leftovers = asyncio.create_task(
            signup.record_left_unrecorded_forever(web), name=LEFT_SIGNUPS_TASK
        )
        worker = WorkerProcess(settings) if sending_worker else None
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            leftovers.cancel()
            if worker is not None:
                # Waits for the child to finish its messages in flight: off the loop.
                await asyncio.to_thread(worker.stop)
            if owns_engine and web.engine is not None:
                web.engine.dispose()
                web.engine = None

    title = f"{settings.list_name}: sign-up and operator API"
    if settings.api_docs_enabled:
        app = FastAPIOffline(
            docs_url=DOCS_PATH,
            redoc_url=None,
            static_url=f"{DOCS_PATH}/assets",
            # Swagger UI would send the schema's URL to validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None},
            title=title,
            version=__version__,
            lifespan=lifespan,
        )
    else:
        app = FastAPI(
            title=title,
            version=__version__,
            lifespan=lifespan,
            docs_url=None,
            redoc_url=None,
            openapi_url=None,
        )
    app.state.web = web
    for module in (
        signup,
        confirm,
        unsubscribe,
        preferences,
        feedback,
        editions,
        console,
        admin,
        hooks,
        monitoring,
    ):
        app.include_router(module.router)
    _add_error_pages(app, web)
    app.add_middleware(ForwardedClientMiddleware, proxies=TrustedProxies(settings.trusted_proxies))
    app.add_middleware(
        BodySizeLimitMiddleware,
        refusal=_too_large_answer(web),
        limit_for=body_limits(import_max_bytes=settings.import_max_bytes),
    )
    # Added last, so it is the outermost: every answer gets the headers, a 413 too.
    app.add_middleware(SecurityHeadersMiddleware, https=settings.base_url.startswith("https://"))
    return app


def _wants_json(request: Request) -> bool:
    if request.url.path.startswith(CONSOLE):
        return request.url.path.endswith("/progress")
    if request.url.path.startswith(("/admin", "/hooks/")):
        return True
    content_type = request.headers.get("content-type", "")
    accept = request.headers.get("accept", "")
    return "json" in content_type or ("json" in accept and "html" not in accept)


def _too_large_answer(web: WebContext) -> Callable[[Request, int], Response]:
    """The 413 for a body over its limit: JSON for API clients, a page for browsers."""

    def answer(request: Request, limit: int) -> Response:
        message = f"The request body is larger than the {limit // 1024} KiB this address accepts."
        if _wants_json(request):
            return JSONResponse({"detail": message}, status_code=413)
        return web.pages.message(
            title="That was too much",
            message=message,
            status_code=413,
            link_url="/",
            link_text="Go to the sign-up page",
        )

    return answer


def _add_error_pages(app: FastAPI, web: WebContext) -> None:
    """Browsers get pages for errors, API clients JSON; never a traceback."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse(
                {"detail": error.detail}, status_code=error.status_code, headers=error.headers
            )
        titles = {404: "Page not found", 405: "Not allowed here"}
        if request.url.path.startswith(CONSOLE):
            return web.pages.message(
                title=titles.get(error.status_code, "That did not work"),
                message=str(error.detail),
                status_code=error.status_code,
                headers={**(error.headers or {}), **PRIVATE_PAGE_HEADERS},
                link_text="Back to the console",
                link_url=f"{CONSOLE}/",
            )
        return web.pages.message(
            title=titles.get(error.status_code, "Something is not right"),
            message="There is nothing at this address."
            if error.status_code == 404
            else str(error.detail),
            status_code=error.status_code,
            headers=error.headers,
            link_text="Go to the sign-up page",
            link_url="/",
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'][1:]) or 'request'}: {item['msg']}"
            for item in error.errors()
        )
        if _wants_json(request):
            return JSONResponse({"detail": problems}, status_code=422)
        return web.pages.message(
            title="That did not work",
            message=f"The form was not filled in as expected ({problems}).",
            status_code=422,
            link_text="Go to the sign-up page",
            link_url="/",
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        if _wants_json(request):
            return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
        return web.pages.message(
            title="Something went wrong on our side",
            message="Please try again in a few minutes.",
            status_code=500,
        )


def uvicorn_config(
    settings: Settings, *, host: str, port: int, worker: bool = False
) -> uvicorn.Config:
    """How `newsletter serve` runs the app under uvicorn (`worker`: with a sending child)."""
    return uvicorn.Config(
        create_app(settings, sending_worker=worker),
        host=host,
        port=port,
        # The app reads X-Forwarded-For itself, from NEWSLETTER_TRUSTED_PROXIES only;
        # uvicorn's own handling would trust 127.0.0.1 (or FORWARDED_ALLOW_IPS) blindly.
        proxy_headers=False,
        log_level="info",
    )


def serve(settings: Settings, *, host: str, port: int, worker: bool = True) -> None:
    """Run the app under uvicorn until interrupted (what `newsletter serve` calls).

    With `worker` (the default) one sending worker runs as a child process.
    """
    uvicorn.Server(uvicorn_config(settings, host=host, port=port, worker=worker)).run()
