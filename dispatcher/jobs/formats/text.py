"""The text format: one UserID a line, read exactly as it always was, a megabyte at a time. It is the
format of a file whose name says none, and has no columns.

The rules: a leading UTF-8 byte-order mark is not part of the first ID; a line ends at `\\n`, and a
`\\r` before it is not part of it; a line is judged at most 32 bytes as it stands, white space around
the ID included (a longer one is rejected as soon as it is known to be, before the rest of it is
read); white space (`bytes.strip`) around an ID is dropped; a blank line is skipped; an ID must be
UTF-8 and printable (`str.isprintable`). The first line that breaks a rule rejects the export,
naming its line.

Most blocks break none and need no line-by-line look: `_fast` takes a block whose lines are plainly
IDs (no white space at their edges, no blank line, no control character, valid UTF-8, none over 32
bytes) with a few whole-block tests. Any other block goes through `_exact`, the rules applied line by
line, so that a block is never judged by anything but the rules.
"""

from __future__ import annotations

import codecs
import dataclasses
import threading
from collections.abc import Callable, Iterator

import numpy as np

from dispatcher.jobs import encodings, inputs
from dispatcher.jobs.dedup import Clean, clean_of
from dispatcher.jobs.files import Side, Source, Stopped, breathe
from dispatcher.tim import rules
from dispatcher.tim.apis.base import Reject

LIMIT = rules.MAX_USER_ID_BYTES
_BLOCK = 1 << 20  # bytes judged at once
_READ = 64 * 1024  # asked of the input at a time: a pipe hands over what it has


@dataclasses.dataclass(frozen=True)
class Text:
    name: str = "text"
    suffixes: tuple[str, ...] = ()  # none: it is the format of a name that says none
    no_columns: str | None = "a text export (one UserID a line) has no columns"

    def read(
        self, source: Source, side: Side, stop: threading.Event | None, on_column: Callable[[str], None]
    ) -> Iterator[Clean]:
        """The file as it comes (a stream as it arrives), decompressed; UTF-16 transcoded first, any other
        input read as it is."""
        with inputs.opened(source, side) as handle:
            read = inputs.reader(source, handle)
            yield from inputs.guarded(
                source,
                side,
                lambda: read_text(encodings.utf8(read, source.label, side.field), side.field, source.label, stop),
            )


TEXT = Text()


def read_text(
    read: Callable[[int], bytes], field: str, label: str, stop: threading.Event | None = None
) -> Iterator[Clean]:
    """The clean blocks of a text export: its IDs, stripped, one a line; raises Reject at the first
    line that breaks a rule, and Stopped once `stop` is set (never taken for the end of the input).

    `read(n)` returns at most n bytes, b"" at the end: a whole block of a file, or what a pipe has."""
    carry = b""
    done = 0  # lines ended so far
    head = True
    eof = False
    while not eof:
        parts, size = [carry], len(carry)
        while size < _BLOCK:
            if stop is not None and stop.is_set():
                raise Stopped
            chunk = read(_BLOCK - size)
            if not chunk:
                eof = True
                break
            parts.append(chunk)
            size += len(chunk)
        data = b"".join(parts) if len(parts) > 2 or carry else parts[-1]
        if head:
            data, head = data.removeprefix(codecs.BOM_UTF8), False
        if eof and data and not data.endswith(b"\n"):
            data += b"\n"  # a last line without its newline is a line
        cut = data.rfind(b"\n") + 1
        block, carry = (data, b"") if cut == len(data) else (data[:cut], data[cut:])
        if block:
            clean = _fast(block)
            if clean is None:
                clean, lines = _exact(block, done, field, label)
            else:
                lines = clean.rows
            done += lines
            if clean.rows:
                yield clean
        if len(carry) > LIMIT + 1:  # too long even if its last byte is the \r of a \r\n
            raise Reject(field, f"{label} line {done + 1}: UserID must be at most {LIMIT} bytes")
        breathe()


def _fast(block: bytes) -> Clean | None:
    """The block as it is, if every line of it is plainly an ID; None if any line needs a closer look."""
    if b"\r" in block:
        if block.count(b"\r") != block.count(b"\r\n"):
            return None
        block = block.replace(b"\r\n", b"\n")
    octets = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(octets == 10)
    lengths = np.diff(ends, prepend=-1) - 1
    if lengths.min() < 1 or lengths.max() > LIMIT:
        return None  # a blank line, or one too long
    starts = ends - lengths
    if (octets[starts] == 32).any() or (octets[ends - 1] == 32).any():
        return None  # white space at the edge of an ID
    if octets.max() > 0x7E:  # beyond ASCII: UTF-8, printable?
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not text.replace("\n", "").isprintable():
            return None
    elif np.count_nonzero(octets < 0x20) != len(ends):
        return None  # a control character (a tab, a NUL) besides the newlines
    return Clean(block, ends)


def _exact(block: bytes, done: int, field: str, label: str) -> tuple[Clean, int]:
    """The rules, line by line: the IDs of the block and its lines, or Reject naming the first line
    that breaks one."""
    ids = []
    lines = block.split(b"\n")[:-1]
    for i, line in enumerate(lines, start=done + 1):
        if not i % 1024:
            breathe()
        line = line.removesuffix(b"\r")
        if len(line) > LIMIT:
            raise Reject(field, f"{label} line {i}: UserID must be at most {LIMIT} bytes")
        text = line.strip()
        if not text:
            continue
        try:
            uid = text.decode("utf-8")
        except UnicodeDecodeError:
            raise Reject(field, f"{label} line {i}: not valid UTF-8") from None
        if not uid.isprintable():
            raise Reject(field, f"{label} line {i}: UserID {rules.UNPRINTABLE}")
        ids.append(text)
    return clean_of(b"\n".join(ids) + b"\n" if ids else b""), len(lines)
