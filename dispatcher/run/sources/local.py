"""Batches from the jobs files, read on this machine.

The jobs are read and validated in a thread, so that a million-line export does not stall the event
loop, and handed over a chunk at a time; each job is checked against the journal (a job changed since
is rejected), split into batches, and those not final already are queued for the workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import structlog

from dispatcher.core.batch import Batch, split
from dispatcher.core.job import Job
from dispatcher.core.ports import Feed
from dispatcher.core.status import FAILED, UNKNOWN
from dispatcher.errors import InputError
from dispatcher.jobs.files import Kept, breathe
from dispatcher.jobs.reader import JobsInput, Rejection, api_of
from dispatcher.threads import in_daemon_thread

log = structlog.get_logger("dispatcher")

# How many jobs, or named recipients, the reader thread hands over at once.
_CHUNK_JOBS = 256
_CHUNK_RECIPIENTS = 20_000
# The longest the producer holds the event loop while it splits and queues batches: a request
# between its slot and its socket write waits out the rest. Why 0.2 ms: docs/guide/measurements.md#producer-slice
PRODUCER_SLICE = 0.0002


def take(items: Iterator[Job | Rejection]) -> list[Job | Rejection]:
    """The next few jobs, bounded by count and by named recipients (runs in the reader thread)."""
    out: list[Job | Rejection] = []
    recipients = 0
    for item in items:
        breathe()  # reading jobs holds the GIL: hand it to the event loop, as an export's reading does
        out.append(item)
        if isinstance(item, Job):
            recipients += item.recipient_count
        if len(out) >= _CHUNK_JOBS or recipients >= _CHUNK_RECIPIENTS:
            break
    return out


class _RowsRead:
    """The rows the reader thread read, told to the run at most every ROWS_TOLD_EVERY seconds: a
    call for each of a million lines would cost the event loop more than the reading."""

    def __init__(self, tell: Callable[[int], object]) -> None:
        self._tell = tell
        self._rows = 0
        self._told_at = time.monotonic()

    def __call__(self, rows: int) -> None:  # in the reader thread
        self._rows += rows
        now = time.monotonic()
        if now - self._told_at >= ROWS_TOLD_EVERY:
            self._tell(self.flush())
            self._told_at = now

    def flush(self) -> int:
        rows, self._rows = self._rows, 0
        return rows


ROWS_TOLD_EVERY = 0.1


class LocalJobs:
    """A `BatchSource`: the jobs of this run (its files, or jobs held in memory); every batch it hands
    out is this worker's."""

    resends_failed = False  # a failed batch is queued only with --retry-failed, which the journal's state knows

    def __init__(
        self,
        jobs: JobsInput,
        batch_size: int,
        retry_failed: bool,
        retry_unknown: bool = False,
        *,
        kept: Kept | None = None,
    ) -> None:
        self._jobs = jobs
        self._batch_size = batch_size
        self._retry_failed = retry_failed
        self._retry_unknown = retry_unknown
        self._kept = kept  # where the rows of the jobs' queries are kept for a resume

    async def feed(self, run: Feed) -> None:
        loop = asyncio.get_running_loop()

        def cut_short(path: str, read: int, size: int) -> None:  # in the reader thread
            loop.call_soon_threadsafe(run.cut_short, path, read, size)

        rows = _RowsRead(lambda n: loop.call_soon_threadsafe(run.rows_read, n))
        jobs = self._jobs.read(
            self._batch_size, stop=run.reading_stopped, on_cut=cut_short, on_rows=rows, kept=self._kept
        )
        items = iter(jobs)
        try:
            while chunk := await in_daemon_thread(lambda: take(items)):
                if read := rows.flush():  # the reader thread is idle until the next take
                    run.rows_read(read)
                for item in chunk:
                    if run.stopping:
                        return
                    await self._admit(item, run)
        except InputError as exc:  # a jobs file became unreadable during the run
            run.halt(f"cannot read the jobs: {exc}")
        except Exception as exc:  # a bug: halt, so that the requests in flight are still recorded
            log.exception("internal error while reading the jobs")
            run.halt(f"internal error while reading the jobs: {type(exc).__name__}: {exc}")

    async def _admit(self, item: Job | Rejection, run: Feed) -> None:
        if isinstance(item, Rejection):
            run.reject(
                item.job_id, item.group_id, item.message, item.api, item.exit_code, source=item.source, field=item.field
            )
            return
        state = run.state
        conflict = state.conflict(item.job_id, item.job_hash, item.derived_id)
        if conflict is not None:
            message = f"{item.source}: {conflict}"
            run.reject(item.job_id, item.group_id, message, api_of(item), source=item.source, field=None)
            return
        run.accepted(item, item.batches)
        queue = run.queue
        yield_at = time.monotonic() + PRODUCER_SLICE
        try:
            for batch in split(item):
                if state.should_skip(item.job_id, batch.index, self._retry_failed, self._retry_unknown):
                    fate = state.fate(item.job_id, batch.index)
                    run.skipped(item.job_id, batch.index, fate == FAILED, fate == UNKNOWN)
                else:
                    await queue.put(batch)  # suspends only when the queue is full
                    if time.monotonic() > yield_at:
                        # Let the loop run: the requests between their slots and their writes go first.
                        await asyncio.sleep(0)
                        yield_at = time.monotonic() + PRODUCER_SLICE
        except InputError as exc:  # the temporary copy of its export failed: some batches may be out
            run.halt(str(exc))

    async def confirm(self, batch: Batch) -> bool:
        return True

    async def hold(self, batch: Batch, seconds: float) -> bool:
        return True

    def still_ours(self, batch: Batch) -> bool:
        return True
