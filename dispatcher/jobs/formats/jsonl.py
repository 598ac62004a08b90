"""The JSON Lines format (`.jsonl`, `.ndjson`), read a block of whole lines at a time: pyarrow parses the
one field that holds the UserIDs, as text or as integers, and a block it cannot parse as either is read
row by row here; `tables` checks the values.

pyarrow infers one type for a field, so a field of text and integers (`"a1"`, then `7`) failed where
the reference says an integer is read as its decimal text; and inferring the types of every field ran
out of stack on a value nested 100,000 deep (a segfault, not an exception). Each block is now parsed
with the schema of the one field, the others skipped unparsed: as text first, or as integers, whichever
the last block was; a block that is neither (a mix, a number that is not whole, a line that is not
JSON) is read here with Python's `json`, which reads each integer as its decimal text and rejects the
first row that holds no UserID, naming it. A block of text or of integers gives the IDs it gave before,
so a job read before keeps its job hash.

The column names are the top-level keys of the objects of the first block, in the order they first
appear (as pyarrow named them).
"""

from __future__ import annotations

import codecs
import concurrent.futures
import dataclasses
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from dispatcher.errors import quoted
from dispatcher.jobs import encodings, tables
from dispatcher.jobs.dedup import Clean
from dispatcher.jobs.files import Side, Source
from dispatcher.tim.apis.base import Reject

BLOCK = 1 << 18  # bytes of whole lines parsed at once (pyarrow's block before): a longer line is refused
_SPACE = re.compile(r"[ \t\n\r]*")


class _Object(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, in order: a key given twice is seen twice."""


class _Fraction(str):
    """A JSON number with a fraction or an exponent, as written: never a UserID."""


class _NotJson(Exception):
    """A row that does not parse, with the parser's words."""


def _constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_Object, parse_float=_Fraction, parse_constant=_constant)


@dataclasses.dataclass(frozen=True)
class JsonLines:
    name: str = "jsonl"
    suffixes: tuple[str, ...] = (".jsonl", ".ndjson")
    no_columns: str | None = None

    def read(
        self, source: Source, side: Side, stop: threading.Event | None, on_column: Callable[[str], None]
    ) -> Iterator[Clean]:
        def column(pa: Any, path: str, compression: str | None) -> tables.Column:
            names, blocks = opened(pa, path, compression, source, side)
            if names is None and side.column is not None:
                name = side.column  # the first block holds no object: reading its rows says what is wrong
            else:
                name = tables.column(source, side, names or [])
            return tables.Column(name, values(pa, blocks, name, source, side))

        return tables.read(source, side, stop, on_column, column)


JSONL = JsonLines()


def opened(
    pa: Any, path: str, compression: str | None, source: Source, side: Side
) -> tuple[list[str] | None, Iterator[bytes]]:
    """The column names of the file (None: its first block holds no object that parses) and its blocks,
    the first one read already; raises Reject."""
    blocks = _blocks(pa, path, compression, source, side)
    try:
        first = next(blocks, b"")
    except _LongLine:
        raise _too_long(source, side, 0) from None
    names: dict[str, None] = {}
    rows, error = 0, None
    try:
        for value in _rows(first):
            rows += 1
            if isinstance(value, _Object):
                names.update((key, None) for key, _ in value)
    except _NotJson as exc:  # the rows read tell what they can; the reading says what is wrong with the rest
        error = exc
    escaped = [char for name in names for char in name if "\udc80" <= char <= "\udcff"]
    if escaped:  # a byte that is not UTF-8, kept as it was by _rows
        byte = ord(escaped[0]) - 0xDC00
        raise Reject(
            side.field, f"{source.label}: its column names are not UTF-8 (byte 0x{byte:02x}); {encodings.SAVE_AS}"
        )
    if not names and error is not None and side.column is None:
        raise Reject(side.field, f"{source.label} row {rows + 1}: {error}")
    return (list(names) if names else None), _chain(first, blocks)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


class _LongLine(Exception):
    """A line longer than BLOCK, its newline included."""


def _blocks(pa: Any, path: str, compression: str | None, source: Source, side: Side) -> Iterator[bytes]:
    """Whole lines, at most about BLOCK bytes at a time, as UTF-8 (UTF-16 transcoded), without a
    byte-order mark. Each read fills the block up to BLOCK from the start of a line, so a line is
    refused exactly when it is longer than BLOCK, wherever it lies in the file."""
    with pa.input_stream(path, compression=compression) as stream:
        read = encodings.utf8(stream.read, source.label, side.field)
        carry = b""  # the start of a line not ended yet
        head = True
        while True:
            chunk = read(max(BLOCK - len(carry), 1))
            if not chunk:
                if carry:
                    yield carry  # a last line without its newline
                return
            if head:
                chunk, head = chunk.removeprefix(codecs.BOM_UTF8), False
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1
            if not cut and len(data) >= BLOCK:
                raise _LongLine
            carry = data[cut:]
            if cut:
                yield data[:cut]


def values(pa: Any, blocks: Iterator[bytes], column: str, source: Source, side: Side) -> Iterator[Any]:
    """The values of `column`, an array a block, rows in order; raises Reject at a row that holds no
    UserID that pyarrow's arrays cannot show (the rest, a null, an empty or bad text, `tables` finds).

    The next block is read and parsed in a thread of its own while this one is checked (pyarrow lets go
    of the GIL as it parses), as pyarrow's own reader of a whole file did."""
    parse = _Parser(pa, column)

    def ahead() -> tuple[list[Any], str | None] | None:
        block = next(blocks, None)
        return None if block is None else parse(block)

    done = 0
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dispatcher-jsonl") as pool:
        pending = pool.submit(ahead)
        while True:
            try:
                parsed = pending.result()
            except _LongLine:
                raise _too_long(source, side, done) from None
            if parsed is None:
                break
            pending = pool.submit(ahead)
            arrays, rejected = parsed
            for array in arrays:
                done += len(array)
                yield array  # checked before the row rejected after it is told
            if rejected is not None:
                raise Reject(side.field, f"{source.label} row {done + 1}: {rejected}")
    if not done:
        raise Reject(side.field, f"{source.label}: cannot read as jsonl: it holds no JSON object")


class _Parser:
    """A block's values of one field: parsed by pyarrow as text, else as integers (whichever read the last
    block first), else row by row (_by_row)."""

    def __init__(self, pa: Any, column: str) -> None:
        import pyarrow.json as pj

        self.pa, self.pj, self.column = pa, pj, column
        self.kinds = [  # the field alone, the others skipped unparsed
            pj.ParseOptions(explicit_schema=pa.schema([(column, kind)]), unexpected_field_behavior="ignore")
            for kind in (pa.string(), pa.int64())
        ]
        self.read_options = pj.ReadOptions(use_threads=False, block_size=4 * BLOCK)  # a block is parsed whole

    def __call__(self, block: bytes) -> tuple[list[Any], str | None]:
        pa, pj = self.pa, self.pj
        for options in self.kinds:
            try:
                table = pj.read_json(pa.py_buffer(block), read_options=self.read_options, parse_options=options)
            except pa.ArrowException:
                continue
            if options is not self.kinds[0]:
                self.kinds.reverse()
            return table.column(0).chunks, None
        return _by_row(pa, block, self.column)


def _too_long(source: Source, side: Side, done: int) -> Reject:
    return Reject(
        side.field, f"{source.label} row {done + 1}: a line longer than {BLOCK:,} bytes, its newline included"
    )


def _rows(block: bytes) -> Iterator[object]:
    """The JSON values of a block, one a row (white space between them); raises _NotJson at one that
    does not parse. A byte that is not UTF-8 is kept as it was, for the rules to reject in its row."""
    text = block.decode("utf-8", "surrogateescape")
    at = _skip(text, 0)
    while at < len(text):
        try:
            value, end = _DECODER.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise _NotJson(f"not valid JSON ({exc.msg})") from None
        except ValueError as exc:  # NaN, or an integer of more than 4,300 digits
            raise _NotJson(f"not valid JSON ({exc})") from None
        except RecursionError:
            raise _NotJson("nested too deeply to be read") from None
        yield value
        at = _skip(text, end)


def _skip(text: str, at: int) -> int:
    """Where the JSON white space from `at` ends."""
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _by_row(pa: Any, block: bytes, column: str) -> tuple[list[Any], str | None]:
    """A block pyarrow could not read as text or as integers, read row by row: the values of its rows up
    to the first that holds no UserID, and why that one holds none (None: every row does)."""
    ids: list[bytes | None] = []
    problem = None
    try:
        for value in _rows(block):
            problem = _problem(value, column)
            if problem is not None:
                break
            ids.append(_id(value, column))
    except _NotJson as exc:
        problem = str(exc)
    return ([pa.array(ids, pa.binary()).view(pa.string())] if ids else []), problem


def _problem(value: object, column: str) -> str | None:
    """Why a row holds no UserID that an array can show, or None."""
    if value is None:
        return None  # a null row: `tables` tells it
    if not isinstance(value, _Object):
        return "not a JSON object"
    found = [given for key, given in value if key == column]
    if len(found) > 1:
        return f"the field {quoted(column)} is given twice; which one holds the UserID is ambiguous"
    given = found[0] if found else None
    if isinstance(given, _Fraction):
        return f"{quoted(column)} holds a number that is not whole ({quoted(str(given), bare=True)}), not a UserID"
    if isinstance(given, bool):
        return f"{quoted(column)} holds {json.dumps(given)}, not a UserID"
    if given is None or isinstance(given, (str, int)):
        return None
    kind = "an object" if isinstance(given, _Object) else "an array"
    return f"{quoted(column)} holds {kind}, not a UserID"


def _id(value: object, column: str) -> bytes | None:
    """The UserID of a row _problem passed: text as it is, an integer as its decimal text; None for null."""
    if not isinstance(value, _Object):
        return None
    given = next((given for key, given in value if key == column), None)
    if given is None:
        return None
    if isinstance(given, int):
        return str(given).encode()
    assert isinstance(given, str)
    return given.encode("utf-8", "surrogatepass")  # a byte that is not UTF-8 stays invalid, and is refused
