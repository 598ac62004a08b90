"""A query as the audience: `recipients_query` run on `recipients_database` (and `exclude_query` on
`exclude_database`, else on the same database), read as one more origin of an export's rows
(`sources.ORIGINS`).

The query is run through ADBC, which hands Arrow batches straight from the driver: they are checked
with the rules of a UserID a batch at a time (`tables`) and go on into the export's spool and
deduplication like a file's rows, in bounded memory. The URI's scheme names the driver (`DRIVERS`):
PostgreSQL's, Snowflake's, BigQuery's and Flight SQL's are one code path, each once its package is
installed. Passwords come from the URI, PGPASSWORD, ~/.pgpass or the driver's own ways; only the URI's
shown form (`uris`) is ever printed.

The query runs once per run. Its rows, checked, are kept as the run's copy (`files.Kept`): in a
directory beside a file journal, or in a table of a PostgreSQL journal's database, which every
worker of that run reaches. A resume reads that copy and never runs the query again, so it sends to
the same audience even if the table changed meanwhile. A copy is complete or absent: it is written
aside and put in place (committed) only once the query was read to its end.

A query that fails, lacks the column, or returns no rows is one line naming the field, exit 2
(`ExportError`): an empty result never means all members, and an empty exclude_query is as likely
a mistake as an empty recipients_query.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, LiteralString

import orjson

from dispatcher import uris
from dispatcher.errors import quoted
from dispatcher.jobs.behind import Behind
from dispatcher.jobs.files import EXCLUDE_QUERY, RECIPIENTS_QUERY, Kept, Side, Source, Stopped
from dispatcher.tim.apis.base import Reject, string

if TYPE_CHECKING:
    from dispatcher.jobs.dedup import Clean

# numpy (dedup, tables) and the drivers are imported where they are used: `sources` registers this
# origin for every job read, and a job that names no query needs none of them.

NAME = "query"  # the origin's name in sources.ORIGINS, and the format its Source carries
EXTRA = "pip install 'tim-dispatcher[query]'"


# The scheme of a database URI to its ADBC driver: the Python package, whether the driver is given the URI
# whole or without its `scheme://` (Snowflake's takes `user@account/db`, no scheme), and the statement
# options it is given.
@dataclasses.dataclass(frozen=True)
class Driver:
    package: str
    whole: bool = True
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)


# PostgreSQL's driver hands batches of 16 MB by default: a million rows of 12-byte IDs. At 2 MB the
# first is checked sooner, and the batches read ahead hold 30 MB less (a 10M-row read: 154 MB, not 187).
_POSTGRESQL = Driver("adbc_driver_postgresql", options={"adbc.postgresql.batch_size_hint_bytes": str(2 << 20)})
_FLIGHT_SQL = Driver("adbc_driver_flightsql")
DRIVERS: Mapping[str, Driver] = {
    "postgresql": _POSTGRESQL,
    "postgres": _POSTGRESQL,
    "snowflake": Driver("adbc_driver_snowflake", whole=False),
    "bigquery": Driver("adbc_driver_bigquery"),
    "grpc": _FLIGHT_SQL,
    "grpc+tls": _FLIGHT_SQL,
    "grpc+tcp": _FLIGHT_SQL,
}
DATABASE = {RECIPIENTS_QUERY: "recipients_database", EXCLUDE_QUERY: "exclude_database"}
_COPY_SUFFIX = ".ids.zst"
_PART = 4 << 20  # bytes of a copy a row of the table holds, and read back at a time


class QueryError(Exception):
    """The query cannot give the audience (exit 2): raised with its one line, turned into ExportError."""


@dataclasses.dataclass(frozen=True)
class Query:
    """The origin of rows that is a query: its fields, its Side, its Source and its reading."""

    name: str = NAME

    def side(self, doc: Mapping[str, object], field: str, kept: Kept | None) -> Side:
        """The job's query of `field` with its database, checked (Reject naming the field)."""
        text = string(doc, field)
        assert text is not None
        recipients = field == RECIPIENTS_QUERY
        other, format_field = (
            ("recipients_file", "recipients_format") if recipients else ("exclude_file", "exclude_format")
        )
        if other in doc:
            raise Reject(field, f"cannot be given together with {other}")
        if format_field in doc:
            raise Reject(
                format_field,
                f"applies to {'a recipients_file' if recipients else 'an exclude_file'}; a query's result has none",
            )
        if not text.strip():
            raise Reject(field, "is empty; give the SQL that returns the UserIDs")
        database_field = DATABASE[field]
        database = string(doc, database_field)
        if database is None and not recipients:
            database_field = DATABASE[RECIPIENTS_QUERY]
            database = string(doc, database_field)
        if database is None:
            raise Reject(field, f"needs {DATABASE[field]}, the URI of the database it runs on")
        uri = uris.split(database)
        if uri.scheme not in DRIVERS:
            raise Reject(
                database_field,
                f"{quoted(shown(database), bare=True)}: the scheme names the ADBC driver; known: "
                f"{', '.join(f'{scheme}://' for scheme in DRIVERS)}",
            )
        column = string(doc, "recipients_column" if recipients else "exclude_column")
        return Side(field, text, column, None, database=database, kept=kept)

    def check(self, doc: Mapping[str, object], recipients: Side | None, exclude: Side | None) -> None:
        """A database no query of the job runs on is a mistake: Reject naming it."""
        if "exclude_database" in doc and not _query(exclude):
            raise Reject("exclude_database", "applies to an exclude_query; the job has none")
        if "recipients_database" in doc and not (_query(recipients) or _query(exclude)):
            raise Reject("recipients_database", "applies to a recipients_query or an exclude_query; the job has none")

    def sources(self, side: Side) -> list[Source]:
        """The one Source of a query: named by its database's shown URI (hashed, recorded, shown)."""
        assert side.database is not None
        return [Source(Path(), shown(side.database), NAME, None, True)]

    def read(
        self, source: Source, side: Side, stop: threading.Event | None, on_column: Callable[[str], None]
    ) -> Iterator[Clean]:
        """The query's rows as clean blocks: from the run's copy when it has one, else from the database
        (kept as the run's copy as they are read, unless the copies are only read: a report's).
        Raises ExportError, Reject (a bad UserID), Stopped."""
        from dispatcher.jobs.inputs import ExportError

        key = copy_key(side)
        try:
            kept = _copy_of(side.kept, key)
            if kept is not None:
                yield from _until_stopped(_headed(kept, on_column), stop)
                return
            with contextlib.ExitStack() as stack:
                write = None
                if side.kept is not None and not side.kept.read_only:
                    write = stack.enter_context(_copies(side.kept).write(key))

                def told(name: str) -> None:  # the copy's first line: the column read, as JSON (one line)
                    if write is not None:
                        write(orjson.dumps(name) + b"\n")
                    on_column(name)

                rows = 0
                for block in _rows(side, stop, told):
                    if write is not None:
                        write(block.data)
                    rows += block.rows
                    yield block
                if not rows:
                    raise QueryError(
                        f"{side.label} on {source.name} returned no rows; an empty result never means all members"
                    )
                if write is not None:
                    write(b"")  # the end: the copy is committed as the context closes
        except QueryError as exc:
            raise ExportError(str(exc)) from None


QUERY = Query()


def _query(side: Side | None) -> bool:
    return side is not None and side.database is not None


def shown(database: str) -> str:
    """A database URI as it is ever shown: no password, no user name, no query parameters."""
    return uris.split(database).shown()


def copy_key(side: Side) -> str:
    """What names a query's copy: its text, database (as shown) and column, so that a changed query
    never reads an old copy."""
    assert side.database is not None
    doc = f"{side.field}\0{shown(side.database)}\0{side.column or ''}\0{side.name}".encode()
    return hashlib.blake2b(doc, digest_size=16).hexdigest()


def _headed(chunks: Iterator[bytes], on_column: Callable[[str], None]) -> Iterator[Clean]:
    """The clean blocks of a copy read back (`chunks` of it as written), cut at newlines; its first line
    (the column read, as JSON) is told to `on_column`."""
    from dispatcher.jobs.dedup import clean_of

    carry = b""
    head = True
    for chunk in chunks:
        data = carry + chunk
        if head:
            if b"\n" not in data:
                carry = data
                continue
            line, _, data = data.partition(b"\n")
            on_column(orjson.loads(line))
            head = False
        cut = data.rfind(b"\n") + 1
        data, carry = data[:cut], data[cut:]
        if data:
            yield clean_of(data)
    if carry or head:  # a copy is committed whole, each line ended: this one is damaged
        raise QueryError("the query's copy kept by the run is damaged; start a new run (another --out)")


def _until_stopped(blocks: Iterator[Clean], stop: threading.Event | None) -> Iterator[Clean]:
    for block in blocks:
        if stop is not None and stop.is_set():
            raise Stopped
        yield block


# -- the database ------------------------------------------------------------------------------------


def _driver(side: Side) -> tuple[Any, str, str, Driver]:
    """The driver manager, the driver's library, the URI it is given, and the driver."""
    assert side.database is not None
    uri = uris.split(side.database)
    known = DRIVERS[uri.scheme]
    package, whole = known.package, known.whole
    try:
        # The manager's own handles, not its DB-API module, which imports pyarrow.dataset: 0.1-0.25 s
        # before the query could start.
        manager = importlib.import_module("adbc_driver_manager")
        importlib.import_module("pyarrow")
    except ImportError:
        raise QueryError(f"{side.label} needs ADBC and pyarrow, the query extra: {EXTRA}") from None
    try:
        driver = importlib.import_module(package)
    except ImportError:
        name = package.replace("_", "-")
        raise QueryError(
            f"{side.label} on {uri.scheme}:// needs its ADBC driver: pip install {name} "
            f"(PostgreSQL's comes with the query extra: {EXTRA})"
        ) from None
    given = side.database if whole else side.database.split("://", 1)[1]
    return manager, str(driver._driver_path()), given, known


def _rows(side: Side, stop: threading.Event | None, on_column: Callable[[str], None]) -> Iterator[Clean]:
    """Run the query and read its column a slice at a time, checked as a table's column is."""
    from dispatcher.jobs import tables

    assert side.database is not None
    manager, driver, given, known = _driver(side)
    where = shown(side.database)
    source = Source(Path(), where, NAME, None, True)
    uri = uris.split(side.database)
    # libpq quotes a malformed password as written (its valid %-escapes not decoded): cut out both forms.
    written = [uri.userinfo.partition(":")[2]] if uri.at else []
    written += [p.partition("=")[2] for p in uri.query.split("&") if p.partition("=")[0] == "password"]
    secrets = sorted({s for s in (uri.secret(), side.database, *written) if s}, key=len, reverse=True)
    fetch = _Fetch(manager, driver, given, known.options, side.name, f"{side.label} on {where}", secrets)
    try:
        names = fetch.schema(stop)
        try:
            name = tables.column(source, side, names)
        except Reject as exc:
            raise QueryError(f"{side.label} on {where}: {_reason(exc, source)}") from None
        at = names.index(name)
        values = (piece for batch in fetch.batches(stop) for piece in _sliced(batch.column(at)))
        yield from tables.read_column(source, side, stop, on_column, tables.Column(name, values))
    finally:
        fetch.close()


_SLICE_ROWS = 1 << 16  # rows checked at once: a driver's batch of a million rows would hold 150 MB more
_AHEAD = 2  # batches the driver reads ahead while the last is checked
_POLL = 0.1  # seconds between looks at `stop` while a batch is awaited


def _sliced(values: Any) -> Iterator[Any]:
    for at in range(0, len(values), _SLICE_ROWS):
        yield values.slice(at, _SLICE_ROWS)


class _Fetch:
    """The query run in a thread of its own, its batches handed over through a bounded queue.

    The database then produces the next batches while the last is checked, on the other core: read in
    turn, the server waited on the check and the check on the server. The thread owns the connection
    and closes it itself, so that a run stopped while the database is slow to answer is not held by it."""

    def __init__(
        self, manager: Any, driver: str, given: str, options: Mapping[str, str], sql: str, what: str, secrets: list[str]
    ) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_AHEAD)
        self._done = threading.Event()
        self._what = what
        args = (manager, driver, given, options, sql, secrets)
        threading.Thread(target=self._run, args=args, name="dispatcher-query", daemon=True).start()

    def _run(
        self, manager: Any, driver: str, given: str, options: Mapping[str, str], sql: str, secrets: list[str]
    ) -> None:
        import pyarrow as pa

        reading = False
        try:
            with contextlib.ExitStack() as handles:  # closed in turn: the reader, statement, connection, database
                database = manager.AdbcDatabase(driver=driver, uri=given)
                handles.callback(database.close)
                conn = manager.AdbcConnection(database)
                handles.callback(conn.close)
                # In a transaction never committed, as the DB-API module ran it: a query that changes rows
                # (DELETE ... RETURNING) reads its audience and leaves them as they were.
                with contextlib.suppress(manager.NotSupportedError):
                    conn.set_autocommit(False)
                statement = manager.AdbcStatement(conn)
                handles.callback(statement.close)
                if options:
                    statement.set_options(**options)
                statement.set_sql_query(sql)
                stream, _rows = statement.execute_query()
                reader = pa.RecordBatchReader._import_from_c(stream.address)
                handles.callback(reader.close)
                reading = self._put(("schema", list(reader.schema.names)))
                for batch in reader:
                    if not self._put(("batch", batch)):
                        return
                self._put(("end", None))
        except (manager.Error, pa.ArrowException, OSError) as exc:
            during = " while it was read" if reading else ""  # the connection lost mid-read, say
            self._put(("error", QueryError(f"{self._what} failed{during}: {_said(exc, secrets)}")))
        except BaseException as exc:  # handed over: the reading thread raises it
            self._put(("error", exc))

    def _put(self, item: tuple[str, Any]) -> bool:
        """Hand `item` over, unless the reading was given up (False)."""
        while not self._done.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, stop: threading.Event | None) -> tuple[str, Any]:
        while True:
            if stop is not None and stop.is_set():
                raise Stopped
            try:
                kind, value = self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
            if kind == "error":
                raise value
            return kind, value

    def schema(self, stop: threading.Event | None) -> list[str]:
        kind, names = self._get(stop)
        assert kind == "schema"
        return list(names)

    def batches(self, stop: threading.Event | None) -> Iterator[Any]:
        while True:
            kind, batch = self._get(stop)
            if kind == "end":
                return
            yield batch

    def close(self) -> None:
        """Give the reading up: the thread ends after the call it is in, and closes the connection."""
        self._done.set()


def _reason(exc: Reject, source: Source) -> str:
    """A column's refusal, as said of the query's result rather than of a file."""
    return exc.reason.replace(f"{source.label} has", "its result has").replace("is required: ", "")


def _said(exc: BaseException, secrets: list[str]) -> str:
    """The driver's first line about what failed, with anything secret cut out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, uris.REDACTED)
    return text


# -- the run's copies ----------------------------------------------------------------------------------


class _Copies:
    """Where a run keeps its queries' rows: `read` the copy of a key (None: there is none), `write` one."""

    def read(self, key: str) -> Iterator[bytes] | None:
        raise NotImplementedError

    def write(self, key: str) -> contextlib.AbstractContextManager[Callable[[bytes], None]]:
        raise NotImplementedError


def _copies(kept: Kept) -> _Copies:
    reuse = kept.reuse or kept.read_only  # a report reads the copies of the run it reports on
    if kept.directory is not None:
        return _Directory(kept.directory, reuse)
    assert kept.conninfo is not None and kept.journal is not None
    return _Table(kept.conninfo, kept.journal, reuse)


def _copy_of(kept: Kept | None, key: str) -> Iterator[bytes] | None:
    """The copy of `key` kept in `kept`'s place, else (a report's) in those of `kept.also`, in turn;
    None when there is none, or nowhere to look (a dry run)."""
    for place in (kept, *kept.also) if kept is not None else ():
        found = _copies(place).read(key)
        if found is not None:
            return found
    return None


def begin(kept: Kept) -> None:
    """A new run starts with no copies: those of an earlier run kept under the same journal are removed,
    so that a resume only ever reads the copies of the run it resumes. Raises ExportError (exit 2)."""
    from dispatcher.jobs.inputs import ExportError

    if kept.reuse or kept.read_only:  # a resume's copies are its own; a report's are the run's, only read
        return
    try:
        if kept.directory is not None:
            with contextlib.suppress(FileNotFoundError):
                for entry in kept.directory.iterdir():
                    if entry.name.endswith((_COPY_SUFFIX, ".part")):
                        entry.unlink(missing_ok=True)
            return
        assert kept.conninfo is not None and kept.journal is not None
        _Table(kept.conninfo, kept.journal, False).clear()
    except OSError as exc:
        raise ExportError(
            f"cannot remove the queries' copies of an earlier run in {kept.directory}: {exc.strerror}"
        ) from None
    except QueryError as exc:
        raise ExportError(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class _Directory(_Copies):
    """Copies in files beside a file journal (`<journal>.queries/<key>.ids.zst`): the journal's directory
    is the one place a resume is sure to find again, and the copy goes wherever the journal is moved."""

    directory: Path
    reuse: bool

    def _cannot_keep(self, exc: OSError) -> QueryError:
        return QueryError(f"cannot keep the query's copy in {self.directory}: {exc.strerror}")

    def read(self, key: str) -> Iterator[bytes] | None:
        path = self.directory / f"{key}{_COPY_SUFFIX}"
        if not (self.reuse and path.exists()):
            return None
        return _decompressed(path)

    @contextlib.contextmanager
    def write(self, key: str) -> Iterator[Callable[[bytes], None]]:
        import pyarrow as pa

        final = self.directory / f"{key}{_COPY_SUFFIX}"
        part = final.with_suffix(".part")
        try:
            self.directory.mkdir(exist_ok=True)
            stream = pa.output_stream(str(part), compression="zstd")
        except OSError as exc:
            raise self._cannot_keep(exc) from None
        done = False

        def put(data: bytes) -> None:
            try:
                stream.write(data)
            except OSError as exc:
                raise self._cannot_keep(exc) from None

        def close() -> None:  # the compressed tail is written here: a full disk may first be found here
            try:
                stream.close()
            except OSError as exc:
                raise self._cannot_keep(exc) from None

        def write(data: bytes) -> None:
            nonlocal done
            if not data:
                behind.wait()
                done = True
                return
            behind.call(put, data)

        try:
            with Behind("dispatcher-copy") as behind:  # compressed beside the reading, on a thread of its own
                yield write
            close()
            if done:
                _durable(part)
                os.replace(part, final)
                _durable(self.directory)
        finally:
            if not stream.closed:
                with contextlib.suppress(OSError):  # already failed: what is raised says why
                    stream.close()
            part.unlink(missing_ok=True)


def _decompressed(path: Path) -> Iterator[bytes]:
    import pyarrow as pa

    with pa.input_stream(str(path), compression="zstd") as stream:
        while chunk := stream.read(_PART):
            yield chunk


def _durable(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class _Table(_Copies):
    """Copies in a table of a PostgreSQL journal's database, a part of a few MB a row: the workers of a
    run on other machines share no directory, but every one of them reaches the journal's database,
    and a resume from any machine finds the copy there. Written in one transaction: all or nothing."""

    conninfo: str = dataclasses.field(repr=False)
    journal: str
    reuse: bool

    def _cannot_keep(self, exc: BaseException) -> QueryError:
        return QueryError(f"cannot keep the query's copy in journal {self.journal}: {_first(exc)}")

    def _connect(self, make: bool) -> Any:
        """A connection to the journal's database; `make`: the table made first, if it is not yet (for
        a copy written: a reading never makes it, so that a report leaves the database as it found it)."""
        from dispatcher.pg.connect import connect_sync

        conn = connect_sync(self.conninfo, statement_s=60.0)
        if make:
            with conn.cursor() as cursor:
                cursor.execute(_sql()["make"])
            conn.commit()
        return conn

    def clear(self) -> None:
        """Remove the copies kept under this journal's name, if the table was ever made (a run that names
        no query makes none)."""
        import psycopg

        from dispatcher.pg.connect import connect_sync

        try:
            with contextlib.closing(connect_sync(self.conninfo)) as conn:
                made = conn.execute(_sql()["made"]).fetchone()
                if made and made[0] is not None:
                    conn.execute(_sql()["clear"], (self.journal,))
                conn.commit()
        except psycopg.Error as exc:
            raise QueryError(f"cannot clear the queries' copies of journal {self.journal}: {_first(exc)}") from None

    def read(self, key: str) -> Iterator[bytes] | None:
        import psycopg

        if not self.reuse:
            return None
        conn = None
        try:
            conn = self._connect(make=False)
            made = conn.execute(_sql()["made"]).fetchone()
            found = conn.execute(_sql()["count"], (self.journal, key)).fetchone() if made and made[0] else None
        except psycopg.Error as exc:
            if conn is not None:  # no one's once the reading gives up
                conn.close()
            raise QueryError(f"cannot read the query's copy in journal {self.journal}: {_first(exc)}") from None
        if not found or not found[0]:
            conn.close()
            return None
        return self._parts(conn, key)

    def _parts(self, conn: Any, key: str) -> Iterator[bytes]:
        import psycopg

        try:
            with conn, conn.cursor(name="copy") as cursor:
                cursor.itersize = 1
                cursor.execute(_sql()["parts"], (self.journal, key))
                for (data,) in cursor:
                    yield bytes(data)
        except psycopg.Error as exc:
            raise QueryError(f"cannot read the query's copy in journal {self.journal}: {_first(exc)}") from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def write(self, key: str) -> Iterator[Callable[[bytes], None]]:
        import psycopg

        try:
            conn = self._connect(make=True)
            conn.execute(_sql()["drop"], (self.journal, key))
        except psycopg.Error as exc:
            raise self._cannot_keep(exc) from None
        pending: list[bytes] = []
        size = 0
        part = 0
        done = False

        def flush() -> None:
            nonlocal pending, size, part
            if pending:
                conn.execute(_sql()["insert"], (self.journal, key, part, b"".join(pending)))
                part += 1
                pending, size = [], 0

        def write(data: bytes) -> None:
            nonlocal size, done
            if not data:
                done = True
                return
            pending.append(data)
            size += len(data)
            if size >= _PART:
                try:
                    flush()
                except psycopg.Error as exc:
                    raise self._cannot_keep(exc) from None

        try:
            yield write
            if done:
                try:
                    flush()
                    conn.commit()
                except psycopg.Error as exc:
                    raise self._cannot_keep(exc) from None
        finally:
            conn.close()  # uncommitted: rolled back


def _sql() -> dict[str, LiteralString]:
    """The queries of the copies' table (dispatcher/pg/sql/copies.sql)."""
    from dispatcher.pg import queries

    return queries.load("copies")


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
