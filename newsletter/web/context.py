"""What every request may use, built once per app, and the `Annotated` dependencies for it.

The dependencies that only read what the app holds are `async def`: FastAPI runs
a plain `def` dependency in the threadpool, a thread hop per dependency per request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, Request
from jinja2 import Environment
from sqlalchemy import Engine
from sqlmodel import Session

from newsletter.core.dkim import DkimSigner
from newsletter.core.settings import Settings
from newsletter.web.edition_pages import EditionPageCache
from newsletter.web.pages import PageRenderer
from newsletter.web.signup_writer import SignupWriter
from newsletter.web.sns import SnsGateway
from subscribers.ratelimit import ConfirmationCaps, SlidingWindowRateLimiter


@dataclass
class WebContext:
    """The app's long-lived parts; `engine` is set by the lifespan when not given up front."""

    settings: Settings
    env: Environment
    pages: PageRenderer
    signup_limiter: SlidingWindowRateLimiter
    confirmation_caps: ConfirmationCaps
    engine: Engine | None = None
    # Signs confirmation emails; None when DKIM is not configured.
    dkim_signer: DkimSigner | None = None
    # Fetches SNS signing certificates (cached) for /hooks/ses; only from SNS's own hosts.
    sns_gateway: SnsGateway = field(default_factory=SnsGateway)
    # Each public edition's page, built once per rendering.
    edition_pages: EditionPageCache = field(default_factory=EditionPageCache)
    # Receives sign-ups before their answers and records them after, in shared batches.
    signup_writer: SignupWriter = field(init=False)

    @property
    def database(self) -> Engine:
        """The engine, which exists from start-up to shutdown."""
        if self.engine is None:
            raise RuntimeError("the app is not started: run it under its lifespan")
        return self.engine


def web_context_of(request: Request) -> WebContext:
    """The context stored on the app by `create_app`."""
    return cast(WebContext, request.app.state.web)


async def get_web_context(request: Request) -> WebContext:
    """The context stored on the app by `create_app` (as a dependency)."""
    return web_context_of(request)


WebDep = Annotated[WebContext, Depends(get_web_context)]


async def get_settings(web: WebDep) -> Settings:
    """The app's settings."""
    return web.settings


async def get_pages(web: WebDep) -> PageRenderer:
    """The page renderer."""
    return web.pages


async def get_engine(web: WebDep) -> Engine:
    """The database engine."""
    return web.database


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """A session for one request; handlers commit what they change, the rest is rolled back."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


def client_address_of(request: Request) -> str:
    """The client's IP (`ForwardedClientMiddleware` puts a trusted proxy's client here)."""
    return request.client.host if request.client else "unknown"


async def get_client_address(request: Request) -> str:
    """The client's IP (as a dependency)."""
    return client_address_of(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
PagesDep = Annotated[PageRenderer, Depends(get_pages)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
ClientAddressDep = Annotated[str, Depends(get_client_address)]
