"""The journal in PostgreSQL: a run's plan, outcomes and claims, shared by its workers on any machine.

Tables, in the schema `dispatcher` (created on first use, under an advisory lock; the version of
ours is the row 'journal' of `dispatcher.meta`, so that a later change can migrate them):
`journal_runs` (one row a journal: its holder, whether the plan is complete, the rate and rate store
every worker must use), `journal_jobs` and `journal_batches` (the plan: each job once validated whole,
each batch with its recipients, its fate and its claim), `journal_outcomes` (one row per outcome line,
the same line the file journal holds, in the order the workers committed them).

Invariants:
- A batch is claimed (`claimed_by`, `lease_until`, taken with `FOR UPDATE SKIP LOCKED`) before its
  request starts, and a worker starts a request only while its own clock says its lease holds
  (`holds`): the lease in the database was set after the local clock was read, so it ends later.
- A worker's outcome line is in the database before anything else of that reply happens: the
  engine awaits `settle()` after recording a reply and before its next step (another attempt,
  another batch, the next pace), and a line that cannot be committed stops the run. Lines from
  all the workers of a process are committed together (one transaction per round, not per line).
- One `send` per journal: its connection holds the session advisory lock of the journal's name,
  which goes with the connection (kill -9, a lost pod): `work` asks for it to know if `send` lives.

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
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from dispatcher.errors import ConfigError, JournalError, JournalLockedError, JournalWriteError, UsageError
from dispatcher.journal.outcomes import JournalState, Moved
from dispatcher.journal.uri import JournalURI
from dispatcher.version import DISTRIBUTION

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger("dispatcher")
VERSION = 1
MISSING_EXTRA = f"{{uri}}: a PostgreSQL journal needs the postgres extra: pip install '{DISTRIBUTION}[postgres]'"
DEFAULT_LEASE = 30.0
_CONNECT_TIMEOUT = 5  # seconds, unless the URI says connect_timeout=
_PLAN_JOBS = 256  # jobs stored in one transaction
_PLAN_BATCHES = 20_000

_OUTCOMES = "SELECT doc FROM dispatcher.journal_outcomes WHERE journal = %s ORDER BY seq"
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


async def _connect(uri: JournalURI) -> psycopg.AsyncConnection[Any]:
    driver = _psycopg(uri)
    kwargs: dict[str, Any] = {"autocommit": True, "application_name": "dispatcher"}
    if "connect_timeout=" not in uri.conninfo:
        kwargs["connect_timeout"] = _CONNECT_TIMEOUT
    try:
        conn: psycopg.AsyncConnection[Any] = await driver.AsyncConnection.connect(uri.conninfo, **kwargs)
    except driver.Error as exc:
        raise JournalError(f"{uri.shown}: cannot reach the database: {_scrub(uri, exc)}") from None
    return conn


async def _ensure_schema(uri: JournalURI, conn: psycopg.AsyncConnection[Any]) -> None:
    """Create our schema and tables on first use; refuse tables of a newer version than this one."""
    async with conn.transaction():
        # Concurrent first uses (the budget's tables live in this schema too) would race otherwise.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dispatcher schema'))")
        await conn.execute("CREATE SCHEMA IF NOT EXISTS dispatcher")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS dispatcher.meta (component text PRIMARY KEY, version integer NOT NULL)"
        )
        cur = await conn.execute("SELECT version FROM dispatcher.meta WHERE component = 'journal'")
        row = await cur.fetchone()
        if row is None:
            await conn.execute(_TABLES)
            await conn.execute("INSERT INTO dispatcher.meta VALUES ('journal', %s)", (VERSION,))
        elif row[0] > VERSION:
            raise JournalError(
                f"{uri.shown}: its tables are of a newer version ({row[0]}) than this dispatcher knows ({VERSION}); "
                "upgrade dispatcher"
            )


async def _opened(uri: JournalURI, conn: psycopg.AsyncConnection[Any], work: Awaitable[Any]) -> Any:
    """Run a step of the opening; a database error is one line naming the journal."""
    psycopg = _psycopg(uri)
    try:
        return await work
    except psycopg.Error as exc:
        await conn.close()
        raise JournalError(f"{uri.shown}: {_scrub(uri, exc)}") from None
    except BaseException:
        await conn.close()
        raise


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


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
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> PgJournal:
    """Open the run of `uri` as its `send`: the journal's lock taken first (a second send is refused
    naming the holder), a run with outcomes or a plan refused unless resuming, its state read."""
    main = await _connect(uri)
    await _opened(uri, main, _ensure_schema(uri, main))
    locked = False
    for _ in range(3):  # a `work` that asks whether the send lives holds the lock for an instant
        cur = await _opened(uri, main, main.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (_lock_key(uri),)))
        lock_row: Any = await cur.fetchone()
        locked = bool(lock_row[0])
        if locked:
            break
        await asyncio.sleep(0.05)
    if not locked:
        cur = await _opened(
            uri, main, main.execute("SELECT holder FROM dispatcher.journal_runs WHERE journal = %s", (uri.name,))
        )
        row = await cur.fetchone()
        await main.close()
        who = row[0] if row and row[0] else "another process"
        raise JournalLockedError(
            f"{uri.shown} is in use by another run ({who}); one run owns a journal until it ends: wait for it, "
            f"or stop it, then --resume (`dispatcher work {uri.shown}` joins it from any machine)"
        )
    try:
        journal = PgJournal(uri, main, await _connect(uri), is_send=True, lease=lease, clock=clock, sleep=sleep)
    except BaseException:
        await main.close()
        raise
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
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[PgJournal, RunRow]:
    """Join the run of `uri` as a worker; the run's row (its rate and store) for the caller to check."""
    conn = await _connect(uri)
    await _opened(uri, conn, _ensure_schema(uri, conn))
    cur = await _opened(
        uri,
        conn,
        conn.execute(
            "SELECT rate, rate_store, max_attempts, message_quota, plan_complete FROM dispatcher.journal_runs "
            "WHERE journal = %s",
            (uri.name,),
        ),
    )
    row = await cur.fetchone()
    if row is None:
        await conn.close()
        raise JournalError(f"{uri.shown}: no run in this journal; `dispatcher send --out {uri.shown}` starts one")
    journal = PgJournal(uri, None, conn, is_send=False, lease=lease, clock=clock, sleep=sleep)
    return journal, RunRow(*row)


class PgJournal:
    """One worker's view of a run in PostgreSQL: a `JournalStore` and a `SharedRun`.

    Two connections for the send (`main` holds the journal's lock and stores the plan; `conn` claims,
    renews and commits the outcome lines), one for a worker. `close()` is the file journal's
    synchronous close and does nothing; `aclose()` commits what is left, releases the claims and
    closes the connections."""

    def __init__(
        self,
        uri: JournalURI,
        main: psycopg.AsyncConnection[Any] | None,
        conn: psycopg.AsyncConnection[Any],
        *,
        is_send: bool,
        lease: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.uri = uri
        self.path = uri.shown
        self.is_send = is_send
        self.state = JournalState()
        self.lines = 0
        self.error: JournalWriteError | None = None
        self.incomplete = False
        self.planned = asyncio.Event()
        self.lease = lease
        self._main = main
        self._conn = conn
        self._clock = clock
        self._sleep = sleep
        self._me = f"{socket.gethostname()}:{os.getpid()}:{_secrets.token_hex(4)}"
        self._psycopg = _psycopg(uri)
        self._buffer: list[dict[str, Any]] = []
        self._written = 0
        self._committed = 0
        self._flushing: asyncio.Task[None] | None = None
        self._claims: dict[tuple[str, int], float] = {}  # batch -> until when (local clock) the claim holds
        self._jobs: dict[str, PlannedJob] = {}
        self._planned: dict[str, str] = {}  # job_id -> job_hash of every job in the plan (the send's)
        self._plan_jobs: list[tuple[Any, ...]] = []
        self._plan_batches: list[tuple[Any, ...]] = []
        self._on_error: Callable[[JournalWriteError], None] = lambda exc: None
        self._closed = False

    # -- the opening -----------------------------------------------------------------------------

    async def begin_send(
        self, *, resume: bool, retry_failed: bool, rate: float, rate_store: str, max_attempts: int, message_quota: int
    ) -> None:
        assert self._main is not None
        main, name = self._main, self.uri.name
        try:
            cur = await main.execute("SELECT 1 FROM dispatcher.journal_runs WHERE journal = %s", (name,))
            exists = await cur.fetchone() is not None
            if exists and not resume:
                raise JournalError(
                    f"{self.uri.shown} exists and is not empty; pass --resume to continue it, or choose another --out"
                )
            await main.execute(
                "INSERT INTO dispatcher.journal_runs (journal, holder, rate, rate_store, max_attempts, message_quota) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (journal) DO UPDATE SET holder = excluded.holder, "
                "rate = excluded.rate, rate_store = excluded.rate_store, max_attempts = excluded.max_attempts, "
                "message_quota = excluded.message_quota",
                (name, _holder(), rate, rate_store, max_attempts, message_quota),
            )
            if not exists:
                return
            cur = await main.execute("SELECT job_id, job_hash FROM dispatcher.journal_jobs WHERE journal = %s", (name,))
            self._planned = {job_id: job_hash for job_id, job_hash in await cur.fetchall()}
            async with main.transaction(), main.cursor(name="dispatcher_state") as named:
                await named.execute(
                    "SELECT doc FROM dispatcher.journal_outcomes WHERE journal = %s ORDER BY seq", (name,)
                )
                async for (doc,) in named:
                    self.state.add(orjson.loads(doc))
            if retry_failed:
                await main.execute(
                    "UPDATE dispatcher.journal_batches SET final = false WHERE journal = %s AND status = 'failed' "
                    "AND final",
                    (name,),
                )
        except self._psycopg.Error as exc:
            raise JournalError(f"{self.uri.shown}: {_scrub(self.uri, exc)}") from None

    # -- the plan (the send's) --------------------------------------------------------------------

    def planned_hash(self, job_id: str) -> str | None:
        """The job_hash under which the plan holds `job_id`, or None if it holds no such job."""
        return self._planned.get(job_id)

    async def plan(self, job: Any, batches: Iterable[Any]) -> None:
        """Add a job (validated whole) and its batches to the plan; stored with the next `plan_flush`
        (no worker can claim a batch before it is committed, so none is sent before its job is stored)."""
        self._planned[job.job_id] = job.job_hash
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
        assert self._main is not None
        jobs, batches = self._plan_jobs, self._plan_batches
        self._plan_jobs, self._plan_batches = [], []
        try:
            async with self._main.transaction(), self._main.cursor() as cur:
                async with cur.copy(
                    "COPY dispatcher.journal_jobs (journal, job_id, job_hash, api, group_id, group_type, fields, "
                    "named, recipient_count, batch_size, source) FROM STDIN"
                ) as copy:
                    for row in jobs:
                        await copy.write_row(row)
                async with cur.copy(
                    "COPY dispatcher.journal_batches (journal, job_id, batch, recipients, random) FROM STDIN"
                ) as copy:
                    for row in batches:
                        await copy.write_row(row)
        except self._psycopg.Error as exc:
            self._lost(exc)
            return
        self.planned.set()

    async def withdraw(self, job_id: str) -> None:
        """Take a job's batches that have no final outcome out of the run (the job was rejected on a
        resume: changed since its plan was stored): no worker claims them any more."""
        if self.error is not None:
            return
        assert self._main is not None
        try:
            await self._main.execute(
                "UPDATE dispatcher.journal_batches SET final = true, status = 'withdrawn', claimed_by = NULL, "
                "lease_until = NULL WHERE journal = %s AND job_id = %s AND NOT final",
                (self.uri.name, job_id),
            )
        except self._psycopg.Error as exc:
            self._lost(exc)

    async def plan_complete(self) -> None:
        """Every job of the run is in the plan: from now on the run needs none of its input files."""
        await self.plan_flush()
        if self.error is not None:
            return
        assert self._main is not None
        try:
            await self._main.execute(
                "UPDATE dispatcher.journal_runs SET plan_complete = true WHERE journal = %s", (self.uri.name,)
            )
        except self._psycopg.Error as exc:
            self._lost(exc)

    # -- claims ---------------------------------------------------------------------------------

    async def claim(self, count: int) -> list[Claimed]:
        """Claim up to `count` batches that have no final outcome and no live claim, in plan order."""
        began = self._clock()
        try:
            cur = await self._conn.execute(
                "UPDATE dispatcher.journal_batches b SET claimed_by = %(me)s, "
                "lease_until = now() + %(lease)s * interval '1 second' "
                "FROM (SELECT job_id, batch FROM dispatcher.journal_batches WHERE journal = %(j)s AND NOT final "
                "AND (lease_until IS NULL OR lease_until < now()) ORDER BY seq LIMIT %(n)s FOR UPDATE SKIP LOCKED) c "
                "WHERE b.journal = %(j)s AND b.job_id = c.job_id AND b.batch = c.batch "
                "RETURNING b.seq, b.job_id, b.batch, b.recipients, b.random, b.last_doc",
                {"me": self._me, "lease": self.lease, "j": self.uri.name, "n": count},
            )
            rows = sorted(await cur.fetchall())
            missing = sorted({row[1] for row in rows} - set(self._jobs))
            if missing:
                cur = await self._conn.execute(
                    "SELECT job_id, job_hash, api, group_id, group_type, fields, named, recipient_count, batch_size, "
                    "source FROM dispatcher.journal_jobs WHERE journal = %s AND job_id = ANY(%s)",
                    (self.uri.name, missing),
                )
                for r in await cur.fetchall():
                    self._jobs[r[0]] = PlannedJob(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), *r[6:])
        except self._psycopg.Error as exc:
            self._lost(exc)
            return []
        out = []
        for _, job_id, index, recipients, random, last in rows:
            self._claims[(job_id, index)] = began + self.lease
            doc = None if last is None else orjson.loads(last)
            if doc is not None:
                self.state.add(doc)
            ids = None if recipients is None else tuple(orjson.loads(recipients))
            out.append(Claimed(self._jobs[job_id], index, ids, random, doc))
        return out

    def holds(self, job_id: str, batch: int) -> bool:
        """True while this worker's claim on the batch holds by its own clock: only then may it start."""
        return self._claims.get((job_id, batch), float("-inf")) > self._clock()

    async def _renew(self) -> None:
        if not self._claims:
            return
        began = self._clock()
        cur = await self._conn.execute(
            "UPDATE dispatcher.journal_batches SET lease_until = now() + %s * interval '1 second' "
            "WHERE journal = %s AND claimed_by = %s AND NOT final RETURNING job_id, batch",
            (self.lease, self.uri.name, self._me),
        )
        held = {(job_id, batch) for job_id, batch in await cur.fetchall()}
        # A claim taken over by another worker (its lease ran out first) is not ours to start.
        self._claims = {key: began + self.lease for key in self._claims if key in held}

    async def status(self) -> RunStatus:
        try:
            cur = await self._conn.execute(
                "SELECT plan_complete, (SELECT count(*) FROM dispatcher.journal_batches WHERE journal = %(j)s "
                "AND NOT final) FROM dispatcher.journal_runs WHERE journal = %(j)s",
                {"j": self.uri.name},
            )
            row = await cur.fetchone()
            complete, left = (bool(row[0]), int(row[1])) if row else (False, 0)
            alive = True
            if not self.is_send:
                # The send's connection holds the lock; asking for it shared, for an instant, tells.
                cur = await self._conn.execute(
                    "SELECT pg_try_advisory_lock_shared(hashtext(%s))", (_lock_key(self.uri),)
                )
                got_row: Any = await cur.fetchone()
                got = bool(got_row[0])
                if got:
                    await self._conn.execute("SELECT pg_advisory_unlock_shared(hashtext(%s))", (_lock_key(self.uri),))
                alive = not got
        except self._psycopg.Error as exc:
            self._lost(exc)
            return RunStatus(False, 0, False)
        return RunStatus(complete, left, alive)

    # -- outcome lines ---------------------------------------------------------------------------

    def write(self, doc: dict[str, Any]) -> None:
        """Take one outcome line; it is committed with the next round (`settle` waits for it)."""
        if self.error is not None:
            raise self.error
        self._buffer.append(doc)
        self._written += 1
        self.lines += 1
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def settle(self) -> None:
        """Return once every line written so far is committed (or the journal failed: then the run
        has been told through `on_error`, and stops)."""
        target = self._written
        while self._committed < target and self.error is None:
            if self._flushing is None:
                self._flushing = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        try:
            while self._buffer and self.error is None:
                docs, self._buffer = self._buffer, []
                try:
                    await self._commit(docs)
                except self._psycopg.Error as exc:
                    self._lost(exc)
                    return
                self._committed += len(docs)
        finally:
            self._flushing = None

    async def _commit(self, docs: list[dict[str, Any]]) -> None:
        texts = [orjson.dumps(doc).decode() for doc in docs]
        latest: dict[tuple[str, int], tuple[bool, str, str]] = {}
        for doc, text in zip(docs, texts, strict=True):
            if doc.get("batch") is not None:
                latest[(str(doc["job_id"]), int(doc["batch"]))] = (bool(doc.get("final")), str(doc["status"]), text)
        async with self._conn.transaction():
            await self._conn.execute(
                "INSERT INTO dispatcher.journal_outcomes (journal, doc) SELECT %s, unnest(%s::text[])",
                (self.uri.name, texts),
            )
            if latest:
                keys = list(latest)
                await self._conn.execute(
                    "UPDATE dispatcher.journal_batches b SET last_doc = u.doc, final = u.final, "
                    "status = CASE WHEN u.final THEN u.status ELSE b.status END, "
                    "claimed_by = CASE WHEN u.final THEN NULL ELSE b.claimed_by END, "
                    "lease_until = CASE WHEN u.final THEN NULL ELSE b.lease_until END "
                    "FROM unnest(%s::text[], %s::int[], %s::bool[], %s::text[], %s::text[]) "
                    "AS u(job_id, batch, final, status, doc) "
                    "WHERE b.journal = %s AND b.job_id = u.job_id AND b.batch = u.batch",
                    (
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [latest[k][0] for k in keys],
                        [latest[k][1] for k in keys],
                        [latest[k][2] for k in keys],
                        self.uri.name,
                    ),
                )
        for key, (final, _, _) in latest.items():
            if final:
                self._claims.pop(key, None)

    def _lost(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = JournalWriteError(
                f"{self.uri.shown}: the database was lost ({_scrub(self.uri, exc)}); no new request starts. Once it "
                f"is back, `dispatcher work {self.uri.shown}` or `send --resume` finishes the run"
            )
            self._on_error(self.error)

    async def sync_periodically(
        self, on_error: Callable[[JournalWriteError], None], on_moved: Callable[[Moved], None]
    ) -> None:
        """Run as a task: renew this worker's claims every third of the lease."""
        self._on_error = on_error
        if self.error is not None:
            on_error(self.error)
            return
        while self.error is None:
            await self._sleep(self.lease / 3)
            try:
                await self._renew()
            except self._psycopg.Error as exc:
                self._lost(exc)

    # -- the file journal's ends, which have no meaning here ------------------------------------

    async def keep_path(self) -> Moved | None:
        return None

    def remove_if_unused(self) -> None:
        return None

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        """Commit what is left, give back the claims this worker holds, close the connections (the
        send's lock goes with its connection). A database that is gone leaves its claims to expire."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.plan_flush()
            await self.settle()
            if self.error is None:
                await self._conn.execute(
                    "UPDATE dispatcher.journal_batches SET claimed_by = NULL, lease_until = NULL "
                    "WHERE journal = %s AND claimed_by = %s AND NOT final",
                    (self.uri.name, self._me),
                )
                if self._main is not None:
                    await self._main.execute(
                        "UPDATE dispatcher.journal_runs SET holder = NULL WHERE journal = %s", (self.uri.name,)
                    )
        except self._psycopg.Error as exc:
            log.warning("the journal's database was lost at the end; its claims expire", error=_scrub(self.uri, exc))
        finally:
            for conn in (self._conn, self._main):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()


def read_records(uri: JournalURI) -> Iterator[dict[str, Any]]:
    """Every outcome line of the run, every worker's, in the order they were committed (a report)."""
    psycopg = _psycopg(uri)
    kwargs: dict[str, Any] = {"autocommit": False, "application_name": "dispatcher"}
    if "connect_timeout=" not in uri.conninfo:
        kwargs["connect_timeout"] = _CONNECT_TIMEOUT
    try:
        conn = psycopg.connect(uri.conninfo, **kwargs)
    except psycopg.Error as exc:
        raise JournalError(f"{uri.shown}: cannot reach the database: {_scrub(uri, exc)}") from None
    try:
        with conn:
            cur = conn.execute("SELECT to_regclass('dispatcher.journal_runs') IS NOT NULL")
            row: Any = cur.fetchone()
            found = bool(row and row[0])
            if found:
                cur = conn.execute("SELECT 1 FROM dispatcher.journal_runs WHERE journal = %s", (uri.name,))
                found = cur.fetchone() is not None
            if not found:
                raise JournalError(f"{uri.shown}: no run in this journal")
            with conn.cursor(name="dispatcher_report") as named:
                named.execute(
                    "SELECT doc FROM dispatcher.journal_outcomes WHERE journal = %s ORDER BY seq", (uri.name,)
                )
                for (doc,) in named:
                    yield orjson.loads(doc)
    except psycopg.Error as exc:
        raise JournalError(f"{uri.shown}: {_scrub(uri, exc)}") from None


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
