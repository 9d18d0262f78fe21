"""The published OpenAPI schema is valid, and fuzzing the JSON endpoints finds no 5xx."""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from sqlalchemy import Engine

from newsletter.core.settings import Settings
from newsletter.web.app import create_app
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import ADMIN_TOKEN, store_papers, web_settings

# Small and bounded: this runs in CI on every push.
MAX_EXAMPLES = 12


@pytest.fixture
def web_schema(settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer) -> Any:
    """The app's schema, loaded from the app itself; the rate limit is lifted for fuzzing."""
    import datetime as dt

    store_papers(engine, dt.date(2026, 3, 5))
    app = create_app(web_settings(settings, signup_rate_limit=100_000), engine=engine)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_openapi_schema_is_valid(web_schema: Any) -> None:
    web_schema.validate()
    raw = web_schema.raw_schema
    assert raw["openapi"].startswith("3.")
    assert {"/subscribe", "/admin/editions/{day}/send", "/admin/subscribers"} <= set(raw["paths"])
    body = raw["paths"]["/subscribe"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(body)


def test_json_endpoints_never_answer_5xx(web_schema: Any) -> None:
    # Operations are driven one by one with hypothesis: schemathesis' lazy pytest
    # loader touches a pytest internal (`_nodeid`) that pytest 9 no longer has.
    operations = [
        result.ok()
        for result in web_schema.include(path_regex=r"^/(subscribe|admin/)").get_all_operations()
    ]
    assert len(operations) == 11  # with retry-failed and the subscriber import and export
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            derandomize=True,
            database=None,
        )
        def never_5xx(case: Any) -> None:
            case.call_and_validate(headers=auth, checks=[not_a_server_error])

        never_5xx()
