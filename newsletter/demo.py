"""`newsletter demo`: the real pipeline on embedded defaults, with no network and no server.

It resets its own SQLite database, ingests the bundled sample day, adds a few
demo subscribers, starts an SMTP server in the process that stores what it
receives in a Maildir, and sends the digest to it over SMTP with the same code
production uses.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.engine import make_url

from newsletter.core import eventloop
from newsletter.core.db import create_db_engine, session_scope, upgrade_schema
from newsletter.core.errors import ConfigurationError
from newsletter.core.settings import Settings, SmtpSecurity
from newsletter.delivery.progress import RichSendProgress
from newsletter.delivery.worker import send_edition
from newsletter.editions.content import prepare_edition, preview_version
from newsletter.ingest import PaperSource, ingest_papers
from newsletter.models import Edition
from newsletter.outbox import EML_FOLDER, MaildirHandler, SmtpCatcher
from newsletter.sample_data import SAMPLE_DAY, sample_day_path
from subscribers.store import add_subscriber, mark_unsubscribed

DEMO_READERS = (
    ("ada@example.org", "Ada Lovelace"),
    ("alan@example.org", "Alan Turing"),
    ("grace@example.org", "Grace Hopper"),
    ("zoe@example.org", "Zoë Ægir-Østergaard"),
)
DEMO_PENDING = ("pending@example.org", "Not Yet Confirmed")
DEMO_LEFT = ("left@example.org", "Already Unsubscribed")


def _reset_sqlite(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise ConfigurationError(
            "the demo resets its database, so it only runs on a SQLite file URL"
        )
    for suffix in ("", "-wal", "-shm"):
        Path(url.database + suffix).unlink(missing_ok=True)


def run_demo(settings: Settings, *, outbox: Path, database_url: str, console: Console) -> None:
    """Run ingest → rank → render → send against a local SMTP server and report what arrived."""
    _reset_sqlite(database_url)
    handler = MaildirHandler(outbox)
    handler.clear()
    with SmtpCatcher(handler) as server:
        demo_settings = settings.model_copy(
            update={
                "database_url": database_url,
                "smtp_host": server.host,
                "smtp_port": server.port,
                "smtp_security": SmtpSecurity.NONE,
                "smtp_username": None,
                "smtp_password": None,
                "send_rate_per_second": 0.0,
                "send_rate_per_hour": 0.0,
            }
        )
        engine = create_db_engine(database_url)
        try:
            upgrade_schema(engine)
            console.print(f"[bold]1. Ingest[/] the bundled sample day ({SAMPLE_DAY.isoformat()})")
            report = eventloop.run(
                ingest_papers(
                    demo_settings,
                    engine,
                    day=SAMPLE_DAY,
                    source=PaperSource.FILE,
                    file=sample_day_path(),
                )
            )
            console.print(f"   {report.fetched} papers, {report.inserted} new")
            with session_scope(engine) as session:
                for address, name in DEMO_READERS:
                    add_subscriber(session, email=address, name=name, confirmed=True)
                add_subscriber(session, email=DEMO_PENDING[0], name=DEMO_PENDING[1])
                left = add_subscriber(
                    session, email=DEMO_LEFT[0], name=DEMO_LEFT[1], confirmed=True
                )
                mark_unsubscribed(left)
            console.print(
                f"   {len(DEMO_READERS)} confirmed readers, "
                "1 pending and 1 unsubscribed (these two get nothing)"
            )
            console.print(f"[bold]2. Rank and render[/] the top {demo_settings.top_n}")
            edition = prepare_edition(demo_settings, engine, day=SAMPLE_DAY)
            console.print(f"   Subject: {edition.subject}", highlight=False)
            console.print(f"[bold]3. Send[/] over SMTP to the local server on port {server.port}")
            with RichSendProgress(console) as progress:
                sent = eventloop.run(
                    send_edition(demo_settings, engine, edition_date=SAMPLE_DAY, progress=progress)
                )
            preview = _write_preview(outbox, edition, demo_settings)
        finally:
            engine.dispose()
    _print_outbox(console, outbox)
    console.print(f"Sent {sent.sent}, failed {sent.failed}, bounced {sent.bounced}.")
    # Paths stay whole on their own lines (a wrapped path cannot be copied), the prose
    # around them fits 80 columns.
    console.print("The messages are in the Maildir (new/):")
    console.print(f"  [bold]{escape(str(outbox.resolve()))}[/]", soft_wrap=True)
    console.print(f"Double-click a copy in {EML_FOLDER}/ to open it in your mail program.")
    console.print("Open the HTML preview in a browser:")
    console.print(f"  [bold]{escape(str(preview.resolve()))}[/]", soft_wrap=True)


def _write_preview(outbox: Path, edition: Edition, settings: Settings) -> Path:
    html, _text = preview_version(edition, settings)
    path = outbox / "preview.html"
    path.write_text(html, encoding="utf-8")
    return path


def _print_outbox(console: Console, outbox: Path) -> None:
    # Three short columns: the table stays whole in an 80-column terminal.
    table = Table(title=f"Messages in {outbox}")
    table.add_column("to")
    table.add_column("parts")
    table.add_column("HTML KB", justify="right")
    table.add_column(".eml copy")
    for copy in sorted((outbox / EML_FOLDER).glob("*.eml")):
        message = email.message_from_bytes(copy.read_bytes(), policy=email.policy.default)
        parts = [part for part in message.walk() if not part.is_multipart()]
        html_size = sum(len(p.as_bytes()) for p in parts if p.get_content_type() == "text/html")
        table.add_row(
            escape(message["To"].addresses[0].addr_spec),
            " + ".join(p.get_content_subtype() for p in parts),
            f"{html_size / 1024:.1f}",
            escape(f"{EML_FOLDER}/{copy.name}"),
        )
    console.print(table)
