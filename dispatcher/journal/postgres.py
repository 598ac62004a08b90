"""The journal in PostgreSQL: a run's plan, outcomes and claims, shared by its workers on any machine.

Tables, in the schema `dispatcher` (made on first use and migrated in place, under an advisory lock;
the version is the row 'journal' of `dispatcher.meta`): `journal_runs` (one row a journal: its
holder and the holder's heartbeat, whether the plan is complete, the rate and rate store every
worker must use), `journal_jobs` and `journal_batches` (the plan: each job once validated whole,
each batch with its recipients, its fate and its claim), `journal_outcomes` (one row per outcome
line, the same line the file journal holds, in the order the workers committed them).

Invariants:
- A batch is claimed before its request starts. Each claim carries a number (`claim`, one more at
  every claim of the batch): the fencing token. A worker's line about a batch is committed only
  while the batch is still claimed by it under that number and has no final line; otherwise the
  database refuses it (`refused`), and the worker gives the batch up. So a worker that wakes after
  its lease ran out never records over, nor after, the worker that took the batch over.
- A worker starts a request only while its own clock says its claim holds for the whole request
  (`holds`): the lease in the database was set after the local clock was read, so it ends later.
  The clock counts time the machine spent suspended (CLOCK_BOOTTIME).
- A worker's outcome line is in the database before anything else of that reply happens: the
  engine awaits `settle()` after recording a reply and before its next step.
- One connection per concern: claims and renewals, outcome commits, the plan, the journal's lock.
  No claim ever rides in the transaction of a commit.
- Every statement has a bound (`dispatcher.pg.connect`): a database that does not answer within it
  is lost, and the run stops resumably.
- One `send` per journal: its lock connection holds the session advisory lock of the journal's name
  and beats (`beat_at`) every second. A send that loses that connection stops at once, and beats on
  its claims' connection until it has ended. A second send is refused while the first holds the lock,
  or beat less than STALE seconds ago: so, while the first lives.

psycopg is imported only here, and only when a PostgreSQL journal is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets as _secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import orjson
import structlog

from dispatcher.core.state import JournalState
from dispatcher.errors import ConfigError, JournalError, JournalLockedError, JournalWriteError, UsageError
from dispatcher.journal.outcomes import Moved
from dispatcher.journal.uri import JournalURI
from dispatcher.pg.connect import STATEMENT_S, InThread, bounded, connect, connect_sync
from dispatcher.version import DISTRIBUTION

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
log = structlog.get_logger("dispatcher")
VERSION = 2
MISSING_EXTRA = f"{{uri}}: a PostgreSQL journal needs the postgres extra: pip install '{DISTRIBUTION}[postgres]'"
DEFAULT_LEASE = 30.0
PLAN_S = 120.0  # the bound on storing one part of the plan (COPY of up to 20,000 batches)
BEAT = 1.0  # seconds between the heartbeats of a send's lock connection
STALE = 5.0  # a heartbeat older than this is of a send that is gone
_PLAN_JOBS = 256  # jobs stored in one transaction
_FETCH = 500  # rows a report's read takes at once
_PLAN_BATCHES = 20_000

# Version 1, as the first release made it; later versions are the migrations below, applied in order.
_TABLES = """
CREATE TABLE dispatcher.journal_runs (
    journal text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    holder text,
    plan_complete boolean NOT NULL DEFAULT false,
    rate double precision NOT NULL,
    rate_store text NOT NULL,
    max_attempts integer NOT NULL,
    message_quota integer NOT NULL
);
CREATE TABLE dispatcher.journal_jobs (
    journal text NOT NULL,
    job_id text NOT NULL,
    job_hash text NOT NULL,
    api text NOT NULL,
    group_id text,
    group_type text,
    fields text NOT NULL,
    named boolean NOT NULL,
    recipient_count integer NOT NULL,
    batch_size integer NOT NULL,
    source text NOT NULL,
    PRIMARY KEY (journal, job_id)
);
CREATE TABLE dispatcher.journal_batches (
    journal text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    job_id text NOT NULL,
    batch integer NOT NULL,
    recipients text,
    random bigint NOT NULL,
    final boolean NOT NULL DEFAULT false,
    status text,
    claimed_by text,
    lease_until timestamptz,
    last_doc text,
    PRIMARY KEY (journal, job_id, batch)
);
CREATE INDEX journal_batches_open ON dispatcher.journal_batches (journal, seq) WHERE NOT final;
CREATE TABLE dispatcher.journal_outcomes (
    journal text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    doc text NOT NULL,
    PRIMARY KEY (journal, seq)
);
"""
_MIGRATIONS = {
    # The claim's fencing token, the send's heartbeat, and what a job's export held (for the report).
    2: """
ALTER TABLE dispatcher.journal_batches ADD COLUMN claim bigint NOT NULL DEFAULT 0;
ALTER TABLE dispatcher.journal_runs ADD COLUMN beat_at timestamptz;
ALTER TABLE dispatcher.journal_jobs ADD COLUMN export text;
""",
}


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


@dataclasses.dataclass(frozen=True)
class RunStatus:
    complete: bool  # the plan holds every job of the run
    open: int  # batches without a final outcome (claimed or not)
    send_alive: bool  # the run's send holds the journal


@dataclasses.dataclass(frozen=True)
class PlanEntry:
    """A job of a run's plan as the report reads it: how many batches, what its export held."""

    job_id: str
    job_hash: str
    api: str
    group_id: str | None
    batches: int
    export: dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Unsent:
    """A planned batch that no worker has sent yet (the report lists its recipients as pending)."""

    job_id: str
    job_hash: str
    batch: int
    group_id: str | None
    recipients: list[str] | None


class _Claim(NamedTuple):
    until: float  # by the worker's clock, when the claim may have run out
    token: int  # the batch's claim number when this worker took it


class NoAnswer(Exception):
    """The database did not answer a statement within its bound."""


def _psycopg(uri: JournalURI) -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(MISSING_EXTRA.format(uri=uri.shown)) from None
    return psycopg


def check_available(uri: JournalURI) -> None:
    """Refuse at once, before anything is read or sent, a PostgreSQL journal without the postgres extra."""
    _psycopg(uri)


def _scrub(uri: JournalURI, exc: BaseException) -> str:
    """libpq's message, first line only, the password never in it."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if uri.password:
        text = text.replace(uri.password, "***")
    return text


def _lock_key(uri: JournalURI) -> str:
    return f"dispatcher journal {uri.name}"


async def _within(work: Awaitable[T], seconds: float = STATEMENT_S) -> T:
    try:
        return await bounded(work, seconds)
    except TimeoutError:
        raise NoAnswer(f"no answer within {seconds:g} s") from None


async def _connect(uri: JournalURI, statement_s: float = STATEMENT_S) -> psycopg.AsyncConnection[Any]:
    driver = _psycopg(uri)
    try:
        conn: psycopg.AsyncConnection[Any] = await _within(connect(uri.conninfo, statement_s=statement_s))
    except (driver.Error, NoAnswer) as exc:
        raise JournalError(f"{uri.shown}: cannot reach the database: {_scrub(uri, exc)}") from None
    return conn


async def _close(*conns: psycopg.AsyncConnection[Any] | None) -> None:
    for conn in conns:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


async def _ensure_schema(uri: JournalURI, conn: psycopg.AsyncConnection[Any]) -> None:
    """Make our schema and tables on first use, migrate older ones in place, refuse newer ones."""
    async with conn.transaction():
        # Concurrent first uses (the budget's tables live in this schema too) would race otherwise.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dispatcher schema'))")
        await conn.execute("CREATE SCHEMA IF NOT EXISTS dispatcher")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS dispatcher.meta (component text PRIMARY KEY, version integer NOT NULL)"
        )
        cur = await conn.execute("SELECT version FROM dispatcher.meta WHERE component = 'journal'")
        row = await cur.fetchone()
        version = 0 if row is None else int(row[0])
        if version > VERSION:
            raise JournalError(_newer(uri, version))
        if version == 0:
            await conn.execute(_TABLES)
            await conn.execute("INSERT INTO dispatcher.meta VALUES ('journal', 1)")
            version = 1
        for step in range(version + 1, VERSION + 1):
            await conn.execute(_MIGRATIONS[step])
            await conn.execute("UPDATE dispatcher.meta SET version = %s WHERE component = 'journal'", (step,))


def _newer(uri: JournalURI, version: int) -> str:
    return (
        f"{uri.shown}: its tables are of a newer version ({version}) than this dispatcher knows ({VERSION}); "
        "upgrade dispatcher"
    )


async def _opened(uri: JournalURI, conns: Iterable[Any], work: Awaitable[T]) -> T:
    """Run a step of the opening; a database error is one line naming the journal, and the
    connections opened so far are closed."""
    psycopg = _psycopg(uri)
    try:
        return await _within(work)
    except (psycopg.Error, NoAnswer) as exc:
        await _close(*conns)
        raise JournalError(f"{uri.shown}: {_scrub(uri, exc)}") from None
    except BaseException:
        await _close(*conns)
        raise


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _gone_here(holder: str) -> bool:
    """True for a holder that was a process of this machine that is no longer running (or this one)."""
    pid, _, host = holder.removeprefix("pid ").partition(" on ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


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
    lock = await _connect(uri)
    await _opened(uri, [lock], _ensure_schema(uri, lock))
    locked = False
    for _ in range(3):  # a `work` that asks whether the send lives holds the lock for an instant
        cur = await _opened(uri, [lock], lock.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (_lock_key(uri),)))
        lock_row: Any = await cur.fetchone()
        locked = bool(lock_row[0])
        if locked:
            break
        await asyncio.sleep(0.05)
    cur = await _opened(
        uri,
        [lock],
        lock.execute(
            "SELECT holder, extract(epoch FROM clock_timestamp() - beat_at) FROM dispatcher.journal_runs "
            "WHERE journal = %s",
            (uri.name,),
        ),
    )
    row = await cur.fetchone()
    holder: str | None = row[0] if row else None
    beat_age = float(row[1]) if row and row[1] is not None else STALE
    # The lock is free but the send that had it beat a moment ago: it lost its connection and is
    # stopping (or was killed on another machine). Two sends must not run side by side.
    lockless = holder is not None and beat_age < STALE and not _gone_here(holder)
    if not locked or lockless:
        await _close(lock)
        who = holder or "another process"
        detail = f", seen {beat_age:.1f} s ago without the journal's lock" if locked else ""
        raise JournalLockedError(
            f"{uri.shown} is in use by another run ({who}{detail}); one run owns a journal until it ends: wait for "
            f"it, or stop it, then --resume (`dispatcher work {uri.shown}` joins it from any machine)"
        )
    conns: list[Any] = [lock]
    try:
        # The plan's statements have PLAN_S on the database's side too: a part of the plan may take
        # that long to store (up to 20,000 batches over a slow link), and the server would cancel it.
        for bound in (PLAN_S, STATEMENT_S, STATEMENT_S):  # the plan, the claims, the commits
            conns.append(await _connect(uri, bound))
    except BaseException:
        await _close(*conns)
        raise
    journal = PgJournal(
        uri, conns[2], conns[3], lock=lock, plan=conns[1], lease=lease, clock=clock, sleep=sleep, holder=_holder()
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


@dataclasses.dataclass(frozen=True)
class RunRow:
    rate: float
    rate_store: str
    max_attempts: int
    message_quota: int
    plan_complete: bool


async def open_work(
    uri: JournalURI,
    *,
    lease: float = DEFAULT_LEASE,
    clock: Callable[[], float] = lease_clock,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[PgJournal, RunRow]:
    """Join the run of `uri` as a worker; the run's row (its rate and store) for the caller to check."""
    claims = await _connect(uri)
    await _opened(uri, [claims], _ensure_schema(uri, claims))
    cur = await _opened(
        uri,
        [claims],
        claims.execute(
            "SELECT rate, rate_store, max_attempts, message_quota, plan_complete FROM dispatcher.journal_runs "
            "WHERE journal = %s",
            (uri.name,),
        ),
    )
    row = await cur.fetchone()
    if row is None:
        await _close(claims)
        raise JournalError(f"{uri.shown}: no run in this journal; `dispatcher send --out {uri.shown}` starts one")
    try:
        commits = await _connect(uri)
    except BaseException:
        await _close(claims)
        raise
    journal = PgJournal(uri, claims, commits, lease=lease, clock=clock, sleep=sleep)
    return journal, RunRow(*row)


# A worker's round of lines (PgJournal._commit): each batch's latest line where the worker still holds
# its claim, under the claim's number, and no final line yet; then every line of a batch so taken, and
# every line about no batch (a rejection), in the order written.
_COMMIT = (
    "WITH u AS (SELECT * FROM unnest(%(job)b::text[], %(batch)b::int[], %(claim)b::bigint[], %(final)b::bool[], "
    "%(status)b::text[], %(doc)b::text[]) AS u(job_id, batch, claim, final, status, doc)), "
    "taken AS (UPDATE dispatcher.journal_batches b SET last_doc = u.doc, final = u.final, "
    "status = CASE WHEN u.final THEN u.status ELSE b.status END, "
    "claimed_by = CASE WHEN u.final THEN NULL ELSE b.claimed_by END, "
    "lease_until = CASE WHEN u.final THEN NULL ELSE b.lease_until END FROM u "
    "WHERE b.journal = %(j)s AND b.job_id = u.job_id AND b.batch = u.batch AND b.claim = u.claim "
    "AND b.claimed_by = %(me)s AND NOT b.final RETURNING b.job_id, b.batch), "
    "written AS (INSERT INTO dispatcher.journal_outcomes (journal, doc) SELECT %(j)s, l.doc "
    "FROM unnest(%(lines)b::text[], %(line_job)b::text[], %(line_batch)b::int[]) WITH ORDINALITY AS l(doc, job_id, "
    "batch, n) WHERE l.batch IS NULL OR EXISTS (SELECT 1 FROM taken t WHERE t.job_id = l.job_id AND t.batch = l.batch) "
    "ORDER BY l.n) "
    "SELECT job_id, batch FROM taken"
)


class _Line(NamedTuple):
    doc: dict[str, Any]
    batch: tuple[str, int] | None  # (job_id, batch) of a reply's line; None for a rejection
    token: int  # the claim under which the line was written


class PgJournal:
    """One worker's view of a run in PostgreSQL: a `JournalStore` and a `SharedRun`.

    Connections: `claims` (claims, renewals, releases, the run's status) and `commits` (outcome
    lines) for every worker; the send also has `plan` (stores the plan) and `lock` (holds the
    journal's lock and beats). `close()` is the file journal's synchronous close and does nothing;
    `aclose()` commits what is left, gives back the claims and closes the connections, within a bound."""

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
        self.lines = 0
        self.error: JournalWriteError | None = None
        self.incomplete = False
        self.planned = asyncio.Event()
        self.lease = lease
        self._claims_conn = claims
        self._commits = commits
        self._lock = lock
        self._plan = plan
        self._clock = clock
        self._sleep = sleep
        self._holder = holder
        self._me = f"{socket.gethostname()}:{os.getpid()}:{_secrets.token_hex(4)}"
        self._psycopg = _psycopg(uri)
        self._faults: tuple[type[BaseException], ...] = (self._psycopg.Error, NoAnswer)
        self._buffer: list[_Line] = []
        self._written = 0
        self._committed = 0
        self._flushing: asyncio.Task[None] | None = None
        self._claims: dict[tuple[str, int], _Claim] = {}
        self._refused: set[tuple[str, int]] = set()  # lines the database refused: the claim was lost
        self._unconfirmed: set[tuple[str, int]] = set()  # batches whose claims are to be asked about
        self._confirming: asyncio.Task[None] | None = None
        self._jobs: dict[str, PlannedJob] = {}
        self._planned: dict[str, str] = {}  # job_id -> job_hash of every job in the plan (the send's)
        self._reopened: set[tuple[str, int]] = set()  # failed batches open again (the send's)
        self._plan_jobs: list[tuple[Any, ...]] = []
        self._plan_batches: list[tuple[Any, ...]] = []
        self._on_error: Callable[[JournalWriteError], None] = lambda exc: None
        self._lock_lost = False
        self._closed = False

    # -- the opening -----------------------------------------------------------------------------

    async def begin_send(
        self, *, resume: bool, retry_failed: bool, rate: float, rate_store: str, max_attempts: int, message_quota: int
    ) -> None:
        assert self._plan is not None
        try:
            await _within(self._begin_send(resume, retry_failed, rate, rate_store, max_attempts, message_quota), PLAN_S)
        except self._faults as exc:
            raise JournalError(f"{self.uri.shown}: {_scrub(self.uri, exc)}") from None

    async def _begin_send(
        self, resume: bool, retry_failed: bool, rate: float, rate_store: str, max_attempts: int, message_quota: int
    ) -> None:
        assert self._plan is not None
        conn, name = self._plan, self.uri.name
        cur = await conn.execute("SELECT 1 FROM dispatcher.journal_runs WHERE journal = %s", (name,))
        exists = await cur.fetchone() is not None
        if exists and not resume:
            raise JournalError(
                f"{self.uri.shown} exists and is not empty; pass --resume to continue it, or choose another --out"
            )
        if resume and not exists:
            log.warning(f"--resume: {self.uri.shown} holds no run to resume; this send starts a new one")
        await conn.execute(
            "INSERT INTO dispatcher.journal_runs (journal, holder, beat_at, rate, rate_store, max_attempts, "
            "message_quota) VALUES (%s, %s, clock_timestamp(), %s, %s, %s, %s) ON CONFLICT (journal) DO UPDATE SET "
            "holder = excluded.holder, beat_at = excluded.beat_at, rate = excluded.rate, "
            "rate_store = excluded.rate_store, max_attempts = excluded.max_attempts, "
            "message_quota = excluded.message_quota",
            (name, self._holder, rate, rate_store, max_attempts, message_quota),
        )
        if not exists:
            return
        cur = await conn.execute("SELECT job_id, job_hash FROM dispatcher.journal_jobs WHERE journal = %s", (name,))
        self._planned = {job_id: job_hash for job_id, job_hash in await cur.fetchall()}
        async with conn.transaction(), conn.cursor(name="dispatcher_state") as named:
            await named.execute("SELECT doc FROM dispatcher.journal_outcomes WHERE journal = %s ORDER BY seq", (name,))
            async for (doc,) in named:
                self.state.add(orjson.loads(doc))
        if retry_failed:
            await conn.execute(
                "UPDATE dispatcher.journal_batches SET final = false WHERE journal = %s AND status = 'failed' "
                "AND final",
                (name,),
            )
        # Failed batches open again (this send's --retry-failed, or an earlier one's that stopped): sent
        # again by whoever claims them, so not final for this run, whatever their last line says.
        cur = await conn.execute(
            "SELECT job_id, batch FROM dispatcher.journal_batches WHERE journal = %s AND status = 'failed' "
            "AND NOT final",
            (name,),
        )
        self._reopened = {(job_id, batch) for job_id, batch in await cur.fetchall()}

    # -- the plan (the send's) --------------------------------------------------------------------

    def reopened(self, job_id: str, batch: int) -> bool:
        """True for a batch whose last line says failed, open again when this send began (--retry-failed)."""
        return (job_id, batch) in self._reopened

    def planned_hash(self, job_id: str) -> str | None:
        """The job_hash under which the plan holds `job_id`, or None if it holds no such job."""
        return self._planned.get(job_id)

    async def plan(self, job: Any, batches: Iterable[Any]) -> None:
        """Add a job (validated whole) and its batches to the plan; stored with the next `plan_flush`
        (no worker can claim a batch before it is committed, so none is sent before its job is stored)."""
        self._planned[job.job_id] = job.job_hash
        export = None if job.export is None else orjson.dumps(job.export.to_json()).decode()
        self._plan_jobs.append(
            (
                self.uri.name,
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
            self._plan_batches.append((self.uri.name, job.job_id, batch.index, recipients, batch.random))
        if len(self._plan_jobs) >= _PLAN_JOBS or len(self._plan_batches) >= _PLAN_BATCHES:
            await self.plan_flush()

    async def plan_flush(self) -> None:
        """Store the jobs added since the last flush, in one transaction (COPY)."""
        if not self._plan_jobs or self.error is not None:
            return
        jobs, batches = self._plan_jobs, self._plan_batches
        self._plan_jobs, self._plan_batches = [], []
        try:
            await _within(self._copy(jobs, batches), PLAN_S)
        except self._faults as exc:
            self._lost(exc)
            return
        self.planned.set()

    async def _copy(self, jobs: list[tuple[Any, ...]], batches: list[tuple[Any, ...]]) -> None:
        assert self._plan is not None
        async with self._plan.transaction(), self._plan.cursor() as cur:
            async with cur.copy(
                "COPY dispatcher.journal_jobs (journal, job_id, job_hash, api, group_id, group_type, fields, "
                "named, recipient_count, batch_size, source, export) FROM STDIN"
            ) as copy:
                for row in jobs:
                    await copy.write_row(row)
            async with cur.copy(
                "COPY dispatcher.journal_batches (journal, job_id, batch, recipients, random) FROM STDIN"
            ) as copy:
                for row in batches:
                    await copy.write_row(row)

    async def withdraw(self, job_id: str) -> None:
        """Take a job's batches that have no final outcome out of the run (the job was rejected on a
        resume: changed since its plan was stored): no worker claims them any more, and a worker that
        holds one has its lines about it refused."""
        if self.error is not None:
            return
        assert self._plan is not None
        try:
            await _within(
                self._plan.execute(
                    "UPDATE dispatcher.journal_batches SET final = true, status = 'withdrawn', claimed_by = NULL, "
                    "lease_until = NULL WHERE journal = %s AND job_id = %s AND NOT final",
                    (self.uri.name, job_id),
                )
            )
        except self._faults as exc:
            self._lost(exc)

    async def plan_complete(self) -> None:
        """Every job of the run is in the plan: from now on the run needs none of its input files."""
        await self.plan_flush()
        if self.error is not None:
            return
        assert self._plan is not None
        try:
            await _within(
                self._plan.execute(
                    "UPDATE dispatcher.journal_runs SET plan_complete = true WHERE journal = %s", (self.uri.name,)
                )
            )
        except self._faults as exc:
            self._lost(exc)

    # -- claims ---------------------------------------------------------------------------------

    async def claim(self, count: int) -> list[Claimed]:
        """Claim up to `count` batches that have no final outcome and no live claim, in plan order."""
        began = self._clock()
        try:
            rows, missing = await _within(self._claim(count))
        except self._faults as exc:
            self._lost(exc)
            return []
        for r in missing:
            self._jobs[r[0]] = PlannedJob(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), *r[6:])
        out = []
        for _, job_id, index, recipients, random, last, token in rows:
            self._claims[(job_id, index)] = _Claim(began + self.lease, int(token))
            doc = None if last is None else orjson.loads(last)
            if doc is not None:
                self.state.add(doc)
            ids = None if recipients is None else tuple(orjson.loads(recipients))
            out.append(Claimed(self._jobs[job_id], index, ids, random, doc))
        return out

    async def _claim(self, count: int) -> tuple[list[Any], list[Any]]:
        conn = self._claims_conn
        cur = await conn.execute(
            "UPDATE dispatcher.journal_batches b SET claimed_by = %(me)s, claim = b.claim + 1, "
            "lease_until = now() + %(lease)s * interval '1 second' "
            "FROM (SELECT job_id, batch FROM dispatcher.journal_batches WHERE journal = %(j)s AND NOT final "
            "AND (lease_until IS NULL OR lease_until < now()) ORDER BY seq LIMIT %(n)s FOR UPDATE SKIP LOCKED) c "
            "WHERE b.journal = %(j)s AND b.job_id = c.job_id AND b.batch = c.batch "
            "RETURNING b.seq, b.job_id, b.batch, b.recipients, b.random, b.last_doc, b.claim",
            {"me": self._me, "lease": self.lease, "j": self.uri.name, "n": count},
        )
        rows = sorted(await cur.fetchall())
        wanted = sorted({row[1] for row in rows} - set(self._jobs))
        missing: list[Any] = []
        if wanted:
            cur = await conn.execute(
                "SELECT job_id, job_hash, api, group_id, group_type, fields, named, recipient_count, batch_size, "
                "source FROM dispatcher.journal_jobs WHERE journal = %s AND job_id = ANY(%b)",
                (self.uri.name, wanted),
            )
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
        while key in self._unconfirmed and self.error is None:
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
                cur = await _within(
                    self._claims_conn.execute(
                        "SELECT b.job_id, b.batch FROM dispatcher.journal_batches b "
                        "JOIN unnest(%b::text[], %b::int[], %b::bigint[]) AS u(job_id, batch, claim) "
                        "ON b.job_id = u.job_id AND b.batch = u.batch AND b.claim = u.claim "
                        "WHERE b.journal = %s AND b.claimed_by = %s AND NOT b.final",
                        (
                            [k[0] for k in keys],
                            [k[1] for k in keys],
                            [held[k].token for k in keys],
                            self.uri.name,
                            self._me,
                        ),
                    )
                )
                still = {(job_id, batch) for job_id, batch in await cur.fetchall()}
            except self._faults as exc:
                self._lost(exc)
                return
            for key in keys:
                if key not in still:
                    self._claims.pop(key, None)
        finally:
            self._confirming = None

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
        if claim is not None and self.error is None:
            await self._release({(job_id, batch): claim})

    async def _release(self, claims: dict[tuple[str, int], _Claim]) -> None:
        keys = list(claims)
        try:
            await _within(
                self._claims_conn.execute(
                    "UPDATE dispatcher.journal_batches b SET claimed_by = NULL, lease_until = NULL "
                    "FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS u(job_id, batch, claim) "
                    "WHERE b.journal = %s AND b.job_id = u.job_id AND b.batch = u.batch AND b.claim = u.claim "
                    "AND b.claimed_by = %s AND NOT b.final",
                    (
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [claims[k].token for k in keys],
                        self.uri.name,
                        self._me,
                    ),
                )
            )
        except self._faults as exc:
            self._lost(exc)

    async def _renew(self) -> None:
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
            keys = list(live)
            cur = await _within(
                self._claims_conn.execute(
                    "UPDATE dispatcher.journal_batches b SET lease_until = now() + %s * interval '1 second' "
                    "FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS u(job_id, batch, claim) "
                    "WHERE b.journal = %s AND b.job_id = u.job_id AND b.batch = u.batch AND b.claim = u.claim "
                    "AND b.claimed_by = %s AND NOT b.final AND b.lease_until > now() RETURNING b.job_id, b.batch",
                    (
                        self.lease,
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [live[k].token for k in keys],
                        self.uri.name,
                        self._me,
                    ),
                )
            )
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

    async def status(self) -> RunStatus:
        try:
            return await _within(self._status())
        except self._faults as exc:
            self._lost(exc)
            return RunStatus(False, 0, False)

    async def _status(self) -> RunStatus:
        conn = self._claims_conn
        cur = await conn.execute(
            "SELECT plan_complete, (SELECT count(*) FROM dispatcher.journal_batches WHERE journal = %(j)s "
            "AND NOT final) FROM dispatcher.journal_runs WHERE journal = %(j)s",
            {"j": self.uri.name},
        )
        row = await cur.fetchone()
        complete, left = (bool(row[0]), int(row[1])) if row else (False, 0)
        alive = True
        if not self.is_send:
            # The send's connection holds the lock; asking for it shared, for an instant, tells.
            cur = await conn.execute("SELECT pg_try_advisory_lock_shared(hashtext(%s))", (_lock_key(self.uri),))
            got_row: Any = await cur.fetchone()
            got = bool(got_row[0])
            if got:
                await conn.execute("SELECT pg_advisory_unlock_shared(hashtext(%s))", (_lock_key(self.uri),))
            alive = not got
        return RunStatus(complete, left, alive)

    # -- outcome lines ---------------------------------------------------------------------------

    def write(self, doc: dict[str, Any]) -> None:
        """Take one outcome line; it is committed with the next round (`settle` waits for it). A line
        about a batch whose claim this worker no longer holds is refused at once."""
        if self.error is not None:
            raise self.error
        self.lines += 1
        key = None if doc.get("batch") is None else (str(doc["job_id"]), int(doc["batch"]))
        token = 0
        if key is not None:
            claim = self._claims.get(key)
            if claim is None:
                self._refuse(key, doc)
                return
            token = claim.token
        self._buffer.append(_Line(doc, key, token))
        self._written += 1
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    def _refuse(self, key: tuple[str, int], doc: dict[str, Any]) -> None:
        self._refused.add(key)
        self._claims.pop(key, None)
        log.warning(
            "a reply came after this worker's claim on its batch was lost: not recorded; the worker that holds "
            "the batch now records it",
            job_id=key[0],
            batch=key[1],
            status=doc.get("status"),
        )

    async def settle(self) -> None:
        """Return once every line written so far is committed or refused (or the journal failed: then
        the run has been told through `on_error`, and stops)."""
        target = self._written
        while self._committed < target and self.error is None:
            if self._flushing is None:
                self._flushing = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        try:
            while self._buffer and self.error is None:
                lines, self._buffer = self._buffer, []
                try:
                    accepted, latest = await _within(self._commit(lines))
                except self._faults as exc:
                    self._lost(exc)
                    return
                for key, line in latest.items():
                    if key not in accepted:
                        self._refuse(key, line.doc)
                    elif line.doc.get("final"):
                        self._claims.pop(key, None)
                self._committed += len(lines)
        finally:
            self._flushing = None

    async def _commit(self, lines: list[_Line]) -> tuple[set[tuple[str, int]], dict[tuple[str, int], _Line]]:
        """One statement: the batches' latest lines where this worker still holds their claims
        (fenced by the claim's number), and every line the database took, in order. The batches it
        took. Not a transaction of several statements: the database ends the session of a worker
        stopped between two of them (it would hold the batches' rows), and the run with it."""
        texts = [orjson.dumps(line.doc).decode() for line in lines]
        latest: dict[tuple[str, int], _Line] = {}
        text_of: dict[tuple[str, int], str] = {}
        for line, text in zip(lines, texts, strict=True):
            if line.batch is not None:
                latest[line.batch] = line
                text_of[line.batch] = text
        keys = list(latest)
        cur = await self._commits.execute(
            _COMMIT,
            {
                "job": [k[0] for k in keys],
                "batch": [k[1] for k in keys],
                "claim": [latest[k].token for k in keys],
                "final": [bool(latest[k].doc.get("final")) for k in keys],
                "status": [str(latest[k].doc["status"]) for k in keys],
                "doc": [text_of[k] for k in keys],
                "lines": texts,
                "line_job": [None if line.batch is None else line.batch[0] for line in lines],
                "line_batch": [None if line.batch is None else line.batch[1] for line in lines],
                "j": self.uri.name,
                "me": self._me,
            },
        )
        accepted = {(job_id, batch) for job_id, batch in await cur.fetchall()}
        return accepted, latest

    def _lost(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = JournalWriteError(
                f"{self.uri.shown}: the database was lost ({_scrub(self.uri, exc)}); no new request starts. Once it "
                f"is back, `dispatcher work {self.uri.shown}` or `send --resume` finishes the run"
            )
            self._on_error(self.error)

    def _lost_lock(self, reason: str) -> None:
        """The send's hold on the journal is gone: stop taking batches (lines of requests in flight are
        still committed: their claims hold), so that no second send runs beside this one."""
        if not self._lock_lost:
            self._lock_lost = True
            self._on_error(
                JournalWriteError(
                    f"{self.uri.shown}: this send lost the journal's lock ({reason}); no new request starts, "
                    f"so that no second send runs beside it. Once it has ended, `send --resume` or "
                    f"`dispatcher work {self.uri.shown}` finishes the run"
                )
            )

    async def sync_periodically(
        self, on_error: Callable[[JournalWriteError], None], on_moved: Callable[[Moved], None]
    ) -> None:
        """Run as a task: renew this worker's claims every third of the lease; the send's lock
        connection beats every BEAT seconds."""
        self._on_error = on_error
        if self.error is not None:
            on_error(self.error)
            return
        async with asyncio.TaskGroup() as group:
            if self._lock is not None:
                group.create_task(self._beat(self._lock))
            while self.error is None:
                await self._sleep(self.lease / 3)
                try:
                    await self._renew()
                except self._faults as exc:
                    self._lost(exc)

    async def _beat(self, lock: psycopg.AsyncConnection[Any]) -> None:
        """Beat on the lock's connection; once it is lost, on the claims' one until this send ends: its
        requests in flight may outlast STALE, and no second send may start beside it meanwhile."""
        conn = lock
        while self.error is None:
            try:
                cur = await _within(
                    conn.execute(
                        "UPDATE dispatcher.journal_runs SET beat_at = clock_timestamp() "
                        "WHERE journal = %s AND holder = %s",
                        (self.uri.name, self._holder),
                    ),
                    BEAT * 5,
                )
            except self._faults as exc:
                if conn is not lock:
                    return  # the claims' connection is lost: its renewals say so
                self._lost_lock(f"its connection: {_scrub(self.uri, exc)}")
                conn = self._claims_conn
                continue
            if cur.rowcount != 1:
                self._lost_lock("another send holds the run now")
                return
            await self._sleep(BEAT)

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
            await _within(self._ending(), seconds)
        except self._faults as exc:
            shown = _scrub(self.uri, exc)
            log.warning("the journal's database did not take the run's end; its claims run out", error=shown)
        finally:
            await _close(self._claims_conn, self._commits, self._plan, self._lock)

    async def _ending(self) -> None:
        if self.error is not None:
            return
        await self.settle()
        if self.error is not None:
            return
        await self._claims_conn.execute(
            "UPDATE dispatcher.journal_batches SET claimed_by = NULL, lease_until = NULL "
            "WHERE journal = %s AND claimed_by = %s AND NOT final",
            (self.uri.name, self._me),
        )
        if self._holder is not None:
            await self._claims_conn.execute(
                "UPDATE dispatcher.journal_runs SET holder = NULL, beat_at = NULL WHERE journal = %s AND holder = %s",
                (self.uri.name, self._holder),
            )


# -- what the report reads ---------------------------------------------------------------------------


@contextlib.contextmanager
def snapshot(uri: JournalURI) -> Iterator[RunSnapshot]:
    """The run of `uri` as one moment saw it, for a report; refused for a journal with no run, or with
    tables newer than this dispatcher knows (it could not vouch for what it read). Every call on its
    connection is bounded (`InThread`): a database that stops answering is one line, exit 2."""
    psycopg = _psycopg(uri)
    call = InThread()
    conn: Any = None
    try:
        try:
            conn = call(lambda: connect_sync(uri.conninfo))
        except (psycopg.Error, TimeoutError) as exc:
            shown = f"no answer within {call.seconds:g} s" if isinstance(exc, TimeoutError) else _scrub(uri, exc)
            raise JournalError(f"{uri.shown}: cannot reach the database: {shown}") from None
        call(lambda: _begin_snapshot(uri, conn))
        yield RunSnapshot(uri, conn, call)
    except psycopg.Error as exc:
        raise JournalError(f"{uri.shown}: {_scrub(uri, exc)}") from None
    except TimeoutError:
        raise JournalError(f"{uri.shown}: no answer within {call.seconds:g} s") from None
    finally:
        if conn is not None and not call.over:
            with contextlib.suppress(Exception):
                call(conn.close)  # read only: nothing to commit
        call.stop()


def _begin_snapshot(uri: JournalURI, conn: Any) -> None:
    # One transaction for every read: workers commit meanwhile, and reads of different moments
    # would disagree (a line committed between the two passes moves the others).
    conn.isolation_level = _psycopg(uri).IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    cur = conn.execute("SELECT to_regclass('dispatcher.journal_runs') IS NOT NULL")
    row: Any = cur.fetchone()
    found = bool(row and row[0])
    if found:
        cur = conn.execute("SELECT version FROM dispatcher.meta WHERE component = 'journal'")
        row = cur.fetchone()
        if row is not None and int(row[0]) > VERSION:
            raise JournalError(_newer(uri, int(row[0])))
        cur = conn.execute("SELECT 1 FROM dispatcher.journal_runs WHERE journal = %s", (uri.name,))
        found = cur.fetchone() is not None
    if not found:
        raise JournalError(f"{uri.shown}: no run in this journal")


def _has_column(conn: Any, table: str, column: str) -> bool:
    """A journal at version 1 (not yet opened by this version's send or work) lacks the later columns."""
    cur = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = 'dispatcher' AND table_name = %s "
        "AND column_name = %s",
        (table, column),
    )
    return cur.fetchone() is not None


_PLAN = (
    "SELECT j.job_id, j.job_hash, j.api, j.group_id, j.export, (SELECT count(*) FROM dispatcher.journal_batches b "
    "WHERE b.journal = j.journal AND b.job_id = j.job_id) FROM dispatcher.journal_jobs j WHERE j.journal = %s "
    "ORDER BY j.job_id"
)
_PLAN_V1 = _PLAN.replace("j.export", "NULL")  # a journal that no send or work of version 2 has opened yet


class RunSnapshot:
    """A run in PostgreSQL as the report reads it: every read in one transaction (`snapshot`)."""

    def __init__(self, uri: JournalURI, conn: Any, call: InThread) -> None:
        self.uri = uri
        self._conn = conn
        self._call = call

    def _rows(self, name: str, query: str, args: tuple[Any, ...]) -> Iterator[Any]:
        """The rows of a query, a few hundred at a time (a named cursor), each fetch bounded."""
        named = self._conn.cursor(name=name)
        try:
            self._call(lambda: named.execute(query, args))
            while rows := self._call(lambda: named.fetchmany(_FETCH)):
                yield from rows
        finally:
            if not self._call.over:
                with contextlib.suppress(Exception):
                    self._call(named.close)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every outcome line of the run, every worker's, in the order they were committed."""
        query = "SELECT doc FROM dispatcher.journal_outcomes WHERE journal = %s ORDER BY seq"
        for (doc,) in self._rows("dispatcher_report", query, (self.uri.name,)):
            yield orjson.loads(doc)

    def plan(self) -> Iterator[PlanEntry]:
        """Every job of the run's plan, with its number of batches and what its export held."""
        newer = self._call(lambda: _has_column(self._conn, "journal_jobs", "export"))
        query = _PLAN if newer else _PLAN_V1
        for job_id, job_hash, api, group_id, stats, batches in self._rows("dispatcher_plan", query, (self.uri.name,)):
            shown = None if stats is None else orjson.loads(stats)
            yield PlanEntry(job_id, job_hash, api, group_id, int(batches), shown)

    def unsent(self) -> Iterator[Unsent]:
        """The planned batches that no worker has sent yet (no line, not withdrawn), in plan order."""
        query = (
            "SELECT b.job_id, j.job_hash, b.batch, j.group_id, b.recipients FROM dispatcher.journal_batches b "
            "JOIN dispatcher.journal_jobs j ON j.journal = b.journal AND j.job_id = b.job_id "
            "WHERE b.journal = %s AND NOT b.final AND b.last_doc IS NULL ORDER BY b.seq"
        )
        for job_id, job_hash, batch, group_id, recipients in self._rows("dispatcher_unsent", query, (self.uri.name,)):
            ids = None if recipients is None else list(orjson.loads(recipients))
            yield Unsent(job_id, job_hash, int(batch), group_id, ids)


def _store_named(shown: str) -> str:
    return shown if shown.startswith("the ") else f"the rate store {shown}"


def check_same_pacing(uri: JournalURI, run: RunRow, rate: float | None, store_shown: str) -> float:
    """A worker paces with the run, never privately: refuse another store or rate than the run's,
    naming what the run uses. The rate the worker uses (the run's, when it names none)."""
    if run.rate_store in ("memory://", ""):
        raise UsageError(
            f"{uri.shown}: the run's send paces alone (memory://); workers join only a run whose budget is shared: "
            "send it without --rate-store (the budget is then kept in the journal's database) or with a shared one"
        )
    if store_shown != run.rate_store:
        raise UsageError(
            f"{uri.shown}: the run paces in {_store_named(run.rate_store)}, not {_store_named(store_shown)}: "
            "name the same with --rate-store (or DISPATCHER_RATE_STORE), or none for the journal's database"
        )
    if rate is not None and rate != run.rate:
        raise UsageError(
            f"{uri.shown}: the run paces at --rate {run.rate:g}, not {rate:g}: leave --rate out or match it"
        )
    return run.rate
