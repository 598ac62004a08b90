"""How a process joins a run in PostgreSQL: as its `send` (`open_send`: the journal's lock first,
then the run's row, then the plan as far as it was stored) or as a worker (`open_work`). Each
makes or migrates the schema first (`dispatcher.pg.migrate`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from dispatcher.core.lease import DEFAULT_LEASE
from dispatcher.errors import JournalError
from dispatcher.journal.pgsession import close, connect_to, ensure_schema, opened
from dispatcher.journal.uri import JournalURI
from dispatcher.pacing.joining import same_pacing
from dispatcher.pg import queries
from dispatcher.pg.connect import STATEMENT_S
from dispatcher.shared import liveness
from dispatcher.shared.claims import lease_clock
from dispatcher.shared.plan import PLAN_S
from dispatcher.shared.worker import PgJournal

_Q = queries.load("run")


@dataclasses.dataclass(frozen=True)
class RunRow:
    rate: float
    rate_store: str
    max_attempts: int
    message_quota: int
    plan_complete: bool


async def open_send(
    uri: JournalURI,
    *,
    resume: bool,
    retry_failed: bool = False,
    rate: float,
    rate_store: str,
    max_attempts: int,
    message_quota: int,
    lease: float = DEFAULT_LEASE,
    clock: Callable[[], float] = lease_clock,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> PgJournal:
    """Open the run of `uri` as its `send`: the journal's lock taken first (a second send is refused
    naming the holder), a run with outcomes or a plan refused unless resuming, its state read."""
    lock = await connect_to(uri)
    await opened(uri, [lock], ensure_schema(uri, lock))
    await liveness.take_lock(uri, lock)
    conns: list[Any] = [lock]
    try:
        # The plan's statements have PLAN_S on the database's side too: a part of the plan may take
        # that long to store (up to 20,000 batches over a slow link), and the server would cancel it.
        for bound in (PLAN_S, STATEMENT_S, STATEMENT_S):  # the plan, the claims, the commits
            conns.append(await connect_to(uri, bound))
    except BaseException:
        await close(*conns)
        raise
    journal = PgJournal(
        uri,
        conns[2],
        conns[3],
        lock=lock,
        plan=conns[1],
        lease=lease,
        clock=clock,
        sleep=sleep,
        holder=liveness.holder(),
    )
    try:
        await journal.begin_send(
            resume=resume,
            retry_failed=retry_failed,
            rate=rate,
            rate_store=rate_store,
            max_attempts=max_attempts,
            message_quota=message_quota,
        )
    except BaseException:
        await journal.aclose()
        raise
    return journal


async def open_work(
    uri: JournalURI,
    *,
    lease: float = DEFAULT_LEASE,
    clock: Callable[[], float] = lease_clock,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[PgJournal, RunRow]:
    """Join the run of `uri` as a worker; the run's row (its rate and store) for the caller to check."""
    claims = await connect_to(uri)
    await opened(uri, [claims], ensure_schema(uri, claims))
    cur = await opened(uri, [claims], claims.execute(_Q["run_row"], (uri.name,)))
    row = await cur.fetchone()
    if row is None:
        await close(claims)
        raise JournalError(
            f"{uri.shown}: no run in this journal; `dispatcher send --out {uri.shown}` starts one",
            library=f"{uri.shown}: no run in this journal; a Runner with RunConfig(out=...) naming it starts one",
        )
    try:
        commits = await connect_to(uri)
    except BaseException:
        await close(claims)
        raise
    journal = PgJournal(uri, claims, commits, lease=lease, clock=clock, sleep=sleep)
    return journal, RunRow(*row)


def check_same_pacing(uri: JournalURI, run: RunRow, rate: float | None, store_shown: str) -> float:
    """A worker paces with the run, never privately (`dispatcher.pacing.joining`). The rate the
    worker uses (the run's, when it names none)."""
    return same_pacing(uri.shown, run.rate, run.rate_store, rate, store_shown)
