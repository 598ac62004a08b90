"""The CSV and TSV formats (`.csv`, `.tsv`): RFC 4180, with a header, separated by commas or by tabs.

pyarrow parses them (quoted fields with embedded delimiters, quotes and newlines, CRLF, a byte-order
mark) and decompresses gzip and zstd as it streams; `tables` checks the column. UTF-16 (with its
byte-order mark) is transcoded as it is read (`encodings`); column names that are not UTF-8 are refused.
A file read as its only column because the job names none must not hold another format's separator.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dispatcher.errors import quoted
from dispatcher.jobs import encodings, tables
from dispatcher.jobs.dedup import Clean
from dispatcher.jobs.files import Side, Source
from dispatcher.tim.apis.base import Reject

_BLOCK = 1 << 18  # bytes pyarrow parses at a time (its memory grows with it: 1 MiB blocks held 50-80 MB more)
_SEPARATOR_NAMES = {"\t": "a tab", ",": "a comma"}


@dataclasses.dataclass(frozen=True)
class Delimited:
    """A table of text with a header, one row a line (a quoted field may hold newlines)."""

    name: str
    suffixes: tuple[str, ...]
    delimiter: str
    separated_by: str  # the delimiter, as a message names it: "commas"
    # A file read as one column because it has one (the job names none) is refused if its name or a value
    # holds one of these: its rows are then far likelier several fields run together (Excel writes CSV
    # separated by ';' in many locales) than UserIDs, and `al;a@x` would be sent as one. Naming the
    # column says the job means it.
    others: str
    no_columns: str | None = None

    def read(
        self, source: Source, side: Side, stop: threading.Event | None, on_column: Callable[[str], None]
    ) -> Iterator[Clean]:
        def column(pa: Any, path: str, compression: str | None) -> tables.Column:
            return self._column(pa, source, side, path, compression)

        return tables.read(source, side, stop, on_column, column, hint=" (Excel: CSV UTF-8)")

    def _column(self, pa: Any, source: Source, side: Side, path: str, compression: str | None) -> tables.Column:
        """The column and its values a batch at a time, checked for the separators of the other formats
        when the file chose it."""
        import pyarrow.csv as pc

        with pa.input_stream(path, compression=compression) as stream:
            encoding = encodings.marked(stream.read(4))
        encodings.refuse(encoding, source.label, side.field)
        parse = pc.ParseOptions(delimiter=self.delimiter, newlines_in_values=True)
        # UTF-16 is transcoded as it is read (a UTF-8 byte-order mark is skipped either way).
        read_options = pc.ReadOptions(block_size=_BLOCK, use_threads=False, encoding="utf-16" if encoding else "utf8")
        head = pc.open_csv(
            pa.input_stream(path, compression=compression), read_options=read_options, parse_options=parse
        )
        try:
            names = list(head.schema.names)
        finally:
            head.close()
        held = self._held(names[0]) if len(names) == 1 else None
        name = tables.column(source, side, names, f": {self._hint(side, held)}" if held is not None else "")
        check = None
        if side.column is None:
            held = self._held(name)
            if held is not None:
                what = f"{source.label} has one column, {quoted(name)}, and its name holds"
                raise self._separated(side, held, what)
            check = self._check(source, side)
        convert = pc.ConvertOptions(  # bytes, shown as text: the rules name the row of one that is not UTF-8
            include_columns=[name],
            column_types={name: pa.binary()},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        reader = pc.open_csv(
            pa.input_stream(path, compression=compression),
            read_options=read_options,
            parse_options=parse,
            convert_options=convert,
        )
        return tables.Column(name, (batch.column(0).view(pa.string()) for batch in reader), check)

    def _check(self, source: Source, side: Side) -> tables.Check:
        """The rule of a file read as its only column: no ID holds another format's separator."""
        others = self.others

        def check(
            data: tables.U8, offsets: tables.I64, starts: tables.I64, ends: tables.I64, done: int
        ) -> tuple[int, str, str] | None:
            raw = data.tobytes()
            if not any(char.encode() in raw for char in others):  # memchr is 40 times as fast as np.isin
                return None
            held_at = np.flatnonzero(np.isin(data, np.frombuffer(others.encode(), np.uint8)))
            held_in = np.searchsorted(offsets[1:], held_at, side="right")
            first = np.flatnonzero((held_at >= starts[held_in]) & (held_at < ends[held_in]))
            if not len(first):
                return None
            row, held = int(held_in[first[0]]), chr(data[held_at[first[0]]])
            value = bytes(data[starts[row] : ends[row]]).decode("utf-8", "replace")
            what = f"{source.label} row {done + row + 1} holds"
            return row, side.column_field, self._separated(side, held, what, value).reason

        return check

    def _held(self, text: str) -> str | None:
        """The first separator of another format that `text` (the file's only column name) holds."""
        return next((char for char in text if char in self.others), None)

    def _hint(self, side: Side, held: str) -> str:
        """What a file whose one column holds the separator `held` probably is, and what to do with it."""
        locale = ", as Excel writes CSV in many locales" if held == ";" else ""
        separated = {"\t": "tabs", ",": "commas"}.get(held, repr(held))
        if held == "\t":
            remedy = f'Read it as TSV ("{side.format_field}": "tsv")'
        elif held == ",":
            remedy = f'Read it as CSV ("{side.format_field}": "csv")'
        else:
            remedy = f"Save it separated by {self.separated_by}"
        return f"is the file separated by {separated}{locale}? {remedy}"

    def _separated(self, side: Side, held: str, what: str, value: str | None = None) -> Reject:
        """The rejection of a file read as one column whose `what` (its name, or the `value` of a row) holds
        the separator `held`."""
        named = _SEPARATOR_NAMES.get(held, repr(held)) + (f" ({quoted(value)})" if value is not None else "")
        hint = self._hint(side, held)
        return Reject(side.column_field, f"is required: {what} {named}: {hint}, or name the column to read it as it is")


CSV = Delimited("csv", (".csv",), ",", "commas", ";\t|")
TSV = Delimited("tsv", (".tsv",), "\t", "tabs", ";,|")
