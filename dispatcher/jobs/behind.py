"""Work done behind the reading of an export: calls run in order on a thread of their own.

Reading an export hands each block to work that needs it whole but not at once: written to the spool,
fed to the job hash, compressed into a query's copy. Each of those lets go of the GIL (a file's write,
a hash of more than 2 KB, pyarrow's compression), so on a thread of its own it runs beside the
reading rather than after it (docs/guide/measurements.md#behind).

The calls run in the order given. At most `ahead` wait, so memory holds a few blocks whatever the
speeds. The first exception a call raises is raised to the caller at its next `call` or `wait`, and
the calls after it are skipped: a spool that failed is never written past its hole. It is raised at
the end too, over an error of the caller's own, which came after it (`Behind.__exit__`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

_AHEAD = 8  # calls waiting at most: blocks of about a MB each


class Behind:
    """A thread that runs the calls given to it, in order; use as a context manager."""

    def __init__(self, name: str, ahead: int = _AHEAD) -> None:
        self._calls: queue.Queue[tuple[Callable[..., object], tuple[Any, ...]] | None] = queue.Queue(ahead)
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., object], *args: Any) -> None:
        """Run fn(*args) after the calls given before; raises what an earlier call raised."""
        self._raise()
        self._calls.put((fn, args))

    def wait(self) -> None:
        """Return once every call given has run; raises what one of them raised."""
        self._calls.join()
        self._raise()

    def __enter__(self) -> Behind:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """The thread ends once the calls given have run (or been skipped after a failure): nothing is
        left writing to a file the caller closes next.

        The calls given came before the caller's own error: run in turn, one of them that fails (a full
        disk) would have failed first, so that failure is raised, not the caller's (a bad row read after).
        An interruption (a signal, a generator closed) skips what waits and stays what is raised."""
        interrupted = exc is not None and not isinstance(exc, Exception)
        if interrupted and self._failed is None:
            self._failed = exc
        self._calls.put(None)
        self._thread.join()
        if not interrupted and self._failed is not exc:
            self._raise()

    def _raise(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _run(self) -> None:
        while True:
            item = self._calls.get()
            try:
                if item is None:
                    return
                if self._failed is None:
                    fn, args = item
                    try:
                        fn(*args)
                    except BaseException as exc:  # handed to the caller
                        self._failed = exc
            finally:
                self._calls.task_done()
