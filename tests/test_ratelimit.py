"""The rate limiter, in virtual time: never more than R starts in any one-second window."""

from __future__ import annotations

import asyncio
import bisect

import pytest

from dispatcher.ratelimit import RateLimiter
from tests.conftest import FakeClock


def max_in_any_window(starts: list[float], width: float = 1.0) -> int:
    """The most starts in any closed window [t, t + width]; the worst window begins at a start."""
    starts = sorted(starts)
    return max(bisect.bisect_right(starts, t + width + 1e-12) - i for i, t in enumerate(starts))


@pytest.mark.parametrize("rate", [1, 3, 200, 1000])
async def test_never_more_than_rate_in_any_window(clock: FakeClock, rate: int) -> None:
    limiter = RateLimiter(rate, clock=clock.time, sleep=clock.sleep)
    starts = []
    for _ in range(rate * 5 + 7):
        await limiter.acquire()
        starts.append(clock.now)
    assert max_in_any_window(starts) <= rate
    # ... while holding at least 99% of the rate.
    assert (len(starts) - 1) / (starts[-1] - starts[0]) >= 0.99 * rate


async def test_no_burst_after_idle(clock: FakeClock) -> None:
    """A leaky bucket would let a full second's worth through at once after a pause; this one paces."""
    limiter = RateLimiter(200, clock=clock.time, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 10  # idle for ten seconds
    starts = []
    for _ in range(400):
        await limiter.acquire()
        starts.append(clock.now)
    assert max_in_any_window(starts) <= 200
    assert max_in_any_window(starts, width=0.1) <= 21


async def test_concurrent_callers_share_the_pace() -> None:
    """Many tasks at once (as the worker pool does), under a virtual clock that only moves on sleep."""
    now = [0.0]
    wakeups: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        wakeups.append((now[0] + seconds, fut))
        await fut

    limiter = RateLimiter(50, clock=lambda: now[0], sleep=sleep)
    starts: list[float] = []

    async def worker() -> None:
        for _ in range(10):
            await limiter.acquire()
            starts.append(now[0])

    tasks = [asyncio.create_task(worker()) for _ in range(30)]
    while not all(t.done() for t in tasks):
        for _ in range(10):  # let every runnable task run until it blocks
            await asyncio.sleep(0)
        waiting = [w for w in wakeups if not w[1].done()]
        if waiting:  # everyone is blocked: move time to the next wake-up, as a real clock would
            now[0] = min(when for when, _ in waiting)
            for when, fut in waiting:
                if when <= now[0]:
                    fut.set_result(None)
    assert len(starts) == 300
    assert max_in_any_window(starts) <= 50


async def test_pause_holds_every_start(clock: FakeClock) -> None:
    limiter = RateLimiter(100, clock=clock.time, sleep=clock.sleep)
    await limiter.acquire()
    limiter.pause(60)
    paused_at = clock.now
    await limiter.acquire()
    assert clock.now >= paused_at + 60


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


async def test_a_start_worth_several_slots_waits_for_the_last_of_them(clock: FakeClock) -> None:
    limiter = RateLimiter(200, clock=clock.time, sleep=clock.sleep)
    await limiter.acquire()
    start = clock.now
    await limiter.acquire(cost=10)  # ten slots of 5.025 ms, the last due 50.25 ms after the first start
    assert clock.now - start == pytest.approx(10 * 0.005025 - 0.001, abs=1e-4)
    await limiter.acquire()
    assert clock.now - start == pytest.approx(11 * 0.005025 - 0.001, abs=1e-4)
