"""What the sandbox delivered: who received which message, and how many times."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

import orjson

ALL_MEMBERS = "*"  # ledger entry of an all-members notification to a group whose members are unknown


class Ledger:
    """Who received which notification, and how many times.

    Stored as notification -> {user: count}: dicts of only strings and ints are not tracked by the
    garbage collector, so a ledger of millions of deliveries does not make the sandbox pause (a
    pause would bunch the arrival times it counts for the rate window).

    A request only appends its recipients, as one JSON array in bytes, to `_pending`; they are
    counted when the ledger is read. Counting them as they came made the sandbox stall (a dict that
    outgrows its table copies every entry into a new one), and the requests that arrived meanwhile
    were then time-stamped together and refused with 60007 (docs/guide/measurements.md#sandbox-ledger).
    Appending is O(1), and bytes are not tracked by the garbage collector (a tuple of 500 names is
    tracked until a collection untracks it, and that pass over the young objects is itself too long
    a stall).
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str | None, str], dict[str, int]] = {}
        self._pending: list[tuple[tuple[str, str | None, str], bytes]] = []

    def add(self, group_id: str, topic_id: str | None, content: str, users: Iterable[str]) -> None:
        self._pending.append(((group_id, topic_id, content), orjson.dumps(list(users))))

    def _fold(self) -> dict[tuple[str, str | None, str], dict[str, int]]:
        """The counts, with the pending deliveries added."""
        pending, self._pending = self._pending, []
        for key, users in pending:
            counts = self._counts.setdefault(key, {})
            for user in orjson.loads(users):
                counts[user] = counts.get(user, 0) + 1
        return self._counts

    def _select(self, group_id: str, content: str | None, topic_id: str | None = None) -> Iterable[dict[str, int]]:
        for (g, t, c), counts in self._fold().items():
            if g == group_id and (content is None or c == content) and (topic_id is None or t == topic_id):
                yield counts

    def times(self, user: str, group_id: str, content: str | None = None, topic_id: str | None = None) -> int:
        """How many times `user` got a notification in `group_id` (with that content, if given)."""
        return sum(counts.get(user, 0) for counts in self._select(group_id, content, topic_id))

    def recipients(self, group_id: str, content: str | None = None) -> collections.Counter[str]:
        """User -> deliveries, for one group (and content)."""
        out: collections.Counter[str] = collections.Counter()
        for counts in self._select(group_id, content):
            out.update(counts)
        return out

    def total(self) -> int:
        return sum(sum(counts.values()) for counts in self._fold().values())

    def entries(self) -> list[dict[str, Any]]:
        return [
            {"group_id": g, "topic_id": t, "content": c, "user": u, "count": n}
            for (g, t, c), counts in self._fold().items()
            for u, n in counts.items()
        ]
