"""The `newsletter` command: the operator's way into every stage of the pipeline.

Each command builds the settings once and opens what it needs; `main` turns
every failure a user can cause or meet (a `NewsletterError`, a database or
file-system error) into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeGuard, TypeVar
from zoneinfo import ZoneInfo

import typer
import typer.core
import typer.main
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Typer carries its own copy of click; its help classes take these types.
from typer._click import Command as ClickCommand
from typer._click import Context as ClickContext
from typer.core import TyperArgument, TyperOption

from newsletter.core.errors import ConfigurationError, NewsletterError

# Start-up time: `newsletter --help` must not load pydantic, SQLAlchemy, SQLModel, Alembic or
# FastAPI (half a second or more), so the top of this module imports only typer, rich, the
# standard library and the errors, and each command imports what it uses when it runs.
# These imports inside functions are for speed only; there is no import loop to dodge.
# tests/test_cli_startup.py keeps `--help` free of the heavy modules.
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Coroutine, Sequence

    from sqlalchemy import Engine
    from sqlalchemy.exc import SQLAlchemyError

    from newsletter.core.settings import Settings
    from newsletter.delivery.report import SendReport
    from newsletter.ingest import IngestReport
    from subscribers.importing import ImportReport

T = TypeVar("T")

# Nothing to send: `run` on a day without papers, `preview --for` a weekly reader on
# another weekday. Not a failure (1), and cron wrappers can tell it from a send (0),
# a paused send (3) and one that missed readers (4).
NOTHING_TO_SEND_EXIT_STATUS = 5

app = typer.Typer(
    help="A daily machine-learning paper digest: ingest, rank, render and send.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
subscribers_app = typer.Typer(help="Manage the subscriber list.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
bounces_app = typer.Typer(
    help="Take in bounces and spam complaints that mail servers send back.", no_args_is_help=True
)
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(db_app, name="db")
app.add_typer(bounces_app, name="bounces")

console = Console()
err_console = Console(stderr=True)
logger = logging.getLogger("newsletter.cli")

ProcessesOption = Annotated[
    int | None,
    typer.Option(
        "--processes",
        min=1,
        help="How many sending processes share the work (default: the machine's cores, and "
        "no more than there are batches of NEWSLETTER_SEND_BATCH_SIZE to send).",
        show_default=False,
    ),
]
# The children of `--processes N`: no progress or summary of their own (the parent shows
# one for all), and they stop when the parent goes. Not for operators, so hidden.
AsChildOption = Annotated[bool, typer.Option("--as-child", hidden=True)]

DateOption = Annotated[
    dt.datetime | None,
    typer.Option(
        "--date",
        formats=["%Y-%m-%d"],
        help="The edition's day (YYYY-MM-DD); default: today in NEWSLETTER_TIMEZONE.",
        show_default=False,
    ),
]


class CliContext:
    """What every command shares: the settings, and a database engine opened on first use."""

    def __init__(self, settings: Settings, *, verbose: bool = False) -> None:
        self.settings = settings
        self.verbose = verbose
        self._engine: Engine | None = None

    def engine(self, *, migrate_empty: bool = True) -> Engine:
        """The engine, with the schema checked (an empty database is created on first use)."""
        from newsletter.core.db import create_db_engine

        if self._engine is None:
            engine = create_db_engine(self.settings.database_url)
            _ensure_schema(engine, migrate_empty=migrate_empty)
            self._engine = engine
        return self._engine

    def close(self) -> None:
        """Release the database connections."""
        if self._engine is not None:
            self._engine.dispose()


def _ensure_schema(engine: Engine, *, migrate_empty: bool) -> None:
    from newsletter.core.db import current_revision, head_revision, upgrade_schema

    head = head_revision()
    try:
        revision = current_revision(engine)
    except Exception as error:  # the driver's own errors: unreachable server, bad credentials
        raise ConfigurationError(f"cannot open the database: {error}".splitlines()[0]) from None
    if revision == head:
        return
    if revision is None and migrate_empty:
        upgrade_schema(engine)
        return
    raise ConfigurationError(
        f"the database schema is at {revision or 'nothing'}, this version needs {head}: "
        "run `newsletter db upgrade`"
    )


def _context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliContext)
    return obj


def _day(settings: Settings, value: dt.datetime | None) -> dt.date:
    if value is not None:
        return value.date()
    return dt.datetime.now(ZoneInfo(settings.timezone)).date()


def _only_upgrade_steps(record: logging.LogRecord) -> bool:
    """Keep Alembic's "Running upgrade" lines and its warnings, not its set-up chatter."""
    return record.levelno > logging.INFO or str(record.msg).startswith("Running ")


def _show_version(value: bool) -> None:
    if value:
        from newsletter import __version__

        console.print(f"newsletter {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    from newsletter.core.settings import load_settings

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Alembic announces each of its plugins, its dialect and its DDL mode at INFO:
    # noise beside "Running upgrade …", which --verbose still shows.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(_only_upgrade_steps)
    context = CliContext(load_settings(), verbose=verbose)
    ctx.obj = context
    ctx.call_on_close(context.close)


# ---- ingest, preview -------------------------------------------------------------------------


@app.command()
def ingest(
    ctx: typer.Context,
    date: DateOption = None,
    source: Annotated[str, typer.Option(help="Where papers come from: hf, arxiv or file.")] = "hf",
    file: Annotated[
        Path | None,
        typer.Option(
            help="A JSON file in the Hugging Face Daily Papers shape (implies --source file)."
        ),
    ] = None,
) -> None:
    """Fetch a day's papers and store them (new ones added, counts refreshed).

    A file without --date goes under the day its records name (they must agree).
    """
    _ingest(_context(ctx), date=date, source=source, file=file)


def _ingest(
    context: CliContext, *, date: dt.datetime | None, source: str, file: Path | None
) -> IngestReport:
    from newsletter.ingest import PaperSource, ingest_papers

    if file is not None:
        source = "file"
    try:
        paper_source = PaperSource(source)
    except ValueError:
        raise ConfigurationError(f"--source must be hf, arxiv or file, not {source!r}") from None
    if paper_source is PaperSource.FILE and file is None:
        raise ConfigurationError("--source file needs --file PATH")
    # A file names its own day; a feed is asked for today's unless told otherwise.
    day = None if file is not None and date is None else _day(context.settings, date)
    report = _run_async(
        ingest_papers(context.settings, context.engine(), day=day, source=paper_source, file=file)
    )
    # Each skipped record was already logged as a warning, naming it.
    console.print(
        f"Ingested {report.fetched} papers for {report.day.isoformat()} from "
        f"{paper_source.value}: {report.inserted} new, {report.updated} updated, "
        f"{len(report.skipped)} skipped."
    )
    from newsletter.editions.personal import index_corpus

    # The corpus's term counts (personal ranking's document frequencies) follow at once.
    index_corpus(context.engine())
    return report


def _write_preview(
    settings: Settings, engine: Engine, day: dt.date, out: Path
) -> tuple[Path, Path]:
    from newsletter.editions.content import prepare_edition, preview_version

    html, text = preview_version(prepare_edition(settings, engine, day=day), settings)
    return _write_files(out, html, text)


def _write_files(out: Path, html: str, text: str) -> tuple[Path, Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    text_path = out.with_suffix(".txt")
    text_path.write_text(text, encoding="utf-8")
    return out, text_path


@app.command()
def preview(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the HTML (text goes beside it)."),
    ] = None,
    date: DateOption = None,
    for_email: Annotated[
        str | None,
        typer.Option(
            "--for",
            help="A subscriber's address: their own digest (For you, then trending), or a "
            "weekly reader's weekly digest on their weekday.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the digest's sections and papers as JSON."),
    ] = False,
) -> None:
    """Rank and render a day's digest and write it to a file to look at (or print it as JSON).

    With --for, exits 5 when that reader gets no digest that day (a weekly reader
    on another weekday), saying so.
    """
    from newsletter.core.errors import NoDigestThatDayError

    context = _context(ctx)
    day = _day(context.settings, date)
    if not as_json and out is None:
        raise ConfigurationError("give --out FILE.html to write the digest, or --json to print it")
    try:
        _write_or_print_preview(context, day, out, for_email=for_email, as_json=as_json)
    except NoDigestThatDayError as none_that_day:
        if as_json:
            from subscribers.models import WEEKDAYS

            no_digest = {
                "reason": str(none_that_day),
                "weekly_day": WEEKDAYS[none_that_day.weekly_day],
            }
            print(json.dumps({"sections": [], "no_digest": no_digest}, indent=2))
        else:
            console.print(escape(str(none_that_day)), highlight=False, soft_wrap=True)
        raise typer.Exit(NOTHING_TO_SEND_EXIT_STATUS) from None


def _write_or_print_preview(
    context: CliContext, day: dt.date, out: Path | None, *, for_email: str | None, as_json: bool
) -> None:
    if as_json:
        from dataclasses import asdict

        from newsletter.editions.personal import digest_sections

        sections = digest_sections(context.settings, context.engine(), day=day, email=for_email)
        print(json.dumps({"sections": [asdict(section) for section in sections]}, indent=2))
        return
    assert out is not None
    if for_email is not None:
        from newsletter.editions.personal import reader_digest

        own = reader_digest(context.settings, context.engine(), day=day, email=for_email)
        if own is not None:
            html_path, text_path = _write_files(out, *own)
            size_kb = html_path.stat().st_size / 1024
            console.print(f"Wrote {html_path} ({size_kb:.1f} KB) and {text_path}.")
            return
    html_path, text_path = _write_preview(context.settings, context.engine(), day, out)
    size_kb = html_path.stat().st_size / 1024
    console.print(f"Wrote {html_path} ({size_kb:.1f} KB) and {text_path}.")


# ---- send, worker, stats, run ----------------------------------------------------------------


@app.command()
def send(
    ctx: typer.Context,
    date: DateOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Show the subject, the first readers it would go to and how many; send and "
            "record nothing.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --dry-run: print every recipient as JSON.")
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Queue again the readers whose delivery failed (not those who bounced or "
            "left) of an edition that finished with failures, and send to them.",
        ),
    ] = False,
    processes: ProcessesOption = None,
    as_child: AsChildOption = False,
    worker_id: Annotated[str | None, typer.Option("--worker-id", hidden=True)] = None,
    # The spellings of earlier versions, kept working: each is now a command of its own.
    to: Annotated[str | None, typer.Option("--to", hidden=True)] = None,
    pause: Annotated[bool, typer.Option("--pause", hidden=True)] = False,
    resume: Annotated[bool, typer.Option("--resume", hidden=True)] = False,
    cancel: Annotated[bool, typer.Option("--cancel", hidden=True)] = False,
) -> None:
    """Send a day's digest to every confirmed subscriber (each at most once).

    See also `test-send`, `pause`, `resume` and `cancel`.
    """
    if sum([pause, resume, cancel, dry_run, retry_failed, to is not None]) > 1:
        raise ConfigurationError(
            "use only one of --pause, --resume, --cancel, --dry-run, --retry-failed, --to"
        )
    if as_json and not dry_run:
        raise ConfigurationError("--json goes with --dry-run (a send prints its own summary)")
    if to is not None:
        return test_send(ctx, to=to, date=date)
    if pause:
        return pause_command(ctx, date=date)
    if cancel:
        return cancel_command(ctx, date=date)
    if resume:
        return resume_command(ctx, date=date, processes=processes)
    if retry_failed:
        return _retry_failed(ctx, date=date, processes=processes)
    context = _context(ctx)
    day = _day(context.settings, date)
    if as_child:
        return _send_as_child(context, day, worker_id=worker_id)
    from newsletter.editions.content import prepare_edition

    edition = prepare_edition(context.settings, context.engine(), day=day)
    if dry_run:
        _print_dry_run(context, day, edition.subject, as_json=as_json)
        return
    _send_and_report(context, day, processes=processes)


def _retry_failed(ctx: typer.Context, *, date: dt.datetime | None, processes: int | None) -> None:
    from newsletter.delivery.control import retry_failed

    context = _context(ctx)
    day = _day(context.settings, date)
    requeued = retry_failed(context.engine(), day)
    console.print(f"Queued again {requeued} readers whose delivery failed.")
    _send_and_report(context, day, processes=processes)


def _send_and_report(context: CliContext, day: dt.date, *, processes: int | None) -> None:
    from newsletter.delivery.progress import RichSendProgress
    from newsletter.delivery.worker import prepare_send, send_edition

    # The personal readers are ranked on as many cores as will send (no thread runs yet).
    begun = prepare_send(
        context.engine(),
        edition_date=day,
        settings=context.settings,
        ranking_processes=_process_count(context.settings, processes, queued=None),
    )
    count = _process_count(context.settings, processes, queued=begun.queued)
    if count > 1 and not begun.finished:
        command = [*_newsletter(context), "send", "--as-child", "--date", day.isoformat()]
        children = {
            worker_id: [*command, "--worker-id", worker_id]
            for worker_id in _child_worker_ids(None, count)
        }
        report = _run_processes(context, children, edition_id=begun.edition_id)
    else:
        with RichSendProgress(console) as progress:
            report = _run_async(
                send_edition(
                    context.settings, context.engine(), edition_date=day, progress=progress
                )
            )
        _print_send_report(report)
    if report.paused_reason:
        raise typer.Exit(3)


def _newsletter(context: CliContext) -> list[str]:
    """This very command for a child, in a fresh interpreter: see delivery/worker_process.py."""
    return [sys.executable, "-m", "newsletter", *(["--verbose"] if context.verbose else [])]


def run_command_here(command: Sequence[str]) -> int:
    """A forked sending process's work: its `_newsletter` command line, run in this interpreter.

    Its exit status, as the command would have exited in an interpreter of its own.
    """
    prefix = [sys.executable, "-m", "newsletter"]
    if list(command[: len(prefix)]) != prefix:
        raise ValueError(f"not a newsletter command line: {command!r}")
    try:
        main(command[len(prefix) :])
    except SystemExit as exited:
        if exited.code is None or isinstance(exited.code, int):
            return exited.code or 0
        print(exited.code, file=sys.stderr)
        return 1
    return 0


def _process_count(settings: Settings, requested: int | None, *, queued: int | None) -> int:
    """The sending processes to run: as asked, else the cores, but no more than the batches."""
    from newsletter.delivery.worker_process import available_cores

    if requested is not None:
        return requested
    count = available_cores()
    if queued is not None:
        # No more processes than batches: one more would find nothing to claim.
        count = min(count, -(-queued // settings.send_batch_size))
    return max(count, 1)


def _child_worker_ids(named: str | None, count: int) -> list[str]:
    """The children's worker ids: the one given, or this process's default id, numbered.

    A default id names this (the parent's) process, so when everything was killed
    the next worker here takes the children's rows back at once (see
    `worker.is_dead_local_worker`); while the parent lives it releases the rows
    of a child that ended itself.
    """
    from newsletter.delivery.worker import default_worker_id

    base = named or default_worker_id()
    return [f"{base}-{number}" for number in range(1, count + 1)]


def _run_processes(
    context: CliContext,
    children: dict[str, list[str]],
    *,
    edition_id: int | None,
    restart: bool = False,
) -> SendReport:
    """Run the sending children with one progress bar; their combined report, printed."""
    import threading

    from newsletter.core.errors import DeliveryError
    from newsletter.delivery.progress import RichSendProgress
    from newsletter.delivery.worker_process import run_sending_processes

    stop, kill = threading.Event(), threading.Event()
    caught: list[signal.Signals] = []

    def forward(signum: int, _frame: object) -> None:
        caught.append(signal.Signals(signum))
        if stop.is_set():
            kill.set()
        else:
            logger.warning(
                "%s: stopping every sending process after the messages in flight",
                signal.Signals(signum).name,
            )
            stop.set()

    forkable = not restart and threading.active_count() == 1
    previous = {
        signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with RichSendProgress(console) as progress:
            outcome = run_sending_processes(
                context.settings,
                context.engine(),
                children=children,
                edition_id=edition_id,
                progress=progress,
                stop=stop,
                kill=kill,
                restart=restart,
                # Forked, they start at once with everything imported. Restarted ones (a
                # `--forever` worker's) are new interpreters, and so are all when this
                # command runs beside threads of another's (embedded): see ForkedChild.
                run_in_fork=run_command_here if forkable else None,
            )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _print_send_report(outcome.report)
    if outcome.failed_statuses:
        statuses = ", ".join(str(status) for status in outcome.failed_statuses)
        raise DeliveryError(
            f"{len(outcome.failed_statuses)} of {len(children)} sending processes stopped on an "
            f"error (exit status {statuses}; their messages are above); their unsent recipients "
            "are back in the queue: run the same command again to continue"
        )
    if caught and edition_id is not None:
        # As an interrupted single-process send (130); the rest waits in the queue.
        err_console.print(
            f"Stopped by {caught[0].name}: the recipients not sent yet are back in the queue; "
            "run the same command again to continue.",
            highlight=False,
        )
        raise typer.Exit(130)
    return outcome.report


def _send_as_child(context: CliContext, day: dt.date, *, worker_id: str | None) -> None:
    """One of the processes of `send --processes N`: send, report nothing, exit 3 if paused."""
    from newsletter.core.errors import DeliveryError
    from newsletter.delivery.worker import send_edition

    async def work() -> SendReport:
        import asyncio

        stop = asyncio.Event()
        _stop_on_signals(stop)
        _stop_when_parent_goes(stop)
        return await send_edition(
            context.settings, context.engine(), edition_date=day, worker_id=worker_id, stop=stop
        )

    try:
        report = _run_async(work())
    except DeliveryError:
        # Paused or cancelled before this process began (by another one, most likely):
        # not this process's error; the parent reports the edition as it stands.
        from newsletter.delivery.stats import edition_stats
        from newsletter.models import EditionStatus

        status = edition_stats(context.engine(), day).status
        if status is EditionStatus.PAUSED:
            raise typer.Exit(3) from None
        if status is EditionStatus.CANCELLED:
            return
        raise
    if report.paused_reason:
        raise typer.Exit(3)


@app.command("test-send")
def test_send(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The one address to send a test copy to.")],
    date: DateOption = None,
) -> None:
    """Send one test copy of a day's digest (marked [TEST], recorded as a test)."""
    from newsletter.delivery.one_copy import send_test_copy
    from newsletter.editions.content import prepare_edition

    context = _context(ctx)
    day = _day(context.settings, date)
    engine = context.engine()
    prepare_edition(context.settings, engine, day=day)
    delivery = _run_async(send_test_copy(context.settings, engine, edition_date=day, email=to))
    console.print(
        f"Test copy of {day.isoformat()} to {delivery.email}: {delivery.status.value}"
        + (f" ({delivery.last_code} {delivery.last_error})" if delivery.last_error else "")
    )
    if delivery.status.value != "sent":
        raise typer.Exit(1)


@app.command("pause")
def pause_command(ctx: typer.Context, date: DateOption = None) -> None:
    """Pause a running send; every worker stops within a batch."""
    from newsletter.delivery.control import pause_edition

    context = _context(ctx)
    day = _day(context.settings, date)
    pause_edition(context.engine(), day, reason="paused by operator")
    console.print(f"Paused the edition of {day.isoformat()}; `newsletter resume` continues it.")


@app.command("resume")
def resume_command(
    ctx: typer.Context, date: DateOption = None, processes: ProcessesOption = None
) -> None:
    """Resume a paused send and continue sending it here."""
    from newsletter.delivery.control import resume_edition

    context = _context(ctx)
    day = _day(context.settings, date)
    resume_edition(context.engine(), day)
    _send_and_report(context, day, processes=processes)


@app.command("cancel")
def cancel_command(ctx: typer.Context, date: DateOption = None) -> None:
    """Cancel a day's edition: nobody else receives it."""
    from newsletter.delivery.control import cancel_edition

    context = _context(ctx)
    day = _day(context.settings, date)
    cancel_edition(context.engine(), day)
    console.print(f"Cancelled the edition of {day.isoformat()}.")


DRY_RUN_ADDRESSES_SHOWN = 10


def _print_dry_run(context: CliContext, day: dt.date, subject: str, *, as_json: bool) -> None:
    from newsletter.delivery.ledger import audience_addresses

    with context.engine().connect() as connection:
        count, addresses = audience_addresses(
            connection, day=day, limit=None if as_json else DRY_RUN_ADDRESSES_SHOWN
        )
    if as_json:
        payload = {"date": day.isoformat(), "subject": subject, "count": count}
        print(json.dumps({**payload, "recipients": addresses}, ensure_ascii=False))
        return
    console.print(f"Dry run for {day.isoformat()}: nothing sent, nothing recorded.")
    console.print(f"Subject: {subject}", highlight=False)
    console.print(f"It would go to {count} readers (confirmed, not paused, not suppressed):")
    for address in addresses:
        console.print(f"  {escape(address)}", highlight=False)
    if count > len(addresses):
        console.print(f"  … and {count - len(addresses)} more (--json lists them all)")


def _print_send_report(report: object) -> None:
    from newsletter.delivery.report import SendReport

    assert isinstance(report, SendReport)
    table = Table(title="Send summary", show_header=True)
    columns = ("queued", "sent", "failed", "bounced", "left meanwhile", "already done", "seconds")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(
        str(report.queued),
        str(report.sent),
        str(report.failed),
        str(report.bounced),
        str(report.skipped),
        str(report.already_done),
        f"{report.elapsed_seconds:.1f}",
    )
    console.print(table)
    if report.paused_reason:
        err_console.print(
            f"[bold yellow]The edition paused:[/] {report.paused_reason}", highlight=False
        )
        err_console.print("Fix the cause, then run `newsletter resume`.")


@app.command()
def worker(
    ctx: typer.Context,
    worker_id: Annotated[
        str | None, typer.Option(help="A name for this worker in the ledger (default: host:pid).")
    ] = None,
    forever: Annotated[
        bool,
        typer.Option("--forever", help="Keep polling for editions instead of exiting when idle."),
    ] = False,
    processes: ProcessesOption = None,
    as_child: AsChildOption = False,
) -> None:
    """Work the queue of every edition being sent, and of confirmation emails (run several).

    With --processes N it runs N sending processes and shows their progress as one.
    SIGTERM or Ctrl-C stops it gracefully: the messages in flight finish and are
    recorded, every other claimed recipient goes back to the queue; a second
    signal stops it at once.
    """
    from newsletter.core.dkim import DkimSigner
    from newsletter.core.templating import make_template_environment
    from newsletter.delivery.confirmations import ConfirmationSender, ConfirmationsSent
    from newsletter.delivery.progress import RichSendProgress
    from newsletter.delivery.worker import run_worker

    context = _context(ctx)
    if not as_child:
        queued = None
        if not forever:
            from newsletter.delivery.ledger import count_sending
            from newsletter.models import DeliveryStatus

            with context.engine().begin() as connection:
                queued = count_sending(connection)[DeliveryStatus.QUEUED]
        count = _process_count(context.settings, processes, queued=queued)
        if count > 1:
            command = [*_newsletter(context), "worker", "--as-child"]
            command += ["--forever"] if forever else []
            children = {
                child_id: [*command, "--worker-id", child_id]
                for child_id in _child_worker_ids(worker_id, count)
            }
            _run_processes(context, children, edition_id=None, restart=forever)
            return

    async def work(progress: RichSendProgress | None) -> tuple[SendReport, ConfirmationsSent]:
        import asyncio

        stop = asyncio.Event()
        _stop_on_signals(stop)
        if as_child:
            _stop_when_parent_goes(stop)
        # Beside the digests, the confirmation emails that sign-ups and imports queued.
        confirmations = asyncio.create_task(
            ConfirmationSender(
                context.settings,
                context.engine(),
                make_template_environment(context.settings.templates_dir),
                signer=DkimSigner.from_settings(context.settings),
                worker_id=worker_id,
            ).run(stop=stop, stop_when_idle=not forever)
        )
        try:
            report = await run_worker(
                context.settings,
                context.engine(),
                worker_id=worker_id,
                progress=progress,
                stop_when_idle=not forever,
                stop=stop,
            )
        finally:
            if forever:  # the digest worker stopped on a signal: so does the sender
                stop.set()
            sent = await confirmations
        return report, sent

    if as_child:
        _run_async(work(None))
        return
    with RichSendProgress(console) as progress:
        report, sent = _run_async(work(progress))
    _print_send_report(report)
    if sent.anything:
        console.print(
            f"Confirmation emails: {sent.sent} sent, {sent.retrying} to retry, "
            f"{sent.given_up} given up, {sent.not_wanted} no longer wanted.",
            highlight=False,
        )


def _run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine (the loop is imported here: `--help` never needs it)."""
    from newsletter.core import eventloop

    return eventloop.run(coroutine)


def _stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on the first SIGTERM or SIGINT; the default handlers take the next one."""
    import asyncio

    loop = asyncio.get_running_loop()

    def first_signal(signum: signal.Signals) -> None:
        logger.warning("%s: stopping after the messages in flight", signum.name)
        for handled in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(handled)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, first_signal, signum)


def _stop_when_parent_goes(stop: asyncio.Event) -> None:
    """Set `stop` when standard input closes: the parent that holds its other end is gone."""
    import asyncio
    import os

    loop = asyncio.get_running_loop()
    descriptor = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(descriptor, 512)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(descriptor)
            logger.warning("the parent process is gone: stopping after the messages in flight")
            stop.set()

    loop.add_reader(descriptor, readable)


@app.command()
def stats(
    ctx: typer.Context,
    date: DateOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show an edition's delivery ledger (or the subscriber counts without --date)."""
    from newsletter.core.db import session_scope
    from newsletter.delivery.stats import edition_stats
    from subscribers.store import count_by_status

    context = _context(ctx)
    engine = context.engine()
    if date is None:
        with session_scope(engine) as session:
            counts = count_by_status(session)
        if as_json:
            print(json.dumps({status.value: n for status, n in counts.items()}))
            return
        table = Table(title="Subscribers")
        table.add_column("status")
        table.add_column("count", justify="right")
        for status, count in counts.items():
            table.add_row(status.value, str(count))
        console.print(table)
        return
    result = edition_stats(engine, date.date())
    payload = {
        "date": result.edition_date.isoformat(),
        "status": result.status.value,
        "status_reason": result.status_reason,
        "deliveries": {state.value: n for state, n in result.deliveries.items()},
        "soft_bounces": result.soft_bounces,
        "test_sends": result.test_sends,
        "unsubscribed_since": result.unsubscribed_since,
    }
    if as_json:
        print(json.dumps(payload))
        return
    table = Table(title=f"Edition {payload['date']}: {result.status.value}")
    table.add_column("deliveries")
    table.add_column("count", justify="right")
    for delivery_status, count in result.deliveries.items():
        table.add_row(delivery_status.value, str(count))
    table.add_row("soft bounces (still sent)", str(result.soft_bounces))
    table.add_row("test sends", str(result.test_sends))
    table.add_row("unsubscribed since", str(result.unsubscribed_since))
    console.print(table)
    if result.status_reason:
        console.print(f"Reason: {result.status_reason}", highlight=False)


@app.command()
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List what a bulk sender needs before the first send; exit 1 if anything is missing."""
    from newsletter.core.deliverability import CheckStatus, dns_txt_lookup, http_probe, run_checks

    results = run_checks(_context(ctx).settings, lookup_txt=dns_txt_lookup, probe_url=http_probe)
    if as_json:
        print(
            json.dumps(
                [{"check": r.name, "status": r.status.value, "detail": r.detail} for r in results]
            )
        )
    else:
        for result in results:
            console.print(escape(result.line), highlight=False, soft_wrap=True)
    if any(result.status is CheckStatus.MISSING for result in results):
        raise typer.Exit(1)


@app.command()
def run(
    ctx: typer.Context,
    date: DateOption = None,
    source: Annotated[str, typer.Option(help="Where papers come from: hf or arxiv.")] = "hf",
    processes: ProcessesOption = None,
) -> None:
    """Ingest, rank, render and send a day's digest: what cron runs every day.

    Exits 3 when the send paused, 4 when it finished without reaching every reader,
    5 when the day has no papers (a weekend of arXiv, an empty Hugging Face day).
    """
    from newsletter.delivery.stats import edition_stats
    from newsletter.models import DeliveryStatus, EditionStatus

    context = _context(ctx)
    report = _ingest(context, date=date, source=source, file=None)
    if report.fetched == 0 and not _has_papers(context, report.day):
        console.print(f"No papers for {report.day.isoformat()}; nothing sent.", highlight=False)
        raise typer.Exit(NOTHING_TO_SEND_EXIT_STATUS)
    ctx.invoke(
        send,
        ctx=ctx,
        date=date,
        dry_run=False,
        as_json=False,
        retry_failed=False,
        processes=processes,
        as_child=False,
        worker_id=None,
        to=None,
        pause=False,
        resume=False,
        cancel=False,
    )
    stats = edition_stats(context.engine(), report.day)
    if stats.status is EditionStatus.FINISHED_WITH_FAILURES:
        failed = stats.deliveries.get(DeliveryStatus.FAILED, 0)
        bounced = stats.deliveries.get(DeliveryStatus.BOUNCED, 0)
        err_console.print(
            f"[bold yellow]The edition did not reach every reader:[/] {failed} failed, "
            f"{bounced} bounced; `newsletter send --retry-failed` tries the failed ones again.",
            highlight=False,
        )
        raise typer.Exit(4)


def _has_papers(context: CliContext, day: dt.date) -> bool:
    """Whether any paper is stored for the day (an earlier ingest may have brought some)."""
    from newsletter.core.db import session_scope
    from newsletter.ingest import load_papers_for_day

    with session_scope(context.engine()) as session:
        return bool(load_papers_for_day(session, day))


# ---- web -------------------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Run one sending worker as a child process (--no-worker: sends from /admin "
            "and confirmation emails wait for `newsletter worker --forever` processes "
            "started separately).",
        ),
    ] = True,
) -> None:
    """Serve sign-up, confirmation, unsubscribe, preferences, editions and /admin."""
    from newsletter.web.app import serve as serve_app

    context = _context(ctx)
    context.engine()  # check the schema before accepting requests
    serve_app(context.settings, host=host, port=port, worker=worker)


# ---- bounces ---------------------------------------------------------------------------------


@bounces_app.command("serve")
def bounces_serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 2525,
    unrecognised_dir: Annotated[
        Path | None,
        typer.Option(
            help="Keep reports that are no bounce or complaint in this Maildir (default: drop)."
        ),
    ] = None,
) -> None:
    """Receive bounces and complaints over SMTP: the MX of NEWSLETTER_BOUNCE_ADDRESS's domain.

    Accepts mail only for the bounce address and its VERP forms, records each
    bounce or complaint in the ledger (readers become bounced or complained, their
    addresses suppressed) and prints one line per event. SIGTERM or Ctrl-C stops it.
    """
    from newsletter.delivery.feedback.receiver import BounceHandler, serve_bounces

    context = _context(ctx)
    if context.settings.bounce_mailbox is None:
        raise ConfigurationError(
            "NEWSLETTER_BOUNCE_ADDRESS is not set: set it (e.g. bounces@bounces.example.org) "
            "so digests carry VERP envelope senders, and point its domain's MX at this server"
        )
    engine = context.engine()
    # flufl.bounce logs a traceback for every malformed message a detector trips on;
    # the receiver already says in one line that the report was not understood.
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

    def report(line: str) -> None:
        console.print(escape(line), highlight=False, soft_wrap=True)

    def ready(bound_host: str, bound_port: int) -> None:
        report(f"Receiving bounces on {bound_host}:{bound_port}")

    handler = BounceHandler(
        context.settings, engine, report=report, unrecognised_dir=unrecognised_dir
    )

    async def receive() -> None:
        import asyncio

        stop = asyncio.Event()
        _stop_on_signals(stop)
        await serve_bounces(handler, host=host, port=port, stop=stop, ready=ready)

    _run_async(receive())
    totals = handler.totals
    report(
        f"Stopped: {totals.recorded} recorded, {totals.duplicates} duplicates, "
        f"{totals.unknown} unknown, {handler.unrecognised} unrecognised"
    )


@bounces_app.command("fetch")
def bounces_fetch(
    ctx: typer.Context,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Delete nothing, not even with --delete-unrecognised (opened read-only)."
        ),
    ] = False,
    delete_unrecognised: Annotated[
        bool,
        typer.Option(
            "--delete-unrecognised",
            help="Also delete messages that are no bounce or complaint (default: keep them).",
        ),
    ] = False,
) -> None:
    """Read bounces and complaints from the IMAP mailbox NEWSLETTER_BOUNCE_IMAP_* names.

    Records every bounce and complaint in the ledger (readers become bounced or
    complained, their addresses suppressed), then deletes the messages recorded.
    Exits 1 with one line when the server cannot be reached or refuses the login.
    """
    from newsletter.core.clock import utc_now
    from newsletter.delivery.feedback.imap import fetch_feedback

    context = _context(ctx)
    report = fetch_feedback(
        context.engine(),
        context.settings,
        keep=keep,
        remove_unrecognised=delete_unrecognised,
        now=utc_now,
    )
    console.print(escape(report.line()), highlight=False, soft_wrap=True)


# ---- subscribers -----------------------------------------------------------------------------


@subscribers_app.command("add")
def subscribers_add(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address to add.")],
    name: Annotated[str | None, typer.Option(help="The subscriber's name.")] = None,
    topics: Annotated[
        str | None,
        typer.Option(help='Comma-separated topics from the configured ones, e.g. "LLMs,Robotics".'),
    ] = None,
    interests: Annotated[
        str | None,
        typer.Option(help="What they work on, in their words (up to 500 characters)."),
    ] = None,
    confirmed: Annotated[
        bool, typer.Option("--confirmed", help="Mark as confirmed (they agreed elsewhere).")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --confirmed: re-subscribe someone who unsubscribed (never a suppressed "
            "address).",
        ),
    ] = False,
) -> None:
    """Add a subscriber (pending unless --confirmed); an existing one gets the details given."""
    from newsletter.core.db import session_scope
    from subscribers.store import add_subscriber, check_confirmable

    context = _context(ctx)
    chosen = None
    if topics is not None:
        # Only then: the sign-up module brings the email templates with it.
        from subscribers.signup import validate_topics

        chosen = validate_topics(context.settings, topics.split(","))
    with session_scope(context.engine()) as session:
        if confirmed:
            check_confirmable(session, email=email, force=force)
        subscriber = add_subscriber(
            session,
            email=email,
            name=name,
            topics=chosen,
            interests=interests,
            confirmed=confirmed,
        )
        console.print(f"{subscriber.email}: {subscriber.status}", highlight=False)


def _reason_text(reason: object | None) -> str | None:
    return None if reason is None else str(reason)


@subscribers_app.command("list")
def subscribers_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List subscribers with their status (and why a suppressed one gets no digest)."""
    from newsletter.core.db import session_scope
    from subscribers.store import iter_subscribers
    from subscribers.suppressions import active_reasons, reason_for

    with session_scope(_context(ctx).engine()) as session:
        suppressed = active_reasons(session.connection())
        rows = [
            {
                "email": s.email,
                "name": s.name,
                "status": str(s.status),
                "suppressed": str(reason)
                if (reason := reason_for(suppressed, s.mailbox))
                else None,
                "topics": s.topics,
                "interests": s.interests,
                "paused": s.paused,
                "created_at": s.created_at.isoformat(),
            }
            for s in iter_subscribers(session)
        ]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    table = Table(title=f"{len(rows)} subscribers")
    for column in ("email", "name", "status", "suppressed", "since"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["email"]),
            str(row["name"] or ""),
            str(row["status"]),
            str(row["suppressed"] or ""),
            str(row["created_at"])[:10],
        )
    console.print(table)


@subscribers_app.command("remove")
def subscribers_remove(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address to remove.")],
) -> None:
    """Unsubscribe an address; it receives nothing more (its delivery history stays)."""
    from newsletter.core.db import session_scope
    from subscribers.store import remove_subscriber

    with session_scope(_context(ctx).engine()) as session:
        subscriber = remove_subscriber(session, email=email)
        console.print(f"{subscriber.email}: unsubscribed", highlight=False)


@subscribers_app.command("erase")
def subscribers_erase(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address whose data to erase.")],
) -> None:
    """Erase a reader on their request, as their "Delete my data" button does.

    Deletes the subscriber and the papers they judged, keeps the delivery ledger
    without the address, and leaves the mailbox on the suppression list as a hash.
    """
    from newsletter.core.clock import utc_now
    from newsletter.core.db import session_scope
    from newsletter.core.errors import SubscriberNotFoundError
    from newsletter.privacy import erase_reader
    from subscribers.store import find_subscriber

    with session_scope(_context(ctx).engine()) as session:
        subscriber = find_subscriber(session, email=email.strip())
        if subscriber is None:
            raise SubscriberNotFoundError(f"no subscriber has the address {email.strip()!r}")
        address = subscriber.email
        erase_reader(session, subscriber, now=utc_now())
    console.print(f"{address}: erased (a hash stays on the suppression list)", highlight=False)


@subscribers_app.command("import")
def subscribers_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="A CSV file: email, and optionally name, topics, status.")
    ],
    confirmed: Annotated[
        bool,
        typer.Option(
            "--confirmed",
            help="They agreed elsewhere: import them confirmed (else pending, and each is "
            "sent a confirmation email).",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Re-subscribe addresses that unsubscribed earlier."),
    ] = False,
    report_path: Annotated[
        Path | None,
        typer.Option("--report", help="Write every skipped row and warning to this CSV file."),
    ] = None,
    show: Annotated[int, typer.Option(help="How many skipped rows to print.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import a subscriber list from CSV; rerunning it adds nothing twice."""
    from subscribers.importing import import_csv_file

    context = _context(ctx)
    engine = context.engine()
    report = import_csv_file(
        engine, file, topics=context.settings.topics, confirmed=confirmed, force=force
    )
    if report_path is not None:
        _write_import_report(report_path, report)
    if as_json:
        print(json.dumps(report.as_dict(limit=show), ensure_ascii=False))
    else:
        _print_import_report(report, show=show)
    if report.confirmation_keys:
        _send_import_confirmations(context, report.confirmation_keys, quiet=as_json)


def _print_import_report(report: ImportReport, *, show: int) -> None:
    console.print(
        f"{report.rows} rows: {report.added} added, {report.already_present} already present, "
        f"{report.resubscribed} re-subscribed, {report.opted_out} unsubscribed as the file says, "
        f"{len(report.skipped)} skipped, "
        f"{len(report.warnings)} warnings.",
        highlight=False,
    )
    for title, rows in (("skipped", report.skipped), ("warnings", report.warnings)):
        if not rows or show <= 0:
            continue
        table = Table(title=f"{title} (first {min(show, len(rows))} of {len(rows)})")
        for column in ("row", "address", "reason"):
            table.add_column(column)
        for row in rows[:show]:
            table.add_row(str(row.row), escape(row.address), escape(row.reason))
        console.print(table)


def _write_import_report(path: Path, report: ImportReport) -> None:
    import csv

    from subscribers.exporting import neutralise_formula

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "address", "reason", "kind"])
        for kind, rows in (("skipped", report.skipped), ("warning", report.warnings)):
            for row in rows:
                writer.writerow(
                    [row.row, neutralise_formula(row.address), neutralise_formula(row.reason), kind]
                )


def _send_import_confirmations(context: CliContext, keys: list[str], *, quiet: bool) -> None:
    """Queue the import's confirmation emails, then send what is due, as a worker would."""
    from newsletter.core.dkim import DkimSigner
    from newsletter.core.templating import make_template_environment
    from newsletter.delivery.confirmations import send_due_confirmations
    from subscribers.importing import queue_import_confirmations

    settings = context.settings
    engine = context.engine()
    queued = queue_import_confirmations(settings, engine, keys)
    env = make_template_environment(settings.templates_dir)
    sending = send_due_confirmations(
        settings, engine, env, signer=DkimSigner.from_settings(settings)
    )
    if quiet:
        outcome = _run_async(sending)
    else:
        with err_console.status(f"sending {queued.queued} confirmation emails"):
            outcome = _run_async(sending)
    failed = outcome.retrying + outcome.given_up
    message = (
        f"Confirmation emails: {outcome.sent} sent, {queued.not_due} not due, {failed} failed."
    )
    (err_console if quiet else console).print(message, highlight=False)
    if outcome.retrying:
        err_console.print(
            f"{outcome.retrying} confirmation emails wait in the queue for a retry: "
            "`newsletter worker` (or `newsletter serve`) sends them.",
            highlight=False,
        )
    if outcome.given_up:
        err_console.print(
            "Some confirmation emails were refused; rerun the import to try them again.",
            highlight=False,
        )


@subscribers_app.command("export")
def subscribers_export(
    ctx: typer.Context,
    export_format: Annotated[
        str, typer.Option("--format", help="csv or json.", case_sensitive=False)
    ] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file (default: standard output).")
    ] = None,
) -> None:
    """Export every subscriber (status, topics, timestamps, suppression), streamed."""
    from subscribers.exporting import ExportFormat, iter_export

    try:
        chosen = ExportFormat(export_format.lower())
    except ValueError:
        raise typer.BadParameter("choose csv or json", param_hint="--format") from None
    chunks = iter_export(_context(ctx).engine(), chosen)
    if out is None:
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return
    with out.open("w", encoding="utf-8", newline="") as handle:
        for chunk in chunks:
            handle.write(chunk)


# ---- db --------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create the schema, or upgrade it to this version, keeping the data."""
    from newsletter.core.db import create_db_engine, current_revision, upgrade_schema

    context = _context(ctx)
    engine = create_db_engine(context.settings.database_url)
    try:
        before = current_revision(engine)
        upgrade_schema(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        console.print(f"The schema is up to date ({after}).")
    else:
        console.print(f"Upgraded the schema from {before or 'nothing'} to {after}.")


# ---- demo ------------------------------------------------------------------------------------


@app.command()
def demo(
    ctx: typer.Context,
    outbox: Annotated[
        Path, typer.Option(help="The Maildir where the in-process SMTP server stores each message.")
    ] = Path("./outbox"),
    database_url: Annotated[
        str, typer.Option(help="The demo's own database; it is reset on every run.")
    ] = "sqlite:///./demo.db",
) -> None:
    """Run the whole pipeline offline: sample papers, demo subscribers, a local SMTP server."""
    from newsletter.demo import run_demo

    run_demo(_context(ctx).settings, outbox=outbox, database_url=database_url, console=console)


# What to do about the file-system errors a command can meet.
_OS_REMEDY = {
    errno.ENOSPC: "free some space and try again",
    errno.EDQUOT: "free some space and try again",
    errno.EROFS: "use a path on a writable file system",
    errno.EACCES: "check the permissions of the file and its directory",
    errno.EPERM: "check the permissions of the file and its directory",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path: part of it is a file, not a directory",
    errno.EISDIR: "check the path: it names a directory, not a file",
    errno.EEXIST: "check the path: something else is already there",
}


def _is_database_error(error: Exception) -> TypeGuard[SQLAlchemyError]:
    # A database error can only exist once SQLAlchemy was imported by a command,
    # so `--help` never pays for importing it here.
    if "sqlalchemy" not in sys.modules:
        return False
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(error, SQLAlchemyError)


def describe_failure(error: Exception) -> str | None:
    """The one line a user reads about a failure they caused or met; None for a bug."""
    if isinstance(error, NewsletterError):
        message = str(error)
    elif _is_database_error(error):
        from newsletter.core.db import describe_database_error

        message = describe_database_error(error)
    elif isinstance(error, OSError):
        where = f"cannot use {error.filename}: " if error.filename else ""
        remedy = _OS_REMEDY.get(error.errno or 0)
        message = f"{where}{error.strerror or error}" + (f"; {remedy}" if remedy else "")
    else:
        return None
    return " ".join(message.split()) or type(error).__name__


class _PlainOption(TyperOption):
    """An option whose help names its value as click does (TEXT, INTEGER), a flag none."""

    def display_type_rich(self, ctx: ClickContext) -> str | None:
        """Nothing beside a flag; the value's name in capitals beside any other option."""
        if self.is_flag:
            return None
        return self.metavar or _value_name(self.display_type(ctx))


class _PlainArgument(TyperArgument):
    """An argument shown as EMAIL (required) or [FILE] (optional) in the usage line."""

    def display_type_rich(self, ctx: ClickContext) -> str | None:
        """The value's name in capitals."""
        return _value_name(self.display_type(ctx))

    def _usage_display_name(self) -> str:
        name = (self.metavar or self.name or "").upper()
        return name if self.required else f"[{name}]"


# Typer's type labels ("<str>", "<%Y-%m-%d>") as click and most CLIs spell them.
_VALUE_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "int range": "INTEGER",
    "float": "NUMBER",
    "%Y-%m-%d": "YYYY-MM-DD",
}


def _value_name(typer_label: str) -> str:
    label = typer_label.removeprefix("<").removesuffix(">")
    return _VALUE_NAMES.get(label, label.upper())


def _plain_help(command: ClickCommand) -> None:
    """Give the command tree click's spelling in its help (Typer's is `<bool>`, `{email}`)."""
    # Typer builds these parameters itself (--help on first use: made here); only
    # their help differs, so each becomes the subclass above.
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if isinstance(param, TyperOption):
            param.__class__ = _PlainOption
        elif isinstance(param, TyperArgument):
            param.__class__ = _PlainArgument
    if isinstance(command, typer.core.TyperGroup):
        for subcommand in command.commands.values():
            _plain_help(subcommand)


@functools.cache
def newsletter_command() -> ClickCommand:
    """The `newsletter` command, built once per interpreter.

    A forked sending process (`run_command_here`) runs it as its parent built
    it, rather than build it again before its first message, on the cores
    the sending needs.
    """
    command = typer.main.get_command(app)
    _plain_help(command)
    return command


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the `newsletter` console script (`args`: else the process's own)."""
    try:
        command = newsletter_command()
        command(args=None if args is None else list(args), prog_name="newsletter")
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as error:
        message = describe_failure(error)
        if message is None:
            raise  # a bug, not something the user can act on: the traceback is for us
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        logger.info("the failure in full:", exc_info=error)  # shown with --verbose
        sys.exit(1)
