"""A pacing rate limiter: no more than `rate` requests start in any one-second window.

Why not `aiolimiter.AsyncLimiter(rate, 1)`: it is a leaky bucket that admits a burst of `rate` and
then drips `rate` more within the same second, nearly twice the rate in one window, which the
server answers with 60007. This limiter has a bucket of one token refilled every `interval`
(GCRA with no burst tolerance), so starts are evenly spaced, slightly wider than 1/rate so that
scheduling jitter cannot squeeze `rate + 1` starts into one window. The clock and the sleep are
injected so tests can drive it in virtual time.

The guarantee: no window of one second holds more than `rate` starts by the clock, whatever the
callers' concurrency, and after an idle spell there is no burst.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

HEADROOM = 0.005  # pace at 99.5% of the rate: 199/s at 200
# A start may come this much before its theoretical time, so that a sleep that overshoots by a
# millisecond does not lose that millisecond for good. Any window of one second then holds at most
# floor((1 + TOLERANCE) / interval) + 1 starts, which stays <= rate while TOLERANCE < HEADROOM
# seconds; the rest of the headroom absorbs jitter on the way to the server.
TOLERANCE = 0.001
# The event loop's selector rounds a timeout up to the next millisecond, so a sleep lands up to
# 1 ms late, beyond the tolerance. A waiter far from its slot therefore sleeps to EARLY before
# it, then sleeps the short rest, whose round-up still lands inside the tolerance.
EARLY = 0.001


class RateLimiter:
    def __init__(self, rate: float, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.interval = (1 + HEADROOM) / rate
        self._clock = clock
        self._sleep = sleep
        self._tat = float("-inf")  # theoretical time of the next start (GCRA)
        self._paused_until = float("-inf")
        # Waiters line up one at a time (asyncio.Lock is FIFO) and a slot is only taken when its
        # caller is awake to use it. Slots booked ahead would all fire together after an
        # event-loop stall: a burst the server counts against us.
        self._turn = asyncio.Lock()
        self._waiting = 0

    async def acquire(self, cost: int = 1) -> None:
        """Wait for this caller's start slot. A retry takes its slot here like a first attempt.
        A start worth `cost` slots waits until the last of them is due (see `limiter.Limiter`)."""
        if not self._waiting and self._take(self._clock(), cost) <= 0:
            return  # nobody queued and the slot is due: no lock, no extra trip through the loop
        self._waiting += 1
        try:
            async with self._turn:
                while (wait := self._take(self._clock(), cost)) > 0:
                    await self._sleep(wait - EARLY if wait > 2 * EARLY else wait)
        finally:
            self._waiting -= 1

    def _take(self, now: float, cost: int = 1) -> float:
        """Take the slot if it is due (return <= 0), else return how long until it is."""
        wait = max(self._tat + (cost - 1) * self.interval - TOLERANCE, self._paused_until) - now
        if wait <= 0:
            self._tat = max(now + self.interval, self._tat + self.interval * cost)
        return wait

    def pause(self, seconds: float) -> None:
        """Hold every start for `seconds` (the server rate-limited our signatures: 70050)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
