"""The journal protocol: what a run needs from its journal, whichever store keeps it.

Two stores sit side by side: the file (`outcomes.Journal`, a JSONL file on this machine, unchanged)
and PostgreSQL (`postgres.PgJournal`, a run shared by workers on any machine). The engine writes
outcome lines through the journal port (`core.ports.Journal`, over each store: `journal.lifecycle`);
a store that is shared by several workers is a `SharedRun` too: it keeps the run's plan, hands out
claims on its batches (`run.sources.claims`), and confirms that a line is in the database (`settle`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dispatcher.core.batch import Batch
from dispatcher.core.job import Job
from dispatcher.core.state import JournalState
from dispatcher.journal.outcomes import Moved, iter_records, open_journal
from dispatcher.journal.uri import JournalURI

if TYPE_CHECKING:
    import asyncio

    from dispatcher.errors import JournalWriteError
    from dispatcher.journal.postgres import Claimed, PlanEntry, RunSnapshot, RunStatus, Unsent


class JournalStore(Protocol):
    """What the engine and the runner use of a journal (the file `Journal` is one as it is)."""

    state: JournalState
    lines: int

    def write(self, doc: dict[str, Any]) -> None: ...
    async def keep_path(self) -> Moved | None: ...
    def remove_if_unused(self) -> None: ...
    def close(self) -> None: ...
    async def sync_periodically(
        self, on_error: Callable[[JournalWriteError], None], on_moved: Callable[[Moved], None]
    ) -> None: ...


@runtime_checkable
class SharedRun(Protocol):
    """A journal that several workers share: the plan, the claims, the lines confirmed in the store."""

    uri: JournalURI
    planned: asyncio.Event  # set when this process stored more of the plan: a feeder waiting may claim at once
    incomplete: bool  # set by `feed` when it stopped on a plan that no live `send` will complete

    def planned_hash(self, job_id: str) -> str | None: ...
    async def plan(self, job: Job, batches: Iterable[Batch]) -> None: ...
    async def plan_flush(self) -> None: ...
    async def withdraw(self, job_id: str) -> None: ...
    async def plan_complete(self) -> None: ...
    async def claim(self, count: int) -> list[Claimed]: ...
    async def status(self) -> RunStatus: ...
    def reopened(self, job_id: str, batch: int) -> bool: ...
    def holds(self, job_id: str, batch: int, seconds: float = 0.0) -> bool: ...
    async def confirm(self, job_id: str, batch: int) -> bool: ...
    def refused(self, job_id: str, batch: int) -> bool: ...
    async def release(self, job_id: str, batch: int) -> None: ...
    async def settle(self) -> None: ...
    async def aclose(self, seconds: float = ...) -> None: ...


def shared_of(journal: object) -> SharedRun | None:
    return journal if isinstance(journal, SharedRun) else None


async def open_store(
    out: os.PathLike[str] | JournalURI, *, resume: bool, retry_failed: bool = False, **run: Any
) -> JournalStore:
    """Open a run's journal: the file at a path (`outcomes.open_journal`), or the run in PostgreSQL
    that a URI names, as its `send` (`run` carries what the PostgreSQL run records: rate, store...)."""
    if isinstance(out, JournalURI):
        from dispatcher.journal import postgres

        return await postgres.open_send(out, resume=resume, retry_failed=retry_failed, **run)
    return open_journal(out, resume=resume)


Source = str | os.PathLike[str] | JournalURI


@contextlib.contextmanager
def reading(sources: Iterable[Source]) -> Iterator[list[str | os.PathLike[str] | RunSnapshot]]:
    """The journals a report reads, each as one moment saw it: a run in PostgreSQL through one
    transaction (its workers commit meanwhile), a file as it is (it only grows)."""
    with contextlib.ExitStack() as stack:
        opened: list[str | os.PathLike[str] | RunSnapshot] = []
        for source in sources:
            if isinstance(source, JournalURI):
                from dispatcher.journal import postgres

                opened.append(stack.enter_context(postgres.snapshot(source)))
            else:
                opened.append(source)
        yield opened


def records_of(source: str | os.PathLike[str] | RunSnapshot) -> Iterator[dict[str, Any]]:
    """Every outcome line of a journal, in order: a file's, or every worker's of a run in PostgreSQL."""
    if isinstance(source, (str, os.PathLike)):
        return iter_records(source)
    return source.records()


def plan_of(source: str | os.PathLike[str] | RunSnapshot) -> Iterator[PlanEntry]:
    """The jobs of a run's plan (PostgreSQL keeps one; a file journal holds only its lines: none)."""
    if isinstance(source, (str, os.PathLike)):
        return iter(())
    return source.plan()


def unsent_of(source: str | os.PathLike[str] | RunSnapshot) -> Iterator[Unsent]:
    """The planned batches of a run that no worker has sent yet (none for a file journal)."""
    if isinstance(source, (str, os.PathLike)):
        return iter(())
    return source.unsent()
