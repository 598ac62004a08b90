"""The Unicode encoding of an export, from its first bytes: UTF-8 (with a byte-order mark or without),
UTF-16 (with one: Excel's "Unicode text" and "UTF-16" saves), read as the UTF-8 it transcodes to, or
UTF-32 (refused: no exporter writes it by default, and nothing would read it as meant).

A UTF-8 file can never start with the bytes FF FE or FE FF, so reading a UTF-16 one changes nothing
of any export read before: a file without one of these marks is handed on exactly as it is.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from dispatcher.tim.apis.base import Reject

UTF16, UTF32 = "UTF-16", "UTF-32"
_MARKS = (
    ((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE), UTF32),  # first: FF FE 00 00 also starts as UTF-16's
    ((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE), UTF16),
)
SAVE_AS = "save it as UTF-8"

Read = Callable[[int], bytes]


def marked(head: bytes) -> str | None:
    """UTF16 or UTF32 if `head` (a file's first 4 bytes, or all of a shorter one) starts with its byte-order
    mark; None for anything else (UTF-8 or not text)."""
    for marks, name in _MARKS:
        if head.startswith(marks):
            return name
    return None


def refuse(encoding: str | None, label: str, field: str) -> None:
    """Reject a file in an encoding that is not read (UTF-32)."""
    if encoding == UTF32:
        raise Reject(field, f"{label}: the file is UTF-32 (it starts with a UTF-32 byte-order mark); {SAVE_AS}")


def utf8(read: Read, label: str, field: str) -> Read:
    """`read` (at most n bytes, b"" at the end) as UTF-8: a UTF-16 input transcoded as it is read (its
    byte-order mark dropped), a UTF-32 one rejected, any other handed on as it is. A transcoded read may
    return up to a third more than asked: the callers' blocks are bounded all the same."""
    head = b""
    while len(head) < 4:  # a pipe may hand them over a byte at a time
        chunk = read(4 - len(head))
        if not chunk:
            break
        head += chunk
    encoding = marked(head)
    refuse(encoding, label, field)
    if encoding == UTF16:
        return _transcoded(read, head)
    return _replayed(read, head)


def _replayed(read: Read, head: bytes) -> Read:
    pending = head

    def replay(size: int) -> bytes:
        nonlocal pending
        if not pending:
            return read(size)
        given, pending = pending[:size], pending[size:]
        return given + read(size - len(given)) if len(given) < size else given

    return replay


def _transcoded(read: Read, head: bytes) -> Read:
    """UTF-16 as UTF-8; an input that is not valid UTF-16 raises UnicodeDecodeError."""
    decoder = codecs.getincrementaldecoder("utf-16")()  # the mark says which byte order
    pending = head

    def transcode(size: int) -> bytes:
        nonlocal pending
        while True:
            raw = pending or read(max(2, size * 2 // 3))  # 2 bytes of UTF-16 are at most 3 of UTF-8
            pending = b""
            text = decoder.decode(raw, final=not raw)
            if text or not raw:
                return text.encode("utf-8")

    return transcode


def damaged(label: str, exc: UnicodeDecodeError) -> str:
    """The rejection of a UTF-16 file that does not decode (a lone surrogate, an odd number of bytes)."""
    return f"{label}: not valid UTF-16 ({exc.reason}); {SAVE_AS}"
