"""The files a run writes besides its journal (the summary, the metrics), refused before anything is
sent when they could not be written at the end, or would replace a file the run needs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from dispatcher.errors import UsageError


def check_writable(path: str, option: str, keep: list[str], jobs: Sequence[str] = ()) -> None:
    """Refuse, before anything is sent, an output file that could not be written at the end, or whose
    writing would replace a file the run needs (`keep`: its journal and jobs; the recipients files
    that `jobs` name) or another run's journal."""
    from dispatcher.journal.outcomes import held_by

    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    for other in keep:
        # By name too: a journal that does not exist yet is created by the run, then replaced at its end.
        same_name = other != "-" and os.path.realpath(path) == os.path.realpath(other)
        with contextlib.suppress(OSError):
            if same_name or (other != "-" and target.exists() and target.samefile(other)):
                raise UsageError(f"{option} {path}: is {other}, which the run reads; choose another file")
    if target.exists():
        if not target.is_file():
            # The file is replaced by a rename at the end: a FIFO or a device (/dev/null) would be
            # replaced by a regular file, and a FIFO blocks the reading of the previous metrics.
            raise UsageError(f"{option} {path}: not a regular file (it is replaced by a new file at the end)")
        holder = held_by(target)
        if holder is not None:
            raise UsageError(f"{option} {path}: is the outcome journal of a run in progress (pid {holder or '?'})")
        export = _recipients_file_at(target, jobs)
        if export is not None:
            raise UsageError(f"{option} {path}: is the {export}, which the run reads; choose another file")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: no such directory {str(parent)!r}")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: directory {str(parent)!r} is not writable")


def _recipients_file_at(target: Path, jobs: Sequence[str]) -> str | None:
    """The field and jobs line (`recipients_file of file:line`) that names `target` (as a recipients_file
    or an exclude_file, or a match of its glob), if one does: an export is the user's data, and an
    output written over it would destroy it. Only lines that name one are parsed; standard input
    cannot be read twice and is not looked at (nor are jobs files that are not regular files)."""
    import orjson

    from dispatcher.jobs.sources import named_files

    for path in jobs:
        if path == "-" or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    if b"recipients_file" not in raw and b"exclude_file" not in raw:
                        continue
                    try:
                        doc = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
                    except orjson.JSONDecodeError:  # the run rejects it; nothing of it is read
                        continue
                    for field, named in named_files(doc, Path(path).parent) if isinstance(doc, dict) else []:
                        with contextlib.suppress(OSError, ValueError):
                            if target.samefile(named):
                                return f"{field} of {path}:{number}"
        except OSError:  # unreadable: the run says so, with its file and line
            continue
    return None
