"""Settings, schema and the recording SMTP server behave as the rest relies on."""

from __future__ import annotations

import secrets
import smtplib

import pytest
from sqlalchemy import Engine, inspect

from newsletter.core.errors import ConfigurationError
from newsletter.core.settings import load_settings
from tests.support import REPO_ROOT
from tests.support.smtp_server import RecordingSmtpServer


def test_production_refuses_the_default_secret_key() -> None:
    with pytest.raises(ConfigurationError, match="NEWSLETTER_SECRET_KEY"):
        load_settings(environment="production")


def test_production_accepts_a_real_secret_key() -> None:
    key, token = secrets.token_urlsafe(32), secrets.token_hex(16)
    settings = load_settings(environment="production", secret_key=key, admin_token=token)
    assert (settings.secret_key, settings.admin_token) == (key, token)


@pytest.mark.parametrize(
    ("setting", "value", "why"),
    [
        ("secret_key", "§", "1 character long, not the 32 needed"),
        ("secret_key", "x" * 40, "repeats"),
        ("secret_key", "Zq3_kP9x" * 5, "repeats"),
        ("secret_key", "E9sVB6aMjeMcHgBoiMJt7Q", "22 characters long"),
        ("admin_token", "hunter2", "7 characters long"),
        ("admin_token", "ab" * 20, "repeats"),
    ],
)
def test_production_refuses_weak_secrets_and_says_how_to_make_one(
    setting: str, value: str, why: str
) -> None:
    values = {"secret_key": secrets.token_urlsafe(32), setting: value}
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environment="production", **values)
    message = str(caught.value)
    assert f"NEWSLETTER_{setting.upper()} is too weak for production" in message
    assert why in message
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in message
    assert value not in message  # a secret never reaches a log line
    load_settings(**values)  # development accepts it


def test_bad_values_are_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", "not-a-port")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "NEWSLETTER_SMTP_PORT" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_ARXIV_CATEGORIES", "cs.LG, cs.CV")
    assert load_settings().arxiv_categories == ["cs.LG", "cs.CV"]


def test_schema_has_every_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"papers", "editions", "edition_papers", "subscribers", "deliveries"} <= tables


def test_recording_server_records_and_injects_faults() -> None:
    def fault(stage: str, address: str, attempt: int) -> str | None:
        return "550 5.1.1 no such user" if address.startswith("gone") else None

    with (
        RecordingSmtpServer(fault=fault) as server,
        smtplib.SMTP("127.0.0.1", server.port) as client,
    ):
        refused = client.sendmail(
            "a@example.org", ["ok@example.org", "gone@example.org"], b"Subject: hi\r\n\r\nbody\r\n"
        )
    assert refused == {"gone@example.org": (550, b"5.1.1 no such user")}
    assert server.handler.recipients() == ["ok@example.org"]
    assert server.messages[0].message["Subject"] == "hi"


def test_env_example_documents_every_setting() -> None:
    import re

    from newsletter.core.settings import Settings

    text = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"NEWSLETTER_[A-Z_]+", text))
    expected = {f"NEWSLETTER_{name.upper()}" for name in Settings.model_fields}
    assert listed == expected
