"""Requests started over time, counted in buckets that widen as a run grows: bounded memory for a run of days.

A request's start is its journal line's `at` (when its reply was recorded) less its `latency_ms`; a line
without a latency made no request (a rejection). Buckets start one second wide; when the run would need
more than `most` of them, neighbours merge two by two (two seconds wide, then four, ...). Buckets are
aligned on the epoch, so merging never splits a second between two of them.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from dispatcher.tim.rules import OVER_RATE_CODES, SIG_RATE_LIMITED

# What each row of the counts holds: every request, then those that were a retry (attempt > 1), those
# answered "too frequent" (the server's rate limit), and those answered 70050 (a pause of every start).
KINDS = ("requests", "retries", "over_rate", "paused")
MOST_BUCKETS = 2048  # points on a chart about 1,100 pixels wide: more would not be seen
_CHUNK = 65_536  # starts held before they are counted: the bounded part of the memory


@dataclasses.dataclass(frozen=True)
class Drawn:
    """The counts as the page draws them: one point a bucket, `width` seconds wide, from `times[0]`."""

    width: int
    times: list[int]  # each bucket's start, seconds since the epoch
    counts: dict[str, list[int]]  # by KINDS, per bucket
    totals: dict[str, int]  # by KINDS, over the run
    busiest: int | None  # the most requests started in one second: known while buckets are one second wide
    first: float | None  # the first and the last start, seconds since the epoch
    last: float | None


class Timeline:
    """The starts of a run's requests, by bucket and kind, counted as the lines stream by."""

    def __init__(self, most: int = MOST_BUCKETS) -> None:
        self.most = most
        self.width = 1
        self.start = 0  # the key (seconds // width) of the first bucket
        self.counts: npt.NDArray[np.int64] = np.zeros((len(KINDS), 0), np.int64)
        self._held: list[tuple[float, int]] = []  # (start, kind) not counted yet
        self._first: float | None = None
        self._last: float | None = None

    def add(self, doc: dict[str, Any]) -> None:
        """Count the request a journal line records, if it made one."""
        latency, at = doc.get("latency_ms"), doc.get("at")
        if not isinstance(latency, (int, float)) or not isinstance(at, str):
            return
        try:
            start = datetime.datetime.fromisoformat(at).timestamp() - latency / 1000
        except ValueError:  # a line the report reads anyway: its time is not drawn
            return
        self._held.append((start, 0))
        attempt, code = doc.get("attempt"), doc.get("error_code")
        if isinstance(attempt, int) and attempt > 1:
            self._held.append((start, 1))
        if code in OVER_RATE_CODES:
            self._held.append((start, 2))
        elif code == SIG_RATE_LIMITED:
            self._held.append((start, 3))
        if len(self._held) >= _CHUNK:
            self._count()

    def extend(self, docs: Iterable[dict[str, Any]]) -> Timeline:
        for doc in docs:
            self.add(doc)
        return self

    def _count(self) -> None:
        if not self._held:
            return
        starts = np.array([start for start, _ in self._held], np.float64)
        kinds = np.array([kind for _, kind in self._held], np.int64)
        self._held = []
        low, high = float(starts.min()), float(starts.max())
        self._first = low if self._first is None else min(self._first, low)
        self._last = high if self._last is None else max(self._last, high)
        seconds = np.floor(starts).astype(np.int64)
        self._cover(int(seconds.min()), int(seconds.max()))
        buckets = self.counts.shape[1]
        flat = kinds * buckets + seconds // self.width - self.start
        self.counts += np.bincount(flat, minlength=len(KINDS) * buckets).reshape(len(KINDS), buckets)

    def _cover(self, low: int, high: int) -> None:
        """Widen the buckets until the seconds from `low` to `high` fit, with those counted already."""
        if self.counts.shape[1] == 0:
            self.start = low // self.width
        while True:
            begin = min(self.start, low // self.width)
            end = max(self.start + self.counts.shape[1], high // self.width + 1)
            if end - begin <= self.most:
                break
            self._merge()
        before, after = self.start - begin, end - self.start - self.counts.shape[1]
        if before or after:
            self.counts = np.pad(self.counts, ((0, 0), (before, after)))
            self.start = begin

    def _merge(self) -> None:
        """Buckets twice as wide: each pair of neighbours (on even keys) becomes one."""
        if self.start % 2:
            self.counts = np.pad(self.counts, ((0, 0), (1, 0)))
            self.start -= 1
        if self.counts.shape[1] % 2:
            self.counts = np.pad(self.counts, ((0, 0), (0, 1)))
        self.counts = self.counts.reshape(len(KINDS), -1, 2).sum(axis=2)
        self.start //= 2
        self.width *= 2

    def drawn(self) -> Drawn:
        self._count()
        buckets = self.counts.shape[1]
        times = [(self.start + i) * self.width for i in range(buckets)]
        busiest = int(self.counts[0].max()) if buckets and self.width == 1 else None
        return Drawn(
            width=self.width,
            times=times,
            counts={kind: self.counts[row].tolist() for row, kind in enumerate(KINDS)},
            totals={kind: int(self.counts[row].sum()) for row, kind in enumerate(KINDS)},
            busiest=busiest,
            first=self._first,
            last=self._last,
        )
