"""The run's two ports: where batches come from (`BatchSource`) and where fates go (`Journal`).

The engine wires one source to its workers and to one journal, and knows neither store: the local
jobs files or a run shared in PostgreSQL, a JSONL file or PostgreSQL's outcome rows. The runner
picks the pair. The third port, the rate limiter, is `dispatcher.pacing.base.Limiter`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Protocol

from dispatcher.core.batch import Batch
from dispatcher.core.job import Job
from dispatcher.core.state import JournalState

# What a journal tells the run about itself: a message, and whether the run must stop for it (else a warning).
Trouble = Callable[[str, bool], None]


class Journal(Protocol):
    """Where fates go, with one lifecycle whatever the store: write, then commit, then close.

    - `write` takes one outcome line at once, without awaiting: a reply's line is taken in the step of
      the event loop that received the reply. It raises JournalWriteError when it cannot be taken.
    - `commit` returns once every line taken so far is in the store. With `wait` False it does not wait
      on another machine (a stopping run does not): False then, and `close` commits instead.
    - `keep` runs beside the run and keeps the journal the run's (a file's fsync and path; a shared
      run's claims and lock); `close` commits what is left and lets go, within a bound when `at_once`.
    """

    @property
    def state(self) -> JournalState: ...

    # True: a final line may be followed by another line of its batch, which then says what became of it
    # (a file). So a request that must never go twice may be marked sent before it leaves. A shared run's
    # final line ends its claim: nothing of the batch may follow it there.
    marks_sent: bool

    def write(self, doc: dict[str, Any]) -> None: ...
    async def commit(self, wait: bool = True) -> bool: ...
    async def keep(self, trouble: Trouble) -> None: ...
    async def close(self, trouble: Trouble, *, unused: bool, at_once: bool) -> None:
        """`unused`: the run stopped early, and a journal it made and wrote nothing into may go."""


class Feed(Protocol):
    """What a source is given to feed a run: where its batches go, and what it tells the run."""

    queue: asyncio.Queue[Batch | None]
    reading_stopped: threading.Event  # tells a reader thread to give up

    @property
    def state(self) -> JournalState: ...
    @property
    def stopping(self) -> bool: ...

    def halt(self, reason: str) -> None: ...
    def reject(
        self, job_id: str, group_id: str | None, message: str, api: str | None, exit_code: int = 1, **extra: object
    ) -> None: ...
    def accepted(self, job: Job, batches: int) -> None: ...
    def skipped(self, job_id: str, index: int, failed: bool, unknown: bool = False) -> None: ...
    def claimed(self, batch: Batch) -> None: ...
    def cut_short(self, path: str, read: int, size: int) -> None: ...
    def rows_read(self, rows: int) -> None: ...
    async def sleep(self, seconds: float) -> None: ...


class BatchSource(Protocol):
    """Where batches come from, and whether a batch is still this worker's to send.

    `feed` puts batches into the run's queue until there are none left or the run stops; trouble
    halts the run rather than raising. `confirm` is asked before each attempt's rate slot, `hold`
    after it (for a request of up to `seconds`; a batch not held is given back), `still_ours` once
    the reply's line is committed. `resends_failed`: a failed batch it hands out is sent again."""

    @property
    def resends_failed(self) -> bool: ...

    async def feed(self, run: Feed) -> None: ...
    async def confirm(self, batch: Batch) -> bool: ...
    async def hold(self, batch: Batch, seconds: float) -> bool: ...
    def still_ours(self, batch: Batch) -> bool: ...
