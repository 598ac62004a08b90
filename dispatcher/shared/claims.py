"""Claims on a run's batches: a worker sends a batch only while it holds a claim on it.

Invariants:
- A batch is claimed before its request starts. Each claim carries a number (`claim`, one more at
  every claim of the batch): the fencing token. The worker's lines about the batch are committed
  only under that number (`dispatcher.journal.postgres`); a line refused means the claim was lost.
- A worker starts a request only while its own clock says its claim holds for the whole request
  (`holds`): the lease in the database was set after the local clock was read, so it ends later.
  The clock counts time the machine spent suspended (CLOCK_BOOTTIME).
- Claims have a connection of their own: a claim never rides in the transaction of a commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
import structlog

from dispatcher.core.state import JournalState
from dispatcher.journal.pgsession import Faults, within
from dispatcher.pg import queries

if TYPE_CHECKING:
    import psycopg

    from dispatcher.journal.postgres import Key

log = structlog.get_logger("dispatcher")
_Q = queries.load("claims")


def lease_clock() -> float:
    """Seconds on a clock that goes on while the machine is suspended, so that a worker woken from a
    suspend sees its claims ran out (time.monotonic stops meanwhile on Linux)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclasses.dataclass(frozen=True)
class PlannedJob:
    """A job of the plan as stored: what a worker needs to send its batches (run/ makes the Job)."""

    job_id: str
    job_hash: str
    api: str
    group_id: str | None
    group_type: str | None
    fields: dict[str, Any]
    named: bool
    recipient_count: int
    batch_size: int
    source: str


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A batch this worker holds a claim on; `last` its latest outcome line, if it has one."""

    job: PlannedJob
    index: int
    recipients: tuple[str, ...] | None
    random: int
    last: dict[str, Any] | None


class _Claim(NamedTuple):
    until: float  # by the worker's clock, when the claim may have run out
    token: int  # the batch's claim number when this worker took it


class Claims:
    """This worker's claims (`me`), on the connection `conn`; the `Fence` of its outcome lines."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        name: str,
        me: str,
        *,
        lease: float,
        clock: Callable[[], float],
        state: JournalState,
        faults: Faults,
    ) -> None:
        self.conn = conn
        self.lease = lease
        self._name = name
        self._me = me
        self._clock = clock
        self._state = state
        self._faults = faults
        self._claims: dict[Key, _Claim] = {}
        self._refused: set[Key] = set()  # lines the database refused: the claim was lost
        self._unconfirmed: set[Key] = set()  # batches whose claims are to be asked about
        self._confirming: asyncio.Task[None] | None = None
        self._jobs: dict[str, PlannedJob] = {}

    # -- the fence of the outcome lines -----------------------------------------------------------

    def token(self, key: Key) -> int | None:
        claim = self._claims.get(key)
        return None if claim is None else claim.token

    def refuse(self, key: Key, doc: dict[str, Any]) -> None:
        self._refused.add(key)
        self._claims.pop(key, None)
        log.warning(
            "a reply came after this worker's claim on its batch was lost: not recorded; the worker that holds "
            "the batch now records it",
            job_id=key[0],
            batch=key[1],
            status=doc.get("status"),
        )

    def finished(self, key: Key) -> None:
        self._claims.pop(key, None)

    # -- claims -----------------------------------------------------------------------------------

    async def claim(self, count: int) -> list[Claimed]:
        """Claim up to `count` batches that have no final outcome and no live claim, in plan order."""
        began = self._clock()
        try:
            rows, missing = await within(self._claim(count))
        except self._faults.kinds as exc:
            self._faults.lost(exc)
            return []
        for r in missing:
            self._jobs[r[0]] = PlannedJob(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), *r[6:])
        out = []
        for _, job_id, index, recipients, random, last, token in rows:
            self._claims[(job_id, index)] = _Claim(began + self.lease, int(token))
            doc = None if last is None else orjson.loads(last)
            if doc is not None:
                self._state.add(doc)
            ids = None if recipients is None else tuple(orjson.loads(recipients))
            out.append(Claimed(self._jobs[job_id], index, ids, random, doc))
        return out

    async def _claim(self, count: int) -> tuple[list[Any], list[Any]]:
        cur = await self.conn.execute(_Q["claim"], {"me": self._me, "lease": self.lease, "j": self._name, "n": count})
        rows = sorted(await cur.fetchall())
        wanted = sorted({row[1] for row in rows} - set(self._jobs))
        missing: list[Any] = []
        if wanted:
            cur = await self.conn.execute(_Q["jobs"], (self._name, wanted))
            missing = list(await cur.fetchall())
        return rows, missing

    def holds(self, job_id: str, batch: int, seconds: float = 0.0) -> bool:
        """True while this worker's claim on the batch holds, by its own clock, for `seconds` more:
        only then may it start a request that takes up to that long."""
        claim = self._claims.get((job_id, batch))
        return claim is not None and claim.until - self._clock() > seconds

    async def confirm(self, job_id: str, batch: int) -> bool:
        """True if the database still gives this worker the batch. A claim is taken away before its
        lease runs out only when its job is withdrawn (changed on a resume): asked before each
        request, so that nothing more of such a job goes out. The asks of this process's workers
        meanwhile are one query."""
        key = (job_id, batch)
        self._unconfirmed.add(key)
        while key in self._unconfirmed and self._faults.error is None:
            if self._confirming is None:
                self._confirming = asyncio.get_running_loop().create_task(self._confirm())
            await asyncio.shield(self._confirming)
        return key in self._claims  # the database lost meanwhile leaves the claim as it was: the run stops

    async def _confirm(self) -> None:
        try:
            asked, self._unconfirmed = self._unconfirmed, set()
            held = {key: self._claims[key] for key in asked if key in self._claims}
            if not held:
                return
            keys = list(held)
            try:
                cur = await within(self.conn.execute(_Q["confirm"], (*self._arrays(held), self._name, self._me)))
                still = {(job_id, batch) for job_id, batch in await cur.fetchall()}
            except self._faults.kinds as exc:
                self._faults.lost(exc)
                return
            for key in keys:
                if key not in still:
                    self._claims.pop(key, None)
        finally:
            self._confirming = None

    @staticmethod
    def _arrays(claims: dict[Key, _Claim]) -> tuple[list[str], list[int], list[int]]:
        """The claims as the three arrays the queries unnest (sent as binary: %b)."""
        keys = list(claims)
        return [k[0] for k in keys], [k[1] for k in keys], [claims[k].token for k in keys]

    def refused(self, job_id: str, batch: int) -> bool:
        """True (once) if the database refused this worker's line about the batch: its claim was
        taken over or the batch withdrawn. The worker must leave the batch to whoever holds it."""
        key = (job_id, batch)
        if key in self._refused:
            self._refused.discard(key)
            return True
        return False

    async def release(self, job_id: str, batch: int) -> None:
        """Give up a claim this worker will not use (it ran out before the request could start)."""
        claim = self._claims.pop((job_id, batch), None)
        if claim is not None and self._faults.error is None:
            await self._release({(job_id, batch): claim})

    async def _release(self, claims: dict[Key, _Claim]) -> None:
        try:
            await within(self.conn.execute(_Q["release"], (*self._arrays(claims), self._name, self._me)))
        except self._faults.kinds as exc:
            self._faults.lost(exc)

    async def renew(self) -> None:
        """Extend the claims that still hold by this worker's clock; forget those that ran out (given
        back) or that the database no longer gives it (taken over by another worker)."""
        if not self._claims:
            return
        began = self._clock()
        live = {key: claim for key, claim in self._claims.items() if claim.until > began}
        ran_out = {key: claim for key, claim in self._claims.items() if claim.until <= began}
        for key in ran_out:
            del self._claims[key]
        if live:
            cur = await within(self.conn.execute(_Q["renew"], (self.lease, *self._arrays(live), self._name, self._me)))
            held = {(job_id, batch) for job_id, batch in await cur.fetchall()}
            for key, claim in live.items():
                if key not in self._claims:
                    continue  # final meanwhile
                if key in held:
                    self._claims[key] = _Claim(began + self.lease, claim.token)
                else:
                    del self._claims[key]
        if ran_out:
            await self._release(ran_out)

    async def give_back(self) -> None:
        """At the end: every claim this worker holds, given back for another worker to take at once."""
        await self.conn.execute(_Q["give_back"], (self._name, self._me))
