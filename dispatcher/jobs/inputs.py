"""How one file of an export is opened for its format's reader, whatever the format: its compression
(gzip, zstd: from its name, else from its first bytes), a stream read as it arrives or copied to a
temporary file for a reader that seeks, pyarrow asked for by the extra that brings it, and what goes
wrong as a file is read said in one line naming it (`guarded`).

Formats share this; none of it knows one format from another.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

from dispatcher.errors import InputError, said
from dispatcher.jobs import encodings
from dispatcher.jobs.dedup import Clean
from dispatcher.jobs.files import Side, Source, Stopped
from dispatcher.tim.apis.base import Reject

GZIP, ZSTD = "gzip", "zstd"
# A compression suffix stands after the format's: export-000000000000.csv.gz.
SUFFIXES = {".gz": GZIP, ".zst": ZSTD}
# The first bytes of a compressed file, for an input whose name does not say (a stream, `<(cmd)`).
_MAGIC = {b"\x1f\x8b": GZIP, b"\x28\xb5\x2f\xfd": ZSTD}
EXTRA = "pip install 'tim-dispatcher[exports]'"
_ZIP = b"PK\x03\x04"  # an .xlsx, .ods or .numbers workbook is a zip archive
_WORKBOOKS = frozenset({".xlsx", ".xls", ".ods", ".numbers"})
_COPY = 1 << 20

Read = Callable[[int], bytes]


class ExportError(InputError):
    """The export cannot be read at all, for a reason outside the job (exit 2): an extra it needs is
    not installed, or its temporary files cannot be written (a full disk). Nothing of the job is sent."""


def compression_of(head: bytes) -> str | None:
    """The compression of an input whose name does not say, from its first bytes."""
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def guarded(source: Source, side: Side, blocks: Callable[[], Iterator[Clean]]) -> Iterator[Clean]:
    """The blocks, with a failure to read, to decompress or to decode made one line naming the file: the
    job is rejected, and the other jobs go (a table format words pyarrow's failures itself; this is the net)."""
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
def opened(source: Source, side: Side) -> Iterator[IO[bytes]]:
    try:
        handle = source.path.open("rb")
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        reason = exc.strerror if isinstance(exc, OSError) else "not a valid file name"
        raise Reject(side.field, f"{source.label}: cannot read: {reason}") from None
    with handle:
        if source.path.suffix.lower() in _WORKBOOKS or handle.peek(4)[:4] == _ZIP:
            raise Reject(
                side.field, f"{source.label}: a workbook or zip archive, not an export: save it as CSV or text"
            )
        yield handle


def reader(source: Source, handle: IO[bytes]) -> Read:
    """What reads the file: a block at a time, or a stream's whatever it has (read1), decompressed."""
    if source.compression == GZIP:
        unzipped = gzip.GzipFile(fileobj=handle)
        return unzipped.read1 if source.stream else unzipped.read
    if source.compression == ZSTD:
        pa = pyarrow_needed(source)
        read: Read = pa.input_stream(handle, compression="zstd").read
        return read
    raw: Read = handle.read1 if source.stream else handle.read  # type: ignore[attr-defined]
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
def seekable(
    source: Source, side: Side, stop: threading.Event | None, *, decompressed: bool = False
) -> Iterator[tuple[str, str | None]]:
    """A path pyarrow reads the file from (it reads some formats twice, and Parquet seeks), and the
    file's compression (from its name, else from its first bytes). A stream is copied to a temporary
    file first, and so is a compressed file, decompressed, for a reader that must have it `decompressed`
    (Parquet); each is gone once it has been read."""
    compression = source.compression
    path = str(source.path)
    made: list[str] = []
    try:
        if source.stream:
            with opened(source, side) as raw:
                path = _named_copy(raw.read, source.label, stop, made)
        if compression is None:
            with open(path, "rb") as handle:
                compression = compression_of(handle.read(4))
        if decompressed and compression is not None:
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


def _named_copy(read: Read, label: str, stop: threading.Event | None, made: list[str]) -> str:
    """A copy of what `read` gives, in a temporary file of its own under TMPDIR (removed by the caller)."""
    try:
        handle = tempfile.NamedTemporaryFile(prefix="dispatcher-export-", delete=False)  # noqa: SIM115
    except OSError as exc:
        raise ExportError(spill_message(label, exc)) from None
    made.append(handle.name)
    with handle:
        _copy(read, handle, label, stop)
    return handle.name


def _copy(read: Read, into: IO[bytes], label: str, stop: threading.Event | None) -> None:
    while True:
        if stop is not None and stop.is_set():
            raise Stopped
        chunk = read(_COPY)
        if not chunk:
            break
        write(into, chunk, label)
    try:
        into.flush()
    except OSError as exc:
        raise ExportError(spill_message(label, exc)) from None


def write(spool: IO[bytes], data: bytes, label: str) -> None:
    """Write to a temporary file, or raise ExportError (a full disk is outside the job)."""
    try:
        spool.write(data)
    except OSError as exc:
        raise ExportError(spill_message(label, exc)) from None


def spill_message(label: str, exc: OSError) -> str:
    return f"{label}: cannot write a temporary file under {tempfile.gettempdir()} (TMPDIR): {exc.strerror}"
