"""The journal protocol: what a run needs from its journal, whichever store keeps it.

Two stores sit side by side: the file (`outcomes.Journal`, a JSONL file on this machine, unchanged)
and PostgreSQL (`postgres.PgJournal`, a run shared by workers on any machine). The engine writes
outcome lines through the journal port (`core.ports.Journal`, over each store: `journal.lifecycle`);
a store that is shared by several workers is a `SharedRun` too: it keeps the run's plan, hands out
claims on its batches (`run.sources.claims`), and confirms that a line is in the database (`settle`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from dispatcher.core.state import JournalState
from dispatcher.journal.outcomes import Moved

if TYPE_CHECKING:
    from dispatcher.errors import JournalWriteError


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
