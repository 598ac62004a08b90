"""The progress display on a terminal: batches done of total, requests/s, retries, failures, ETA."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dispatcher.core.status import FAILED
from dispatcher.observe import colour
from dispatcher.observe.events import BatchSkipped, Event, ReplyRecorded


class RichProgress:
    """Fed by the run's events; draws on stderr. Use only when stderr is a terminal."""

    def __init__(self, total_batches: int, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]batches"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "{task.fields[rate]:>7.1f} req/s  retries {task.fields[retries]}  "
                "failed {task.fields[failed]}  skipped {task.fields[skipped]}"
            ),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or colour.rich_console(stderr=True),
            refresh_per_second=4,
        )
        self._task = self._progress.add_task("send", total=total_batches, rate=0.0, retries=0, failed=0, skipped=0)
        self._requests = 0
        self._retries = 0
        self._failed = 0
        self._skipped = 0
        self._started = time.monotonic()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        try:
            self._progress.stop()
        except OSError:  # the terminal hung up (SIGHUP): there is nobody left to show it to
            pass

    def __call__(self, event: Event) -> None:
        """An events subscriber: a recorded request counts toward the rate, a batch's end advances the bar."""
        if isinstance(event, ReplyRecorded) and event.recorded:
            self._requests += 1
            self._retries += event.retry
            if event.final:
                self._batch_done(event.status)
        elif isinstance(event, BatchSkipped):
            self._batch_done("skipped")

    def _batch_done(self, status: str) -> None:
        if status == FAILED:
            self._failed += 1
        elif status == "skipped":
            self._skipped += 1
        elapsed = max(time.monotonic() - self._started, 1e-9)
        self._progress.update(
            self._task,
            advance=1,
            rate=self._requests / elapsed,
            retries=self._retries,
            failed=self._failed,
            skipped=self._skipped,
        )
