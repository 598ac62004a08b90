"""The journal in PostgreSQL: the outcome rows of a run shared by its workers on any machine.

`journal_outcomes` holds one row per outcome line, the same line the file journal holds, in the
order the workers committed them. Around it, in `dispatcher.shared`, the rest of the run: its
plan, the claims on its batches, the send's lock and heartbeat, the report's reader. The tables
and queries are in `dispatcher/pg/sql` (outcomes.sql here), made and migrated by `dispatcher.pg.migrate`.

Invariants:
- A line about a batch is committed only while the batch is still claimed by this worker under the
  claim's number (the fencing token) and has no final line; otherwise the database refuses it, and
  the worker gives the batch up (`Fence.refuse`). So a worker that wakes after its lease ran out
  never records over, nor after, the worker that took the batch over.
- A worker's outcome line is in the database before anything else of that reply happens: the
  engine awaits `settle()` after recording a reply and before its next step.
- Commits have a connection of their own: no claim ever rides in the transaction of a commit.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from dispatcher.journal.pgsession import Faults, within
from dispatcher.pg import queries

if TYPE_CHECKING:
    import psycopg

_Q = queries.load("outcomes")

Key = tuple[str, int]  # (job_id, batch)


class Fence(Protocol):
    """The claims that fence this worker's lines: held by `dispatcher.shared.claims.Claims`."""

    def token(self, key: Key) -> int | None:
        """The number of this worker's claim on the batch, or None if it holds none."""
        ...

    def refuse(self, key: Key, doc: dict[str, Any]) -> None:
        """The database refused the worker's line about the batch: the claim is lost."""
        ...

    def finished(self, key: Key) -> None:
        """The batch's final line is committed: its claim ended with it."""
        ...


class _Line(NamedTuple):
    doc: dict[str, Any]
    batch: Key | None  # (job_id, batch) of a reply's line; None for a rejection
    token: int  # the claim under which the line was written


class Outcomes:
    """A worker's outcome lines: taken at once (`write`), committed in rounds, one statement a round,
    on the connection `commits`; `settle` waits until every line written so far is committed or refused."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], name: str, me: str, fence: Fence, faults: Faults) -> None:
        self.conn = conn
        self.lines = 0
        self._name = name
        self._me = me
        self._fence = fence
        self._faults = faults
        self._buffer: list[_Line] = []
        self._written = 0
        self._committed = 0
        self._flushing: asyncio.Task[None] | None = None

    def write(self, doc: dict[str, Any]) -> None:
        """Take one outcome line; it is committed with the next round (`settle` waits for it). A line
        about a batch whose claim this worker no longer holds is refused at once."""
        if self._faults.error is not None:
            raise self._faults.error
        self.lines += 1
        key = None if doc.get("batch") is None else (str(doc["job_id"]), int(doc["batch"]))
        token = 0
        if key is not None:
            held = self._fence.token(key)
            if held is None:
                self._fence.refuse(key, doc)
                return
            token = held
        self._buffer.append(_Line(doc, key, token))
        self._written += 1
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def settle(self) -> None:
        """Return once every line written so far is committed or refused (or the journal failed: then
        the run has been told through `on_error`, and stops)."""
        target = self._written
        while self._committed < target and self._faults.error is None:
            if self._flushing is None:
                self._flushing = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        try:
            while self._buffer and self._faults.error is None:
                lines, self._buffer = self._buffer, []
                try:
                    accepted, latest = await within(self._commit(lines))
                except self._faults.kinds as exc:
                    self._faults.lost(exc)
                    return
                for key, line in latest.items():
                    if key not in accepted:
                        self._fence.refuse(key, line.doc)
                    elif line.doc.get("final"):
                        self._fence.finished(key)
                self._committed += len(lines)
        finally:
            self._flushing = None

    async def _commit(self, lines: list[_Line]) -> tuple[set[Key], dict[Key, _Line]]:
        """One statement: the batches' latest lines where this worker still holds their claims
        (fenced by the claim's number), and every line the database took, in order. The batches it
        took. Not a transaction of several statements: the database ends the session of a worker
        stopped between two of them (it would hold the batches' rows), and the run with it."""
        texts = [orjson.dumps(line.doc).decode() for line in lines]
        latest: dict[Key, _Line] = {}
        text_of: dict[Key, str] = {}
        for line, text in zip(lines, texts, strict=True):
            if line.batch is not None:
                latest[line.batch] = line
                text_of[line.batch] = text
        keys = list(latest)
        cur = await self.conn.execute(
            _Q["commit"],
            {
                "job": [k[0] for k in keys],
                "batch": [k[1] for k in keys],
                "claim": [latest[k].token for k in keys],
                "final": [bool(latest[k].doc.get("final")) for k in keys],
                "status": [str(latest[k].doc["status"]) for k in keys],
                "doc": [text_of[k] for k in keys],
                "lines": texts,
                "line_job": [None if line.batch is None else line.batch[0] for line in lines],
                "line_batch": [None if line.batch is None else line.batch[1] for line in lines],
                "j": self._name,
                "me": self._me,
            },
        )
        accepted = {(job_id, batch) for job_id, batch in await cur.fetchall()}
        return accepted, latest
