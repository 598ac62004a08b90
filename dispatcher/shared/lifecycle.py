"""The journal port (`core.ports.Journal`) over a run in PostgreSQL: lines are buffered and committed
in rounds, the claims renewed and the send's lock beaten while the run lives."""

from __future__ import annotations

from typing import Any, Protocol

from dispatcher.core.ports import Trouble
from dispatcher.core.state import JournalState
from dispatcher.journal.lifecycle import STOPPED_CLOSE_S, moved_to_trouble
from dispatcher.journal.store import JournalStore
from dispatcher.shared.run import SharedRun


class _Shared(JournalStore, SharedRun, Protocol):
    pass


class SharedLifecycle:
    """A run's journal in PostgreSQL: lines are buffered and committed in rounds; `commit` waits for
    the round that holds every line taken so far (`settle`)."""

    __slots__ = ("_store",)
    marks_sent = False  # see Journal.marks_sent

    def __init__(self, store: _Shared) -> None:
        self._store = store

    @property
    def state(self) -> JournalState:
        return self._store.state

    def write(self, doc: dict[str, Any]) -> None:
        self._store.write(doc)

    async def commit(self, wait: bool = True) -> bool:
        if not wait:  # a stopping run: the close commits, within its bound
            return False
        await self._store.settle()
        return True

    async def keep(self, trouble: Trouble) -> None:
        await self._store.sync_periodically(lambda exc: trouble(str(exc), True), moved_to_trouble(trouble))

    async def close(self, trouble: Trouble, *, unused: bool, at_once: bool) -> None:
        # Failures here are the database lost: `aclose` logs them and leaves its claims to run out.
        if at_once:  # a stop signal ends the run at once: a database gone quiet is not waited for
            await self._store.aclose(STOPPED_CLOSE_S)
        else:
            await self._store.aclose()
