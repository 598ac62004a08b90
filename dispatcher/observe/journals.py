"""The journals a report reads: files as they are, and runs in PostgreSQL each through one snapshot."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from dispatcher.journal.outcomes import iter_records
from dispatcher.journal.uri import JournalURI

if TYPE_CHECKING:
    from dispatcher.shared.report import PlanEntry, RunSnapshot, Unsent


Source = str | os.PathLike[str] | JournalURI


@contextlib.contextmanager
def reading(sources: Iterable[Source]) -> Iterator[list[str | os.PathLike[str] | RunSnapshot]]:
    """The journals a report reads, each as one moment saw it: a run in PostgreSQL through one
    transaction (its workers commit meanwhile), a file as it is (it only grows)."""
    with contextlib.ExitStack() as stack:
        opened: list[str | os.PathLike[str] | RunSnapshot] = []
        for source in sources:
            if isinstance(source, JournalURI):
                from dispatcher.shared.report import snapshot

                opened.append(stack.enter_context(snapshot(source)))
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
