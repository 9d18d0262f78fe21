"""Seeing a send work in the terminal: a rich progress bar that is a `SendProgress`."""

from __future__ import annotations

import datetime as dt
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from newsletter.delivery.report import SendReport
from newsletter.models import DeliveryStatus


class _RateColumn(ProgressColumn):
    """Messages per second, as rich measures the task's speed."""

    def render(self, task: Task) -> Text:
        """The current rate."""
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} msg/s" if speed else "– msg/s", style="cyan")


class RichSendProgress:
    """A progress bar with sent, failed, bounced, rate (msg/s) and time left.

    While every row left waits on its retry backoff, a note says how many wait,
    until when, and the last reply that made one wait.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]Sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]sent {task.fields[sent]}[/] "
                "[red]failed {task.fields[failed]}[/] "
                "[yellow]bounced {task.fields[bounced]}[/]"
            ),
            _RateColumn(),
            TimeRemainingColumn(),
            TextColumn("[yellow]{task.fields[note]}"),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(
            "send", total=None, sent=0, failed=0, bounced=0, note=""
        )
        self.counts = dict.fromkeys(DeliveryStatus, 0)

    def __enter__(self) -> Self:
        # The bar (and the thread that redraws it) starts with `started`: the parent of
        # forked sending processes must fork before any thread of its own runs.
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def started(self, total: int, already_done: int) -> None:
        """Show the bar: its length and where it starts."""
        self._progress.start()
        self._progress.update(self._task, total=total, completed=already_done)

    def advanced(self, status: DeliveryStatus, count: int = 1) -> None:
        """Count `count` final outcomes."""
        self.counts[status] += count
        self._progress.update(
            self._task,
            advance=count,
            sent=self.counts[DeliveryStatus.SENT],
            failed=self.counts[DeliveryStatus.FAILED],
            bounced=self.counts[DeliveryStatus.BOUNCED],
            note="",
        )

    def waiting(self, count: int, until: dt.datetime, last_reply: str | None) -> None:
        """Show that `count` recipients wait for a retry, until when, and the last reply."""
        self._progress.update(self._task, note=escape(describe_wait(count, until, last_reply)))

    def finished(self, report: SendReport) -> None:
        """Show the final counts from the report."""
        self._progress.update(
            self._task, sent=report.sent, failed=report.failed, bounced=report.bounced, note=""
        )
        self._progress.refresh()


def describe_wait(count: int, until: dt.datetime, last_reply: str | None) -> str:
    """One line: how many recipients wait for a retry, until when, and the last reply."""
    line = f"{count} waiting to retry until {until.astimezone(dt.UTC):%H:%M:%S} UTC"
    return f"{line}; last reply: {last_reply}" if last_reply else line
