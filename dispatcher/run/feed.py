"""What a source is given to feed a run (`core.ports.Feed`): the queue, the journal's state, the run's
stop, the recorder for rejected jobs, and the events a source tells."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from dispatcher.core.batch import Batch
from dispatcher.core.job import Job
from dispatcher.core.ports import Journal
from dispatcher.core.state import JournalState
from dispatcher.observe.events import BatchClaimed, BatchSkipped, Event, JobAccepted, JobsCutShort, JobsRead
from dispatcher.run.record import Recorder
from dispatcher.run.stopping import Stopping


class RunFeed:
    def __init__(
        self,
        queue: asyncio.Queue[Batch | None],
        journal: Journal,
        stop: Stopping,
        recorder: Recorder,
        emit: Callable[[Event], None],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.queue = queue
        self.reading_stopped = stop.reading_stopped
        self._journal = journal
        self._stop = stop
        self._recorder = recorder
        self._emit = emit
        self._sleep = sleep

    @property
    def state(self) -> JournalState:
        return self._journal.state

    @property
    def stopping(self) -> bool:
        return self._stop.stopping

    def halt(self, reason: str) -> None:
        self._stop.halt(reason)

    def reject(
        self, job_id: str, group_id: str | None, message: str, api: str | None, exit_code: int = 1, **extra: object
    ) -> None:
        self._recorder.reject(job_id, group_id, message, api, exit_code, **extra)

    def accepted(self, job: Job, batches: int) -> None:
        self._emit(JobAccepted(job.job_id, batches, job.duplicates, job.excluded))

    def skipped(self, job_id: str, index: int, failed: bool, unknown: bool = False) -> None:
        self._emit(BatchSkipped(job_id, index, failed, unknown))

    def claimed(self, batch: Batch) -> None:
        self._emit(BatchClaimed(batch.job.job_id, batch.index))

    def cut_short(self, path: str, read: int, size: int) -> None:
        self._emit(JobsCutShort(path, read, size))

    def rows_read(self, rows: int) -> None:
        self._emit(JobsRead(rows))

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds)
