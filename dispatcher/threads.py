"""Blocking work off the event loop, in daemon threads that a stop never has to wait for.

`asyncio.to_thread` runs work in the default executor, whose threads the interpreter joins at
exit: a reader blocked in open(2) on a FIFO with no writer, or in read(2) on a pipe that never
ends, would then keep a stopped run from exiting. A daemon thread is abandoned instead; the work
it does must be safe to abandon (reading input is; writing the journal never happens here).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled: nobody wants the result any more
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


async def in_daemon_thread(fn: Callable[[], T], name: str = "dispatcher-reader") -> T:
    """Run `fn()` in a new daemon thread and await its result; cancelling abandons the thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            loop.call_soon_threadsafe(_settle, future, result, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future
