"""The API docs: off in production unless asked for, and served without any CDN."""

from __future__ import annotations

import re
import secrets

import pytest
from sqlalchemy import Engine

from newsletter.core.settings import Settings, load_settings
from tests.support.web import running_app, web_settings

DOCS_PATHS = ["/docs", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"]


def _production(settings: Settings, **overrides: object) -> Settings:
    """Production settings that pass validation, on the test database and SMTP server."""
    return load_settings(
        environment="production",
        secret_key=secrets.token_urlsafe(32),
        admin_token=secrets.token_urlsafe(32),
        database_url=settings.database_url,
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        base_url=settings.base_url,
        **overrides,
    )


async def test_production_serves_no_docs_and_no_schema(settings: Settings, engine: Engine) -> None:
    async with running_app(_production(settings), engine) as (_, client):
        answers = {path: (await client.get(path)).status_code for path in DOCS_PATHS}
        page = await client.get("/")
    assert answers == dict.fromkeys(DOCS_PATHS, 404)
    assert page.status_code == 200


@pytest.mark.parametrize("environment", ["production", "development"])
async def test_the_setting_turns_them_on(
    settings: Settings, engine: Engine, environment: str
) -> None:
    config = (
        _production(settings, api_docs=True)
        if environment == "production"
        else web_settings(settings)
    )
    async with running_app(config, engine) as (_, client):
        answers = {path: (await client.get(path)).status_code for path in DOCS_PATHS}
    assert answers == dict.fromkeys(DOCS_PATHS, 200)


async def test_the_docs_page_loads_everything_from_this_server(
    settings: Settings, engine: Engine
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        page = await client.get("/docs")
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        fetched = {asset: await client.get(asset) for asset in assets}
        schema = await client.get("/openapi.json")
    assert page.status_code == 200
    assert assets and all(asset.startswith("/docs/assets/") for asset in assets), assets
    assert all(answer.status_code == 200 for answer in fetched.values())
    assert "SwaggerUIBundle" in fetched["/docs/assets/swagger-ui-bundle.js"].text
    assert '"validatorUrl": null' in page.text  # no badge fetched from validator.swagger.io
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline'" in csp and "https:" not in csp
    assert "/admin/editions/{day}/send" in schema.json()["paths"]
