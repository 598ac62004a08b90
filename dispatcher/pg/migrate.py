"""The schema `dispatcher`, made and migrated in place: the journal's and the budget's objects
together, under one advisory lock, in one transaction.

`dispatcher.meta` keeps one row a component (`journal`, `budget`) with the version of its objects, as
every earlier version kept it. A component that a database lacks is made from `sql/schema.sql` at
the latest version; one of an earlier version is brought there by `sql/migrations/`, step by step.
Whoever opens the database first after an upgrade migrates every component it holds, so that a
journal and the budget beside it never stand at versions that no one dispatcher knows together.
A component that is absent and not asked for stays absent: a rate store needs no journal's tables.
A component newer than this code knows is refused, before anything changes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from dispatcher.pg import queries

if TYPE_CHECKING:
    import psycopg

_Q = queries.load("meta")
SCHEMA = queries.load("schema")
# The version each component stands at once migrated: that of its last migration (1 with none).
LATEST = {
    component: max([1, *(m.version for m in queries.migrations() if m.component == component)]) for component in SCHEMA
}


@dataclasses.dataclass(frozen=True)
class Newer(Exception):
    """The database holds a component of a later version than this code knows."""

    component: str
    found: int
    known: int


async def versions(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """The version of every component the database holds (none before the schema is made)."""
    row = await (await conn.execute(_Q["has_meta"])).fetchone()
    if not (row and row[0]):
        return {}
    return {str(c): int(v) for c, v in await (await conn.execute(_Q["versions"])).fetchall()}


def _behind(found: dict[str, int], wanted: str) -> bool:
    return any(found.get(c, 0) < LATEST[c] for c in LATEST if c == wanted or c in found)


def _check(found: dict[str, int], wanted: str) -> None:
    if found.get(wanted, 0) > LATEST[wanted]:
        raise Newer(wanted, found[wanted], LATEST[wanted])


async def migrate(conn: psycopg.AsyncConnection[Any], wanted: str) -> None:
    """Bring `wanted`, and every other component the database holds, to this version's schema.
    Read first without a lock: a database already there needs no CREATE right, and no wait."""
    found = await versions(conn)
    _check(found, wanted)
    if not _behind(found, wanted):
        return
    async with conn.transaction():
        # Concurrent first uses (several workers, the budget beside the journal) would race otherwise.
        await conn.execute(_Q["lock"])
        await conn.execute(_Q["make_meta"])
        found = await versions(conn)
        _check(found, wanted)
        for component in LATEST:
            version = found.get(component, 0)
            if version == 0 and component == wanted:
                await conn.execute(SCHEMA[component])
                await conn.execute(_Q["insert_version"], (component, LATEST[component]))
            elif version > 0:
                for step in queries.migrations():
                    if step.component == component and step.version > version:
                        await conn.execute(step.sql)
                        await conn.execute(_Q["update_version"], (step.version, component))
