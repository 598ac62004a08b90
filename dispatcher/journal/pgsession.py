"""What every piece of a run in PostgreSQL shares: its connections (one per concern, each with the
bounds of `dispatcher.pg.connect`), one line for every database error with the password never in
it, and the run's one fault: the first database lost stops the run, resumably.

psycopg is imported only here, and only when a PostgreSQL journal is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from dispatcher.errors import ConfigError, JournalError, JournalWriteError
from dispatcher.journal.uri import JournalURI
from dispatcher.pg import migrate
from dispatcher.pg.connect import STATEMENT_S, bounded, connect
from dispatcher.version import DISTRIBUTION

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
MISSING_EXTRA = f"{{uri}}: a PostgreSQL journal needs the postgres extra: pip install '{DISTRIBUTION}[postgres]'"
COMPONENT = "journal"  # its row in dispatcher.meta


class NoAnswer(Exception):
    """The database did not answer a statement within its bound."""


def psycopg_of(uri: JournalURI) -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(MISSING_EXTRA.format(uri=uri.shown)) from None
    return psycopg


def check_available(uri: JournalURI) -> None:
    """Refuse at once, before anything is read or sent, a PostgreSQL journal without the postgres extra."""
    psycopg_of(uri)


def scrub(uri: JournalURI, exc: BaseException) -> str:
    """libpq's message, first line only, the password never in it."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if uri.password:
        text = text.replace(uri.password, "***")
    return text


async def within(work: Awaitable[T], seconds: float = STATEMENT_S) -> T:
    try:
        return await bounded(work, seconds)
    except TimeoutError:
        raise NoAnswer(f"no answer within {seconds:g} s") from None


async def connect_to(uri: JournalURI, statement_s: float = STATEMENT_S) -> psycopg.AsyncConnection[Any]:
    driver = psycopg_of(uri)
    try:
        conn: psycopg.AsyncConnection[Any] = await within(connect(uri.conninfo, statement_s=statement_s))
    except (driver.Error, NoAnswer) as exc:
        raise JournalError(f"{uri.shown}: cannot reach the database: {scrub(uri, exc)}") from None
    return conn


async def close(*conns: psycopg.AsyncConnection[Any] | None) -> None:
    for conn in conns:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def newer(uri: JournalURI, version: int) -> str:
    return (
        f"{uri.shown}: its tables are of a newer version ({version}) than this dispatcher knows "
        f"({migrate.LATEST[COMPONENT]}); upgrade dispatcher"
    )


async def ensure_schema(uri: JournalURI, conn: psycopg.AsyncConnection[Any]) -> None:
    """Make the journal's tables on first use, migrate older ones (and the budget's beside them) in
    place, refuse newer ones."""
    try:
        await migrate.migrate(conn, COMPONENT)
    except migrate.Newer as found:
        raise JournalError(newer(uri, found.found)) from None


async def opened(uri: JournalURI, conns: Iterable[Any], work: Awaitable[T]) -> T:
    """Run a step of the opening; a database error is one line naming the journal, and the
    connections opened so far are closed."""
    driver = psycopg_of(uri)
    try:
        return await within(work)
    except (driver.Error, NoAnswer) as exc:
        await close(*conns)
        raise JournalError(f"{uri.shown}: {scrub(uri, exc)}") from None
    except BaseException:
        await close(*conns)
        raise


class Faults:
    """The run's one fault, shared by its pieces (outcomes, claims, plan, heartbeat): the first
    database lost is the run's error, told once through `on_error` (the engine then halts)."""

    def __init__(self, uri: JournalURI) -> None:
        self.uri = uri
        self.error: JournalWriteError | None = None
        self.on_error: Callable[[JournalWriteError], None] = lambda exc: None
        self.kinds: tuple[type[BaseException], ...] = (psycopg_of(uri).Error, NoAnswer)

    def lost(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = JournalWriteError(
                f"{self.uri.shown}: the database was lost ({scrub(self.uri, exc)}); no new request starts. Once it "
                f"is back, `dispatcher work {self.uri.shown}` or `send --resume` finishes the run"
            )
            self.on_error(self.error)
