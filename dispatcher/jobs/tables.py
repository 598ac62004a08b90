"""A table export (CSV, TSV, JSON Lines, Parquet; compressed or not) read with pyarrow, a batch at a time.

pyarrow parses (RFC 4180 quoting with embedded delimiters, quotes and newlines, CRLF, a byte-order mark;
JSON Lines; Parquet of any number of row groups) and decompresses gzip and zstd as it streams; this module
picks the column, checks each value with the rules of a UserID in a list (white space around it dropped,
judged at most 32 bytes with it; not empty; printable) and hands on the values one a line (`Clean`).
Integers are read as their decimal text. A null, a missing value, an empty string or any value that breaks
a rule rejects the export, naming the file and the row (the header is not a row; the first row is 1).

Whatever pyarrow raises as it reads a file rejects its job in one line naming the file (`unreadable`),
never a traceback. UTF-16 (with its byte-order mark) is transcoded as it is read (`encodings`); column
names that are not UTF-8 are refused. A column the job names must be the only one of its name; a CSV or
TSV read as its only column because the job names none must not hold another format's separator.
JSON Lines are read a block at a time by `jsonlines`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from dispatcher.errors import quoted, said
from dispatcher.jobs import encodings, jsonlines
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

    `path` is where pyarrow reads the file (a stream was copied to a temporary file first). Whatever
    pyarrow raises while it opens or reads the file rejects the job, naming the file: never a traceback."""
    import pyarrow as pa

    separators = ""
    try:
        if source.format == PARQUET:
            column, values = _parquet(source, path, side)
        elif source.format == JSONL:
            names, blocks = jsonlines.opened(pa, path, compression, source, side)
            column = side.column if names is None and side.column is not None else _column(source, side, names or [])
            values = jsonlines.values(pa, blocks, column, source, side)
        else:
            column, values, separators = _csv(pa, source, path, side, compression)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise _unreadable(source, side, exc) from None
    return column, _clean(source, side, column, values, stop, separators)


def _unreadable(source: Source, side: Side, exc: BaseException) -> Reject:
    """What the job is told when pyarrow cannot read one of its files: its encoding, or pyarrow's words."""
    if isinstance(exc, UnicodeDecodeError):
        if exc.encoding.lower().replace("-", "").startswith("utf16"):
            return Reject(side.field, encodings.damaged(source.label, exc))
        byte = exc.object[exc.start]  # pyarrow decodes the column names of the file
        hint = " (Excel: CSV UTF-8)" if source.format in (CSV, TSV) else ""
        return Reject(
            side.field, f"{source.label}: its column names are not UTF-8 (byte 0x{byte:02x}); {encodings.SAVE_AS}{hint}"
        )
    return Reject(side.field, f"{source.label}: cannot read as {source.format}: {said(exc)}")


def _parquet(source: Source, path: str, side: Side) -> tuple[str, Iterator[Any]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    column = _column(source, side, list(parquet.schema_arrow.names))
    batches = parquet.iter_batches(batch_size=_PARQUET_ROWS, columns=[column])
    return column, (batch.column(0) for batch in batches)


def _csv(pa: Any, source: Source, path: str, side: Side, compression: str | None) -> tuple[str, Iterator[Any], str]:
    """The column, its values a batch at a time, and the separators none of them may hold (when the file
    chose the column: see _OTHER_SEPARATORS)."""
    import pyarrow.csv as pc

    with pa.input_stream(path, compression=compression) as stream:
        encoding = encodings.marked(stream.read(4))
    encodings.refuse(encoding, source.label, side.field)
    parse = pc.ParseOptions(delimiter="\t" if source.format == TSV else ",", newlines_in_values=True)
    # UTF-16 is transcoded as it is read (a UTF-8 byte-order mark is skipped either way).
    read_options = pc.ReadOptions(block_size=_BLOCK, use_threads=False, encoding="utf-16" if encoding else "utf8")
    head = pc.open_csv(pa.input_stream(path, compression=compression), read_options=read_options, parse_options=parse)
    try:
        names = list(head.schema.names)
    finally:
        head.close()
    column = _column(source, side, names)
    separators = ""
    if side.column is None:
        separators = _OTHER_SEPARATORS[source.format]
        held = _held(source, column)
        if held is not None:
            raise _separated(source, side, held, f"{source.label} has one column, {quoted(column)}, and its name holds")
    convert = pc.ConvertOptions(  # bytes, shown as text: the rules name the row of one that is not UTF-8
        include_columns=[column],
        column_types={column: pa.binary()},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    reader = pc.open_csv(
        pa.input_stream(path, compression=compression),
        read_options=read_options,
        parse_options=parse,
        convert_options=convert,
    )
    return column, (batch.column(0).view(pa.string()) for batch in reader), separators


# A file read as one column because it has one (the job names none) is refused if its name or a value
# holds one of these: its rows are then far likelier several fields run together (Excel writes CSV
# separated by ';' in many locales) than UserIDs, and `al;a@x` would be sent as one. Naming the column
# says the job means it.
_OTHER_SEPARATORS = {CSV: ";\t|", TSV: ";,|"}
_SEPARATOR_NAMES = {"\t": "a tab", ",": "a comma"}


def _held(source: Source, text: str) -> str | None:
    """The first separator of another format that `text` (a CSV's or TSV's only column name) holds."""
    return next((char for char in text if char in _OTHER_SEPARATORS.get(source.format, "")), None)


def _hint(source: Source, side: Side, held: str) -> str:
    """What a file whose one column holds the separator `held` probably is, and what to do with it."""
    locale = ", as Excel writes CSV in many locales" if held == ";" else ""
    separated = {"\t": "tabs", ",": "commas"}.get(held, repr(held))
    if held == "\t":
        remedy = f'Read it as TSV ("{side.format_field}": "tsv")'
    elif held == ",":
        remedy = f'Read it as CSV ("{side.format_field}": "csv")'
    else:
        remedy = f"Save it separated by {'commas' if source.format == CSV else 'tabs'}"
    return f"is the file separated by {separated}{locale}? {remedy}"


def _separated(source: Source, side: Side, held: str, what: str, value: str | None = None) -> Reject:
    """The rejection of a file read as one column whose `what` (its name, or the `value` of a row) holds
    the separator `held`."""
    named = _SEPARATOR_NAMES.get(held, repr(held)) + (f" ({quoted(value)})" if value is not None else "")
    hint = _hint(source, side, held)
    return Reject(side.column_field, f"is required: {what} {named}: {hint}, or name the column to read it as it is")


def _column(source: Source, side: Side, names: list[str]) -> str:
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
        held = _held(source, names[0]) if len(names) == 1 else None
        hint = f": {_hint(source, side, held)}" if held is not None else ""
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


def _clean(
    source: Source,
    side: Side,
    column: str,
    values: Iterator[Any],
    stop: threading.Event | None,
    separators: str,
) -> Iterator[Clean]:
    import pyarrow as pa

    done = 0  # rows before this batch
    while True:
        if stop is not None and stop.is_set():
            raise Stopped
        try:
            batch = next(values, None)
            clean = (
                _checked(pa, batch, source, side, column, done, separators)
                if batch is not None and len(batch)
                else None
            )
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            raise _unreadable(source, side, exc) from None
        if batch is None:
            return
        if clean is not None:
            yield clean
        done += len(batch)
        breathe()


def _checked(pa: Any, values: Any, source: Source, side: Side, column: str, done: int, separators: str = "") -> Clean:
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
    starts, ends, trimmed = _judged(data, offsets, source, side, done, separators)
    return _lines(data, starts, ends, trimmed=trimmed)


def _judged(
    data: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.int64],
    source: Source,
    side: Side,
    done: int,
    separators: str = "",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], bool]:
    """Where each value starts and ends once white space is off its edges, and whether any had some;
    Reject at the first row that breaks a rule (in the order `reader._inline` applies them to a list),
    or whose ID holds one of `separators` (a file read as one column that it chose)."""
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
    raw = data.tobytes() if separators else b""
    if any(char.encode() in raw for char in separators):  # memchr is 40 times as fast as np.isin
        held_at = np.flatnonzero(np.isin(data, np.frombuffer(separators.encode(), np.uint8)))
        held_in = np.searchsorted(offsets[1:], held_at, side="right")
        first = np.flatnonzero((held_at >= starts[held_in]) & (held_at < ends[held_in]))
        if len(first):
            row, held = int(held_in[first[0]]), chr(data[held_at[first[0]]])
            value = bytes(data[starts[row] : ends[row]]).decode("utf-8", "replace")
            what = f"{source.label} row {done + row + 1} holds"
            problems.append((row, 4, side.column_field, _separated(source, side, held, what, value).reason))
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
