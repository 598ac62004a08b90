"""The formats of an export are named in one place, formats.REGISTRY: a format is one module and one
registry line. A format added to the registry alone is read end to end (by its name and by a file's,
compressed too), and nothing else in the jobs package names a format."""

from __future__ import annotations

import ast
import dataclasses
import gzip
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs import formats, inputs
from dispatcher.jobs.dedup import Clean
from dispatcher.jobs.files import Side, Source
from dispatcher.jobs.formats.text import read_text
from dispatcher.jobs.reader import Rejection, read_jobs
from tests.conftest import ROOT, write_jobs

BASE = {"GroupId": "@TGS#g", "Content": "hello"}


@dataclasses.dataclass(frozen=True)
class Words:
    """A format made up for the test: UserIDs separated by any white space, checked by the text rules."""

    name: str = "words"
    suffixes: tuple[str, ...] = (".words",)
    no_columns: str | None = "a words export has no columns"

    def read(
        self, source: Source, side: Side, stop: threading.Event | None, on_column: Callable[[str], None]
    ) -> Iterator[Clean]:
        with inputs.opened(source, side) as handle:
            read = inputs.reader(source, handle)

            def blocks() -> Iterator[Clean]:
                lines = iter([b"".join(word + b"\n" for word in b"".join(iter(lambda: read(1 << 16), b"")).split())])
                return read_text(lambda _size: next(lines, b""), side.field, source.label, stop)

            yield from inputs.guarded(source, side, blocks)


@pytest.fixture
def words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(formats.REGISTRY, "words", Words())  # the one line a new format adds


def read(tmp_path: Path, job: dict[str, Any]) -> Job | Rejection:
    (item,) = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", [job]))], 500)
    return item


def sent(tmp_path: Path, job: dict[str, Any]) -> list[tuple[str, ...]]:
    item = read(tmp_path, job)
    assert isinstance(item, Job), item
    return [batch.recipients or () for batch in split(item)]


WORDS = b"peter amara\n\tjun  peter\n"


@pytest.mark.parametrize(
    ("name", "data", "fields"),
    [
        ("r.words", WORDS, {}),  # its suffix says it
        ("R.WORDS.gz", gzip.compress(WORDS), {}),  # compressed: handled for every format alike
        ("list.dat", WORDS, {"recipients_format": "words"}),  # the job says it
    ],
    ids=["named", "gzip", "given"],
)
def test_a_format_added_to_the_registry_alone_is_read_end_to_end(
    words: None, tmp_path: Path, name: str, data: bytes, fields: dict[str, str]
) -> None:
    (tmp_path / name).write_bytes(data)
    assert sent(tmp_path, {**BASE, "recipients_file": name, **fields}) == [("peter", "amara", "jun")]


def test_a_format_added_to_the_registry_is_told_to_the_job_and_keeps_its_rules(words: None, tmp_path: Path) -> None:
    (tmp_path / "r.words").write_bytes(b"peter " + b"x" * 33 + b"\n")
    item = read(tmp_path, {**BASE, "recipients_file": "r.words"})
    assert isinstance(item, Rejection)
    assert (item.field, item.reason) == ("recipients_file", "r.words line 2: UserID must be at most 32 bytes")
    item = read(
        tmp_path, {**BASE, "recipients_file": "r.words", "recipients_format": "words", "recipients_column": "u"}
    )
    assert isinstance(item, Rejection)
    assert (item.field, item.reason) == ("recipients_column", "a words export has no columns")
    item = read(tmp_path, {**BASE, "recipients_file": "r.words", "recipients_format": "xlsx"})
    assert isinstance(item, Rejection)
    assert item.reason == "must be one of text, csv, tsv, jsonl, parquet, words, not 'xlsx'"


def test_the_registry_holds_the_formats_and_file_names_the_reference_lists() -> None:
    reference = (ROOT / "docs" / "reference.md").read_text()
    (listed,) = re.findall(r"\| `recipients_format` \| string, optional \| (.*?): the format", reference)
    assert listed == "`text`, `csv`, `tsv`, `jsonl` or `parquet`"
    assert list(formats.REGISTRY) == ["text", "csv", "tsv", "jsonl", "parquet"]
    suffixes = {suffix: form.name for form in formats.REGISTRY.values() for suffix in form.suffixes}
    assert suffixes == {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
    for suffix in suffixes:
        assert f"`{suffix}`" in reference
    assert formats.DEFAULT.name == "text"  # any other name: one UserID a line, as before formats existed
    for form in formats.REGISTRY.values():  # each format is a module of the package
        assert type(form).__module__.startswith("dispatcher.jobs.formats."), form


def names_a_format(path: Path) -> list[str]:
    """Where a module names a format or a format's file name, or imports one format's module."""
    named = {"text", "csv", "tsv", "jsonl", "parquet", ".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in named:
            found.append(f"{path.name}:{node.lineno}: {node.value!r}")
        if isinstance(node, ast.ImportFrom | ast.Import):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"{path.name}:{node.lineno}: imports {name}" for name in modules if "jobs.formats." in name]
    return found


def test_no_module_of_the_jobs_package_but_the_formats_names_a_format() -> None:
    jobs = ROOT / "dispatcher" / "jobs"
    assert [line for path in sorted(jobs.glob("*.py")) for line in names_a_format(path)] == []


def test_the_check_sees_a_format_named_by_an_if_chain_or_imported(tmp_path: Path) -> None:
    module = tmp_path / "tables.py"
    module.write_text(
        "from dispatcher.jobs.formats.csv import CSV\n"
        "def read(source):\n"
        "    if source.format == 'parquet':\n"
        "        return 1\n"
        "    return CSV\n"
    )
    assert names_a_format(module) == [
        "tables.py:1: imports dispatcher.jobs.formats.csv",
        "tables.py:3: 'parquet'",
    ]


def test_a_job_that_names_no_file_loads_neither_numpy_nor_pyarrow(tmp_path: Path) -> None:
    """The registry loads numpy: it is imported only where a job names a file (start-up stays short)."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "ToMembers_Account": ["peter", "amara"]}])
    code = (
        "import sys\n"
        "from dispatcher.cli import main\n"
        f"code = main(['send', {str(jobs)!r}, '--dry-run', '--no-progress'])\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'pyarrow'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=os.environ
    )
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr
