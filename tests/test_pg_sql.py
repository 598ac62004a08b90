"""The SQL of PostgreSQL as the package ships it: named blocks read from dispatcher/pg/sql, and no
statement built from Python strings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dispatcher.pg import queries
from tests.conftest import ROOT

TEXT = """-- The file's header.

-- first --
-- what it does, left out of the query
SELECT 1

-- second --
SELECT 2  -- a comment in the query stays
FROM x
"""


def test_a_file_of_queries_is_read_as_named_blocks_without_their_header_comments() -> None:
    assert queries.parse(TEXT) == {"first": "SELECT 1", "second": "SELECT 2  -- a comment in the query stays\nFROM x"}


def test_two_queries_of_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="two queries named first"):
        queries.parse(TEXT + "\n-- first --\nSELECT 3\n")


def test_every_query_the_code_names_is_in_its_file() -> None:
    """Each `_Q["name"]` of a module is a block of the file it loads."""
    for path in sorted((ROOT / "dispatcher").rglob("*.py")):
        tree = ast.parse(path.read_text())
        loaded = [
            str(node.value.args[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and [getattr(target, "id", None) for target in node.targets] == ["_Q"]
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr == "load"
            and node.value.args
            and isinstance(node.value.args[0], ast.Constant)
        ]
        named = {
            str(node.slice.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "_Q"
            and isinstance(node.slice, ast.Constant)
        }
        if loaded:
            (name,) = loaded
            assert sorted(named - set(queries.load(name))) == [], path


def _statements(path: Path) -> list[ast.expr]:
    """The first argument of every execute() and copy() call of a module."""
    return [
        node.args[0]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("execute", "copy")
        and node.args
    ]


def test_no_statement_is_built_by_an_f_string_or_by_adding_strings() -> None:
    built = [
        f"{path.relative_to(ROOT)}:{arg.lineno}"
        for path in sorted((ROOT / "dispatcher").rglob("*.py"))
        for arg in _statements(path)
        if isinstance(arg, (ast.JoinedStr, ast.BinOp)) or (isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    ]
    assert built == []
