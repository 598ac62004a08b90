"""A table export (CSV, TSV, JSON Lines, Parquet; compressed or not) read with pyarrow, a batch at a time.

pyarrow parses (RFC 4180 quoting with embedded delimiters, quotes and newlines, CRLF, a byte-order mark;
JSON Lines; Parquet of any number of row groups) and decompresses gzip and zstd as it streams; this module
picks the column, checks each value with the rules of a UserID in a list (white space around it dropped,
judged at most 32 bytes with it; not empty; printable) and hands on the values one a line (`Clean`).
Integers are read as their decimal text. A null, a missing value, an empty string or any value that breaks
a rule rejects the export, naming the file and the row (the header is not a row; the first row is 1).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from dispatcher.errors import quoted
from dispatcher.jobs.dedup import Clean
from dispatcher.jobs.sources import CSV, JSONL, PARQUET, TSV, Side, Source, Stopped, breathe
from dispatcher.tim import rules
from dispatcher.tim.apis.base import Reject

LIMIT = rules.MAX_USER_ID_BYTES
_BLOCK = 1 << 18  # bytes pyarrow parses at a time (its memory grows with it: 1 MiB blocks held 50-80 MB more)
_PARQUET_ROWS = 1 << 16
_WHITE = np.zeros(256, bool)
_WHITE[list(b" \t\n\r\x0b\x0c")] = True  # what str.strip and bytes.strip take off an ID in a list
_NUMBERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def read_table(
    source: Source, path: str, side: Side, compression: str | None, stop: threading.Event | None
) -> tuple[str, Iterator[Clean]]:
    """The column read (by name) and the clean blocks of one file of a table export; raises Reject.

    `path` is where pyarrow reads the file (a stream was copied to a temporary file first)."""
    import pyarrow as pa

    try:
        if source.format == PARQUET:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            names = list(parquet.schema_arrow.names)
            column = _column(source, side, names)
            batches: Iterator[Any] = parquet.iter_batches(batch_size=_PARQUET_ROWS, columns=[column])
        elif source.format == JSONL:
            import pyarrow.json as pj

            reader = pj.open_json(
                pa.input_stream(path, compression=compression), read_options=pj.ReadOptions(block_size=_BLOCK)
            )
            column = _column(source, side, list(reader.schema.names))
            batches = iter(reader)
        else:
            assert source.format in (CSV, TSV)
            import pyarrow.csv as pc

            parse = pc.ParseOptions(delimiter="\t" if source.format == TSV else ",", newlines_in_values=True)
            read_options = pc.ReadOptions(block_size=_BLOCK, use_threads=False)
            head = pc.open_csv(
                pa.input_stream(path, compression=compression), read_options=read_options, parse_options=parse
            )
            try:
                column = _column(source, side, list(head.schema.names))
            finally:
                head.close()
            convert = pc.ConvertOptions(
                include_columns=[column],
                column_types={column: pa.string()},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            )
            batches = iter(
                pc.open_csv(
                    pa.input_stream(path, compression=compression),
                    read_options=read_options,
                    parse_options=parse,
                    convert_options=convert,
                )
            )
    except (pa.ArrowException, OSError) as exc:
        raise Reject(side.field, f"{source.label}: cannot read as {source.format}: {_said(exc)}") from None
    return column, _clean(source, side, column, batches, stop)


def _said(exc: BaseException) -> str:
    """pyarrow's own words (which may quote a line of the file), cut as any value of the user's."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return quoted(text, bare=True, limit=200)


def _column(source: Source, side: Side, names: list[str]) -> str:
    if side.column is not None:
        if side.column in names:
            return side.column
        raise Reject(
            side.column_field,
            f"{source.label} has no column {quoted(side.column)}; its columns: {_names(names)}",
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


def _clean(
    source: Source, side: Side, column: str, batches: Iterator[Any], stop: threading.Event | None
) -> Iterator[Clean]:
    import pyarrow as pa

    done = 0  # rows before this batch
    while True:
        if stop is not None and stop.is_set():
            raise Stopped
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise Reject(side.field, f"{source.label}: cannot read as {source.format}: {_said(exc)}") from None
        if batch is None:
            return
        values = batch.column(batch.schema.get_field_index(column))
        if len(values):
            yield _checked(pa, values, source, side, column, done)
        done += len(values)
        breathe()


def _checked(pa: Any, values: Any, source: Source, side: Side, column: str, done: int) -> Clean:
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
    starts, ends, trimmed = _judged(data, offsets, source, side, done)
    return _lines(data, starts, ends, trimmed=trimmed)


def _judged(
    data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], source: Source, side: Side, done: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], bool]:
    """Where each value starts and ends once white space is off its edges, and whether any had some;
    Reject at the first row that breaks a rule (in the order `reader._inline` applies them to a list)."""
    starts, ends = offsets[:-1], offsets[1:]
    trimmed = False
    problems: list[tuple[int, int, str]] = []  # (row, which rule, why): a row's first rule is the one told
    too_long = np.flatnonzero(ends - starts > LIMIT)
    if len(too_long):
        problems.append((int(too_long[0]), 0, f"UserID must be at most {LIMIT} bytes"))
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
        problems.append((int(empty[0]), 1, "UserID must not be empty"))
    if len(data) and ((data < 0x20).any() or (data > 0x7E).any()):
        marks = np.flatnonzero((data < 0x20) | (data > 0x7E))
        rows = np.searchsorted(offsets[1:], marks, side="right")
        inside = (marks >= starts[rows]) & (marks < ends[rows])
        for row in np.unique(rows[inside]):  # the values with a control character or beyond ASCII
            try:
                text = bytes(data[starts[row] : ends[row]]).decode("utf-8")
            except UnicodeDecodeError:
                problems.append((int(row), 2, "not valid UTF-8"))
                break
            if not text.isprintable():
                problems.append((int(row), 3, f"UserID {rules.UNPRINTABLE}"))
                break
    if problems:
        row, _rule, reason = min(problems)
        raise Reject(side.field, f"{source.label} row {done + row + 1}: {reason}")
    return starts, ends, trimmed


_NONE = np.zeros(0, np.uint8)


def _lines(
    data: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], *, trimmed: bool
) -> Clean:
    """The values data[starts[i]:ends[i]], each followed by a newline, as one block (`trimmed` False:
    they lie end to end in `data`)."""
    if not trimmed:
        values = data
    else:
        edge = np.zeros(len(data) + 1, np.int8)
        edge[starts] += 1
        edge[ends] -= 1
        values = data[np.cumsum(edge[:-1], dtype=np.int8) > 0]
    lengths = ends - starts
    newlines = np.cumsum(lengths + 1) - 1
    out = np.empty(len(values) + len(lengths), np.uint8)
    gaps = np.ones(len(out), bool)
    gaps[newlines] = False
    out[gaps] = values
    out[newlines] = 10
    return Clean(out.tobytes(), newlines)
