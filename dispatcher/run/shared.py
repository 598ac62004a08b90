"""A run shared through its journal (PostgreSQL): the batches this process's workers send are the
ones it claims in the database, whoever planned them.

`feed` claims batches while there is room in the queue, and ends when every batch of a complete plan
is final, or, for a `work` process, when the plan is incomplete, its `send` is gone, and nothing
planned is left (`incomplete`: the send must be resumed with the jobs). While the plan is incomplete
and its send lives, or batches are claimed by others, it waits and looks again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from dispatcher.core.batch import Batch
from dispatcher.core.job import InlineRecipients, Job
from dispatcher.journal.postgres import Claimed, PlannedJob
from dispatcher.journal.store import SharedRun
from dispatcher.tim.apis import REGISTRY

POLL = 0.25  # seconds between looks when there is nothing to claim
# Claims are taken a few at a time, and only when the queue runs low: a batch waiting in this
# process's queue is one no other worker can take until this one sends it (or its lease runs out).
CLAIM_AT_MOST = 16
REFILL = 0.01  # seconds between looks at a queue that is full enough


async def feed(
    run: SharedRun,
    queue: asyncio.Queue[Batch | None],
    stopping: Callable[[], bool],
    sleep: Callable[[float], Awaitable[None]],
    on_claim: Callable[[Batch], None],
) -> None:
    jobs: dict[str, Job] = {}
    low = max(1, queue.maxsize // 4)
    while not stopping():
        if queue.qsize() >= low:
            await sleep(REFILL)
            continue
        run.planned.clear()  # before the claim: a part of the plan stored after it wakes the wait below
        claimed = await run.claim(min(CLAIM_AT_MOST, queue.maxsize - queue.qsize()))
        if claimed:
            for item in claimed:
                batch = batch_of(item, jobs)
                on_claim(batch)
                await queue.put(batch)
            continue
        if stopping():
            return
        status = await run.status()
        if stopping():  # the database was lost: the run is stopping already
            return
        if status.complete and status.open == 0:
            return
        if not status.complete and not status.send_alive and status.open == 0:
            run.incomplete = True
            return
        await _nap(run.planned, sleep(POLL))


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
