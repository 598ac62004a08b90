"""Which files a job's export is: its fields, its shards (a glob, in sorted order), their format and
compression. Nothing here reads a file's content; `exports` does.

An export is named by `recipients_file` (and a suppression list by `exclude_file`): one file, or a glob
(`*`, `?`, `[...]`) whose matches, sorted by name, are one export. A name that exists as it is written
is that file, whatever characters it holds (as before globs were read), so a file called `list[1].txt`
is still itself. A glob that matches nothing rejects the job: it must never become "all members".
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Mapping
from pathlib import Path
from stat import S_ISDIR, S_ISREG

from dispatcher.errors import PATH_CHARS, quoted
from dispatcher.jobs.files import EXCLUDE, RECIPIENTS, Kept, Side, Source
from dispatcher.jobs.query import QUERY, shown
from dispatcher.tim.apis.base import Reject, string

# The formats (`formats.REGISTRY`) and their compressions (`inputs`) are imported where they are used:
# they load numpy, which a job that names no file never needs.


class StreamedExport(Exception):
    """A recipients_file that can be read only once (a FIFO, `<(cmd)`) met a reader told to leave
    streams alone: a pre-scan must not use up the one reading that the run needs."""


# The URIs of object stores an export may lie in (`remote` reads them; its extras bring the libraries).
REMOTE = ("s3://", "gs://")

# The fields an export adds to a job, besides recipients_file (each API with recipients knows them).
FIELDS = ("recipients_column", "recipients_format", "exclude_file", "exclude_column", "exclude_format")

# Where a side's rows come from when a job names no file, by the field that names it: its Side, its
# Source(s) and its reading (`format` of its Source is the origin's name). One line each.
ORIGINS = {
    "recipients_query": QUERY,
    "exclude_query": QUERY,
}


# The format of a file is the job's recipients_format (or exclude_format) when given, whatever its name
# says: a name can be wrong, or say nothing (a stream); else the name's; else text.


@dataclasses.dataclass(frozen=True)
class Spec:
    """An export as a job names it: its recipients_file (None: the job lists its recipients itself)
    and, if given, its suppression list."""

    recipients: Side | None
    exclude: Side | None

    @property
    def plain(self) -> bool:
        """Only what a job could say before formats existed: one recipients_file and nothing else.
        Such a job keeps the hash it had then, so that journals written by then resume."""
        side = self.recipients
        return (
            self.exclude is None
            and side is not None
            and side.column is None
            and side.format is None
            and side.database is None
        )

    def derived(self) -> dict[str, str]:
        """The export fields as the job gives them, for its default job_id (a plain job's: as before)."""
        doc: dict[str, str] = {}
        for side in (self.recipients, self.exclude):
            if side is None:
                continue
            doc[side.field] = side.name
            if side.database is not None:  # as shown: a password is not part of what the job is
                doc[f"{side.field.partition('_')[0]}_database"] = shown(side.database)
            if side.column is not None:
                doc[side.column_field] = side.column
            if side.format is not None:
                doc[side.format_field] = side.format
        return doc


def spec_of(doc: Mapping[str, object], inline: bool, kept: Kept | None = None) -> Spec | None:
    """The export fields of a job, checked; None when it names neither a recipients_file nor an
    exclude_file (nor a query). `inline`: the job lists its recipients itself (an exclude_file applies
    to them). `kept`: where the run keeps the rows of a query it runs."""
    recipients = _side(doc, RECIPIENTS) if RECIPIENTS in doc else None
    exclude = _side(doc, EXCLUDE) if EXCLUDE in doc else None
    for field, origin in ORIGINS.items():
        if field in doc:
            side = origin.side(doc, field, kept)
            recipients, exclude = (side, exclude) if field.startswith("recipients") else (recipients, side)
    for origin in dict.fromkeys(ORIGINS.values()):
        origin.check(doc, recipients, exclude)
    for key, needs, given in (
        ("recipients_column", "a recipients_file", recipients),
        ("recipients_format", "a recipients_file", recipients),
        ("exclude_column", "an exclude_file", exclude),
        ("exclude_format", "an exclude_file", exclude),
    ):
        if given is None and key in doc:
            raise Reject(key, f"applies to {needs}; the job has none")
    if exclude is not None and recipients is None and not inline:
        raise Reject(exclude.field, "needs named recipients; a job sent to all members cannot leave anyone out")
    if recipients is None and exclude is None:
        return None
    return Spec(recipients, exclude)


def _side(doc: Mapping[str, object], field: str) -> Side:
    name = string(doc, field)
    assert name is not None
    column_field = "recipients_column" if field == RECIPIENTS else "exclude_column"
    format_field = "recipients_format" if field == RECIPIENTS else "exclude_format"
    column = string(doc, column_field)
    given = string(doc, format_field)
    if given is not None:
        from dispatcher.jobs.formats import REGISTRY

        if given not in REGISTRY:
            raise Reject(format_field, f"must be one of {', '.join(REGISTRY)}, not {quoted(given)}")
        refusal = REGISTRY[given].no_columns
        if column is not None and refusal is not None:
            raise Reject(column_field, refusal)
    return Side(field, name, column, given)


def format_of(name: str) -> tuple[str | None, str | None]:
    """The format and compression a file's name says: (None, None) for a name that says neither."""
    from dispatcher.jobs import inputs
    from dispatcher.jobs.formats import REGISTRY

    lower = name.lower()
    compression = None
    for suffix, kind in inputs.SUFFIXES.items():
        if lower.endswith(suffix):
            compression, lower = kind, lower[: -len(suffix)]
            break
    for form in REGISTRY.values():
        if lower.endswith(form.suffixes):
            return form.name, compression
    return None, compression


def named_files(doc: Mapping[str, object], base_dir: Path) -> list[tuple[str, Path]]:
    """The files a job's recipients_file and exclude_file name (each glob's matches), with their field,
    as far as they can be found: for a check that no output replaces one, never for reading."""
    found = []
    for field in (RECIPIENTS, EXCLUDE):
        name = doc.get(field)
        if not isinstance(name, str) or not name:
            continue
        try:
            literal = (base_dir / name).exists()
            names = [name] if literal or not glob.has_magic(name) else glob.glob(name, root_dir=base_dir)
        except (OSError, ValueError):
            continue
        found += [(field, base_dir / match) for match in names]
    return found


def resolve(side: Side, base_dir: Path, *, streams: bool) -> list[Source]:
    """The files of one side of an export, in the order they are read; raises Reject.

    With `streams` False, an input that can be read only once raises StreamedExport (exports) before
    it is opened: a pre-scan must not use up the one reading the run needs."""
    from dispatcher.jobs.formats import DEFAULT

    origin = ORIGINS.get(side.field)
    if origin is not None:
        if not streams:  # a query runs once per run: the run's, not a pre-scan's
            raise StreamedExport(side.label)
        return origin.sources(side)
    if side.name.startswith(REMOTE):
        return _stored(side, streams=streams)
    literal = base_dir / side.name
    try:
        exists = literal.exists() or literal.is_symlink()
    except (OSError, ValueError):  # ValueError: a NUL in the name
        exists = False
    if exists or not glob.has_magic(side.name):
        names = [side.name]
    else:
        try:
            names = sorted(glob.glob(side.name, root_dir=base_dir))
        except (OSError, ValueError):
            names = []
        if not names:
            raise Reject(
                side.field,
                f"{side.label} matches no file; a glob that matches nothing never means all members",
            )
    sources = []
    for name in names:
        path = base_dir / name
        label = quoted(name, bare=True, limit=PATH_CHARS)
        try:
            mode = path.stat().st_mode
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a valid file name"
            raise Reject(side.field, f"{label}: cannot read: {reason}") from None
        if S_ISDIR(mode):
            raise Reject(side.field, f"{label}: cannot read: Is a directory")
        if not os.access(path, os.R_OK):
            raise Reject(side.field, f"{label}: cannot read: Permission denied")
        stream = not S_ISREG(mode)
        if stream and not streams:
            raise StreamedExport(str(path))
        named, compression = format_of(name)
        sources.append(Source(path, name, side.format or named or DEFAULT.name, compression, stream))
    return _one_format(side, sources)


def _one_format(side: Side, sources: list[Source]) -> list[Source]:
    kinds = {source.format for source in sources}
    if len(kinds) > 1:
        first = sources[0]
        other = next(source for source in sources if source.format != first.format)
        raise Reject(
            side.field,
            f"{side.label} matches files of more than one format ({first.label} is {first.format}, "
            f"{other.label} is {other.format}); the files of an export are of one format",
        )
    return sources


def _stored(side: Side, *, streams: bool) -> list[Source]:
    """The objects of an export in an object store (`remote`), listed there, never globbed on disk. Each is
    downloaded by the run itself, once: a pre-scan leaves them alone, as it leaves a stream."""
    from dispatcher.jobs import remote
    from dispatcher.jobs.formats import DEFAULT

    if not streams:
        raise StreamedExport(side.name)
    scheme = remote.scheme_of(side.name)
    assert scheme is not None
    sources = []
    for uri, stored in remote.objects(side, scheme):
        named, compression = format_of(uri)
        local = Path(uri.rsplit("/", 1)[-1])  # the local copy's name ends as this; `remote` makes it
        sources.append(Source(local, uri, side.format or named or DEFAULT.name, compression, False, stored))
    return _one_format(side, sources)
