"""A pacing rate limiter: no more than `rate` requests start in any one-second window.

Why not `aiolimiter.AsyncLimiter(rate, 1)`: it is a leaky bucket that admits a burst of `rate` and
then drips `rate` more within the same second, nearly twice the rate in one window, which the
server answers with 60007. This limiter has a bucket of one token refilled every `interval`
(GCRA with no burst tolerance), so starts are evenly spaced, slightly wider than 1/rate so that
scheduling jitter cannot squeeze `rate + 1` starts into one window. The clock and the sleep are
injected so tests can drive it in virtual time.

The guarantee: no window of one second holds more than `rate` starts by the clock, whatever the
callers' concurrency, and after an idle spell there is no burst.

The pace adapts below that ceiling (`dispatcher.pacing.adaptive`): it begins at 97.5% of the rate (of
the API's documented rate, ramping up, for a rate above it), steps down when the server answers "too
frequent" (`over_rate`), as far as the server takes, and creeps back up to 99.5% while it does not.
The slot interval is the ceiling's divided by the pace's share of it, so a slower pace only widens
the gaps: the guarantee holds at every share.

What the server counts is arrivals, not slots: a pause before a slot only slips the pace, but a
pause between a slot and the socket write bunches arrivals, and a few ms of it can already cost a
60007 (docs/guide/measurements.md#slot-to-socket). The request is written in the same step of the
event loop as its slot (dispatcher.run.transport writes it at once), so only a thread holding the
GIL, or a collection, can stall that path.
`collect_before_slot` keeps the garbage collector off it; the producer yields every 0.2 ms
(engine) and the reader thread hands the GIL over while it reads an export (jobs).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from dispatcher.pacing.adaptive import Pace, first_share, start_share
from dispatcher.pacing.base import MEMORY_HEADROOM, Clock, Quota, Sleep

HEADROOM = MEMORY_HEADROOM  # pace at 99.5% of the rate: 199/s at 200
# A start may come this much before its theoretical time, so that a sleep that overshoots by a
# millisecond does not lose that millisecond for good. Any window of one second then holds at most
# floor((1 + TOLERANCE) / interval) + 1 starts, which stays <= rate while TOLERANCE < HEADROOM
# seconds; the rest of the headroom absorbs jitter on the way to the server.
TOLERANCE = 0.001
# The event loop's selector rounds a timeout up to the next millisecond, so a sleep lands up to
# 1 ms late, beyond the tolerance. A waiter far from its slot therefore sleeps to EARLY before
# it, then sleeps the short rest, whose round-up still lands inside the tolerance.
EARLY = 0.001
# A collection of the youngest generation runs when it holds `threshold0` (700) more container
# objects than it has freed. A slot taken with fewer than this many left to go cannot set one off on
# its way out: a request adds far fewer (docs/guide/measurements.md#collect-margin).
COLLECT_MARGIN = 200
# Seconds of slot times kept while the pace has never stepped down, to count the second before a
# request told "too frequent" (its reply comes within this less a second, or it is counted by the pace).
KEPT = 3.0


class Collector(Protocol):
    """What `collect_before_slot` uses of the `gc` module (a fake in tests)."""

    def isenabled(self) -> bool: ...
    def get_count(self) -> tuple[int, int, int]: ...
    def get_threshold(self) -> tuple[int, int, int]: ...
    def collect(self, generation: int = 2) -> int: ...


def collect_before_slot(collector: Collector = gc) -> None:
    """Run the collection that the next few allocations would set off, now, before a slot is taken.

    The collector runs inside whichever allocation crosses its threshold, and building and
    sending a request allocates more than anything else in a run, so that is where it strikes,
    for milliseconds, between a slot and its write (docs/guide/measurements.md#collect-before-slot).
    Run here, before the clock is read for the slot, the pass only delays the slot (it mostly fits
    in the wait for it) and the request then leaves on time. The generation is chosen as the
    collector would choose it, so older generations are still collected (no cycles are leaked);
    unlike it, a full collection does not wait for a quarter of the old objects to be new, which
    makes full collections more frequent but, with the long-lived objects frozen (`frozen_heap`),
    short.
    """
    if not collector.isenabled():
        return
    count0, count1, count2 = collector.get_count()
    threshold0, threshold1, threshold2 = collector.get_threshold()
    if threshold0 <= 0 or count0 <= threshold0 - COLLECT_MARGIN:
        return
    collector.collect(2 if count2 > threshold2 else 1 if count1 > threshold1 else 0)


@contextlib.asynccontextmanager
async def frozen_heap() -> AsyncIterator[None]:
    """For the length of a run, keep what is alive at its start out of the collector's full passes.

    `gc.freeze()` moves every object alive now (modules, classes, the outcome journal of a resume)
    into a generation the collector never visits. A full collection then visits only what the run
    made since, and is several times shorter (docs/guide/measurements.md#frozen-heap). They are
    released at the end, unless something froze objects before us. Async only so that it can share
    the engine's `async with` line.
    """
    gc.collect()  # garbage is freed, not frozen
    frozen_before = gc.get_freeze_count()
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


class RateLimiter:
    def __init__(
        self,
        rate: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        before_slot: Callable[[], None] = collect_before_slot,
        quota: Quota | None = None,
        start: float | None = None,
        documented: float | None = None,
    ) -> None:
        """`start`: the share of the ceiling the pace begins at (default: the adaptive pace's
        start, 97.5% of the rate); 1.0 with no `over_rate` calls is a fixed pace at the ceiling.
        `documented`: the API's documented rate: a higher `rate` begins at 97.5% of it and ramps up."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.interval = (1 + HEADROOM) / rate  # at the ceiling; the pace's share of it widens it
        self.quota = quota
        # The quota's even pace (theoretical time of the next unit), and its guard: the calls of the
        # last window, (time, units), and their units in all (see `limiter.Quota`).
        self._units_tat = float("-inf")
        self._log: collections.deque[tuple[float, int]] = collections.deque()
        self._logged = 0
        self._clock = clock
        self._sleep = sleep
        self._before_slot = before_slot
        self._tat = float("-inf")  # theoretical time of the next start (GCRA)
        self._paused_until = float("-inf")
        top = start_share(HEADROOM) if start is None else start
        first = first_share(HEADROOM, rate, documented) if start is None else start
        self._pace = Pace.begin(clock(), first, top)
        self._share = self._pace.level  # the pace's share of the ceiling at the latest slot
        # While the pace may step to what filled the window: when each slot of the last KEPT seconds
        # was taken, and the latest time no longer kept (slots before it are not counted).
        self._sent: collections.deque[float] = collections.deque()
        self._kept_from = float("-inf")
        # Waiters line up one at a time (asyncio.Lock is FIFO) and a slot is only taken when its
        # caller is awake to use it. Slots booked ahead would all fire together after an
        # event-loop stall: a burst the server counts against us.
        self._turn = asyncio.Lock()
        self._waiting = 0

    async def acquire(self, cost: int = 1) -> None:
        """Wait for this caller's start slot. A retry takes its slot here like a first attempt.
        `cost` counts against the quota, if there is one (see `limiter.Limiter`)."""
        if cost < 1:
            raise ValueError("cost must be at least 1")
        if self.quota is not None:
            self.quota.check_cost(cost)
        if not self._waiting:
            self._before_slot()
            if self._take(self._clock(), cost) <= 0:
                return  # nobody queued and the slot is due: no lock, no extra trip through the loop
        self._waiting += 1
        try:
            async with self._turn:
                while True:
                    self._before_slot()  # before the clock is read: a pause here only delays the slot
                    wait = self._take(self._clock(), cost)
                    if wait <= 0:
                        break
                    await self._sleep(wait - EARLY if wait > 2 * EARLY else wait)
        finally:
            self._waiting -= 1

    def _take(self, now: float, cost: int = 1) -> float:
        """Take the slot if it is due (return <= 0), else return how long until it is."""
        self._pace = self._pace.taking(now, self._tat)  # begins again after an idle spell
        wait = max(self._tat - TOLERANCE, self._paused_until) - now
        quota = self.quota
        if quota is not None:
            wait = max(wait, self._units_tat - TOLERANCE - now, self._guard(now, cost, quota))
        if wait <= 0:
            self._pace = self._pace.took(now)
            self._share = self._pace.share(now)
            if self._pace.counts_window:
                self._keep(now)
            self._tat = max(now, self._tat) + self.interval / self._share
            if quota is not None:
                self._units_tat = max(now, self._units_tat) + cost * quota.unit_interval
                self._log.append((now, cost))
                self._logged += cost
        return wait

    def _keep(self, now: float) -> None:
        sent = self._sent
        sent.append(now)
        while sent[0] < now - KEPT:
            self._kept_from = sent.popleft()

    def _window(self, sent: float) -> int | None:
        """Slots taken in the second before the request sent at `sent` (the last slot by then is its
        own); None if they are no longer all kept."""
        if sent - 1 <= self._kept_from:
            return None
        times = self._sent
        return max(0, bisect.bisect_right(times, sent) - bisect.bisect_left(times, sent - 1) - 1)

    def _guard(self, now: float, cost: int, quota: Quota) -> float:
        """How long until `cost` more units fit the quota's window (<= 0: they fit now)."""
        log = self._log
        # A call counts while it lies in the closed window [now - window, now]; it has left once
        # `now` is past its time plus the window, by a microsecond so that no clock reads equal.
        while log and log[0][0] < now - quota.window:
            self._logged -= log.popleft()[1]
        excess = self._logged + cost - quota.limit
        if excess <= 0:
            return 0.0
        for at, units in log:  # the oldest calls leave the window first
            excess -= units
            if excess <= 0:
                return at + quota.window - now + 1e-6
        raise AssertionError("unreachable: cost <= limit")

    def pause(self, seconds: float) -> None:
        """Hold every start for `seconds` (the server rate-limited our signatures: 70050)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def over_rate(self, sent_ago: float) -> float | None:
        """The server answered "too frequent" to a request started `sent_ago` seconds ago: step the
        pace down. The new pace, requests a second, or None if it did not step (see `Pace.told_too_frequent`).
        The next slot is already booked at the old pace; the one after it is at the new."""
        now = self._clock()
        sent = now - sent_ago
        self._pace, stepped = self._pace.told_too_frequent(now, sent, self.interval, self._window(sent))
        if not self._pace.counts_window:
            self._sent.clear()  # counted only until it steps down for another reason
        if not stepped:
            return None
        return self.rate / (1 + HEADROOM) * self._pace.level

    @property
    def pace(self) -> float:
        """Requests a second the latest slot was paced at (before any: where the pace begins)."""
        return self.rate / (1 + HEADROOM) * self._share
