"""A run's plan, as its `send` stores it: every job once validated whole, and its batches.

No worker can claim a batch before it is committed, so none is sent before its job is stored. The
plan has a connection of its own, whose statements may take PLAN_S (COPY of up to 20,000 batches).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from dispatcher.core.batch import Batch
from dispatcher.core.job import Job
from dispatcher.journal.pgsession import Faults, within
from dispatcher.pg import queries

if TYPE_CHECKING:
    import psycopg

_Q = queries.load("plan")
PLAN_S = 120.0  # the bound on storing one part of the plan (COPY of up to 20,000 batches)
_PLAN_JOBS = 256  # jobs stored in one transaction
_PLAN_BATCHES = 20_000


class Plan:
    """The send's plan of the run `name`, stored on the connection `conn`."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], name: str, faults: Faults) -> None:
        self.conn = conn
        self.planned = asyncio.Event()  # set when more of the plan is stored: a feeder waiting may claim at once
        self._name = name
        self._faults = faults
        self._planned: dict[str, str] = {}  # job_id -> job_hash of every job in the plan
        self._reopened: set[tuple[str, int]] = set()  # failed batches open again
        self._jobs: list[tuple[Any, ...]] = []
        self._batches: list[tuple[Any, ...]] = []

    async def load(self, retry_failed: bool) -> None:
        """Read the plan a resumed run holds; with `retry_failed`, open its failed batches again."""
        cur = await self.conn.execute(_Q["planned"], (self._name,))
        self._planned = {job_id: job_hash for job_id, job_hash in await cur.fetchall()}
        if retry_failed:
            await self.conn.execute(_Q["reopen_failed"], (self._name,))
        # Failed batches open again (this send's --retry-failed, or an earlier one's that stopped): sent
        # again by whoever claims them, so not final for this run, whatever their last line says.
        cur = await self.conn.execute(_Q["reopened"], (self._name,))
        self._reopened = {(job_id, batch) for job_id, batch in await cur.fetchall()}

    def reopened(self, job_id: str, batch: int) -> bool:
        """True for a batch whose last line says failed, open again when this send began (--retry-failed)."""
        return (job_id, batch) in self._reopened

    def planned_hash(self, job_id: str) -> str | None:
        """The job_hash under which the plan holds `job_id`, or None if it holds no such job."""
        return self._planned.get(job_id)

    async def plan(self, job: Job, batches: Iterable[Batch]) -> None:
        """Add a job (validated whole) and its batches to the plan; stored with the next `plan_flush`
        (no worker can claim a batch before it is committed, so none is sent before its job is stored)."""
        self._planned[job.job_id] = job.job_hash
        export = None if job.export is None else orjson.dumps(job.export.to_json()).decode()
        self._jobs.append(
            (
                self._name,
                job.job_id,
                job.job_hash,
                job.endpoint.name,
                job.group_id,
                job.group_type,
                orjson.dumps(dict(job.fields)).decode(),
                job.recipients is not None,
                job.recipient_count,
                job.batch_size,
                job.source,
                export,
            )
        )
        for batch in batches:
            recipients = None if batch.recipients is None else orjson.dumps(batch.recipients).decode()
            self._batches.append((self._name, job.job_id, batch.index, recipients, batch.random))
        if len(self._jobs) >= _PLAN_JOBS or len(self._batches) >= _PLAN_BATCHES:
            await self.plan_flush()

    async def plan_flush(self) -> None:
        """Store the jobs added since the last flush, in one transaction (COPY)."""
        if not self._jobs or self._faults.error is not None:
            return
        jobs, batches = self._jobs, self._batches
        self._jobs, self._batches = [], []
        try:
            await within(self._copy(jobs, batches), PLAN_S)
        except self._faults.kinds as exc:
            self._faults.lost(exc)
            return
        self.planned.set()

    async def _copy(self, jobs: list[tuple[Any, ...]], batches: list[tuple[Any, ...]]) -> None:
        async with self.conn.transaction(), self.conn.cursor() as cur:
            async with cur.copy(_Q["copy_jobs"]) as copy:
                for row in jobs:
                    await copy.write_row(row)
            async with cur.copy(_Q["copy_batches"]) as copy:
                for row in batches:
                    await copy.write_row(row)

    async def withdraw(self, job_id: str) -> None:
        """Take a job's batches that have no final outcome out of the run (the job was rejected on a
        resume: changed since its plan was stored): no worker claims them any more, and a worker that
        holds one has its lines about it refused."""
        if self._faults.error is not None:
            return
        try:
            await within(self.conn.execute(_Q["withdraw"], (self._name, job_id)))
        except self._faults.kinds as exc:
            self._faults.lost(exc)

    async def plan_complete(self) -> None:
        """Every job of the run is in the plan: from now on the run needs none of its input files."""
        await self.plan_flush()
        if self._faults.error is not None:
            return
        try:
            await within(self.conn.execute(_Q["complete"], (self._name,)))
        except self._faults.kinds as exc:
            self._faults.lost(exc)
