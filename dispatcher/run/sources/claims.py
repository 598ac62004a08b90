"""Batches claimed from a run shared through PostgreSQL: the batches this process's workers send are
the ones it claims in the database, whoever planned them.

A `send` first stores its jobs in the run's plan (`plan`: every job validated whole, with its
batches), while claiming as every worker of the run does. Claims are taken while there is room in
the queue, until every batch of a complete plan is final, or, for a `work` process, until the plan is
incomplete, its `send` is gone, and nothing planned is left (`incomplete`: the send must be resumed
with the jobs). While the plan is incomplete and its send lives, or batches are claimed by others, it
waits and looks again. A request starts only on a batch whose claim this worker holds (`hold`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import structlog

from dispatcher.core.batch import Batch, split
from dispatcher.core.job import InlineRecipients, Job
from dispatcher.core.ports import Feed
from dispatcher.core.status import FAILED, OK, UNKNOWN
from dispatcher.errors import InputError
from dispatcher.jobs.files import Kept
from dispatcher.jobs.reader import JobsInput, Rejection, api_of
from dispatcher.run.sources.local import PRODUCER_SLICE, take
from dispatcher.shared.claims import Claimed, PlannedJob
from dispatcher.shared.run import SharedRun
from dispatcher.threads import in_daemon_thread
from dispatcher.tim.apis import REGISTRY

log = structlog.get_logger("dispatcher")

POLL = 0.25  # seconds between looks when there is nothing to claim
# Claims are taken a few at a time, and only when the queue runs low: a batch waiting in this
# process's queue is one no other worker can take until this one sends it (or its lease runs out).
CLAIM_AT_MOST = 16
REFILL = 0.01  # seconds between looks at a queue that is full enough


class Claims:
    """A `BatchSource`: the batches of a shared run this worker claims; with `jobs`, this process is
    the run's `send`, and stores them in the run's plan first."""

    resends_failed = True  # a failed batch is handed out only once a --retry-failed re-opened it, for every worker

    def __init__(
        self,
        run: SharedRun,
        jobs: JobsInput | None,
        batch_size: int,
        *,
        resume: bool,
        retry_failed: bool,
        kept: Kept | None = None,
    ):
        self._run = run
        self._kept = kept  # where the rows of the jobs' queries are kept: the journal's database
        self._jobs = jobs
        self._batch_size = batch_size
        self._resume = resume
        self._retry_failed = retry_failed

    async def feed(self, run: Feed) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                if self._jobs is not None and self._resume:
                    # A resume checks every job against the stored plan before this process claims a
                    # batch: a job changed since is withdrawn, and none of its old batches go out here.
                    await self._plan(run, self._jobs)
                elif self._jobs is not None:
                    group.create_task(self._plan(run, self._jobs))
                await self._claim(run)
        except Exception as exc:  # a bug: halt, so that the requests in flight are still recorded
            log.exception("internal error while planning or claiming")
            run.halt(f"internal error while planning or claiming: {type(exc).__name__}: {exc}")

    async def _plan(self, run: Feed, jobs: JobsInput) -> None:
        """Store each job, once validated whole, with its batches, then mark the plan complete.
        A job the plan holds already (a resume) is left as it is; one changed since is rejected."""
        shared = self._run
        items = iter(jobs.read(self._batch_size, stop=run.reading_stopped, kept=self._kept))
        try:
            while chunk := await in_daemon_thread(lambda: take(items)):
                yield_at = time.monotonic() + PRODUCER_SLICE
                for item in chunk:
                    if run.stopping:
                        return
                    if isinstance(item, Rejection):
                        reason = item.message
                        run.reject(
                            item.job_id,
                            item.group_id,
                            reason,
                            item.api,
                            item.exit_code,
                            source=item.source,
                            field=item.field,
                        )
                        continue
                    planned = shared.planned_hash(item.job_id)
                    conflict = run.state.conflict(item.job_id, item.job_hash, item.derived_id)
                    if conflict is None and planned not in (None, item.job_hash):
                        conflict = (
                            "job changed since the run's plan was stored (content, recipients or --batch-size): "
                            "nothing more of it is sent; its batches not sent yet are withdrawn from the run"
                        )
                    if conflict is not None:
                        if planned is not None:  # no worker may send the old version's batches either
                            await shared.withdraw(item.job_id)
                        message = f"{item.source}: {conflict}"
                        run.reject(item.job_id, item.group_id, message, api_of(item), source=item.source, field=None)
                        continue
                    # Its batches count where they are claimed (BatchClaimed), by whichever worker; on a
                    # resume, those final already count as skipped, as with a file (a failed one: exit 1).
                    done = [] if planned is None else self._final_batches(run, item.job_id)
                    run.accepted(item, len(done))
                    for index, failed in done:
                        unknown = run.state.fate(item.job_id, index) == UNKNOWN
                        run.skipped(item.job_id, index, failed, unknown)
                    if planned is None:
                        await shared.plan(item, split(item))
                    if time.monotonic() > yield_at:  # as the local jobs do: the workers' requests go out meanwhile
                        await asyncio.sleep(0)
                        yield_at = time.monotonic() + PRODUCER_SLICE
                await shared.plan_flush()
            if not run.stopping:
                await shared.plan_complete()
        except InputError as exc:  # a jobs file became unreadable during the run
            run.halt(f"cannot read the jobs: {exc}")

    def _final_batches(self, run: Feed, job_id: str) -> list[tuple[int, bool]]:
        """The batches of a job that the journal holds as final and this run leaves so: (index, failed).
        A failed one open again in the run's database (--retry-failed) is not: it is sent again. One whose
        fate is unknown (a push whose reply never came) stays final: a run in PostgreSQL never resends it."""
        record = run.state.jobs.get(job_id)
        if record is None:
            return []
        retry = self._retry_failed
        return [
            (i, fate == FAILED)
            for i, (fate, _) in record.batches.items()
            if fate in (OK, UNKNOWN) or (fate == FAILED and not retry and not self._run.reopened(job_id, i))
        ]

    async def _claim(self, run: Feed) -> None:
        shared = self._run
        queue = run.queue
        jobs: dict[str, Job] = {}
        low = max(1, queue.maxsize // 4)
        while not run.stopping:
            if queue.qsize() >= low:
                await run.sleep(REFILL)
                continue
            shared.planned.clear()  # before the claim: a part of the plan stored after it wakes the wait below
            claimed = await shared.claim(min(CLAIM_AT_MOST, queue.maxsize - queue.qsize()))
            if claimed:
                for item in claimed:
                    batch = batch_of(item, jobs)
                    run.claimed(batch)
                    await queue.put(batch)
                continue
            if run.stopping:
                return
            status = await shared.status()
            if run.stopping:  # the database was lost: the run is stopping already
                return
            if status.complete and status.open == 0:
                return
            if not status.complete and not status.send_alive and status.open == 0:
                shared.incomplete = True
                return
            await _nap(shared.planned, run.sleep(POLL))

    async def confirm(self, batch: Batch) -> bool:
        return await self._run.confirm(batch.job.job_id, batch.index)

    async def hold(self, batch: Batch, seconds: float) -> bool:
        if self._run.holds(batch.job.job_id, batch.index, seconds):
            return True
        await self._run.release(batch.job.job_id, batch.index)
        return False

    def still_ours(self, batch: Batch) -> bool:
        return not self._run.refused(batch.job.job_id, batch.index)


async def _nap(planned: asyncio.Event, nap: Awaitable[None]) -> None:
    """Wait out `nap`, or less if this process stores more of the plan meanwhile."""
    tasks = {asyncio.ensure_future(planned.wait()), asyncio.ensure_future(nap)}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def batch_of(claimed: Claimed, jobs: dict[str, Job]) -> Batch:
    """The batch a claim names, with its job as the run's plan stored it."""
    job = jobs.get(claimed.job.job_id)
    if job is None:
        job = jobs[claimed.job.job_id] = job_of(claimed.job)
    return Batch(job, claimed.index, claimed.recipients, claimed.random)


def job_of(planned: PlannedJob) -> Job:
    file, _, line = planned.source.rpartition(":")
    return Job(
        job_id=planned.job_id,
        file=file,
        line=int(line) if line.isdigit() else 0,
        group_id=planned.group_id,
        group_type=planned.group_type,
        # The batches carry their own recipients; the job keeps their count, for its number of batches.
        recipients=InlineRecipients(()) if planned.named else None,
        recipient_count=planned.recipient_count,
        batch_size=planned.batch_size,
        job_hash=planned.job_hash,
        endpoint=REGISTRY[planned.api],
        fields=planned.fields,
    )
