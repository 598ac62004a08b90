"""A pacing rate limiter: no more than `rate` requests start in any one-second window.

Why not `aiolimiter.AsyncLimiter(rate, 1)`: it is a leaky bucket that admits a burst of `rate` and
then drips `rate` more within the same second, nearly twice the rate in one window, which the
server answers with 60007. This limiter has a bucket of one token refilled every `interval`
(GCRA with no burst tolerance), so starts are evenly spaced, slightly wider than 1/rate so that
scheduling jitter cannot squeeze `rate + 1` starts into one window. The clock and the sleep are
injected so tests can drive it in virtual time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

HEADROOM = 0.005  # pace at 99.5% of the rate: 199/s at 200


class RateLimiter:
    def __init__(self, rate: float, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.interval = (1 + HEADROOM) / rate
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._paused_until = float("-inf")

    async def acquire(self) -> None:
        """Wait for this caller's start slot. A retry takes its slot here like a first attempt."""
        while True:
            now = self._clock()
            slot = max(now, self._next, self._paused_until)
            self._next = slot + self.interval
            if slot > now:
                await self._sleep(slot - now)
            # A pause ordered while we slept covers slots handed out before it, too.
            if self._clock() >= self._paused_until:
                return

    def pause(self, seconds: float) -> None:
        """Hold every start for `seconds` (the server rate-limited our signatures: 70050)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def paused_until(self) -> float:
        return self._paused_until
