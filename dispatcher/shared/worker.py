"""One worker's view of a run in PostgreSQL (`PgJournal`): a `JournalStore` and a `SharedRun`, made
of the run's pieces, each on its connection (one per concern):

| piece | module | connection |
|---|---|---|
| claims, renewals, releases, the run's status | `claims`, `liveness` | `claims` |
| outcome lines | `dispatcher.journal.postgres` | `commits` |
| the plan (the send's) | `plan` | `plan` |
| the journal's lock and heartbeat (the send's) | `liveness` | `lock` |

Every statement has a bound (`dispatcher.pg.connect`): a database that does not answer within it is
lost, and the run stops resumably (`Faults`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from dispatcher.core.batch import Batch
from dispatcher.core.job import Job
from dispatcher.core.state import JournalState
from dispatcher.errors import JournalError, JournalWriteError
from dispatcher.journal.outcomes import Moved
from dispatcher.journal.pgsession import Faults, close, scrub, within
from dispatcher.journal.postgres import Outcomes
from dispatcher.journal.uri import JournalURI
from dispatcher.pg import queries
from dispatcher.pg.connect import STATEMENT_S
from dispatcher.shared import liveness
from dispatcher.shared.claims import Claimed, Claims
from dispatcher.shared.plan import PLAN_S, Plan

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger("dispatcher")
_Q = queries.load("run")


class PgJournal:
    """One worker's view of a run in PostgreSQL. `close()` is the file journal's synchronous close
    and does nothing; `aclose()` commits what is left, gives back the claims and closes the
    connections, within a bound."""

    def __init__(
        self,
        uri: JournalURI,
        claims: psycopg.AsyncConnection[Any],
        commits: psycopg.AsyncConnection[Any],
        *,
        lock: psycopg.AsyncConnection[Any] | None = None,
        plan: psycopg.AsyncConnection[Any] | None = None,
        lease: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        holder: str | None = None,
    ) -> None:
        self.uri = uri
        self.path = uri.shown
        self.is_send = lock is not None
        self.state = JournalState()
        self.incomplete = False
        self.lease = lease
        self._sleep = sleep
        self._faults = Faults(uri)
        me = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._claims = Claims(claims, uri.name, me, lease=lease, clock=clock, state=self.state, faults=self._faults)
        self._outcomes = Outcomes(commits, uri.name, me, self._claims, self._faults)
        self._plan = None if plan is None else Plan(plan, uri.name, self._faults)
        self.planned = asyncio.Event() if self._plan is None else self._plan.planned
        self._heart = None
        if lock is not None and holder is not None:
            self._heart = liveness.Heartbeat(uri, lock, claims, holder, self._faults, sleep)
        self._closed = False

    @property
    def error(self) -> JournalWriteError | None:
        return self._faults.error

    @property
    def lines(self) -> int:
        return self._outcomes.lines

    @lines.setter
    def lines(self, count: int) -> None:
        self._outcomes.lines = count

    # -- the opening -----------------------------------------------------------------------------

    async def begin_send(
        self, *, resume: bool, retry_failed: bool, rate: float, rate_store: str, max_attempts: int, message_quota: int
    ) -> None:
        try:
            await within(self._begin_send(resume, retry_failed, rate, rate_store, max_attempts, message_quota), PLAN_S)
        except self._faults.kinds as exc:
            raise JournalError(f"{self.uri.shown}: {scrub(self.uri, exc)}") from None

    async def _begin_send(
        self, resume: bool, retry_failed: bool, rate: float, rate_store: str, max_attempts: int, message_quota: int
    ) -> None:
        assert self._plan is not None and self._heart is not None
        conn, name = self._plan.conn, self.uri.name
        cur = await conn.execute(_Q["exists"], (name,))
        exists = await cur.fetchone() is not None
        if exists and not resume:
            raise JournalError(
                f"{self.uri.shown} exists and is not empty; pass --resume to continue it, or choose another --out",
                library=f"{self.uri.shown} exists and is not empty; set RunConfig(resume=True) to continue it, "
                "or choose another RunConfig.out",
            )
        if resume and not exists:
            log.warning(f"--resume: {self.uri.shown} holds no run to resume; this send starts a new one")
        args = (name, self._heart.holder, rate, rate_store, max_attempts, message_quota)
        await conn.execute(_Q["begin_send"], args)
        if not exists:
            return
        async with conn.transaction(), conn.cursor(name="dispatcher_state") as named:
            await named.execute(_Q["outcomes"], (name,))
            async for (doc,) in named:
                self.state.add(orjson.loads(doc))
        await self._plan.load(retry_failed)

    # -- the plan (the send's) --------------------------------------------------------------------

    def _the_plan(self) -> Plan:
        assert self._plan is not None, "only the send stores the plan"
        return self._plan

    def reopened(self, job_id: str, batch: int) -> bool:
        return self._plan is not None and self._plan.reopened(job_id, batch)

    def planned_hash(self, job_id: str) -> str | None:
        return None if self._plan is None else self._plan.planned_hash(job_id)

    async def plan(self, job: Job, batches: Iterable[Batch]) -> None:
        await self._the_plan().plan(job, batches)

    async def plan_flush(self) -> None:
        await self._the_plan().plan_flush()

    async def withdraw(self, job_id: str) -> None:
        await self._the_plan().withdraw(job_id)

    async def plan_complete(self) -> None:
        await self._the_plan().plan_complete()

    # -- claims -----------------------------------------------------------------------------------

    async def claim(self, count: int) -> list[Claimed]:
        return await self._claims.claim(count)

    def holds(self, job_id: str, batch: int, seconds: float = 0.0) -> bool:
        return self._claims.holds(job_id, batch, seconds)

    async def confirm(self, job_id: str, batch: int) -> bool:
        return await self._claims.confirm(job_id, batch)

    def refused(self, job_id: str, batch: int) -> bool:
        return self._claims.refused(job_id, batch)

    async def release(self, job_id: str, batch: int) -> None:
        await self._claims.release(job_id, batch)

    async def _renew(self) -> None:
        await self._claims.renew()

    async def status(self) -> liveness.RunStatus:
        try:
            return await within(liveness.status(self.uri, self._claims.conn, is_send=self.is_send))
        except self._faults.kinds as exc:
            self._faults.lost(exc)
            return liveness.RunStatus(False, 0, False)

    # -- outcome lines ---------------------------------------------------------------------------

    def write(self, doc: dict[str, Any]) -> None:
        self._outcomes.write(doc)

    async def settle(self) -> None:
        await self._outcomes.settle()

    async def sync_periodically(
        self, on_error: Callable[[JournalWriteError], None], on_moved: Callable[[Moved], None]
    ) -> None:
        """Run as a task: renew this worker's claims every third of the lease; the send's lock
        connection beats every BEAT seconds."""
        self._faults.on_error = on_error
        if self._faults.error is not None:
            on_error(self._faults.error)
            return
        async with asyncio.TaskGroup() as group:
            if self._heart is not None:
                group.create_task(self._heart.beat())
            while self._faults.error is None:
                await self._sleep(self.lease / 3)
                try:
                    await self._claims.renew()
                except self._faults.kinds as exc:
                    self._faults.lost(exc)

    # -- the file journal's ends, which have no meaning here ------------------------------------

    async def keep_path(self) -> Moved | None:
        return None

    def remove_if_unused(self) -> None:
        return None

    def close(self) -> None:
        return None

    async def aclose(self, seconds: float = STATEMENT_S) -> None:
        """Commit what is left, give back the claims this worker holds, close the connections (the
        send's lock goes with its connection), all within `seconds` (less after a stop signal, so that
        the run ends at once): a database that does not answer leaves its claims to run out."""
        if self._closed:
            return
        self._closed = True
        try:
            await within(self._ending(), seconds)
        except self._faults.kinds as exc:
            shown = scrub(self.uri, exc)
            log.warning("the journal's database did not take the run's end; its claims run out", error=shown)
        finally:
            plan = None if self._plan is None else self._plan.conn
            lock = None if self._heart is None else self._heart.lock
            await close(self._claims.conn, self._outcomes.conn, plan, lock)

    async def _ending(self) -> None:
        if self._faults.error is not None:
            return
        await self._outcomes.settle()
        if self._faults.error is not None:
            return
        await self._claims.give_back()
        if self._heart is not None:
            await self._heart.let_go(self._claims.conn)
