"""Duplicates and suppressed UserIDs of an export, found in bounded memory at millions of IDs a second.

The IDs arrive as clean blocks (`Clean`: validated UserIDs, one a line, in file order). Each becomes a
record of 32 bytes, its UTF-8 zero-padded (a UserID is at most 32 bytes and never holds a NUL, so two
records are equal exactly when the IDs are), plus its row. Records are gathered a flush at a time,
cleared of the flush's own repeats (the first row of each stays), laid out by the range of a 64-bit
fingerprint they fall in (`_BUCKETS` ranges) and kept: in memory while they are few, then in an
anonymous temporary file under TMPDIR. The second pass takes a few ranges at a time from every flush,
so that every record of an ID is in the same group, and finds the repeats again, and the records that
the suppression list holds.

Fingerprints only say where to look: finding repeats sorts the fingerprints, and only the records whose
fingerprint occurs more than once (the repeats, and a collision now and then) are compared, sorted by
their 32 bytes and then by row, so that equal records stand together with the first occurrence first.
Every decision compares the bytes; a collision costs a comparison, never a recipient.

Memory is one flush, the records kept in memory (at most `_KEPT_BYTES`), one group of ranges (about
`_GROUP_ROWS` records) and a bitmap of the dropped rows (one bit a row). What it drops is a bitmap,
not a list, so the rows are read back in file order with the dropped ones skipped (first occurrence
wins, whatever the order of the fingerprints).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import secrets
import tempfile
import threading
from typing import IO

import numpy as np
import numpy.typing as npt

from dispatcher.jobs.files import Stopped, breathe
from dispatcher.tim import rules

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_WORDS = 4  # a record: 32 bytes, four little-endian words
_FLUSH_ROWS = 1 << 17  # records sorted at once
_KEPT_BYTES = 8 << 20  # records kept in memory before the rest goes to the temporary file
# Records compared at once in a group of the second pass (one range more if a range is larger). Two groups
# are compared at once: together they hold what one group of 1 << 18 held.
_GROUP_ROWS = 1 << 17
_CROWDED = 8  # times the records a range holds on average, past which a flush drops its repeats
_BITS = 10
_BUCKETS = 1 << _BITS  # fingerprint ranges
_SHIFT = np.uint64(64 - _BITS)
# Word k of a record holds bytes 8k..8k+7 of the ID: of an ID of length n, the bytes below n (the low
# ones of each little-endian word, min(max(n - 8k, 0), 8) of them), the others cleared.
_MASKS = np.array([(1 << (8 * kept)) - 1 for kept in range(9)], dtype=np.uint64)
# Odd multipliers of this process: a crafted export cannot pile its IDs into one range.
_KEYS = [np.uint64(secrets.randbits(64) | 1) for _ in range(_WORDS)]
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S31, _S33 = np.uint64(31), np.uint64(33)

assert rules.MAX_USER_ID_BYTES == 8 * _WORDS  # a record is an ID, exactly


class SpillError(OSError):
    """The temporary file cannot be written (a full disk): raised with the OS error's strerror."""


@dataclasses.dataclass(frozen=True)
class Clean:
    """Validated UserIDs, each followed by a newline, and where each newline is."""

    data: bytes
    ends: I64  # the offset of each ID's newline in `data`

    @property
    def rows(self) -> int:
        return len(self.ends)


def clean_of(data: bytes) -> Clean:
    """A block of UserIDs one a line (each line ending in a newline), with its newlines found."""
    return Clean(data, np.flatnonzero(np.frombuffer(data, np.uint8) == 10))


_PAD = bytes(8 * _WORDS)


def records(blocks: list[Clean]) -> U64:
    """The records of blocks: one row of words an ID, as many words as the longest ID of them needs (see
    the module docstring)."""
    n = sum(block.rows for block in blocks)
    if not n:
        return np.zeros((0, _WORDS), np.uint64)
    # One copy of the blocks, with room to read a record's width past the last ID.
    data = b"".join([*(block.data for block in blocks), _PAD])
    shift = np.cumsum([0] + [len(block.data) for block in blocks[:-1]])
    ends = np.concatenate([block.ends + at for block, at in zip(blocks, shift, strict=True)])
    starts = np.empty(n, np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    # Only the words the longest ID reaches are read: the others would be zero (12-byte IDs: two of four).
    longest = int(lengths.max())
    width = max(1, -(-longest // 8))
    # From every offset, the 8 * width bytes there as one item (an unaligned view, no copy), gathered whole:
    # twice as fast as a gather of words (docs/guide/measurements.md#records). An ID's record is the item
    # at its start, cleared past its length.
    size = len(data) - len(_PAD)
    items = np.ndarray((size,), dtype=f"V{8 * width}", buffer=data, strides=(1,))
    out: U64 = items[starts].view("<u8").reshape(n, width)
    shortest = int(lengths.min())
    for k in range(width):
        if shortest >= 8 * (k + 1):  # every ID fills this word
            continue
        if shortest == longest:  # IDs of one length: one mask for all
            out[:, k] &= _MASKS[shortest - 8 * k]
        else:
            out[:, k] &= _MASKS[np.clip(lengths - 8 * k, 0, 8)]
    return out


def fingerprint(recs: U64) -> U64:
    """A 64-bit fingerprint of each record (never trusted alone: see the module docstring). A record may
    hold fewer than four words, the rest being zero: its fingerprint is the one of all four."""
    h = recs[:, 0] * _KEYS[0]
    for k in range(1, _WORDS):
        h ^= h >> _S31
        if k < recs.shape[1]:
            h += recs[:, k] * _KEYS[k]
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


@dataclasses.dataclass
class _Flush:
    first_row: int
    rows: int  # records kept
    words: int  # of each record kept (the others are zero)
    cuts: I64  # record index where each fingerprint range starts (_BUCKETS + 1)
    recs: U64 | None  # in memory, or None: in the temporary file at `offset`
    rel: npt.NDArray[np.uint32] | None  # each record's row, from `first_row`
    offset: int = 0


class Records:
    """The records of one list (an export's recipients, or its suppression list), in flushes."""

    def __init__(self, drops: Drops | None, stop: threading.Event | None = None) -> None:
        self._drops = drops  # where the flushes' own repeats are marked (None: a suppression list)
        self._stop = stop
        self._pending: list[Clean] = []
        self._pending_rows = 0
        self.rows = 0  # every row added
        self.duplicates = 0  # found so far
        self._flushes: list[_Flush] = []
        self._kept = 0  # bytes of records held in memory
        self._spill: IO[bytes] | None = None

    def add(self, block: Clean) -> None:
        if not block.rows:
            return
        self._pending.append(block)
        self._pending_rows += block.rows
        if self._pending_rows >= _FLUSH_ROWS:
            self._flush()

    def finish(self) -> None:
        """No more rows: the last flush is made."""
        self._flush()

    def close(self) -> None:
        if self._spill is not None:
            with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
                self._spill.close()
            self._spill = None
        self._flushes = []

    def _flush(self) -> None:
        if not self._pending:
            return
        recs = records(self._pending)
        first_row = self.rows
        self.rows += len(recs)
        self._pending, self._pending_rows = [], 0
        fp = fingerprint(recs)
        ranges = (fp >> _SHIFT).astype(np.uint16)
        counts = np.bincount(ranges, minlength=_BUCKETS)
        rel = None  # each record's row, when some were left out
        # The repeats of one ID all fall in one range: an ID repeated through the export would pile
        # up there, a range too big for the second pass to hold. So a flush with a range far fuller
        # than the others keeps only the first of each of its repeats (the second pass finds them
        # all anyway; this only keeps the ranges even).
        if int(counts.max()) > _CROWDED * (len(recs) // _BUCKETS + 1):
            later = _repeats(fp, recs, np.arange(len(recs), dtype=np.int64))
            if later is not None:
                if self._drops is not None:
                    self._drops.mark(first_row + np.flatnonzero(later))
                self.duplicates += int(later.sum())
                rel = np.flatnonzero(~later)
                fp, recs, ranges = fp[rel], np.take(recs, rel, axis=0), ranges[rel]
                counts = np.bincount(ranges, minlength=_BUCKETS)
        words = recs.shape[1]
        order = np.argsort(ranges, kind="stable")  # a radix sort, rows in order within a range
        cuts = np.zeros(_BUCKETS + 1, np.int64)
        np.cumsum(counts, out=cuts[1:])
        kept = np.take(recs, order, axis=0)
        rows = order if rel is None else rel[order]
        flush = _Flush(first_row, len(kept), words, cuts, kept, rows.astype(np.uint32))
        self._flushes.append(flush)
        self._kept += flush.rows * (8 * words + 4)
        if self._kept > _KEPT_BYTES:
            for held in self._flushes:
                if held.recs is not None:
                    self._write(held)
            self._kept = 0

    def _write(self, flush: _Flush) -> None:
        assert flush.recs is not None and flush.rel is not None
        try:
            if self._spill is None:
                self._spill = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            self._spill.seek(0, os.SEEK_END)
            flush.offset = self._spill.tell()
            self._spill.write(flush.recs.data.cast("B"))
            self._spill.write(flush.rel.data.cast("B"))
            self._spill.flush()
        except OSError as exc:
            raise SpillError(exc.errno, exc.strerror) from None
        flush.recs = flush.rel = None

    def totals(self) -> I64:
        """Records kept in each fingerprint range, over every flush."""
        total = np.zeros(_BUCKETS, np.int64)
        for flush in self._flushes:
            total += np.diff(flush.cuts)
        return total

    def take(self, low: int, high: int) -> tuple[U64, I64]:
        """The records of ranges low..high-1 from every flush (as wide as the widest flush), and their rows."""
        sizes = [int(flush.cuts[high] - flush.cuts[low]) for flush in self._flushes]
        width = max((flush.words for flush in self._flushes), default=1)
        recs = np.zeros((sum(sizes), width), np.uint64)
        rows = np.empty(sum(sizes), np.int64)
        at = 0
        for flush, size in zip(self._flushes, sizes, strict=True):
            if not size:
                continue
            a, b = int(flush.cuts[low]), int(flush.cuts[high])
            if flush.recs is not None and flush.rel is not None:
                recs[at : at + size, : flush.words] = flush.recs[a:b]
                rel = flush.rel[a:b]
            else:
                recs[at : at + size, : flush.words] = self._read(flush, a, b)
                rel = self._read_rows(flush, a, b)
            rows[at : at + size] = rel
            rows[at : at + size] += flush.first_row
            at += size
        return recs, rows

    def _read(self, flush: _Flush, a: int, b: int) -> U64:
        assert self._spill is not None
        width = 8 * flush.words
        data = _pread(self._spill, (b - a) * width, flush.offset + a * width)
        return np.frombuffer(data, np.uint64).reshape(b - a, flush.words)

    def _read_rows(self, flush: _Flush, a: int, b: int) -> npt.NDArray[np.uint32]:
        assert self._spill is not None
        return np.frombuffer(
            _pread(self._spill, (b - a) * 4, flush.offset + flush.rows * 8 * flush.words + a * 4), np.uint32
        )


def _pread(spill: IO[bytes], size: int, offset: int) -> bytes:
    """`size` bytes of the temporary file at `offset`, without moving its position: the groups of the
    second pass read it from two threads at once (every write was flushed before)."""
    parts = []
    while size:
        part = os.pread(spill.fileno(), size, offset)
        if not part:
            raise SpillError(0, "the temporary file is shorter than what was written to it")
        parts.append(part)
        size -= len(part)
        offset += len(part)
    return b"".join(parts)


def _member(values: U64, of: U64) -> npt.NDArray[np.bool_]:
    """For each of `of`: is it among `values` (sorted, not empty)?"""
    at = np.searchsorted(values, of)
    at[at == len(values)] = 0
    found: npt.NDArray[np.bool_] = values[at] == of
    return found


def _repeats(fp: U64, recs: U64, rows: I64) -> npt.NDArray[np.bool_] | None:
    """True for each record equal to one of an earlier row (compared whole), or None if there is none.

    Only a record whose fingerprint occurs more than once can be a repeat. Those few are put in order of
    fingerprint, then row, and each compared with the one before it; where two of one fingerprint differ
    (a collision), equal records need not be neighbours, and all of them are sorted by their bytes."""
    if len(fp) < 2:
        return None
    ordered = np.sort(fp)
    again = ordered[1:] == ordered[:-1]
    if not again.any():
        return None
    repeated = ordered[1:][again]  # sorted, each value once a repeat
    if 8 * len(repeated) > len(fp):  # repeats are many: sort all rather than pick them out
        candidates = np.arange(len(fp))
    else:
        candidates = np.flatnonzero(_member(repeated[np.insert(repeated[1:] != repeated[:-1], 0, True)], fp))
    order = candidates[np.lexsort((rows[candidates], fp[candidates]))]  # a repeat after the first of its ID
    sub = np.take(recs, order, axis=0)
    by_fp = fp[order]
    same_fp = by_fp[1:] == by_fp[:-1]
    equal = same_fp & (sub[1:] == sub[:-1]).all(axis=1)
    if (same_fp & ~equal).any():  # a collision: equal records need not be neighbours
        whole = np.take(recs, candidates, axis=0)
        by_bytes = [whole[:, k] for k in reversed(range(whole.shape[1]))]
        order = candidates[np.lexsort((rows[candidates], *by_bytes))]
        sub = np.take(recs, order, axis=0)
        equal = (sub[1:] == sub[:-1]).all(axis=1)
    if not equal.any():
        return None  # the fingerprints collided; the IDs differ
    later = np.zeros(len(fp), bool)
    later[order[1:][equal]] = True
    return later


def _found(fp: U64, recs: U64, other: U64) -> I64 | None:
    """Positions of the records (distinct) that are also among `other`'s, compared whole."""
    if not len(other) or not len(recs):
        return None
    theirs = fingerprint(other)
    candidates = np.flatnonzero(_member(np.unique(theirs), fp))
    if not len(candidates):
        return None
    matching = np.flatnonzero(_member(np.unique(fp[candidates]), theirs))
    width = max(recs.shape[1], other.shape[1])  # the lists' records may be of different widths: zeros added
    both = np.zeros((len(candidates) + len(matching), width), np.uint64)
    both[: len(candidates), : recs.shape[1]] = np.take(recs, candidates, axis=0)
    both[len(candidates) :, : other.shape[1]] = np.take(other, matching, axis=0)
    mine = np.zeros(len(both), bool)
    mine[: len(candidates)] = True
    # By bytes, and each of ours before its equals of theirs: ours is found when the next is theirs and equal.
    order = np.lexsort((~mine, *(both[:, k] for k in reversed(range(width)))))
    both, mine = np.take(both, order, axis=0), mine[order]
    hit = (both[1:] == both[:-1]).all(axis=1) & mine[:-1] & ~mine[1:]
    found = order[:-1][hit]
    return candidates[found] if len(found) else None


class Drops:
    """The rows dropped from an export (later occurrences, excluded IDs): one bit a row."""

    def __init__(self) -> None:
        self.bits = np.zeros(1 << 12, np.uint8)

    def mark(self, rows: I64) -> None:
        if not len(rows):
            return
        need = (int(rows.max()) >> 3) + 1
        if need > len(self.bits):
            grown = np.zeros(max(need, 2 * len(self.bits)), np.uint8)
            grown[: len(self.bits)] = self.bits
            self.bits = grown
        np.bitwise_or.at(self.bits, rows >> 3, np.left_shift(1, rows & 7).astype(np.uint8))

    def of(self, rows: int) -> bytes:
        """The bitmap of the first `rows` rows, as bytes (bit i of byte i // 8: row i, low bit first)."""
        size = (rows + 7) >> 3
        bits = self.bits[:size]
        return bits.tobytes() + bytes(size - len(bits))


@dataclasses.dataclass(frozen=True)
class Outcome:
    rows: int
    duplicates: int
    excluded: int  # distinct recipients found in the suppression list
    drops: bytes | None  # bitmap of the rows not sent; None: every row is sent

    @property
    def distinct(self) -> int:
        return self.rows - self.duplicates

    @property
    def recipients(self) -> int:
        return self.distinct - self.excluded


def resolve(export: Records, drops: Drops, exclude: Records | None, stop: threading.Event | None = None) -> Outcome:
    """The second pass: repeats across flushes and the suppression list, a group of ranges at a time.

    The groups share nothing until their rows are marked, so two are compared at once on two threads
    (numpy's sorts and comparisons let go of the GIL); their findings are marked in order, one group
    waiting at most; a group is half what it was on one thread, so memory holds what it held then
    (docs/guide/measurements.md#resolve-threads)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    export.finish()
    if exclude is not None:
        exclude.finish()
    totals = export.totals() + (exclude.totals() if exclude is not None else 0)
    duplicates, excluded = export.duplicates, 0
    groups: list[tuple[int, int]] = []
    low = 0
    while low < _BUCKETS:
        high, size = low + 1, int(totals[low])
        while high < _BUCKETS and size + int(totals[high]) <= _GROUP_ROWS:
            size += int(totals[high])
            high += 1
        groups.append((low, high))
        low = high
    pending: collections.deque[Future[tuple[I64 | None, I64 | None]]] = collections.deque()

    def mark_oldest() -> None:
        nonlocal duplicates, excluded
        later, hit = pending.popleft().result()
        if later is not None:
            drops.mark(later)
            duplicates += len(later)
        if hit is not None:
            drops.mark(hit)
            excluded += len(hit)

    with ThreadPoolExecutor(_THREADS, thread_name_prefix="dispatcher-dedup") as pool:
        try:
            for low, high in groups:
                if stop is not None and stop.is_set():
                    raise Stopped
                breathe()
                pending.append(pool.submit(_group, export, exclude, low, high))
                if len(pending) == _THREADS:
                    mark_oldest()
            while pending:
                mark_oldest()
        finally:
            for future in pending:
                future.cancel()
    return Outcome(export.rows, duplicates, excluded, drops.of(export.rows) if duplicates or excluded else None)


_THREADS = 2  # groups compared at once


def _group(export: Records, exclude: Records | None, low: int, high: int) -> tuple[I64 | None, I64 | None]:
    """The rows of ranges low..high-1 that repeat an earlier row, and those the suppression list holds."""
    breathe()  # in a thread of the pass: the event loop gets the GIL here too
    recs, rows = export.take(low, high)
    if not len(recs):
        return None, None
    fp = fingerprint(recs)
    later = _repeats(fp, recs, rows)
    repeated = None
    if later is not None:
        repeated = rows[later]
        keep = np.flatnonzero(~later)
        fp, recs, rows = fp[keep], np.take(recs, keep, axis=0), rows[keep]
    hit = None if exclude is None else _found(fp, recs, exclude.take(low, high)[0])
    return repeated, (None if hit is None else rows[hit])
