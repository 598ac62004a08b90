"""Connections with a bound on every statement, and calls that are given up once over it.

Two bounds, because a database can fail in two ways (a blocking connection's calls get the second
from `InThread`):
- a server that answers slowly (a lock held, a query stuck): its own `statement_timeout` and
  `lock_timeout` end the statement, and the call raises;
- a server that does not answer at all (stopped, a network that drops every packet): nothing comes
  back, so `bounded` stops waiting on this side.

`bounded` gives up without waiting for psycopg: on a cancellation psycopg asks the server to cancel
the query and waits up to 10 s for that, which a stalled server would make the run wait out. The
call is left to end in the background, and its connection is not used again.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

STATEMENT_S = 10.0  # the longest one statement may take before the database counts as lost
_QUIET = logging.NullHandler()
_SLICE = 0.25  # seconds: how a bound is counted (see `bounded`)
CONNECT_S = 5  # libpq's connect_timeout (whole seconds), unless the URI names one
# TCP keepalives: a connection whose peer vanished (a host gone, a cut cable) fails in seconds
# rather than the kernel's two hours; tcp_user_timeout bounds data the peer never acknowledges.
_KEEPALIVE = {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2", "keepalives_count": "3"}


def _options(statement_s: float, given: str) -> str:
    """The session settings every connection gets; those the URI gives in `options` come after, and win."""
    ms = round(statement_s * 1000)
    ours = f"-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={ms * 3}"
    return f"{ours} {given}".strip()


def _params(conninfo: str, statement_s: float) -> dict[str, Any]:
    """libpq's parameters: the URI's, with our timeouts, keepalives and name where it names none."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(conninfo)
    params: dict[str, Any] = {"application_name": "dispatcher", **_KEEPALIVE}
    params.update({k: v for k, v in given.items() if v is not None})
    params.setdefault("connect_timeout", str(CONNECT_S))
    params.setdefault("tcp_user_timeout", str(round(statement_s * 1000)))
    params["options"] = _options(statement_s, str(given.get("options") or ""))
    return params


async def connect(conninfo: str, *, statement_s: float = STATEMENT_S, autocommit: bool = True) -> Any:
    """An asyncio connection with timeouts on its session (psycopg's errors pass through)."""
    import psycopg

    params = _params(conninfo, statement_s)
    conn: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(autocommit=autocommit, **params)
    return conn


def connect_sync(conninfo: str, *, statement_s: float = STATEMENT_S) -> Any:
    """The same, blocking and in a transaction (the report reads a run with it)."""
    import psycopg

    return psycopg.connect(**_params(conninfo, statement_s))


async def bounded(work: Awaitable[T], seconds: float) -> T:
    """Await `work` at most `seconds` (TimeoutError past that). If the caller is cancelled meanwhile
    (a signal), `work` is given up at once too, rather than waited for.

    The time is counted in slices, and a slice counts at most twice its length: a process stopped
    meanwhile (Ctrl-Z, SIGSTOP) was not waiting on the database, whose answer may be there unread."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    left = seconds
    try:
        while left > 0:
            step = min(_SLICE, left)
            began = loop.time()
            done, _ = await asyncio.wait({task}, timeout=step)
            if done:
                return task.result()
            left -= min(loop.time() - began, 2 * step)
    except asyncio.CancelledError:
        _give_up(task)
        raise
    _give_up(task)
    raise TimeoutError


def _give_up(task: asyncio.Future[Any]) -> None:
    # psycopg tells of a query it could not cancel on its logger; with no handler set up, Python
    # would print it raw on stderr, among the run's log lines. It is not news (see `_seen`).
    logging.getLogger("psycopg").addHandler(_QUIET)
    task.cancel()
    task.add_done_callback(_seen)


def _seen(task: asyncio.Future[Any]) -> None:
    """A call given up may end in any error later; it is not news by then."""
    if not task.cancelled():
        task.exception()


class _Call(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:  # handed to the caller, which re-raises it
            self.error = exc
        self.done.set()


class InThread:
    """Calls on a blocking connection, made in a daemon thread of its own, each waited for at most
    `seconds` (TimeoutError past that): a blocking read of a stalled server never ends on its own,
    and a signal is answered in the caller's thread at once, not after psycopg's cancel (10 s).
    A call given up leaves its thread behind; after it, or `stop()`, no call is made (`over`)."""

    def __init__(self, seconds: float = STATEMENT_S) -> None:
        self.seconds = seconds
        self.over = False
        self._calls: queue.SimpleQueue[_Call[Any] | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="dispatcher-database", daemon=True).start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            call.run()

    def __call__(self, fn: Callable[[], T]) -> T:
        if self.over:
            raise TimeoutError
        call = _Call(fn)
        self._calls.put(call)
        try:
            answered = call.done.wait(self.seconds)
        except BaseException:  # a signal: the call may still be under way
            self.over = True
            raise
        if not answered:
            self.over = True
            raise TimeoutError
        if call.error is not None:
            raise call.error
        return call.value  # type: ignore[return-value]

    def stop(self) -> None:
        """Let the thread end once its call, if any, has."""
        self.over = True
        self._calls.put(None)
