"""The UserIDs of a list, checked item by item (a jobs file's `ToMembers_Account`, `To_Account`, or a part
of an iterable given from Python): one rule with exports (`formats.text`) for the white space around an ID.
"""

from __future__ import annotations

from typing import cast

from dispatcher.errors import quoted
from dispatcher.tim import rules
from dispatcher.tim.apis.base import Reject

_WHITE_SPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() takes off an export's line


def _fits(uid: str) -> bool:
    """At most 32 bytes of UTF-8 (the first test spares encoding a value far too long)."""
    return len(uid) <= rules.MAX_USER_ID_BYTES and len(uid.encode("utf-8", "surrogatepass")) <= rules.MAX_USER_ID_BYTES


def _plain(value: list[object]) -> bool:
    """True if every item is a valid, unpadded UserID of printable ASCII: the common case, judged a
    list at a time (a send's plan read item by item held its workers to 80 requests a second).
    Anything else goes through the item-by-item rules, which say what is wrong where."""
    try:
        joined = "".join(value)  # type: ignore[arg-type]  # TypeError: an item is not a string
    except TypeError:
        return False
    if not (joined.isascii() and joined.isprintable()):
        return False
    lengths = list(map(len, value))  # type: ignore[arg-type]
    if min(lengths) < 1 or max(lengths) > rules.MAX_USER_ID_BYTES:
        return False
    spaced = "\n".join(value)  # type: ignore[arg-type]  # no item holds a newline: it is printable
    return not (spaced[0] == " " or spaced[-1] == " " or " \n" in spaced or "\n " in spaced)


def user_ids(value: list[object], field: str, start: int = 0) -> list[str]:
    """The UserIDs of a list, each checked, in order, duplicates kept; Reject names the first bad item by
    its place (`start` is the place of the list's first item, for a part of a longer list)."""
    if _plain(value):
        return cast(list[str], value)
    ids: list[str] = []
    for i, given in enumerate(value, start):
        uid = given
        # One rule with exports (_from_file): white space around an ID is not part of it, and an ID is
        # judged at most 32 bytes with it. An unpadded ID is kept as it is, so is its job's hash.
        if isinstance(uid, str) and uid and (uid[0] in _WHITE_SPACE or uid[-1] in _WHITE_SPACE) and _fits(uid):
            uid = uid.strip(_WHITE_SPACE)
        problem = rules.user_id_problem(uid)
        if problem:
            raise Reject(field, f"item {i} ({quoted(given)}): UserID {problem}")
        ids.append(cast(str, uid))
    return ids
