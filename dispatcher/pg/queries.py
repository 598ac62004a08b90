"""The SQL of the dispatcher, read from the .sql files of `dispatcher/pg/sql` (shipped in the wheel).

A file of queries holds named blocks, each opened by a line `-- name --` (the comment lines right
after it are left out): the layout of procrastinate's queries.sql. The text is ours, written in the
package as code is, so it is typed `LiteralString`: psycopg takes it as a query, and nothing built
at run time passes for one.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from importlib import resources
from typing import LiteralString, cast

_NAMED = re.compile(r"^-- ([a-z0-9_]+) --\n(?:--.*\n)*", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{3})_([a-z]+)_[a-z0-9_]+\.sql$")


def _text(*path: str) -> str:
    return resources.files("dispatcher.pg").joinpath("sql", *path).read_text(encoding="utf-8")


def _ours(text: str) -> LiteralString:
    # mypy reads LiteralString as str; checkers that tell them apart need the cast.
    return cast(LiteralString, text)  # type: ignore[redundant-cast]


def parse(text: str) -> dict[str, LiteralString]:
    """The named blocks of a file's text (what comes before the first name is the file's header)."""
    parts = _NAMED.split(text)
    named: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise ValueError(f"two queries named {name}")
        named[name] = _ours(body.strip())
    return named


@functools.cache
def load(name: str) -> dict[str, LiteralString]:
    """The queries of `sql/<name>.sql`, by name."""
    return parse(_text(f"{name}.sql"))


@dataclasses.dataclass(frozen=True)
class Migration:
    """`sql/migrations/NNN_component_what.sql`: brings `component` from version NNN - 1 to NNN."""

    component: str
    version: int
    name: str
    sql: LiteralString


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """Every migration, in the order they apply: by version, then component."""
    found = []
    for entry in resources.files("dispatcher.pg").joinpath("sql", "migrations").iterdir():
        matched = _MIGRATION.match(entry.name)
        if matched:
            found.append(Migration(matched[2], int(matched[1]), entry.name, _ours(entry.read_text(encoding="utf-8"))))
    return tuple(sorted(found, key=lambda m: (m.version, m.component)))
