"""A rate budget in PostgreSQL, shared by every process of an app on any machine
(`--rate-store postgresql://`): the twin of `redis.py`, for those whose shared state is a database.

The same GCRA, quota, shared pause and shared adaptive pace as the Redis budget, with the same
figures: its state is one row per app and endpoint (`dispatcher.budget`), updated by one PL/pgSQL
function call per slot (`dispatcher/pg/sql/schema.sql`, the twin of the Lua scripts), one short transaction in
autocommit that locks the budget's row, and timed by the database's clock (`clock_timestamp()`,
read once the row is locked), so machines whose clocks disagree still agree on the budget. As in
Redis, a slot is only taken when it is due and its caller is awake to use it (never booked ahead),
the pace is 98% of the rate at most (`SHARED_HEADROOM`; redis.py says why), a slot may be taken
TOLERANCE_US early, and a budget keeps the rate and quota of the first user and refuses another.

Faults, as the Redis store has them: a database that cannot be reached at start is a RateStoreError
(exit 2) before anything is sent; one lost mid-run makes `acquire` raise RateStoreError, on which the
engine starts nothing more and halts resumably. Lost is a connection refused or cut off after three
quick retries (0.04, 0.08 and 0.16 s apart: redis-py's backoff in redis.py), or no answer within
TIMEOUT_S, which is not asked again. Never a private budget instead: that would overrun the app's cap.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, LiteralString

from dispatcher.errors import RateStoreError
from dispatcher.pacing import adaptive
from dispatcher.pacing.base import SHARED_HEADROOM, rate_text
from dispatcher.pacing.shared import STEP_ARGS, SharedBudget
from dispatcher.pg import migrate, queries
from dispatcher.pg.connect import bounded
from dispatcher.pg.connect import connect as open_session

if TYPE_CHECKING:
    import psycopg

    from dispatcher.pacing.base import Quota, StoreURI

Sleep = Callable[[float], Awaitable[None]]
Query = LiteralString | bytes  # ours (budget.sql), or TAKE rendered once (`take`)
_Q = queries.load("budget")
COMPONENT = "budget"

HEADROOM = SHARED_HEADROOM
TOLERANCE_US = 3_000  # as redis.py's, for the same reason: a sleep that wakes late loses nothing
TTL_S = 600  # an unused budget is gone 10 minutes after its last use (or after its pause ends)
TIMEOUT_S = 2.0  # a database that does not answer in this long is lost: halt rather than wait
RETRY_BACKOFF_S = (0.04, 0.08, 0.16)  # between the quick retries of a refused or dropped connection


async def _fetch_one(cursor: psycopg.AsyncCursor[Any], statement: Query, args: Sequence[object]) -> Any:
    await cursor.execute(statement, args, prepare=True)
    row = await cursor.fetchone()
    assert row is not None  # each statement is a SELECT of one row
    return row


def take(rate: str, quota: str, tolerance: int, ttl: int, shape: list[int | None]) -> bytes:
    """TAKE as one limiter sends it (budget.sql): what never changes for it bound in as literals,
    rendered once. psycopg quotes the rate and the quota; nothing is built by hand."""
    from psycopg import sql

    names = ("interval", "unit", "limit", "window", "top", "first", "increase", "idle", "ramp", "settle")
    fixed = {"rate": rate, "quota": quota, "tolerance": int(tolerance), "ttl": int(ttl)}
    fixed.update({name: None if n is None else int(n) for name, n in zip(names, shape, strict=True)})
    return sql.SQL(_Q["take"]).format(**{name: sql.Literal(value) for name, value in fixed.items()}).as_bytes(None)


def _one_line(text: str) -> str:
    """libpq's messages span lines ("...failed: Connection refused\\n\\tIs the server running..."):
    one line, as every error the dispatcher prints."""
    return " ".join(text.split())


class PostgresLimiter(SharedBudget):
    """The Limiter protocol over a budget in PostgreSQL. Build it with `connect`; `aclose` at the end."""

    def __init__(
        self,
        conninfo: str,
        key: str,
        rate: float,
        *,
        shown: str,
        quota: Quota | None = None,
        secrets: tuple[str, ...] = (),
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        clock_us: Callable[[], int] | None = None,
        start: float | None = None,
        documented: float | None = None,
    ) -> None:
        """`conninfo`: what libpq connects with (it may hold the password; never shown). `clock_us`:
        tests only, a virtual clock in place of the database's; the rest: SharedBudget's."""
        super().__init__(
            key,
            rate,
            shown=shown,
            quota=quota,
            secrets=secrets,
            sleep=sleep,
            clock=clock,
            start=start,
            documented=documented,
        )
        self._conninfo = conninfo
        ttl_s = float(TTL_S)
        quota_args: list[int | None] = [None, None, None]
        if quota is not None:
            ttl_s = max(ttl_s, math.ceil(quota.window) + 60.0)
            quota_args = [math.ceil(quota.unit_interval * 1e6), quota.limit, math.ceil(quota.window * 1e6)]
        self._ttl_s = ttl_s
        self._ttl_us = round(ttl_s * 1e6)
        self._quota_text = "" if quota is None else quota.text()
        pace_args = [
            round(self._top * 1e6),
            round(self._first * 1e6),
            round(adaptive.INCREASE * 1e6),
            round(adaptive.IDLE * 1e6),
            round(adaptive.RAMP * 1e6),
            round(adaptive.SETTLE * 1e6),
        ]
        self._shape: list[int | None] = [self._unit_us, *quota_args, *pace_args]
        self._take_sql = take(rate_text(rate), self._quota_text, TOLERANCE_US, self._ttl_us, self._shape)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._cursor: psycopg.AsyncCursor[Any] | None = None
        self._clock_us = clock_us
        # One call at a time on the connection and its one cursor, from start to fetched row: a
        # pause or a step down (other tasks) never reads a slot's row, nor closes the connection
        # under it.
        self._calls = asyncio.Lock()
        self.asking = 0  # calls to the database under way (tests wait for them to come back)

    def _now(self) -> int | None:
        return None if self._clock_us is None else self._clock_us()

    async def check(self) -> None:
        """Reach the database, make the budget's objects if missing, and claim the budget at this
        rate and quota, or refuse: another rate or quota, or no database."""
        await self._setup()
        await self._take(0, starting=True)

    async def _step(self, sent_ago_us: int, window: int) -> tuple[int, int] | None:
        try:
            top, first = round(self._top * 1e6), round(self._first * 1e6)
            args = [self.key, sent_ago_us, self._now(), top, first, self._unit_us, window, *STEP_ARGS]
            stepped, share = await self._query(_Q["step_down"], args)
        except RateStoreError:
            return None  # the next acquire meets the same fault and halts the run
        return int(stepped), int(share)

    async def _share_pause(self, seconds: float) -> None:
        args = [self.key, math.ceil(max(0.0, seconds) * 1e6), self._ttl_us, self._now()]
        try:
            await self._query(_Q["pause"], args)
        except RateStoreError:
            pass  # the next acquire meets the same fault and halts the run

    async def _take(self, cost: int, *, starting: bool = False) -> tuple[bool, int, int, int]:
        """One TAKE: whether the slot was taken, the microseconds until the next may be, the share of
        the ceiling (ppm) the slot was paced at and its number in the budget (when taken)."""
        args = [self.key, cost, self._now()]
        status, value, share, held, number = await self._query(self._take_sql, args, starting=starting)
        if status < 0:
            raise self._mismatch(status, str(held), self._quota_text)
        return status == 1, int(value), int(share) if share is not None else 1_000_000, int(number or 0)

    async def _setup(self) -> None:
        """Make the schema and the budget's objects on first use, once for every process, migrate
        those of an earlier version (`dispatcher.pg.migrate`, with the journal's beside them), and
        refuse objects of a later version than this one knows."""
        import psycopg

        try:
            conn = await self._connection()
            async with asyncio.timeout(TIMEOUT_S):
                await migrate.migrate(conn, COMPONENT)
        except TimeoutError:
            await self._drop()
            raise self._fault(f"no answer within {TIMEOUT_S:g} s", starting=True) from None
        except psycopg.Error as exc:
            await self._drop()
            raise self._fault(str(exc), starting=True) from None
        except migrate.Newer as newer:
            raise RateStoreError(
                f"the rate store {self.shown} holds the budget's tables at version {newer.found}, newer than this "
                f"dispatcher's ({newer.known}): run a dispatcher as new as the one that made them"
            ) from None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            async with asyncio.timeout(TIMEOUT_S):  # libpq's connect_timeout is whole seconds, 2 at least
                # The session's own bounds (statement_timeout, lock_timeout) are twice the limiter's: they
                # end in the database a call the limiter gave up on, which would take a slot for nobody.
                self._conn = await open_session(self._conninfo, statement_s=2 * TIMEOUT_S)
            self._cursor = self._conn.cursor()  # one for every call: a cursor made a call costs CPU
        return self._conn

    async def _query(self, statement: Query, args: Sequence[object], *, starting: bool = False) -> tuple[Any, ...]:
        """One call, on the limiter's connection: a connection refused or dropped is tried again
        three times (a new connection each time); a call unanswered in TIMEOUT_S is the store lost."""
        import psycopg

        self.asking += 1
        try:
            async with self._calls:
                for backoff in (*RETRY_BACKOFF_S, None):
                    try:
                        cursor = await self._cursor_now()
                        row = await bounded(_fetch_one(cursor, statement, args), TIMEOUT_S)
                        return tuple(row)
                    except asyncio.CancelledError:
                        # Given up at once (a stop): the call may still be under way on the connection.
                        self._conn = None
                        raise
                    except TimeoutError:
                        await self._drop()
                        raise self._fault(f"no answer within {TIMEOUT_S:g} s", starting) from None
                    except psycopg.OperationalError as exc:
                        await self._drop()
                        if backoff is None:
                            raise self._fault(str(exc), starting) from None
                        await asyncio.sleep(backoff)  # real time, as redis-py's retries
                    except psycopg.Error as exc:  # not a connection's fault (a dropped function, rights): no retry
                        raise self._fault(str(exc), starting) from None
                raise AssertionError("unreachable: the last try returns or raises")
        finally:
            self.asking -= 1

    async def _cursor_now(self) -> psycopg.AsyncCursor[Any]:
        """The connection's one cursor, on a connection made again if it was dropped."""
        await self._connection()
        assert self._cursor is not None
        return self._cursor

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _change(self) -> str:
        key = self.key.replace("'", "''")
        return (
            f"or change the budget by deleting its row (DELETE FROM dispatcher.budget WHERE key = '{key}') "
            f"once no run uses it, or wait for it to expire ({self._ttl_s:g} s after its last use)"
        )

    def _fault(self, reason: str, starting: bool) -> RateStoreError:
        return super()._fault(_one_line(reason) or "no reason given", starting)

    async def aclose(self) -> None:
        """Let a pause being written land (briefly), then close the connection."""
        await self._land_pauses(TIMEOUT_S)
        await self._drop()


async def connect(
    store: StoreURI,
    *,
    rate: float,
    key: str,
    quota: Quota | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    clock_us: Callable[[], int] | None = None,
    start: float | None = None,
    documented: float | None = None,
) -> PostgresLimiter:
    """A PostgresLimiter on `store`, its budget checked; RateStoreError if unreachable or at another rate."""
    limiter = PostgresLimiter(
        store.url,
        key,
        rate,
        shown=store.shown,
        quota=quota,
        secrets=(store.password,),
        sleep=sleep,
        clock=clock,
        clock_us=clock_us,
        start=start,
        documented=documented,
    )
    try:
        await limiter.check()
    except BaseException:
        await limiter.aclose()
        raise
    return limiter
