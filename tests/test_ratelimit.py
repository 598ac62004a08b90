"""The rate limiter, in virtual time: never more than R starts in any one-second window."""

from __future__ import annotations

import asyncio
import bisect
import gc
import itertools
import math

import pytest

from dispatcher.limiter import Quota
from dispatcher.ratelimit import RateLimiter, collect_before_slot, frozen_heap
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
    # ... while holding at least the 97.5% of the rate the pace begins at.
    assert (len(starts) - 1) / (starts[-1] - starts[0]) >= 0.975 * rate


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


def units_in_any_window(calls: list[tuple[float, int]], width: float) -> int:
    """The most units in any closed window [t, t + width] of (time, units) calls."""
    times = [t for t, _ in calls]
    return max(
        sum(units for _, units in calls[i : bisect.bisect_right(times, t + width + 1e-12)]) for i, t in enumerate(times)
    )


async def test_without_a_quota_cost_is_one_call(clock: FakeClock) -> None:
    limiter = RateLimiter(200, clock=clock.time, sleep=clock.sleep, start=1.0)  # at the ceiling: 199/s
    await limiter.acquire()
    start = clock.now
    await limiter.acquire(cost=500)
    assert clock.now - start == pytest.approx(0.005025 - 0.001, abs=1e-9)


async def test_a_quota_paces_big_calls_evenly_and_holds_its_limit(clock: FakeClock) -> None:
    """batchsendmsg: 12,000 messages a minute; calls of 500 are 500 x 60.5 / 12,000 s apart."""
    limiter = RateLimiter(200, clock=clock.time, sleep=clock.sleep, quota=Quota(12_000, 60))
    calls = []
    for _ in range(200):  # 100,000 messages, over eight minutes
        await limiter.acquire(cost=500)
        calls.append((clock.now, 500))
    gaps = {round(b[0] - a[0], 6) for a, b in itertools.pairwise(calls)}
    # The even pace; 1 ms early (the tolerance); or, where that early start would put a 25th call
    # in 60.5 s, held by the guard until the first has left the window.
    assert gaps == {2.519833, 2.520833, 2.521834}
    assert units_in_any_window(calls, 60.5) == 12_000
    per_minute = (len(calls) - 1) * 500 / (calls[-1][0] - calls[0][0]) * 60
    assert per_minute == pytest.approx(11_900.8, abs=0.5)  # 12,000 x 60 / 60.5: 99.2% of the quota


async def test_the_quota_guard_holds_a_big_call_then_many_small_ones(clock: FakeClock) -> None:
    """Even pacing alone would let 500 units after an idle spell plus a window's worth of single
    ones through: 1,499 in ten seconds against a quota of 1,000. The guard holds them back."""
    limiter = RateLimiter(1000, clock=clock.time, sleep=clock.sleep, quota=Quota(1000, 10))
    calls = []
    await limiter.acquire(cost=500)
    calls.append((clock.now, 500))
    for _ in range(2000):
        await limiter.acquire(cost=1)
        calls.append((clock.now, 1))
    assert units_in_any_window(calls, 10.5) == 1000
    assert units_in_any_window(calls, 10.0) <= 1000


async def test_a_call_bigger_than_the_quota_is_refused(clock: FakeClock) -> None:
    limiter = RateLimiter(200, clock=clock.time, sleep=clock.sleep, quota=Quota(100, 60))
    with pytest.raises(ValueError, match="call of 101 units can never fit a quota of 100"):
        await limiter.acquire(cost=101)


@pytest.mark.parametrize(("limit", "per"), [(0, 60), (12_000, 0), (12_000, math.inf), (12_000, math.nan)])
def test_a_quota_must_be_positive(limit: int, per: float) -> None:
    with pytest.raises(ValueError):
        Quota(limit, per)


class FakeCollector:
    def __init__(self, count: tuple[int, int, int], enabled: bool = True, threshold0: int = 700) -> None:
        self.count = count
        self.enabled = enabled
        self.threshold0 = threshold0
        self.collected: list[int] = []

    def isenabled(self) -> bool:
        return self.enabled

    def get_count(self) -> tuple[int, int, int]:
        return self.count

    def get_threshold(self) -> tuple[int, int, int]:
        return (self.threshold0, 10, 10)

    def collect(self, generation: int = 2) -> int:
        self.collected.append(generation)
        return 0


@pytest.mark.parametrize(
    ("count", "collected"),
    [
        ((500, 0, 0), []),  # 200 allocations to go: none can be set off on the way to the socket
        ((501, 0, 0), [0]),
        ((501, 11, 0), [1]),  # the collector's own choice: the oldest generation past its threshold
        ((501, 11, 11), [2]),
        ((501, 3, 11), [2]),
    ],
)
def test_collect_before_slot_runs_the_collection_that_is_nearly_due(
    count: tuple[int, int, int], collected: list[int]
) -> None:
    collector = FakeCollector(count)
    collect_before_slot(collector)
    assert collector.collected == collected


def test_collect_before_slot_leaves_a_disabled_collector_alone() -> None:
    disabled, manual = FakeCollector((699, 11, 11), enabled=False), FakeCollector((699, 11, 11), threshold0=0)
    collect_before_slot(disabled)
    collect_before_slot(manual)
    assert (disabled.collected, manual.collected) == ([], [])


async def test_a_pause_before_a_slot_delays_the_slot_not_the_request(clock: FakeClock) -> None:
    """The hook runs just before the clock is read for a slot: a collection there makes the slot
    late and the next one an interval after it, never two slots together (as they would be if the
    slot were taken by the time before the pause)."""
    pauses = [(1010.0, 0.5), (1010.5995, 0.2)]  # (when, how long): on the quick path, then after a wait

    def collect() -> None:
        if pauses and clock.now >= pauses[0][0] - 1e-6:
            clock.now += pauses.pop(0)[1]

    limiter = RateLimiter(10, clock=clock.time, sleep=clock.sleep, before_slot=collect, start=1.0)
    await limiter.acquire()
    clock.now = 1010.0  # idle: the next slot is due at once
    starts = []
    for _ in range(3):
        await limiter.acquire()
        starts.append(round(clock.now - 1010, 4))
    assert starts == [0.5, 0.7995, 0.899]  # interval 0.1005, less the tolerance (0.001) once due


async def test_frozen_heap_freezes_for_the_run_only() -> None:
    assert gc.get_freeze_count() == 0
    async with frozen_heap():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


class Timeline:
    """Virtual time for tasks that wait side by side: a sleeper stays asleep until `run_until` moves
    the clock to its wake-up time (FakeClock's sleep moves the clock at once, for everyone), so a
    test can cancel a task while it waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        entry = (self.now + max(0.0, seconds), asyncio.get_running_loop().create_future())
        self.sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self.sleepers.remove(entry)

    async def settle(self) -> None:
        """Let every runnable task run until it blocks (on a sleep, a lock, or real I/O: a few turns)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def run_until(self, task: asyncio.Task[None]) -> float:
        """Move the clock from wake-up to wake-up until `task` is done; the time it finished at."""
        for _ in range(1000):  # a limiter that keeps its waiter asleep fails here, not by hanging
            await self.settle()
            if task.done():
                await task
                return self.now
            pending = [entry for entry in self.sleepers if not entry[1].done()]
            assert pending, "the task waits for something other than time"
            self.now = min(when for when, _ in pending)
            for when, fut in pending:
                if when <= self.now:
                    fut.set_result(None)
        raise AssertionError(f"still waiting at {self.now}")


def no_collection() -> None:
    pass


async def test_a_waiter_cancelled_in_its_sleep_leaks_no_slot() -> None:
    """What a graceful stop does to the idle workers. Ten a second at the ceiling: slots 0.1005 s
    apart, each taken up to 1 ms early."""
    time = Timeline()
    limiter = RateLimiter(10, clock=time.time, sleep=time.sleep, before_slot=no_collection, start=1.0)
    await limiter.acquire()  # the slot at 0
    sleeping = asyncio.create_task(limiter.acquire())  # sleeps toward the slot at 0.0995
    queued = asyncio.create_task(limiter.acquire())  # waits for its turn behind it
    await time.settle()
    assert (limiter._waiting, len(time.sleepers)) == (2, 1)
    sleeping.cancel()
    await time.settle()
    assert sleeping.cancelled()
    # The next in line gets the slot the cancelled one would have had, not the one after it.
    assert await time.run_until(queued) == pytest.approx(0.0995, abs=1e-9)
    assert (limiter._waiting, limiter._turn.locked()) == (0, False)
    # And the pace goes on unchanged: the next slot is one interval later.
    assert await time.run_until(asyncio.create_task(limiter.acquire())) == pytest.approx(0.2, abs=1e-9)
    assert (limiter._waiting, limiter._turn.locked(), time.sleepers) == (0, False, [])


async def test_a_waiter_cancelled_in_the_queue_leaks_no_slot() -> None:
    time = Timeline()
    limiter = RateLimiter(10, clock=time.time, sleep=time.sleep, before_slot=no_collection, start=1.0)
    await limiter.acquire()
    sleeping = asyncio.create_task(limiter.acquire())
    queued = asyncio.create_task(limiter.acquire())  # waits on the lock, not asleep
    await time.settle()
    queued.cancel()
    await time.settle()
    assert queued.cancelled() and limiter._waiting == 1
    assert await time.run_until(sleeping) == pytest.approx(0.0995, abs=1e-9)
    assert (limiter._waiting, limiter._turn.locked()) == (0, False)
    assert await time.run_until(asyncio.create_task(limiter.acquire())) == pytest.approx(0.2, abs=1e-9)


async def test_a_waiter_cancelled_during_a_pause_leaves_the_pause_as_it_was() -> None:
    time = Timeline()
    limiter = RateLimiter(10, clock=time.time, sleep=time.sleep, before_slot=no_collection, start=1.0)
    await limiter.acquire()
    limiter.pause(60)
    waiting = asyncio.create_task(limiter.acquire())
    await time.settle()
    waiting.cancel()
    await time.settle()
    assert waiting.cancelled() and (limiter._waiting, limiter._turn.locked()) == (0, False)
    assert await time.run_until(asyncio.create_task(limiter.acquire())) == pytest.approx(60.0, abs=1e-9)
