"""Reading a job's export: every file of it, its suppression list, its duplicates, its hash.

An export is read once, whole, before any of it is sent (a bad value on the last row sends nothing):
each file, in sorted order, becomes clean blocks (`textfile` for one UserID a line, `tables` for CSV,
TSV, JSON Lines and Parquet); the blocks are copied to an anonymous temporary file that sending reads
back (`SpooledRecipients`) and handed to `dedup`, which finds the later occurrences and the suppressed
IDs in bounded memory. So batch `i` is the same recipients whenever the same files are read: files in
sorted order, rows in file order, the first occurrence of an ID kept.

The job hash: a job that says only what a job could say before formats existed (one recipients_file,
one UserID a line, nothing else) keeps the hash it had then, the API's head followed by each recipient
and a newline, so that journals written then resume. Any other covers the fields that say how the
files are read, and every file's name and IDs, rows in order, of both lists.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import gzip
import hashlib
import os
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from dispatcher.errors import InputError, said
from dispatcher.jobs import encodings, sources
from dispatcher.jobs.dedup import Clean, Drops, Outcome, Records, SpillError, clean_of, resolve
from dispatcher.jobs.sources import GZIP, PARQUET, TEXT, ZSTD, Side, Source, Spec, Stopped
from dispatcher.jobs.textfile import read_text
from dispatcher.tim.apis.base import Reject

EXTRA = "pip install 'tim-dispatcher[exports]'"
_COPY = 1 << 20
_HASH_MARK = b"\x00export\n"  # never in a recipient's line (a NUL is no UserID's): a new-style hash's own


class ExportError(InputError):
    """The export cannot be read at all, for a reason outside the job (exit 2): an extra it needs is
    not installed, or its temporary files cannot be written (a full disk). Nothing of the job is sent."""


@dataclasses.dataclass(frozen=True)
class Stats:
    """What was read of a job's export: the dry run shows it, and the journal keeps it for the report."""

    files: tuple[str, ...]
    rows: int  # UserIDs read (a text export's blank lines are none)
    distinct: int
    excluded: int  # distinct recipients found in the suppression list
    columns: tuple[str, ...] = ()  # the column read of each file (a table export)
    exclude_files: tuple[str, ...] = ()
    exclude_rows: int = 0

    @property
    def duplicates(self) -> int:
        return self.rows - self.distinct

    @property
    def recipients(self) -> int:
        return self.distinct - self.excluded

    def shown(self) -> dict[str, object]:
        """For a dry run's --summary-json: the files by name."""
        doc: dict[str, object] = {"files": list(self.files)}
        if self.columns:
            doc["columns"] = list(self.columns)
        doc.update(rows=self.rows, distinct=self.distinct, duplicates=self.duplicates, excluded=self.excluded)
        if self.exclude_files:
            doc.update(exclude_files=list(self.exclude_files), exclude_rows=self.exclude_rows)
        return doc

    def text(self) -> str:
        """One line for a dry run: the files, rows, distinct recipients, duplicates and excluded."""
        parts = []
        if self.files:
            parts.append(_files(self.files))
        if self.columns and len(set(self.columns)) == 1:
            parts.append(f"column {self.columns[0]}")
        parts.append(f"{self.rows:,} rows, {self.distinct:,} distinct, {self.duplicates:,} duplicates")
        excluded = f"{self.excluded:,} excluded"
        if self.exclude_files:
            excluded += f" (exclude_file: {_files(self.exclude_files)}, {self.exclude_rows:,} rows)"
        return ", ".join([*parts, excluded])

    def to_json(self) -> dict[str, int]:
        doc = {
            "files": len(self.files),
            "rows": self.rows,
            "distinct": self.distinct,
            "duplicates": self.duplicates,
            "excluded": self.excluded,
        }
        if self.exclude_files:
            doc["exclude_files"] = len(self.exclude_files)
            doc["exclude_rows"] = self.exclude_rows
        return doc


def _files(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return f"1 file ({names[0]})"
    if len(names) == 2:
        return f"2 files ({names[0]}, {names[1]})"
    return f"{len(names):,} files ({names[0]} ... {names[-1]})"


@dataclasses.dataclass(frozen=True)
class SpooledRecipients:
    """The recipients of an export: its validated IDs, one per line, in an anonymous temporary file (gone
    when closed), written while the export was validated, with the rows not sent (later occurrences,
    excluded IDs) skipped by their bit in `drops`.

    Sending reads this copy, never the export again: an export rewritten during a run (in place, with
    its size unchanged) would otherwise send IDs that were never validated instead of ones that were,
    and one that can be read only once (a FIFO, `<(cmd)`) could not be sent at all. Iterate it once
    at a time: each iteration starts again from the top of the one file."""

    spool: IO[bytes]
    label: str
    drops: bytes | None = None  # bit i of byte i // 8, low bit first: row i is not sent

    def __iter__(self) -> Iterator[str]:
        drops = self.drops
        try:
            self.spool.seek(0)
            if drops is None:
                for raw in self.spool:  # lines it wrote itself: at most 33 bytes each
                    yield raw[:-1].decode("utf-8")
                return
            for row, raw in enumerate(self.spool):
                if not drops[row >> 3] >> (row & 7) & 1:
                    yield raw[:-1].decode("utf-8")
        except OSError as exc:
            raise InputError(f"{self.label}: cannot read its temporary copy: {exc.strerror}") from None


@dataclasses.dataclass(frozen=True)
class Read:
    """A job's export, read: what to send, how many, what was read, the job's hash, and how its
    default job_id sees the export."""

    recipients: SpooledRecipients | tuple[str, ...]
    count: int
    stats: Stats
    digest: hashlib.blake2b
    derived: dict[str, str]


def read_export(
    spec: Spec,
    base_dir: Path,
    digest: hashlib.blake2b,
    *,
    inline: Sequence[str] | None = None,
    stop: threading.Event | None = None,
    streams: bool = True,
) -> Read:
    """Read the export a job names (or apply its exclude_file to its `inline` recipients). `digest` is
    the start of the job hash. Raises Reject (the job is refused), ExportError (exit 2), Stopped, and
    sources.StreamedExport with `streams` False."""
    _big_arrays_on_the_heap()
    side = spec.recipients
    files = [] if side is None else sources.resolve(side, base_dir, streams=streams)
    excluded = [] if spec.exclude is None else sources.resolve(spec.exclude, base_dir, streams=streams)
    # Read as a job could be read before formats existed: it keeps that hash and default job_id.
    legacy = (
        side is not None
        and spec.exclude is None
        and side.column is None
        and len(files) == 1
        and files[0].name == side.name
        and files[0].format == TEXT
        and files[0].compression is None
    )
    drops = Drops()
    export = Records(drops, stop)
    exclusions = None if spec.exclude is None else Records(None, stop)
    label = side.label if side is not None else "the recipients"
    spool: IO[bytes] | None = None
    try:
        head = digest.copy()
        named: list[bytes] = []  # the new-style hash: each file's name and IDs, recipients first
        columns: list[str] = []
        if side is None:
            assert inline is not None
            block = clean_of(b"".join(uid.encode("utf-8") + b"\n" for uid in inline))
            export.add(block)
            named.append(b"inline" + hashlib.blake2b(block.data, digest_size=16).digest())
        else:
            spool = _temporary(label)
            for source in files:
                ids = hashlib.blake2b(digest_size=16)
                for block in _blocks(source, side, columns=columns, stop=stop):
                    _write(spool, block.data, label)
                    export.add(block)
                    (digest if legacy else ids).update(block.data)
                named.append(orjson.dumps([side.field, source.name]) + ids.digest())
        exclude_rows = 0
        if exclusions is not None and spec.exclude is not None:
            for source in excluded:
                ids = hashlib.blake2b(digest_size=16)
                for block in _blocks(source, spec.exclude, columns=None, stop=stop):
                    exclusions.add(block)
                    ids.update(block.data)
                    exclude_rows += block.rows
                named.append(orjson.dumps([spec.exclude.field, source.name]) + ids.digest())
        outcome = resolve(export, drops, exclusions, stop)
        _check(outcome, side, spec, label)
        if legacy:
            if outcome.drops is not None:  # the hash holds the recipients sent, each once
                assert spool is not None
                digest = head
                _digest_kept(spool, outcome, digest, label, stop)
        else:
            digest.update(_HASH_MARK + orjson.dumps(spec.derived(), option=orjson.OPT_SORT_KEYS) + b"\n")
            for part in named:
                digest.update(part)
        stats = Stats(
            tuple(source.name for source in files),
            outcome.rows,
            outcome.distinct,
            outcome.excluded,
            tuple(columns),
            tuple(source.name for source in excluded),
            exclude_rows,
        )
        derived = {sources.RECIPIENTS: side.name} if legacy and side is not None else spec.derived()
        if spool is None:
            assert inline is not None
            kept = _kept(inline, outcome)
            return Read(kept, len(kept), stats, digest, derived)
        try:
            spool.flush()
        except OSError as exc:
            raise ExportError(_spill_message(label, exc)) from None
        return Read(SpooledRecipients(spool, label, outcome.drops), outcome.recipients, stats, digest, derived)
    except SpillError as exc:
        _discard(spool)
        raise ExportError(_spill_message(label, exc)) from None
    except BaseException:
        _discard(spool)
        raise
    finally:
        export.close()
        if exclusions is not None:
            exclusions.close()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@functools.cache
def _big_arrays_on_the_heap() -> None:
    """Let glibc's heap keep the arrays of a few MB that reading an export makes and drops by the
    thousand. Above 128 KiB they came from mmap, each one faulted in afresh: 235,000 page faults and
    0.7 s of system time for 10M IDs, a fifth of the reading. With the threshold at 32 MiB (and the heap
    trimmed only past 64 MiB free) they are reused; the peak memory is the same. Elsewhere, nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def _discard(spool: IO[bytes] | None) -> None:
    """Close a temporary file that is given up (closing flushes it, which fails again on a full disk)."""
    if spool is not None:
        with contextlib.suppress(OSError):
            spool.close()


def _check(outcome: Outcome, side: Side | None, spec: Spec, label: str) -> None:
    field = side.field if side is not None else sources.EXCLUDE
    if not outcome.rows:
        raise Reject(field, f"{label} has no UserIDs; an empty export never means all members")
    if not outcome.recipients:
        assert spec.exclude is not None
        raise Reject(
            sources.EXCLUDE,
            f"every recipient ({outcome.distinct:,}) is in {spec.exclude.label}; nothing is left to send",
        )


def _kept(inline: Sequence[str], outcome: Outcome) -> tuple[str, ...]:
    if outcome.drops is None:
        return tuple(inline)
    bits = outcome.drops
    return tuple(uid for row, uid in enumerate(inline) if not bits[row >> 3] >> (row & 7) & 1)


def _digest_kept(
    spool: IO[bytes], outcome: Outcome, digest: hashlib.blake2b, label: str, stop: threading.Event | None
) -> None:
    """Feed the job hash the recipients sent, in order: the spool's rows without the dropped ones."""
    assert outcome.drops is not None
    bits = np.frombuffer(outcome.drops, np.uint8)
    row = 0
    carry = b""
    try:
        spool.seek(0)
        while chunk := spool.read(_COPY):
            if stop is not None and stop.is_set():
                raise Stopped
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            data, carry = data[:cut], data[cut:]
            block = clean_of(data)
            low = row >> 3  # the bitmap's bytes of this block's rows, and where its first row is in them
            dropped = np.unpackbits(bits[low : (row + block.rows + 7) >> 3], bitorder="little")
            keep = ~dropped[row - 8 * low : row - 8 * low + block.rows].astype(bool)
            if keep.all():
                digest.update(data)
            else:
                lengths = np.diff(block.ends, prepend=-1)
                digest.update(np.frombuffer(data, np.uint8)[np.repeat(keep, lengths)].tobytes())
            row += block.rows
    except OSError as exc:
        raise ExportError(_spill_message(label, exc)) from None


def _temporary(label: str) -> IO[bytes]:
    try:
        return tempfile.TemporaryFile()  # the job keeps it open for sending
    except OSError as exc:
        raise ExportError(_spill_message(label, exc)) from None


def _write(spool: IO[bytes], data: bytes, label: str) -> None:
    try:
        spool.write(data)
    except OSError as exc:
        raise ExportError(_spill_message(label, exc)) from None


def _spill_message(label: str, exc: OSError) -> str:
    return f"{label}: cannot write a temporary file under {tempfile.gettempdir()} (TMPDIR): {exc.strerror}"


def _blocks(source: Source, side: Side, *, columns: list[str] | None, stop: threading.Event | None) -> Iterator[Clean]:
    """The clean blocks of one file."""
    if source.format == TEXT:
        with _opened(source, side) as handle:
            read = _text_reader(source, handle)  # UTF-16 is transcoded first; any other input is read as it is
            yield from _reading(
                source,
                side,
                lambda: read_text(encodings.utf8(read, source.label, side.field), side.field, source.label, stop),
            )
        return
    pyarrow_needed(source)
    with _seekable(source, side, stop) as (path, compression):
        from dispatcher.jobs.tables import read_table

        def table() -> Iterator[Clean]:
            column, blocks = read_table(source, path, side, compression, stop)
            if columns is not None:
                columns.append(column)
            yield from blocks

        yield from _reading(source, side, table)


def _reading(source: Source, side: Side, blocks: Callable[[], Iterator[Clean]]) -> Iterator[Clean]:
    """The blocks, with a failure to read, to decompress or to decode made one line naming the file: the
    job is rejected, and the other jobs go (`tables` words pyarrow's failures itself; this is the net)."""
    try:
        yield from blocks()
    except OSError as exc:
        raise Reject(side.field, f"{source.label}: cannot read: {exc.strerror or said(exc)}") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise Reject(side.field, f"{source.label}: cannot read as {source.compression}: {exc}") from None
    except UnicodeDecodeError as exc:  # only UTF-16 is decoded here
        raise Reject(side.field, encodings.damaged(source.label, exc)) from None
    except _arrow_errors() as exc:  # zstd text is read with pyarrow
        raise Reject(side.field, f"{source.label}: cannot read: {said(exc)}") from None


def _arrow_errors() -> tuple[type[BaseException], ...]:
    """pyarrow's exceptions, if it was imported (a text export may need none of it)."""
    pa = sys.modules.get("pyarrow")
    error = getattr(pa, "ArrowException", None)
    return (error,) if isinstance(error, type) and issubclass(error, BaseException) else ()


@contextlib.contextmanager
def _opened(source: Source, side: Side) -> Iterator[IO[bytes]]:
    try:
        handle = source.path.open("rb")
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        reason = exc.strerror if isinstance(exc, OSError) else "not a valid file name"
        raise Reject(side.field, f"{source.label}: cannot read: {reason}") from None
    with handle:
        yield handle


def _text_reader(source: Source, handle: IO[bytes]) -> Callable[[int], bytes]:
    """What reads the file: a block at a time, or a stream's whatever it has (read1), decompressed."""
    if source.compression == GZIP:
        unzipped = gzip.GzipFile(fileobj=handle)
        return unzipped.read1 if source.stream else unzipped.read
    if source.compression == ZSTD:
        pa = pyarrow_needed(source)
        read: Callable[[int], bytes] = pa.input_stream(handle, compression="zstd").read
        return read
    raw: Callable[[int], bytes] = handle.read1 if source.stream else handle.read  # type: ignore[attr-defined]
    return raw


def pyarrow_needed(source: Source) -> Any:
    """pyarrow, or ExportError naming the extra that brings it."""
    try:
        import pyarrow
    except ImportError:
        kind = f"{source.format}" + (f" ({source.compression})" if source.compression else "")
        raise ExportError(f"{source.label}: a {kind} export needs pyarrow, the exports extra: {EXTRA}") from None
    return pyarrow


@contextlib.contextmanager
def _seekable(source: Source, side: Side, stop: threading.Event | None) -> Iterator[tuple[str, str | None]]:
    """A path pyarrow reads the file from (it reads some formats twice, and Parquet seeks), and the
    file's compression (from its name, else from its first bytes). A stream is copied to a temporary
    file first, and so is a compressed Parquet file, decompressed; each is gone once it has been read."""
    compression = source.compression
    path = str(source.path)
    made: list[str] = []
    try:
        if source.stream:
            with _opened(source, side) as raw:
                path = _named_copy(raw.read, source.label, stop, made)
        if compression is None:
            with open(path, "rb") as handle:
                compression = sources.compression_of(handle.read(4))
        if source.format == PARQUET and compression is not None:
            pa = pyarrow_needed(source)
            try:
                with pa.input_stream(path, compression=compression) as stream:
                    path = _named_copy(stream.read, source.label, stop, made)
            except (pa.ArrowException, OSError) as exc:
                raise Reject(side.field, f"{source.label}: cannot read as {compression}: {exc}") from None
            compression = None
        yield path, compression
    except OSError as exc:
        raise Reject(side.field, f"{source.label}: cannot read: {exc.strerror}") from None
    finally:
        for name in made:
            with contextlib.suppress(OSError):
                os.unlink(name)


def _named_copy(read: Callable[[int], bytes], label: str, stop: threading.Event | None, made: list[str]) -> str:
    """A copy of what `read` gives, in a temporary file of its own under TMPDIR (removed by the caller)."""
    try:
        handle = tempfile.NamedTemporaryFile(prefix="dispatcher-export-", delete=False)  # noqa: SIM115
    except OSError as exc:
        raise ExportError(_spill_message(label, exc)) from None
    made.append(handle.name)
    with handle:
        _copy(read, handle, label, stop)
    return handle.name


def _copy(read: Callable[[int], bytes], into: IO[bytes], label: str, stop: threading.Event | None) -> None:
    while True:
        if stop is not None and stop.is_set():
            raise Stopped
        chunk = read(_COPY)
        if not chunk:
            break
        _write(into, chunk, label)
    try:
        into.flush()
    except OSError as exc:
        raise ExportError(_spill_message(label, exc)) from None
