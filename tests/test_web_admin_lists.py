"""`/admin/subscribers/import` and `/export`: a list uploaded and downloaded through the app."""

from __future__ import annotations

import csv
import io
import json

from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter.core.settings import Settings
from subscribers.models import Subscriber, SubscriberStatus
from tests.support.smtp_server import RecordingSmtpServer
from tests.support.web import ADMIN_TOKEN, running_app, send_queued_confirmations, web_settings

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIST = (
    "\ufeffemail,name,topics,status\r\n"
    "Ada@Example.org,Ada,LLMs;Knitting,\r\n"
    "ada@example.org,Again,,\r\n"
    "nobody,,,\r\n"
    'bo@example.org,=HYPERLINK("x"),,\r\n'
    "left@example.org,,,unsubscribed\r\n"
)


def _statuses(engine: Engine) -> dict[str, SubscriberStatus]:
    with Session(engine) as session:
        return {s.email: s.status for s in session.exec(select(Subscriber)).all()}


async def test_a_multipart_upload_imports_pending_readers_and_emails_them(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        answer = await client.post(
            "/admin/subscribers/import",
            files={"file": ("list.csv", LIST.encode(), "text/csv")},
            headers=AUTH,
        )

    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["rows"], report["added"], report["skipped"]) == (5, 3, 2)
    assert [(row["row"], row["reason"][:9]) for row in report["skipped_rows"]] == [
        (3, "duplicate"),
        (4, "invalid a"),
    ]
    assert report["warning_rows"] == [
        {"row": 2, "address": "Ada@example.org", "reason": "unknown topic 'Knitting' dropped"}
    ]
    assert _statuses(engine) == {
        "Ada@example.org": SubscriberStatus.PENDING,
        "bo@example.org": SubscriberStatus.PENDING,
        "left@example.org": SubscriberStatus.UNSUBSCRIBED,
    }
    # The answer queued the confirmations; a worker sends them.
    assert smtp_server.messages == []
    assert (await send_queued_confirmations(settings, engine)).sent == 2
    assert sorted(smtp_server.handler.recipients()) == ["Ada@example.org", "bo@example.org"]


async def test_a_csv_body_imports_confirmed_and_the_export_streams_it_back(
    settings: Settings, engine: Engine, smtp_server: RecordingSmtpServer
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        imported = await client.post(
            "/admin/subscribers/import?confirmed=true",
            content=LIST.encode(),
            headers={**AUTH, "Content-Type": "text/csv"},
        )
        again = await client.post(
            "/admin/subscribers/import?confirmed=true",
            content=LIST.encode(),
            headers={**AUTH, "Content-Type": "text/csv"},
        )
        as_csv = await client.get("/admin/subscribers/export", headers=AUTH)
        as_json = await client.get("/admin/subscribers/export?format=json", headers=AUTH)

    assert imported.json()["added"] == 3
    assert (again.json()["added"], again.json()["already_present"]) == (0, 3)
    assert smtp_server.messages == []
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in as_csv.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text, newline="")))
    assert [(row["email"], row["status"]) for row in rows] == [
        ("Ada@example.org", "confirmed"),
        ("bo@example.org", "confirmed"),
        ("left@example.org", "unsubscribed"),
    ]
    assert rows[0]["topics"] == "LLMs"
    assert rows[1]["name"] == '\'=HYPERLINK("x")'  # a spreadsheet shows it, never runs it
    records = json.loads(as_json.text)
    assert records[1]["name"] == '=HYPERLINK("x")'
    assert records[0]["confirmed_at"] is not None and records[0]["suppressed"] is None


async def test_the_import_takes_a_list_larger_than_other_bodies_up_to_its_own_limit(
    settings: Settings, engine: Engine
) -> None:
    rows = "".join(f"reader{n}@example.org,Reader {n}\n" for n in range(400))
    body = f"email,name\n{rows}".encode()
    assert 4 * 1024 < len(body) < 64 * 1024
    async with running_app(web_settings(settings, import_max_bytes=64 * 1024), engine) as (
        _,
        client,
    ):
        taken = await client.post(
            "/admin/subscribers/import?confirmed=true",
            content=body,
            headers={**AUTH, "Content-Type": "text/csv"},
        )
        too_big = await client.post(
            "/admin/subscribers/import",
            content=body * 20,
            headers={**AUTH, "Content-Type": "text/csv"},
        )

    assert taken.status_code == 200 and taken.json()["added"] == 400
    assert too_big.status_code == 413
    assert len(_statuses(engine)) == 400


async def test_import_and_export_refuse_without_the_token_or_an_email_column(
    settings: Settings, engine: Engine
) -> None:
    async with running_app(web_settings(settings), engine) as (_, client):
        no_token = await client.post(
            "/admin/subscribers/import",
            content=LIST.encode(),
            headers={"Content-Type": "text/csv"},
        )
        no_export = await client.get("/admin/subscribers/export")
        no_column = await client.post(
            "/admin/subscribers/import",
            content=b"address\na@example.org\n",
            headers={**AUTH, "Content-Type": "text/csv"},
        )
        wrong_type = await client.post(
            "/admin/subscribers/import", json={"email": "a@example.org"}, headers=AUTH
        )

    assert (no_token.status_code, no_export.status_code) == (401, 401)
    assert no_column.status_code == 422
    assert "no `email` column" in no_column.json()["detail"]
    assert wrong_type.status_code == 415
    assert _statuses(engine) == {}
