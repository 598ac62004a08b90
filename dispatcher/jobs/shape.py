"""A jobs file in the wrong shape, told from its first bytes: one line that names the mistake and how to
fix it, before any job is read (exit 2), instead of a rejection for every line of it.

Only the file's start is judged, so a jobs file whose later lines are bad still has each rejected on its
own: a shape is what the whole file is, a rejection what one line is.
"""

from __future__ import annotations

import os

HEAD = 64 * 1024  # bytes read to judge a file's shape

_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
_ARCHIVES = {b"PK\x03\x04": "a zip archive (an Excel or Numbers workbook is one)", b"\x1f\x8b": "gzip-compressed"}


def shape_problem(path: str | os.PathLike[str], head: bytes) -> str | None:
    """Why the file that starts with `head` is not a jobs file (JSON Lines), or None if its start is one."""
    name = os.fspath(path)
    for bom, encoding in _BOMS.items():
        if head.startswith(bom):
            return f"{name} is saved as {encoding}: save it as UTF-8 (jobs files are UTF-8 JSON Lines)"
    for magic, what in _ARCHIVES.items():
        if head.startswith(magic):
            return f"{name} is {what}, not a jobs file: jobs files are JSON Lines, one JSON object a line"
    lines = [line.strip() for line in head.splitlines() if line.strip()][:2]
    first = lines[0] if lines else b""
    if first.startswith(b"["):
        return (
            f"{name} holds a JSON array: write one JSON object a line (JSON Lines), e.g. "
            f"`jq -c '.[]' {name} > jobs.jsonl`"
        )
    if first == b"{":
        return (
            f"{name} holds a JSON object over several lines: write each job on one line (JSON Lines), e.g. "
            f"`jq -c . {name} > jobs.jsonl`"
        )
    if _table(lines):
        return (
            f"{name} looks like a table (CSV or TSV), not jobs: a jobs file holds one JSON object a line; "
            "a table of recipients goes in a job's recipients_file"
        )
    return None


def _table(lines: list[bytes]) -> bool:
    """A table's header (and first row): no line a JSON object, each split by one separator. One bad
    first line of a jobs file is not a table: it is rejected alone, and the good jobs go."""
    if not lines or any(line.startswith(b"{") for line in lines):
        return False
    return len(lines) == 2 and any(all(sep in line for line in lines) for sep in (b",", b"\t"))


def check_shape(path: str) -> None:
    """Raise InputError (exit 2) for a regular jobs file in the wrong shape; one that cannot be read is
    left to the reader, which says so in its own words. Never given a stream: it would eat its start."""
    from dispatcher.errors import InputError

    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD)
    except OSError:
        return
    problem = shape_problem(path, head)
    if problem is not None:
        raise InputError(problem)
