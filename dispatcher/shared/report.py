"""What the report reads of a run in PostgreSQL: every read in one transaction, on a blocking
connection whose every call is bounded (`InThread`). It reads a journal of any version it knows as
it is, and migrates nothing."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, LiteralString

import orjson

from dispatcher.errors import JournalError
from dispatcher.journal.pgsession import COMPONENT, newer, psycopg_of, scrub
from dispatcher.journal.uri import JournalURI
from dispatcher.pg import migrate, queries
from dispatcher.pg.connect import InThread, connect_sync

_Q = queries.load("report")
_FETCH = 500  # rows a report's read takes at once


@dataclasses.dataclass(frozen=True)
class PlanEntry:
    """A job of a run's plan as the report reads it: how many batches, what its export held."""

    job_id: str
    job_hash: str
    api: str
    group_id: str | None
    batches: int
    export: dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Unsent:
    """A planned batch that no worker has sent yet (the report lists its recipients as pending)."""

    job_id: str
    job_hash: str
    batch: int
    group_id: str | None
    recipients: list[str] | None


@contextlib.contextmanager
def snapshot(uri: JournalURI) -> Iterator[RunSnapshot]:
    """The run of `uri` as one moment saw it, for a report; refused for a journal with no run, or with
    tables newer than this dispatcher knows (it could not vouch for what it read). Every call on its
    connection is bounded (`InThread`): a database that stops answering is one line, exit 2."""
    psycopg = psycopg_of(uri)
    call = InThread()
    conn: Any = None
    try:
        try:
            conn = call(lambda: connect_sync(uri.conninfo))
        except (psycopg.Error, TimeoutError) as exc:
            shown = f"no answer within {call.seconds:g} s" if isinstance(exc, TimeoutError) else scrub(uri, exc)
            raise JournalError(f"{uri.shown}: cannot reach the database: {shown}") from None
        call(lambda: _begin(uri, conn))
        yield RunSnapshot(uri, conn, call)
    except psycopg.Error as exc:
        raise JournalError(f"{uri.shown}: {scrub(uri, exc)}") from None
    except TimeoutError:
        raise JournalError(f"{uri.shown}: no answer within {call.seconds:g} s") from None
    finally:
        if conn is not None and not call.over:
            with contextlib.suppress(Exception):
                call(conn.close)  # read only: nothing to commit
        call.stop()


def _begin(uri: JournalURI, conn: Any) -> None:
    # One transaction for every read: workers commit meanwhile, and reads of different moments
    # would disagree (a line committed between the two passes moves the others).
    conn.isolation_level = psycopg_of(uri).IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    row: Any = conn.execute(_Q["has_runs"]).fetchone()
    found = bool(row and row[0])
    if found:
        row = conn.execute(_Q["version"]).fetchone()
        if row is not None and int(row[0]) > migrate.LATEST[COMPONENT]:
            raise JournalError(newer(uri, int(row[0])))
        found = conn.execute(_Q["exists"], (uri.name,)).fetchone() is not None
    if not found:
        raise JournalError(f"{uri.shown}: no run in this journal")


class RunSnapshot:
    """A run in PostgreSQL as the report reads it: every read in one transaction (`snapshot`)."""

    def __init__(self, uri: JournalURI, conn: Any, call: InThread) -> None:
        self.uri = uri
        self._conn = conn
        self._call = call

    def _rows(self, name: str, query: LiteralString, args: tuple[Any, ...]) -> Iterator[Any]:
        """The rows of a query, a few hundred at a time (a named cursor), each fetch bounded."""
        named = self._conn.cursor(name=name)
        try:
            self._call(lambda: named.execute(query, args))
            while rows := self._call(lambda: named.fetchmany(_FETCH)):
                yield from rows
        finally:
            if not self._call.over:
                with contextlib.suppress(Exception):
                    self._call(named.close)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every outcome line of the run, every worker's, in the order they were committed."""
        for (doc,) in self._rows("dispatcher_report", _Q["records"], (self.uri.name,)):
            yield orjson.loads(doc)

    def plan(self) -> Iterator[PlanEntry]:
        """Every job of the run's plan, with its number of batches and what its export held."""
        has_export = self._call(lambda: self._conn.execute(_Q["has_column"], ("journal_jobs", "export")).fetchone())
        query = _Q["plan"] if has_export is not None else _Q["plan_v1"]
        for job_id, job_hash, api, group_id, stats, batches in self._rows("dispatcher_plan", query, (self.uri.name,)):
            shown = None if stats is None else orjson.loads(stats)
            yield PlanEntry(job_id, job_hash, api, group_id, int(batches), shown)

    def unsent(self) -> Iterator[Unsent]:
        """The planned batches that no worker has sent yet (no line, not withdrawn), in plan order."""
        for job_id, job_hash, batch, group_id, recipients in self._rows(
            "dispatcher_unsent", _Q["unsent"], (self.uri.name,)
        ):
            ids = None if recipients is None else list(orjson.loads(recipients))
            yield Unsent(job_id, job_hash, int(batch), group_id, ids)
