"""What the Limiter protocol promises, kept by every limiter: the in-process one
(`dispatcher.pacing.memory.RateLimiter`), the budget in a real Redis (`dispatcher.pacing.redis`) and
the budget in a real PostgreSQL (`dispatcher.pacing.postgres`), each in virtual time (the store's
clock too). Never more than `rate` starts in any one-second window, no burst after idle, a pause
holds every start, a cancelled waiter leaks no slot, and a quota's window holds at most its limit.
What only one of them does is tested beside it: the collector's hook in test_ratelimit, one budget
for several processes and the store's faults in test_redislimit and test_postgreslimit.

Where the figures differ, they are each one's pace and tolerance: the in-process limiter paces at
99.5% of the rate and may start 1 ms early, the shared ones (Redis, PostgreSQL) at 98% (in whole
microseconds) and 3 ms.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dispatcher.pacing.base import Limiter, Quota
from dispatcher.pacing.memory import RateLimiter
from dispatcher.pacing.postgres import PostgresLimiter
from dispatcher.pacing.redis import RedisLimiter
from tests.conftest import (
    SAFETY_CAP,
    DatabaseTimeline,
    FakeClock,
    PostgresServer,
    RedisServer,
    Timeline,
    VirtualClock,
    as_new,
    in_virtual_time,
    in_virtual_time_on_postgres,
    max_in_any_window,
    units_in_any_window,
)


def no_collection() -> None:
    """The in-process limiter's collector hook only costs real time: in virtual time it is left out."""


class RedisTimeline(Timeline):
    """A Timeline for limiters on the test's Redis. Redis answers over a real socket: a round trip
    needs real time to come back, not only turns of the loop (only I/O waits in real time; the
    limiters' sleeps are virtual). Settling waits for every call to Redis under way to come back,
    however long it takes: the calls are counted around each limiter's steps that go to its store."""

    STORE_CALLS = ("_take", "_step", "_share_pause")

    def __init__(self) -> None:
        super().__init__()
        self.asking = 0
        self._back = asyncio.Event()  # set whenever no call is under way

    def count_calls(self, limiter: RedisLimiter) -> None:
        for name in self.STORE_CALLS:
            call = getattr(limiter, name)

            async def counted(*args: Any, _call: Any = call, **kwargs: Any) -> Any:
                self.asking += 1
                try:
                    return await _call(*args, **kwargs)
                finally:
                    self.asking -= 1
                    if not self.asking:
                        self._back.set()

            setattr(limiter, name, counted)

    async def settle(self) -> None:
        async with asyncio.timeout(SAFETY_CAP):
            while True:
                await super().settle()
                if not self.asking:
                    return
                self._back.clear()
                await self._back.wait()


class Budget:
    """Limiters of one kind on one budget, in the test's virtual time. Several handles on a budget
    are what several processes hold of one in Redis or PostgreSQL; of an in-process one, they are
    the one limiter that the callers of a process share."""

    def __init__(self, kind: str, server: RedisServer | PostgresServer | None) -> None:
        self.kind = kind
        self._server = server
        self._opened: list[RedisLimiter] = []
        self._on_postgres: list[PostgresLimiter] = []

    async def open(
        self,
        clock: VirtualClock,
        rate: float,
        *,
        quota: Quota | None = None,
        handles: int = 1,
        adaptive: bool = False,
        documented: float | None = None,
    ) -> list[Limiter]:
        """Handles at a fixed pace at the ceiling, or with `adaptive` the pace a run has (which ramps
        up from an API's `documented` rate below `rate`)."""
        start = None if adaptive else 1.0
        if self._server is None:
            limiter = RateLimiter(
                rate,
                clock=clock.time,
                sleep=clock.sleep,
                before_slot=no_collection,
                quota=quota,
                start=start,
                documented=documented,
            )
            return [limiter] * handles
        if isinstance(self._server, PostgresServer):
            server = self._server
            on_postgres = [
                await in_virtual_time_on_postgres(
                    server, clock, rate=rate, quota=quota, start=start, documented=documented
                )
                for _ in range(handles)
            ]
            self._on_postgres += on_postgres
            return list(on_postgres)
        made = [
            await in_virtual_time(self._server, clock, rate=rate, quota=quota, start=start, documented=documented)
            for _ in range(handles)
        ]
        self._opened += made
        if isinstance(clock, RedisTimeline):
            for on_redis in made:
                clock.count_calls(on_redis)
        return list(made)

    def timeline(self) -> Timeline:
        if self._server is None:
            return Timeline()
        if isinstance(self._server, PostgresServer):
            return DatabaseTimeline(self._on_postgres)
        return RedisTimeline()

    async def aclose(self) -> None:
        for limiter in self._opened:
            await limiter.aclose()
        for on_postgres in self._on_postgres:
            await on_postgres.aclose()


@pytest.fixture
def postgres_server(module_postgres: PostgresServer) -> PostgresServer:
    """One server for the module's tests, each finding it as a new one (`as_new`)."""
    return as_new(module_postgres)


@pytest.fixture(params=["memory", "redis", "postgres"])
async def budget(request: pytest.FixtureRequest) -> AsyncIterator[Budget]:
    server = None if request.param == "memory" else request.getfixturevalue(f"{request.param}_server")
    opened = Budget(request.param, server)
    yield opened
    await opened.aclose()


def held(limiter: Limiter) -> bool:
    """Whether a caller holds or waits for the limiter's line (an asyncio.Lock in each). The
    in-process one also counts its waiters, as its quick path skips the line when none wait."""
    assert isinstance(limiter, (RateLimiter, RedisLimiter, PostgresLimiter))
    waiting = limiter._waiting if isinstance(limiter, RateLimiter) else 0
    return limiter._turn.locked() or waiting != 0


# -- the rate ----------------------------------------------------------------------------------------

HELD_AT_LEAST = {"memory": 0.99, "redis": 0.98, "postgres": 0.98}  # of the rate, over five seconds and more


@pytest.mark.parametrize("rate", [1, 3, 200, 1000])
async def test_never_more_than_rate_in_any_window(budget: Budget, clock: FakeClock, rate: int) -> None:
    (limiter,) = await budget.open(clock, rate)
    starts = []
    for _ in range(rate * 5 + 7):
        await limiter.acquire()
        starts.append(clock.now)
    assert max_in_any_window(starts) <= rate
    # ... while holding nearly all of the rate.
    assert (len(starts) - 1) / (starts[-1] - starts[0]) >= HELD_AT_LEAST[budget.kind] * rate


async def test_no_burst_after_idle(budget: Budget, clock: FakeClock) -> None:
    """A leaky bucket would let a full second's worth through at once after a pause; these pace,
    whichever handle on the budget asks."""
    handles = await budget.open(clock, 200, handles=3)
    await handles[0].acquire()
    clock.now += 10  # idle for ten seconds
    starts = []
    for i in range(400):
        await handles[i % 3].acquire()
        starts.append(clock.now)
    assert max_in_any_window(starts) <= 200
    # The second start may come early by the tolerance, hence 21 and not 20 in the first 100 ms.
    assert max_in_any_window(starts, width=0.1) == 21


async def test_pause_holds_every_start(budget: Budget, clock: FakeClock) -> None:
    (limiter,) = await budget.open(clock, 100)
    await limiter.acquire()
    limiter.pause(60)
    paused_at = clock.now
    await limiter.acquire()
    assert clock.now >= paused_at + 60
    assert clock.now - paused_at == pytest.approx(60.0, abs=1e-6)


# -- cancelled waiters -------------------------------------------------------------------------------

# At 200 a second: the slot after the one at 0, and the one after that, each taken up to the
# tolerance early. In-process: 5.025 ms apart, 1 ms early; Redis and PostgreSQL: 5.1 ms, 3 ms.
NEXT_SLOTS = {"memory": (0.004025, 0.00905), "redis": (0.0021, 0.0072), "postgres": (0.0021, 0.0072)}


@pytest.mark.parametrize("cancelled", ["sleeping", "queued"])
async def test_a_cancelled_waiter_leaks_no_slot(budget: Budget, cancelled: str) -> None:
    """A graceful stop cancels the workers waiting for a slot: the one asleep toward its slot, or
    one queued behind it. The other gets the slot the pair was next to have, and the pace goes on
    unchanged."""
    time = budget.timeline()
    (limiter,) = await budget.open(time, 200)
    await limiter.acquire()  # the slot at 0
    waiters = {"sleeping": asyncio.create_task(limiter.acquire()), "queued": asyncio.create_task(limiter.acquire())}
    await time.settle()
    assert len(time.sleepers) == 1 and held(limiter)  # one asleep toward its slot, one in the line
    if isinstance(limiter, RateLimiter):
        assert limiter._waiting == 2
    waiters[cancelled].cancel()
    await time.settle()
    assert waiters[cancelled].cancelled()
    if isinstance(limiter, RateLimiter):
        assert limiter._waiting == 1
    (other,) = (task for name, task in waiters.items() if name != cancelled)
    next_slot, after = NEXT_SLOTS[budget.kind]
    # The other gets the slot the cancelled one would have had, or was queued for, not the one after it.
    assert await time.run_until(other) == pytest.approx(next_slot, abs=1e-9)
    assert not held(limiter)
    # And the pace goes on unchanged: the next slot is one interval later.
    assert await time.run_until(asyncio.create_task(limiter.acquire())) == pytest.approx(after, abs=1e-9)
    assert (held(limiter), time.sleepers) == (False, [])


async def test_a_waiter_cancelled_during_a_pause_leaves_the_pause_as_it_was(budget: Budget) -> None:
    time = budget.timeline()
    (limiter,) = await budget.open(time, 200)
    await limiter.acquire()
    limiter.pause(60)
    waiting = asyncio.create_task(limiter.acquire())
    await time.settle()
    waiting.cancel()
    await time.settle()
    assert waiting.cancelled() and not held(limiter)
    assert await time.run_until(asyncio.create_task(limiter.acquire())) == pytest.approx(60.0, abs=1e-9)


# -- a quota -----------------------------------------------------------------------------------------

FIRST_GAP = {
    "memory": 0.005025 - 0.001,
    "redis": 0.0051 - 0.003,
    "postgres": 0.0051 - 0.003,
}  # at 200 a second, less the tolerance


async def test_without_a_quota_cost_is_one_call(budget: Budget, clock: FakeClock) -> None:
    first, second = await budget.open(clock, 200, handles=2)
    await first.acquire()
    start = clock.now
    await second.acquire(cost=500)
    assert clock.now - start == pytest.approx(FIRST_GAP[budget.kind], abs=1e-9)


# Between calls of 500 units: the even pace; early by the tolerance; or, in-process, where that
# early start would put a 25th call in 60.5 s, held by the guard until the first has left the
# window. In-process in float seconds; in Redis and PostgreSQL, 500 units of 5,042 us (a whole
# number, rounded up).
QUOTA_GAPS = {"memory": {2.519833, 2.520833, 2.521834}, "redis": {2.518, 2.521}, "postgres": {2.518, 2.521}}
# 12,000 x 60 / 60.5 a minute: 99.2% of the quota (in Redis, less the microseconds rounded up).
QUOTA_PER_MINUTE = {
    "memory": pytest.approx(11_900.8, abs=0.5),
    "redis": pytest.approx(11_900.8, abs=1),
    "postgres": pytest.approx(11_900.8, abs=1),
}


async def test_a_quota_paces_big_calls_evenly_and_holds_its_limit(budget: Budget, clock: FakeClock) -> None:
    """batchsendmsg: 12,000 messages a minute; calls of 500 are 500 x 60.5 / 12,000 s apart,
    whichever handle on the budget makes them, and no 60.5 s hold more than 12,000."""
    handles = await budget.open(clock, 200, quota=Quota(12_000, 60), handles=3)
    calls = []
    for i in range(200):  # 100,000 messages, over eight minutes
        await handles[i % 3].acquire(cost=500)
        calls.append((clock.now, 500))
    gaps = {round(b[0] - a[0], 6) for a, b in itertools.pairwise(calls)}
    assert gaps == QUOTA_GAPS[budget.kind]
    assert units_in_any_window(calls, 60.5) == 12_000
    per_minute = (len(calls) - 1) * 500 / (calls[-1][0] - calls[0][0]) * 60
    assert per_minute == QUOTA_PER_MINUTE[budget.kind]


async def test_the_quota_guard_holds_a_big_call_then_many_small_ones(budget: Budget, clock: FakeClock) -> None:
    """Even pacing alone would let 500 units after an idle spell plus a window's worth of single
    ones through: 1,499 in ten seconds against a quota of 1,000. The guard holds them back."""
    handles = await budget.open(clock, 1000, quota=Quota(1000, 10), handles=3)
    calls = []
    await handles[0].acquire(cost=500)
    calls.append((clock.now, 500))
    for i in range(2000):
        await handles[i % 3].acquire(cost=1)
        calls.append((clock.now, 1))
    assert units_in_any_window(calls, 10.5) == 1000
    assert units_in_any_window(calls, 10.0) <= 1000


async def test_a_call_bigger_than_the_quota_is_refused(budget: Budget, clock: FakeClock) -> None:
    (limiter,) = await budget.open(clock, 200, quota=Quota(100, 60))
    with pytest.raises(ValueError, match="call of 101 units can never fit a quota of 100"):
        await limiter.acquire(cost=101)


# -- the adaptive pace -------------------------------------------------------------------------------

# Where a run's pace begins at --rate 200: 97.5% of it in-process, 96.5% for a budget that processes
# share (a fleet keeps closer to its pace than one process, which loses some of its slots).
STARTS = {"memory": 195.0, "redis": 193.0, "postgres": 193.0}


async def slots_for(limiter: Limiter, clock: FakeClock, seconds: float) -> list[float]:
    starts: list[float] = []
    end = clock.now + seconds
    while clock.now < end:
        await limiter.acquire()
        starts.append(clock.now)
    return starts


async def test_above_the_documented_rate_the_pace_ramps_up_and_steps_to_what_filled_the_window(
    budget: Budget, clock: FakeClock
) -> None:
    """--rate 2000 for an API documented at 200: the pace begins at the start of 200 and doubles every
    second. A reply "too frequent" to the 211th request since the start steps every handle's pace to
    97.5% of the 210 sent in the second before it; a later one, to the 205th, lowers it to 97.5% of
    204, without another step (the window was full sooner: it held refused requests too)."""
    one, two = await budget.open(clock, 2000, adaptive=True, documented=200, handles=2)
    await one.acquire()
    assert one.pace == pytest.approx(STARTS[budget.kind], abs=0.01)
    starts = [clock.now]
    for i in range(1, 211):
        await (one, two)[i % 2].acquire()
        starts.append(clock.now)
    assert 0.80 < starts[-1] - starts[0] < 0.82  # the ramp: 210 requests in 0.81 s, not 1.08 s
    clock.now += 0.3
    assert await one.over_rate(clock.now - starts[210]) == pytest.approx(0.975 * 210, abs=0.6)
    assert await one.over_rate(clock.now - starts[204]) is None
    clock.now += 0.01
    assert await two.over_rate(0.0) is None  # sent after the step: nothing about that window
    await one.acquire()
    await two.acquire()
    assert two.pace == pytest.approx(0.975 * 204, abs=0.6)


async def test_after_a_second_mostly_too_frequent_every_handle_steps_to_what_the_server_took(
    budget: Budget, clock: FakeClock
) -> None:
    """The second after a step is counted across handles: the slots any handle takes, the refusals any
    handle hears. Half of its 188 requests refused: the next step goes to 97.5% of the 94 a second the
    server took, whichever handle hears it."""
    one, two = await budget.open(clock, 200, adaptive=True, handles=2)
    await slots_for(one, clock, 2.0)
    assert await two.over_rate(0.3) == pytest.approx(STARTS[budget.kind] * 1.001 * 0.975, abs=0.05)
    counted = []
    for i in range(188):
        await (one, two)[i % 2].acquire()
        counted.append(clock.now)
    for i, sent in enumerate(counted[1::2]):
        assert await (one, two)[i % 2].over_rate(clock.now - sent) is None
    clock.now += 0.2  # past the counted second
    assert await two.over_rate(0.0) == pytest.approx(0.975 * 94, abs=0.01)


async def test_a_ramp_the_workers_fall_behind_steps_to_what_was_sent_not_to_what_it_allowed(
    budget: Budget, clock: FakeClock
) -> None:
    """Workers that ask for a slot every 4 ms (250 a second) fall behind a ramp that allows 400 a
    second by 1.5 s: a reply "too frequent" to the request then steps to 97.5% of the 249 sent in the
    second before it, as counted (from whichever handle), not of the 398 the ramp allowed."""
    one, two = await budget.open(clock, 2000, adaptive=True, documented=200, handles=2)
    starts: list[float] = []
    while not starts or starts[-1] < starts[0] + 1.5:
        clock.now = max(clock.now, starts[-1] + 0.004) if starts else clock.now
        await (one, two)[len(starts) % 2].acquire()
        starts.append(clock.now)
    sent = starts[-1]
    before = [t for t in starts[:-1] if t >= sent - 1]
    assert len(before) == 249
    clock.now += 0.3
    # (A shared budget's ceiling is an interval in whole microseconds, rounded up: 511 us at 2,000.)
    assert await one.over_rate(clock.now - sent) == pytest.approx(0.975 * 249, abs=0.5)
