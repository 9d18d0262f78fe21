"""Moving a list in and out: `newsletter subscribers import` and `export`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Engine
from sqlmodel import Session, select

from newsletter.core.clock import utc_now
from newsletter.core.db import create_db_engine, session_scope, upgrade_schema
from newsletter.core.errors import ImportFileError
from subscribers import suppressions
from subscribers.importing import import_csv
from subscribers.models import Subscriber, SubscriberStatus, SuppressionReason
from subscribers.store import _normalise_common_email
from tests.support.cli import run_cli
from tests.support.smtp_server import RecordingSmtpServer

TOPICS = ["LLMs", "Robotics"]


def _cli_engine(cli_env: dict[str, str]) -> Engine:
    engine = create_db_engine(cli_env["NEWSLETTER_DATABASE_URL"])
    upgrade_schema(engine)
    return engine


def _subscribers(engine: Engine) -> dict[str, Subscriber]:
    with Session(engine) as session:
        return {s.email: s for s in session.exec(select(Subscriber)).all()}


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


MESSY = (
    "email,name,topics,status\r\n"
    "Ada@Example.org,Ada Lovelace,LLMs;Robotics,\r\n"  # 2: added
    "not-an-address,Nobody,,\r\n"  # 3: invalid
    "ada@example.org,Ada again,,\r\n"  # 4: duplicate, other case
    "Ada@Example.org,Ada thrice,,\r\n"  # 5: duplicate, same spelling
    "blocked+news@example.org,Blocked,,\r\n"  # 6: suppressed mailbox
    "odd@example.org,Odd,,maybe\r\n"  # 7: unknown status
    "left@example.org,Left,,unsubscribed\r\n"  # 8: imported as unsubscribed
    "\"=cmd|' /C calc'!A0\"@example.org,x,,\r\n"  # 9: invalid (quoted, with a space)
    "eve@example.org,=cmd|' /C calc'!A0,\"LLMs, Knitting\",\r\n"  # 10: added, topic dropped
    "\r\n"  # a blank line is not a row
)


def test_import_reports_every_bad_row_and_a_rerun_adds_nothing(
    tmp_path: Path, cli_env: dict[str, str], smtp_server: RecordingSmtpServer
) -> None:
    engine = _cli_engine(cli_env)
    with session_scope(engine) as session:
        suppressions.suppress_address(
            session.connection(),
            "blocked@example.org",
            reason=SuppressionReason.BOUNCED,
            now=utc_now(),
        )
    source = _write(tmp_path / "list.csv", MESSY, bom=True)
    env = {**cli_env, "NEWSLETTER_TOPICS": ",".join(TOPICS)}
    report_path = tmp_path / "report.csv"

    result = run_cli(
        "subscribers",
        "import",
        str(source),
        "--confirmed",
        "--report",
        str(report_path),
        "--json",
        env=env,
    )

    report = json.loads(result.stdout)
    assert (report["rows"], report["added"], report["already_present"]) == (9, 3, 0)
    reasons = {row["row"]: row["reason"] for row in report["skipped_rows"]}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 9]
    assert reasons[3].startswith("invalid address")
    assert reasons[4].startswith("duplicate") and reasons[5].startswith("duplicate")
    assert reasons[6].startswith("suppressed (bounced)")
    assert reasons[7].startswith("unknown status 'maybe'")
    assert [(w["row"], w["reason"]) for w in report["warning_rows"]] == [
        (10, "unknown topic 'Knitting' dropped")
    ]
    stored = _subscribers(engine)
    assert sorted(stored) == ["Ada@example.org", "eve@example.org", "left@example.org"]
    assert stored["Ada@example.org"].status == SubscriberStatus.CONFIRMED
    assert stored["Ada@example.org"].topics == ["LLMs", "Robotics"]
    assert stored["eve@example.org"].name == "=cmd|' /C calc'!A0"
    assert stored["eve@example.org"].topics == ["LLMs"]
    assert stored["left@example.org"].status == SubscriberStatus.UNSUBSCRIBED
    assert stored["left@example.org"].unsubscribed_at is not None
    with report_path.open(newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [row["row"] for row in written] == ["3", "4", "5", "6", "7", "9", "10"]
    # The report is for spreadsheets too: the formula-like address is quoted.
    assert written[5]["address"].startswith("'=cmd")
    assert smtp_server.messages == []  # --confirmed: nobody is asked to confirm

    again = json.loads(
        run_cli("subscribers", "import", str(source), "--confirmed", "--json", env=env).stdout
    )
    assert (again["added"], again["already_present"]) == (0, 3)
    assert _subscribers(engine).keys() == stored.keys()
    engine.dispose()


def test_pending_import_sends_one_confirmation_each_and_a_rerun_sends_none(
    tmp_path: Path, cli_env: dict[str, str], smtp_server: RecordingSmtpServer
) -> None:
    source = _write(
        tmp_path / "list.csv",
        "email,name\nnew1@example.org,One\nnew2@example.org,Two\ngone@example.org,\n",
    )
    engine = _cli_engine(cli_env)

    result = run_cli("subscribers", "import", str(source), env=cli_env)

    assert "3 added" in result.stdout
    assert "Confirmation emails: 3 sent, 0 not due, 0 failed." in result.stdout
    assert sorted(smtp_server.handler.recipients()) == [
        "gone@example.org",
        "new1@example.org",
        "new2@example.org",
    ]
    message = smtp_server.messages[0].message
    assert message["Subject"].startswith("Confirm your subscription")
    body = message.get_body(("plain",))
    assert body is not None
    assert "https://news.example.org/confirm" in body.get_content()
    stored = _subscribers(engine)
    assert {s.status for s in stored.values()} == {SubscriberStatus.PENDING}
    assert all(s.confirmation_sent_at is not None for s in stored.values())

    rerun = run_cli("subscribers", "import", str(source), env=cli_env)

    assert "0 added, 3 already present" in rerun.stdout
    assert len(smtp_server.messages) == 3  # each was asked once
    engine.dispose()


def test_confirmed_import_never_resubscribes_without_force(
    tmp_path: Path, cli_env: dict[str, str], smtp_server: RecordingSmtpServer
) -> None:
    engine = _cli_engine(cli_env)
    run_cli("subscribers", "add", "left@example.org", "--confirmed", env=cli_env)
    run_cli("subscribers", "remove", "left@example.org", env=cli_env)
    source = _write(tmp_path / "list.csv", "email\nLEFT@example.org\n")

    kept = json.loads(
        run_cli("subscribers", "import", str(source), "--confirmed", "--json", env=cli_env).stdout
    )

    assert kept["added"] == 0
    assert kept["skipped_rows"] == [
        {
            "row": 2,
            "address": "LEFT@example.org",
            "reason": "unsubscribed earlier: not re-subscribed (use --force)",
        }
    ]
    assert _subscribers(engine)["left@example.org"].status == SubscriberStatus.UNSUBSCRIBED

    forced = json.loads(
        run_cli(
            "subscribers", "import", str(source), "--confirmed", "--force", "--json", env=cli_env
        ).stdout
    )

    assert forced["resubscribed"] == 1
    back = _subscribers(engine)["left@example.org"]
    assert back.status == SubscriberStatus.CONFIRMED and back.unsubscribed_at is None
    assert smtp_server.messages == []
    engine.dispose()


def test_export_neutralises_formulas_and_round_trips_through_import(
    tmp_path: Path, cli_env: dict[str, str], smtp_server: RecordingSmtpServer
) -> None:
    env = {**cli_env, "NEWSLETTER_TOPICS": ",".join(TOPICS)}
    engine = _cli_engine(cli_env)
    with session_scope(engine) as session:
        suppressions.suppress_address(
            session.connection(),
            "held@example.org",
            reason=SuppressionReason.COMPLAINED,
            now=utc_now(),
        )
    source = _write(
        tmp_path / "list.csv",
        "email,name,topics,status\n"
        "a@example.org,=SUM(A1),LLMs,\n"
        "-b@example.org,+plus,Robotics;LLMs,\n"
        "c@example.org,@at,,unsubscribed\n"
        "d@example.org,Plain Name,,\n",
    )
    run_cli("subscribers", "import", str(source), "--confirmed", env=env)
    # A reader whose mailbox was suppressed after they joined: the export says so.
    with session_scope(engine) as session:
        session.add(Subscriber(email="held@example.org", status=SubscriberStatus.CONFIRMED))
    exported = tmp_path / "export.csv"

    run_cli("subscribers", "export", "--out", str(exported), env=env)

    rows = list(csv.DictReader(io.StringIO(exported.read_text(encoding="utf-8"), newline="")))
    by_email = {row["email"]: row for row in rows}
    assert by_email["a@example.org"]["name"] == "'=SUM(A1)"
    assert by_email["'-b@example.org"]["name"] == "'+plus"
    assert by_email["'-b@example.org"]["topics"] == "LLMs;Robotics"
    assert by_email["c@example.org"]["name"] == "'@at"
    assert by_email["c@example.org"]["status"] == "unsubscribed"
    assert by_email["c@example.org"]["unsubscribed_at"]
    assert by_email["held@example.org"]["suppressed"] == "complained"
    assert by_email["d@example.org"]["suppressed"] == ""
    assert all(row["created_at"] for row in rows)

    fresh_env = {**env, "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    moved = json.loads(
        run_cli(
            "subscribers", "import", str(exported), "--confirmed", "--json", env=fresh_env
        ).stdout
    )
    assert moved["added"] == 4  # held@ is marked suppressed: skipped
    assert moved["skipped_rows"] == [
        {
            "row": 6,
            "address": "held@example.org",
            "reason": "suppressed in the file (complained): not imported",
        }
    ]

    json_out = run_cli("subscribers", "export", "--format", "json", env=fresh_env).stdout
    records = {record["email"]: record for record in json.loads(json_out)}
    original = {
        record["email"]: record
        for record in json.loads(
            run_cli("subscribers", "export", "--format", "json", env=env).stdout
        )
    }
    for address, record in records.items():
        before = original[address]
        assert (record["name"], record["status"], record["topics"]) == (
            before["name"],
            before["status"],
            before["topics"],
        )
    assert records["-b@example.org"]["name"] == "+plus"  # the JSON export is not quoted
    assert smtp_server.messages == []
    engine.dispose()


def test_a_file_without_an_email_column_is_refused_with_a_reason(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    source = _write(tmp_path / "list.csv", "address,name\na@example.org,A\n")

    result = run_cli("subscribers", "import", str(source), env=cli_env, check=False)

    assert result.returncode == 1
    assert "no `email` column" in result.stderr
    assert "Traceback" not in result.stderr


def test_batches_commit_as_they_go_and_a_rerun_completes_a_broken_import(engine: Engine) -> None:
    # The fourth row breaks the file's encoding: the rows before it are in whole batches.
    body = "email\na@example.org\nb@example.org\nc@example.org\n"
    broken = io.StringIO(body + "d@example.org\n")
    rows = iter(broken.readline, "")

    class Breaking(io.StringIO):
        def __iter__(self) -> Iterator[str]:
            for number, line in enumerate(rows):
                if number == 4:
                    raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
                yield line

    with pytest.raises(Exception, match="not UTF-8"):
        import_csv(engine, Breaking(), topics=TOPICS, confirmed=True, batch_size=2)
    assert sorted(_subscribers(engine)) == ["a@example.org", "b@example.org"]

    report = import_csv(
        engine, io.StringIO(body + "d@example.org\n"), topics=TOPICS, confirmed=True, batch_size=2
    )

    assert (report.added, report.already_present) == (2, 2)
    assert sorted(_subscribers(engine)) == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
    ]


@pytest.mark.parametrize(
    "address",
    [
        "Ada@Example.org",
        "a.b+c@EXAMPLE.ORG",
        "x@müller.de",
        "Info@x.org",
        "a..b@x.org",
        "a@x",
        "a@localhost",
        '"a b"@x.org',
        "a@x.org.",
        "Ada <a@x.org>",
        "o'brien@x.ie",
        "a@x.test",
        "ü@x.org",
        "a@exa_mple.com",
        "a" * 65 + "@x.org",
    ],
)
def test_the_quick_path_returns_what_the_validator_returns(address: str) -> None:
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        expected: str | None = result.ascii_email or result.normalized
    except EmailNotValidError:
        expected = None
    quick = _normalise_common_email(address)
    assert quick is None or quick == expected


def test_bounced_rows_are_skipped_and_a_broken_csv_is_refused_after_the_rows_before_it(
    engine: Engine,
) -> None:
    listing = io.StringIO(
        "email,status\r\nok@example.org,\r\nb@example.org,bounced\r\nc@example.org,complained\r\n"
        '"d@example.org' + "x" * 200_000 + '",\r\n'
    )

    with pytest.raises(ImportFileError, match="not readable as CSV after row 4"):
        import_csv(engine, listing, topics=TOPICS, confirmed=True, batch_size=1)

    assert sorted(_subscribers(engine)) == ["ok@example.org"]
    report = import_csv(
        engine,
        io.StringIO("email,status\nb@example.org,Bounced\n"),
        topics=TOPICS,
        confirmed=True,
    )
    assert [row.reason for row in report.skipped] == [
        "status bounced: the address bounced or complained elsewhere; not imported"
    ]


def test_an_opt_out_in_the_file_unsubscribes_a_reader_already_here(engine: Engine) -> None:
    first = import_csv(
        engine,
        io.StringIO("email\nstay@example.org\nleave@example.org\n"),
        topics=TOPICS,
        confirmed=True,
    )
    moved = "email,status\nstay@example.org,confirmed\nLeave@example.org,unsubscribed\n"

    report = import_csv(engine, io.StringIO(moved), topics=TOPICS, confirmed=True)
    rerun = import_csv(engine, io.StringIO(moved), topics=TOPICS, confirmed=True)

    assert first.added == 2
    assert (report.added, report.already_present, report.opted_out) == (0, 1, 1)
    assert (rerun.already_present, rerun.opted_out) == (2, 0)
    stored = _subscribers(engine)
    assert stored["stay@example.org"].status == SubscriberStatus.CONFIRMED
    assert stored["leave@example.org"].status == SubscriberStatus.UNSUBSCRIBED
    assert stored["leave@example.org"].unsubscribed_at is not None
