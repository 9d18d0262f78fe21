"""Seeing a send work in the terminal: a rich progress bar that is a `SendProgress`."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
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
    """A progress bar with sent, failed, bounced, rate (msg/s) and time left."""

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
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("send", total=None, sent=0, failed=0, bounced=0)
        self.counts = dict.fromkeys(DeliveryStatus, 0)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def started(self, total: int, already_done: int) -> None:
        """Set the bar's length and where it starts."""
        self._progress.update(self._task, total=total, completed=already_done)

    def advanced(self, status: DeliveryStatus) -> None:
        """Count one final outcome."""
        self.counts[status] += 1
        self._progress.update(
            self._task,
            advance=1,
            sent=self.counts[DeliveryStatus.SENT],
            failed=self.counts[DeliveryStatus.FAILED],
            bounced=self.counts[DeliveryStatus.BOUNCED],
        )

    def finished(self, report: SendReport) -> None:
        """Show the final counts from the report."""
        self._progress.update(
            self._task, sent=report.sent, failed=report.failed, bounced=report.bounced
        )
        self._progress.refresh()
