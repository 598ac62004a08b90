"""The in-process rate limiter's own, in virtual time: many callers at once, the collector's hook
before a slot, the frozen heap; and a quota's bounds. What both limiters promise is in
test_limiter_contract."""

from __future__ import annotations

import asyncio
import gc
import math

import pytest

from dispatcher.pacing.base import Quota
from dispatcher.pacing.memory import RateLimiter, collect_before_slot, frozen_heap
from tests.conftest import FakeClock, max_in_any_window


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


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


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
