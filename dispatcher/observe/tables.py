"""The recipients table in a file: Parquet, CSV, gzipped CSV or JSON Lines, chosen by the name's ending.

Every writer takes a writable binary stream and writes it front to back, never seeking: a local file
today, an object store's upload stream tomorrow, without a change here. Rows arrive a batch at a time
(`recipients.Block`) and leave in chunks, so memory holds one chunk, never the table.

Types are those a warehouse loads as they are: in Parquet, strings, int64 `error_code` (null when no
reply came), int32 `attempts` and a UTC timestamp `last_at`; in CSV, a header, an empty field for null,
and `last_at` in ISO 8601 with its `Z`, which PostgreSQL's `COPY` and BigQuery read as a timestamp.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from dispatcher.errors import InputError
from dispatcher.observe.recipients import COLUMNS, Block, Sink

if TYPE_CHECKING:
    import pyarrow as pa

EXTRA = "pip install 'tim-dispatcher[exports]'"
_CHUNK_ROWS = 1 << 16  # rows a Parquet row group gathers before it is written


def format_of(name: str) -> str:
    """The table's format, from the file name's ending; InputError for any other."""
    lowered = name.lower()
    for ending in FORMATS:
        if lowered.endswith(ending):
            return ending
    endings = ", ".join(FORMATS)
    raise InputError(f"--recipients {name}: the format comes from the name; end it with one of {endings}")


def open_table(name: str, stream: BinaryIO) -> Sink:
    """A sink writing the table named `name` (its format from its ending) to `stream`."""
    return FORMATS[format_of(name)](stream)


class _CsvSink:
    def __init__(self, stream: BinaryIO) -> None:
        self._out: BinaryIO = stream
        self._out.write(_csv_text(COLUMNS).encode("utf-8") + b"\n")

    def add(self, block: Block) -> None:
        # Every row of a block differs only in user_id: the same text around that one field, which
        # needs quoting only if it holds a quote or a comma (a UserID is printable: no line break).
        code = "" if block.error_code is None else str(block.error_code)
        head = _csv_text((block.job_id, block.job_hash or "")) + ","
        rest = (block.status, code, block.error_info or "", block.meaning, str(block.attempts), block.last_at or "")
        tail = "," + _csv_text(rest) + "\n"
        users = block.users
        if _SPECIAL.search("".join(users)) is not None:
            users = [_csv_text((user,)) for user in users]
        self._out.write("".join([head + user + tail for user in users]).encode("utf-8"))

    def close(self) -> None:
        self._out.flush()  # the stream is the caller's to close


_SPECIAL = re.compile(r'[",\r\n]')


def _csv_text(fields: Sequence[str]) -> str:
    """One CSV record, RFC 4180, without its line ending (an empty field stays empty, never `""`)."""
    return ",".join(f'"{f.replace(chr(34), chr(34) * 2)}"' if _SPECIAL.search(f) else f for f in fields)


class _GzipCsvSink(_CsvSink):
    def __init__(self, stream: BinaryIO) -> None:
        # Level 6, gzip's own default: level 9 takes twice as long for a few percent.
        self._gzip = gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=6, mtime=0)
        super().__init__(self._gzip)  # type: ignore[arg-type]

    def close(self) -> None:
        super().close()
        self._gzip.close()  # writes the trailer; the stream itself stays open


class _JsonlSink:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def add(self, block: Block) -> None:
        # Every row of a block differs only in user_id: its JSON is the same text around that one value.
        head = orjson.dumps({"job_id": block.job_id, "job_hash": block.job_hash})[:-1] + b',"user_id":'
        tail = orjson.dumps(
            {
                "status": block.status,
                "error_code": block.error_code,
                "error_info": block.error_info,
                "meaning": block.meaning,
                "attempts": block.attempts,
                "last_at": block.last_at,
            }
        )
        tail = b"," + tail[1:] + b"\n"
        self._stream.write(b"".join(head + orjson.dumps(user) + tail for user in block.users))

    def close(self) -> None:
        self._stream.flush()


class _ParquetSink:
    def __init__(self, stream: BinaryIO) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"--recipients: a Parquet table needs pyarrow, the exports extra: {EXTRA}") from None
        self._pa = pa
        self._schema = schema()
        self._writer = pq.ParquetWriter(stream, self._schema, compression="zstd")
        self._blocks: list[Block] = []
        self._rows = 0

    def add(self, block: Block) -> None:
        self._blocks.append(block)
        self._rows += len(block.users)
        if self._rows >= _CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._blocks:
            self._writer.write_table(_table(self._pa, self._schema, self._blocks))
        self._blocks, self._rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


def schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("job_id", pa.string(), nullable=False),
            pa.field("job_hash", pa.string()),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("error_code", pa.int64()),
            pa.field("error_info", pa.string()),
            pa.field("meaning", pa.string(), nullable=False),
            pa.field("attempts", pa.int32(), nullable=False),
            pa.field("last_at", pa.timestamp("ms", tz="UTC")),
        ]
    )


def _table(pa: Any, schema: pa.Schema, blocks: list[Block]) -> pa.Table:
    """The rows of `blocks` as one table: each column but user_id is one value a block, repeated."""
    import numpy as np
    import pyarrow.compute as pc

    which = pa.array(np.repeat(np.arange(len(blocks), dtype=np.int32), [len(b.users) for b in blocks]))

    def shared(values: list[Any], kind: Any) -> Any:
        return pc.take(pa.array(values, kind), which)

    stamps = _stamps(pa, [b.last_at for b in blocks])
    users: list[str] = []
    for block in blocks:
        users.extend(block.users)
    columns = [
        shared([b.job_id for b in blocks], pa.string()),
        shared([b.job_hash for b in blocks], pa.string()),
        pa.array(users, pa.string()),
        shared([b.status for b in blocks], pa.string()),
        shared([b.error_code for b in blocks], pa.int64()),
        shared([b.error_info for b in blocks], pa.string()),
        shared([b.meaning for b in blocks], pa.string()),
        shared([b.attempts for b in blocks], pa.int32()),
        pc.take(stamps, which),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _stamps(pa: Any, texts: list[str | None]) -> pa.Array:
    """The lines' times as timestamps; one that is no ISO 8601 time (a hand edit) is null, not an error."""
    kind = pa.timestamp("ms", tz="UTC")
    try:
        return pa.array(texts, pa.string()).cast(kind)
    except pa.ArrowInvalid:
        parsed = []
        for text in texts:
            try:
                parsed.append(pa.scalar(text, pa.string()).cast(kind).value)
            except pa.ArrowInvalid:
                parsed.append(None)
        return pa.array(parsed, kind)


FORMATS: dict[str, Callable[[BinaryIO], Sink]] = {
    ".parquet": _ParquetSink,
    ".csv.gz": _GzipCsvSink,
    ".csv": _CsvSink,
    ".jsonl": _JsonlSink,
}
