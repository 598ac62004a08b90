"""The column of a table export (CSV, TSV, JSON Lines, Parquet; compressed or not) that holds the UserIDs,
read with pyarrow a batch at a time and checked: what the table formats share.

A table format (`formats`) opens its file and finds the column (`Column`: its name and its values,
a pyarrow array at a time); this module checks each value with the rules of a UserID in a list (white
space around it dropped, judged at most 32 bytes with it; not empty; printable) and hands on the values
one a line (`Clean`). Integers are read as their decimal text. A null, a missing value, an empty string
or any value that breaks a rule rejects the export, naming the file and the row (the header is not a
row; the first row is 1); so does any rule of the format's own (`Column.check`).

Whatever pyarrow raises as it reads a file rejects its job in one line naming the file (`unreadable`),
never a traceback. A column the job names must be the only one of its name.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from dispatcher.errors import quoted, said
from dispatcher.jobs import encodings, inputs
from dispatcher.jobs.dedup import Clean
from dispatcher.jobs.files import Side, Source, Stopped, breathe
from dispatcher.tim import rules
from dispatcher.tim.apis.base import Reject

LIMIT = rules.MAX_USER_ID_BYTES
_WHITE = np.zeros(256, bool)
_WHITE[list(b" \t\n\r\x0b\x0c")] = True  # what str.strip and bytes.strip take off an ID in a list
_NUMBERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
# A format's own rule on a batch: given its bytes, the offsets of its values, where each value starts and
# ends once white space is off, and the rows before it, the first row that breaks the rule, the field at
# fault and the whole reason (None: no row does).
Check = Callable[[U8, I64, I64, I64, int], tuple[int, str, str] | None]


@dataclasses.dataclass(frozen=True)
class Column:
    """The column of one file that holds the UserIDs: its name, its values a pyarrow array at a time, and
    the format's own rule that every batch must keep besides the rules of a UserID."""

    name: str
    values: Iterator[Any]
    check: Check | None = None


# A format's opening of one file: pyarrow, the path it reads (a stream was copied to a temporary file
# first) and the file's compression, to the column read.
Opening = Callable[[Any, str, str | None], Column]


def read(
    source: Source,
    side: Side,
    stop: threading.Event | None,
    on_column: Callable[[str], None],
    opening: Opening,
    *,
    decompressed: bool = False,
    hint: str = "",
) -> Iterator[Clean]:
    """The clean blocks of one file of a table format; raises Reject, ExportError (no pyarrow), Stopped.

    `decompressed`: the format reads only an uncompressed file (a compressed one is decompressed to a
    temporary file first). `hint`: what the format adds when its column names are not UTF-8."""
    inputs.pyarrow_needed(source)
    with inputs.seekable(source, side, stop, decompressed=decompressed) as (path, compression):
        yield from inputs.guarded(
            source,
            side,
            lambda: _blocks(source, side, stop, on_column, lambda pa: opening(pa, path, compression), hint),
        )


def read_column(
    source: Source, side: Side, stop: threading.Event | None, on_column: Callable[[str], None], column: Column
) -> Iterator[Clean]:
    """The clean blocks of a column that comes from elsewhere than a file (a query's result, `query`)."""
    return _blocks(source, side, stop, on_column, lambda _pa: column, "")


def _blocks(
    source: Source,
    side: Side,
    stop: threading.Event | None,
    on_column: Callable[[str], None],
    opening: Callable[[Any], Column],
    hint: str,
) -> Iterator[Clean]:
    """Whatever pyarrow raises while it opens or reads the file rejects the job, naming the file: never a
    traceback."""
    import pyarrow as pa

    try:
        column = opening(pa)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise unreadable(source, side, exc, hint) from None
    on_column(column.name)
    yield from _clean(source, side, column, stop, hint)


def unreadable(source: Source, side: Side, exc: BaseException, hint: str = "") -> Reject:
    """What the job is told when pyarrow cannot read one of its files: its encoding, or pyarrow's words."""
    if isinstance(exc, UnicodeDecodeError):
        if exc.encoding.lower().replace("-", "").startswith("utf16"):
            return Reject(side.field, encodings.damaged(source.label, exc))
        byte = exc.object[exc.start]  # pyarrow decodes the column names of the file
        return Reject(
            side.field, f"{source.label}: its column names are not UTF-8 (byte 0x{byte:02x}); {encodings.SAVE_AS}{hint}"
        )
    return Reject(side.field, f"{source.label}: cannot read as {source.format}: {said(exc)}")


def column(source: Source, side: Side, names: list[str], hint: str = "") -> str:
    """The column of a file with these columns that holds the UserIDs: the one the job names, else the
    only one; Reject otherwise. `hint`: what the format adds when the job names a column the file lacks."""
    if side.column is not None:
        count = names.count(side.column)
        if count == 1:
            return side.column
        if count > 1:
            raise Reject(
                side.column_field,
                f"{source.label} has {count} columns named {quoted(side.column)}; which one holds the UserIDs "
                "is ambiguous: rename the others",
            )
        raise Reject(
            side.column_field,
            f"{source.label} has no column {quoted(side.column)}; its columns: {_names(names)}{hint}",
        )
    if len(names) == 1:
        return names[0]
    raise Reject(
        side.column_field,
        f"is required: {source.label} has {len(names)} columns ({_names(names)}); name the one with the UserIDs",
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(quoted(name) for name in names[:20])
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "") if names else "none"


def _clean(source: Source, side: Side, column: Column, stop: threading.Event | None, hint: str) -> Iterator[Clean]:
    import pyarrow as pa

    done = 0  # rows before this batch
    values = column.values
    try:
        while True:
            if stop is not None and stop.is_set():
                raise Stopped
            try:
                batch = next(values, None)
                clean = (
                    _checked(pa, batch, source, side, column.name, done, column.check)
                    if batch is not None and len(batch)
                    else None
                )
            except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
                raise unreadable(source, side, exc, hint) from None
            if batch is None:
                return
            if clean is not None:
                yield clean
            done += len(batch)
            breathe()
    finally:
        # A format's values may hold a thread (JSON Lines parses ahead): closed here, at once, rather than
        # by the garbage collector at whatever moment it runs. Run inside a thread's start, a generator's
        # close that joins a thread deadlocked the reading.
        close = getattr(values, "close", None)
        if close is not None:
            close()


def _checked(
    pa: Any, values: Any, source: Source, side: Side, column: str, done: int, check: Check | None = None
) -> Clean:
    """One batch of the column as clean lines, or Reject naming the first bad row."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        values = values.dictionary_decode()
        kind = values.type
    if str(kind) in _NUMBERS:
        values = values.cast(pa.string())  # an integer ID is its decimal text
    elif pa.types.is_string_view(kind):
        values = values.cast(pa.large_string())
    elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise Reject(
            side.field,
            f"{source.label}: column {quoted(column)} holds {kind}, not UserIDs (text or whole numbers)",
        )
    n = len(values)
    if values.null_count:
        first = int(np.flatnonzero(np.asarray(values.is_null()))[0])
        raise Reject(side.field, f"{source.label} row {done + first + 1}: no UserID (the value is null or missing)")
    _validity, offsets_buf, data_buf = values.buffers()
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(offsets_buf, width)[values.offset : values.offset + n + 1].astype(np.int64)
    base = int(offsets[0])
    offsets -= base
    data = np.frombuffer(data_buf, np.uint8)[base : base + int(offsets[-1])] if data_buf is not None else _NONE
    starts, ends, trimmed = _judged(data, offsets, source, side, done, check)
    return _lines(data, starts, ends, trimmed=trimmed)


def _judged(
    data: U8, offsets: I64, source: Source, side: Side, done: int, check: Check | None = None
) -> tuple[I64, I64, bool]:
    """Where each value starts and ends once white space is off its edges, and whether any had some;
    Reject at the first row that breaks a rule (in the order `reader._inline` applies them to a list),
    the format's own `check` last."""
    starts, ends = offsets[:-1], offsets[1:]
    trimmed = False
    problems: list[tuple[int, int, str, str]] = []  # (row, which rule, field, why): a row's first rule is told
    too_long = np.flatnonzero(ends - starts > LIMIT)
    if len(too_long):
        problems.append((int(too_long[0]), 0, side.field, f"UserID must be at most {LIMIT} bytes"))
    if len(data):
        last = len(data) - 1  # an empty value's start may be past the end: it is looked at, not used
        edges = _WHITE[data[np.minimum(starts, last)]] | _WHITE[data[np.maximum(ends - 1, 0)]]
        if (edges & (starts < ends)).any():
            starts, ends, trimmed = starts.copy(), ends.copy(), True
            for _ in range(LIMIT):  # white space off both ends, a byte a round (an ID is at most 32 bytes)
                lead = (starts < ends) & _WHITE[data[np.minimum(starts, last)]]
                starts += lead
                trail = (starts < ends) & _WHITE[data[np.maximum(ends - 1, 0)]]
                ends -= trail
                if not (lead.any() or trail.any()):
                    break
    empty = np.flatnonzero(starts >= ends)
    if len(empty):
        problems.append((int(empty[0]), 1, side.field, "UserID must not be empty"))
    if len(data) and ((data < 0x20).any() or (data > 0x7E).any()):
        marks = np.flatnonzero((data < 0x20) | (data > 0x7E))
        rows = np.searchsorted(offsets[1:], marks, side="right")
        inside = (marks >= starts[rows]) & (marks < ends[rows])
        for row in np.unique(rows[inside]):  # the values with a control character or beyond ASCII
            try:
                text = bytes(data[starts[row] : ends[row]]).decode("utf-8")
            except UnicodeDecodeError:
                problems.append((int(row), 2, side.field, "not valid UTF-8"))
                break
            if not text.isprintable():
                problems.append((int(row), 3, side.field, f"UserID {rules.UNPRINTABLE}"))
                break
    broken = check(data, offsets, starts, ends, done) if check is not None else None
    if broken is not None:
        row, field, reason = broken
        problems.append((row, 4, field, reason))
    if problems:
        row, rule, field, reason = min(problems)
        raise Reject(field, reason if rule == 4 else f"{source.label} row {done + row + 1}: {reason}")
    return starts, ends, trimmed


_NONE = np.zeros(0, np.uint8)


def _lines(
    data: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], *, trimmed: bool
) -> Clean:
    """The values data[starts[i]:ends[i]], each followed by a newline, as one block (`trimmed` False:
    they lie end to end in `data`)."""
    lengths = ends - starts
    if not trimmed and len(lengths) and lengths.min() == lengths.max() > 0:
        return _lines_of_one_length(data, len(lengths), int(lengths[0]))
    if not trimmed:
        values = data
    else:
        edge = np.zeros(len(data) + 1, np.int8)
        edge[starts] += 1
        edge[ends] -= 1
        values = data[np.cumsum(edge[:-1], dtype=np.int8) > 0]
    newlines = np.cumsum(lengths + 1) - 1
    out = np.empty(len(values) + len(lengths), np.uint8)
    gaps = np.ones(len(out), bool)
    gaps[newlines] = False
    out[gaps] = values
    out[newlines] = 10
    return Clean(out.tobytes(), newlines)


def _lines_of_one_length(data: npt.NDArray[np.uint8], n: int, length: int) -> Clean:
    """`n` values of `length` bytes end to end in `data`, each followed by a newline: each value copied
    as one item into a slot of length + 1 bytes, four times as fast as placing the bytes one by one
    (IDs of one length are the common case: docs/guide/measurements.md#one-length)."""
    out = np.empty(n * (length + 1), np.uint8)
    slots = np.ndarray((n,), dtype=f"V{length}", buffer=out, strides=(length + 1,))
    slots[...] = data.view(f"V{length}")
    out[length :: length + 1] = 10
    return Clean(out.tobytes(), np.arange(length, n * (length + 1), length + 1, dtype=np.int64))
