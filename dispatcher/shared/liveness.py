"""Whether a run's `send` lives: its lock, its heartbeat, and the run's status as workers ask it.

One `send` per journal: its lock connection holds the session advisory lock of the journal's name
and beats (`beat_at`) every BEAT seconds. A send that loses that connection stops at once, and beats
on its claims' connection until it has ended. A second send is refused while the first holds the
lock, or beat less than STALE seconds ago: so, while the first lives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dispatcher.errors import JournalLockedError, JournalWriteError
from dispatcher.journal.pgsession import Faults, close, opened, scrub, within
from dispatcher.journal.uri import JournalURI
from dispatcher.pg import queries

if TYPE_CHECKING:
    import psycopg

_Q = queries.load("run")
BEAT = 1.0  # seconds between the heartbeats of a send's lock connection
STALE = 5.0  # a heartbeat older than this is of a send that is gone


@dataclasses.dataclass(frozen=True)
class RunStatus:
    complete: bool  # the plan holds every job of the run
    open: int  # batches without a final outcome (claimed or not)
    send_alive: bool  # the run's send holds the journal


def lock_key(uri: JournalURI) -> str:
    return f"dispatcher journal {uri.name}"


def holder() -> str:
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


async def take_lock(uri: JournalURI, lock: psycopg.AsyncConnection[Any]) -> None:
    """Take the journal's lock on `lock` for a send, or refuse naming the send that holds it (and
    close `lock`)."""
    locked = False
    for _ in range(3):  # a `work` that asks whether the send lives holds the lock for an instant
        cur = await opened(uri, [lock], lock.execute(_Q["try_lock"], (lock_key(uri),)))
        lock_row: Any = await cur.fetchone()
        locked = bool(lock_row[0])
        if locked:
            break
        await asyncio.sleep(0.05)
    cur = await opened(uri, [lock], lock.execute(_Q["holder"], (uri.name,)))
    row = await cur.fetchone()
    held_by: str | None = row[0] if row else None
    beat_age = float(row[1]) if row and row[1] is not None else STALE
    # The lock is free but the send that had it beat a moment ago: it lost its connection and is
    # stopping (or was killed on another machine). Two sends must not run side by side.
    lockless = held_by is not None and beat_age < STALE and not _gone_here(held_by)
    if not locked or lockless:
        await close(lock)
        who = held_by or "another process"
        detail = f", seen {beat_age:.1f} s ago without the journal's lock" if locked else ""
        raise JournalLockedError(
            f"{uri.shown} is in use by another run ({who}{detail}); one run owns a journal until it ends: wait for "
            f"it, or stop it, then --resume (`dispatcher work {uri.shown}` joins it from any machine)",
            library=f"{uri.shown} is in use by another run ({who}{detail}); one run owns a journal until it ends: "
            f"wait for it, or stop it, then set RunConfig(resume=True) (`dispatcher.work` joins it from any machine)",
        )


class Heartbeat:
    """The send's beats, on its lock's connection, then on its claims' once that is lost."""

    def __init__(
        self,
        uri: JournalURI,
        lock: psycopg.AsyncConnection[Any],
        fallback: psycopg.AsyncConnection[Any],
        holder: str,
        faults: Faults,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.uri = uri
        self.lock = lock
        self.holder = holder
        self._fallback = fallback
        self._faults = faults
        self._sleep = sleep
        self._lost = False

    async def beat(self) -> None:
        """Beat on the lock's connection; once it is lost, on the claims' one until this send ends: its
        requests in flight may outlast STALE, and no second send may start beside it meanwhile."""
        conn = self.lock
        while self._faults.error is None:
            try:
                cur = await within(conn.execute(_Q["beat"], (self.uri.name, self.holder)), BEAT * 5)
            except self._faults.kinds as exc:
                if conn is not self.lock:
                    return  # the claims' connection is lost: its renewals say so
                conn = self._fallback
                try:  # the whole database gone is told as such, not as a lock lost
                    await within(conn.execute(_Q["beat"], (self.uri.name, self.holder)), BEAT * 5)
                except self._faults.kinds as also:
                    self._faults.lost(also)
                    return
                self._lost_lock(f"its connection: {scrub(self.uri, exc)}")
                continue
            if cur.rowcount != 1:
                self._lost_lock("another send holds the run now")
                return
            await self._sleep(BEAT)

    def _lost_lock(self, reason: str) -> None:
        """The send's hold on the journal is gone: stop taking batches (lines of requests in flight are
        still committed: their claims hold), so that no second send runs beside this one."""
        if not self._lost:
            self._lost = True
            self._faults.on_error(
                JournalWriteError(
                    f"{self.uri.shown}: this send lost the journal's lock ({reason}); no new request starts, "
                    f"so that no second send runs beside it. Once it has ended, `send --resume` or "
                    f"`dispatcher work {self.uri.shown}` finishes the run"
                )
            )

    async def let_go(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """At the send's end: the run has no holder any more (its lock goes with its connection)."""
        await conn.execute(_Q["let_go"], (self.uri.name, self.holder))


async def status(uri: JournalURI, conn: psycopg.AsyncConnection[Any], *, is_send: bool) -> RunStatus:
    """Whether the plan is complete, how many batches are open, and whether the send lives."""
    cur = await conn.execute(_Q["status"], {"j": uri.name})
    row = await cur.fetchone()
    complete, left = (bool(row[0]), int(row[1])) if row else (False, 0)
    alive = True
    if not is_send:
        # The send's connection holds the lock; asking for it shared, for an instant, tells.
        cur = await conn.execute(_Q["try_lock_shared"], (lock_key(uri),))
        got_row: Any = await cur.fetchone()
        got = bool(got_row[0])
        if got:
            await conn.execute(_Q["unlock_shared"], (lock_key(uri),))
        alive = not got
    return RunStatus(complete, left, alive)
