"""The journal port (`core.ports.Journal`) over each store, so that its steps mean the same in both:
write (taken), commit (in the store), close (committed, and let go).

| step   | a file (`outcomes.Journal`)                     | a run in PostgreSQL (`postgres.PgJournal`)       |
|--------|-------------------------------------------------|--------------------------------------------------|
| write  | write(2): in the file at once                   | buffered, committed by the next round            |
| commit | nothing to wait for                             | `settle`: every line taken is in the database    |
| keep   | fsync on a cadence; the path still names it     | claims renewed; the send's lock beats            |
| close  | fsync, the path kept, the lock let go           | `aclose`: commit, give back claims, disconnect   |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dispatcher.core.ports import Trouble
from dispatcher.core.state import JournalState
from dispatcher.errors import JournalWriteError
from dispatcher.journal.outcomes import Moved
from dispatcher.journal.store import JournalStore

# What a shared journal's close gets after a stop signal: a healthy database takes the last lines and
# claims in milliseconds; one that stopped answering must not hold the run past the 2 s promised.
STOPPED_CLOSE_S = 1.0


def moved_to_trouble(trouble: Trouble) -> Callable[[Moved], None]:
    return lambda moved: trouble(moved.message, moved.stop)


class FileLifecycle:
    """A journal in a file: a line written is in the file, so a commit has nothing to wait for."""

    __slots__ = ("_store",)
    marks_sent = True  # see Journal.marks_sent

    def __init__(self, store: JournalStore) -> None:
        self._store = store

    @property
    def state(self) -> JournalState:
        return self._store.state

    def write(self, doc: dict[str, Any]) -> None:
        self._store.write(doc)

    async def commit(self, wait: bool = True) -> bool:
        return True

    async def keep(self, trouble: Trouble) -> None:
        await self._store.sync_periodically(lambda exc: trouble(str(exc), True), moved_to_trouble(trouble))

    async def close(self, trouble: Trouble, *, unused: bool, at_once: bool) -> None:
        store = self._store
        if unused:  # stopped before a line: no empty journal stays
            store.remove_if_unused()
        try:
            moved: Moved | None = await store.keep_path()  # a deletion since the last round is restored
        except JournalWriteError as exc:
            trouble(str(exc), True)
        else:
            if moved is not None:
                trouble(moved.message, moved.stop)
        try:
            store.close()
        except JournalWriteError as exc:
            trouble(str(exc), True)
