"""The progress display on a terminal: what the run is doing now, in one line.

Three phases, each shown as what it is:
- scanning: the pre-scan reads the jobs to count their batches (no total yet): the rows read so far;
- reading: the totals are known and the run reads the jobs again before its first request (a big
  export is read whole before any of it is sent): the rows read, and the batches a resume skips;
- sending: batches done of total, requests a second over the last WINDOW seconds (not an average
  since the start, which would include the reading), retries, failures, skips, and the ETA at the
  recent pace.

The clock is injected, so what it shows at a given moment can be tested without waiting.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dispatcher.core.status import FAILED
from dispatcher.observe import colour
from dispatcher.observe.events import BatchSkipped, Event, JobsRead, RateWaited, ReplyRecorded

WINDOW = 5.0  # seconds that req/s and the ETA are measured over


def _clock_text(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class RichProgress:
    """Fed by the run's events; draws on stderr. Use only when stderr is a terminal.

    `total_batches` None: the pre-scan is still counting them (`planned` gives them). `skipped`: the
    batches a resume will skip, known from the pre-scan before the run skips them one by one."""

    def __init__(
        self,
        total_batches: int | None = None,
        console: Console | None = None,
        *,
        skipped: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._total: int | None = None
        self._known_skipped = 0
        self._skipped_seen = 0  # BatchSkipped events: the first `_known_skipped` are counted already
        self._skipped = 0
        self._done = 0  # batches final: ok, failed or skipped
        self._failed = 0
        self._retries = 0
        self._rows = 0  # rows read in this phase; written by a reader thread during the pre-scan
        self._sending = False
        self._first_reply: float | None = None
        self._replies: collections.deque[float] = collections.deque()  # times of recent recorded requests
        self._ended: collections.deque[float] = collections.deque()  # times of recent batches sent to the end
        if total_batches is not None:
            self.planned(total_batches, skipped)
        self._live = Live(
            console=console or colour.rich_console(stderr=True),
            refresh_per_second=4,
            get_renderable=self.renderable,
        )

    def __enter__(self) -> RichProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        try:
            self._live.stop()
        except OSError:  # the terminal hung up (SIGHUP): there is nobody left to show it to
            pass

    def rows_read(self, rows: int) -> None:
        """The pre-scan read `rows` more rows of the jobs (called from its reader thread)."""
        self._rows += rows

    def planned(self, total_batches: int, skipped: int = 0) -> None:
        """The pre-scan is done: the run's batches, and those a resume skips (done before it sends)."""
        self._total = total_batches
        self._known_skipped = skipped
        self._skipped = self._done = skipped
        self._rows = 0  # the run reads the jobs again: its own rows from here

    def __call__(self, event: Event) -> None:
        """An events subscriber: a recorded request counts toward the rate, a batch's end advances the bar."""
        if isinstance(event, ReplyRecorded) and event.recorded:
            self._sending = True
            now = self._clock()
            if self._first_reply is None:
                self._first_reply = now
            self._replies.append(now)
            self._retries += event.retry
            if event.final:
                self._ended.append(now)
                self._done += 1
                self._failed += event.status == FAILED
        elif isinstance(event, RateWaited):
            self._sending = True  # a request is starting
        elif isinstance(event, BatchSkipped):
            self._skipped_seen += 1
            if self._skipped_seen > self._known_skipped:  # not in the pre-scan's count (there was none)
                self._skipped += 1
                self._done += 1
        elif isinstance(event, JobsRead):
            self._rows += event.rows

    def _per_second(self, times: collections.deque[float], now: float) -> float:
        """Events a second over the last WINDOW seconds (over less, and at least a second, at the start)."""
        while times and times[0] < now - WINDOW:
            times.popleft()
        if self._first_reply is None:
            return 0.0
        return len(times) / max(1.0, min(WINDOW, now - self._first_reply))

    def line(self) -> str:
        """What the display says now, as plain text (the bar left out)."""
        now = self._clock()
        total = self._total
        if total is None:
            return f"scanning the jobs: {self._rows:,} rows read"
        counts = f"{self._done:,}/{total:,} batches"
        if not self._sending and self._done < total:
            skipped = f", {self._skipped:,} skipped (already final)" if self._skipped else ""
            return f"reading the jobs: {self._rows:,} rows read; {counts}{skipped}"
        rate = self._per_second(self._replies, now)
        batches_rate = self._per_second(self._ended, now)
        left = total - self._done
        eta = "0:00:00" if left <= 0 else _clock_text(left / batches_rate) if batches_rate else "-:--:--"
        return (
            f"{counts}  {rate:,.1f} req/s  retries {self._retries:,}  failed {self._failed:,}  "
            f"skipped {self._skipped:,}  ETA {eta}"
        )

    def renderable(self) -> RenderableType:
        """The line, with a bar once the totals are known."""
        text = Text(self.line())
        if self._total is None or (not self._sending and self._done < self._total):
            return text
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=30)
        grid.add_column()
        grid.add_row(ProgressBar(total=max(self._total, 1), completed=self._done, width=30), text)
        return grid
