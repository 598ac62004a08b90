"""Reading a job's export: every file of it, its suppression list, its duplicates, its hash.

An export is read once, whole, before any of it is sent (a bad value on the last row sends nothing):
each file, in sorted order, becomes clean blocks, read by its format (`formats`); the blocks are copied
to an anonymous temporary file that sending reads back (`SpooledRecipients`) and handed to `dedup`,
which finds the later occurrences and the suppressed IDs in bounded memory. So batch `i` is the same
recipients whenever the same files are read: files in sorted order, rows in file order, the first
occurrence of an ID kept.

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
import hashlib
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import orjson

from dispatcher.core.export import Stats
from dispatcher.errors import InputError
from dispatcher.jobs import formats, remote, sources
from dispatcher.jobs.behind import Behind
from dispatcher.jobs.dedup import Clean, Drops, Outcome, Records, SpillError, clean_of, resolve
from dispatcher.jobs.files import EXCLUDE, RECIPIENTS, Side, Source, Stopped
from dispatcher.jobs.inputs import ExportError, spill_message, write
from dispatcher.jobs.sources import Spec
from dispatcher.tim.apis.base import Reject

__all__ = ["ExportError", "Read", "SpooledRecipients", "Stats", "kept_blocks", "read_export"]

_COPY = 1 << 20
_HASH_MARK = b"\x00export\n"  # never in a recipient's line (a NUL is no UserID's): a new-style hash's own


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
    on_rows: Callable[[int], None] | None = None,
) -> Read:
    """Read the export a job names (or apply its exclude_file to its `inline` recipients). `digest` is
    the start of the job hash. Raises Reject (the job is refused), ExportError (exit 2), Stopped, and
    sources.StreamedExport with `streams` False. `on_rows` hears of the rows read, block by block."""
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
        and files[0].format == formats.DEFAULT.name
        and files[0].compression is None
        and files[0].stored is None
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
        exclude_rows = 0
        # The spool's writes and the hash's updates run behind the reading, on a thread of their own.
        with Behind("dispatcher-spool") as behind:
            if side is not None:
                assert spool is not None
                with remote.local_copies(files, side.field, stop) as copies:
                    for source in copies:
                        ids = hashlib.blake2b(digest_size=16)
                        for block in _blocks(source, side, columns=columns, stop=stop):
                            behind.call(_spooled, spool, block.data, label, digest if legacy else ids)
                            export.add(block)
                            if on_rows is not None:
                                on_rows(block.rows)
                        behind.wait()
                        named.append(_named(side.field, source) + ids.digest())
            if exclusions is not None and spec.exclude is not None:
                with remote.local_copies(excluded, spec.exclude.field, stop) as copies:
                    for source in copies:
                        ids = hashlib.blake2b(digest_size=16)
                        for block in _blocks(source, spec.exclude, columns=None, stop=stop):
                            behind.call(ids.update, block.data)
                            exclusions.add(block)
                            exclude_rows += block.rows
                            if on_rows is not None:
                                on_rows(block.rows)
                        behind.wait()
                        named.append(_named(spec.exclude.field, source) + ids.digest())
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
        derived = {RECIPIENTS: side.name} if legacy and side is not None else spec.derived()
        if spool is None:
            assert inline is not None
            kept = _kept(inline, outcome)
            return Read(kept, len(kept), stats, digest, derived)
        try:
            spool.flush()
        except OSError as exc:
            raise ExportError(spill_message(label, exc)) from None
        return Read(SpooledRecipients(spool, label, outcome.drops), outcome.recipients, stats, digest, derived)
    except SpillError as exc:
        _discard(spool)
        raise ExportError(spill_message(label, exc)) from None
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
    thousand. Above 128 KiB they came from mmap, each one faulted in afresh, which cost a fifth
    of the reading (docs/guide/measurements.md#big-arrays). With the threshold at 32 MiB (and the heap trimmed only
    past 64 MiB free) they are reused; the peak memory is the same. Elsewhere, nothing."""
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
    field = side.field if side is not None else EXCLUDE
    if not outcome.rows:
        raise Reject(field, f"{label} has no UserIDs; an empty export never means all members")
    if not outcome.recipients:
        assert spec.exclude is not None
        raise Reject(
            EXCLUDE,
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
    for data in kept_blocks(spool, outcome.drops, label, stop):
        digest.update(data)


def kept_blocks(spool: IO[bytes], drops: bytes | None, label: str, stop: threading.Event | None) -> Iterator[bytes]:
    """The rows of the spool that are sent, in order, one a line, a block at a time (`drops` as in
    SpooledRecipients)."""
    bits = None if drops is None else np.frombuffer(drops, np.uint8)
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
            if bits is None:
                yield data
                continue
            low = row >> 3  # the bitmap's bytes of this block's rows, and where its first row is in them
            dropped = np.unpackbits(bits[low : (row + block.rows + 7) >> 3], bitorder="little")
            keep = ~dropped[row - 8 * low : row - 8 * low + block.rows].astype(bool)
            if keep.all():
                yield data
            else:
                lengths = np.diff(block.ends, prepend=-1)
                yield np.frombuffer(data, np.uint8)[np.repeat(keep, lengths)].tobytes()
            row += block.rows
    except OSError as exc:
        raise ExportError(spill_message(label, exc)) from None


def _spooled(spool: IO[bytes], data: bytes, label: str, digest: hashlib.blake2b) -> None:
    """A block of the recipients written to the spool and fed to the hash."""
    write(spool, data, label)
    digest.update(data)


def _temporary(label: str) -> IO[bytes]:
    try:
        return tempfile.TemporaryFile()  # the job keeps it open for sending
    except OSError as exc:
        raise ExportError(spill_message(label, exc)) from None


def _named(field: str, source: Source) -> bytes:
    """A file's part of the job hash besides its IDs: its name, and an object's identity in its store (so an
    object rewritten with the same IDs is still a changed job). A local file's is as it always was."""
    if source.stored is None:
        return orjson.dumps([field, source.name])
    return orjson.dumps([field, source.name, source.stored.size, source.stored.version])


def _blocks(source: Source, side: Side, *, columns: list[str] | None, stop: threading.Event | None) -> Iterator[Clean]:
    """The clean blocks of one file, read by its format (the column it reads added to `columns`)."""
    on_column = columns.append if columns is not None else _unused
    origin = sources.ORIGINS.get(side.field)
    return (origin or formats.REGISTRY[source.format]).read(source, side, stop, on_column)


def _unused(_column: str) -> None:
    """The column of a suppression list's file: not shown."""
