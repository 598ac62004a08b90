"""Work done behind the reading of an export: calls run in order on a thread of their own.

Reading an export hands each block to work that needs it whole but not at once: written to the spool,
fed to the job hash, compressed into a query's copy. Each of those lets go of the GIL (a file's write,
a hash of more than 2 KB, pyarrow's compression), so on a thread of its own it runs beside the
reading rather than after it (docs/guide/measurements.md#behind).

The calls run in the order given. At most `ahead` wait, so memory holds a few blocks whatever the
speeds. The first exception a call raises is raised to the caller at its next `call` or `wait`, and
the calls after it are skipped: a spool that failed is never written past its hole.
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
        left writing to a file the caller closes next."""
        if exc is not None and self._failed is None:
            self._failed = exc  # the caller gave up: what waits is skipped
        self._calls.put(None)
        self._thread.join()
        if exc is None:
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
