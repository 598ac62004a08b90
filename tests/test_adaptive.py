"""The adaptive pace through the in-process limiter, in virtual time: it begins at 97.5% of the rate,
steps down on "too frequent", creeps back up to the ceiling (99.5%) and never above it, stops at its
floor (half the ceiling), steps once per window, and begins again after an idle spell."""

from __future__ import annotations

import itertools

import pytest

from dispatcher.ratelimit import RateLimiter
from tests.conftest import FakeClock
from tests.test_ratelimit import max_in_any_window

CEILING = 200 / 1.005  # requests a second at --rate 200: 199.005


def limiter_at_200(clock: FakeClock) -> RateLimiter:
    return RateLimiter(200, clock=clock.time, sleep=clock.sleep, before_slot=lambda: None)


async def slots(limiter: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    """Take `n` slots one after another; when each was taken."""
    starts = []
    for _ in range(n):
        await limiter.acquire()
        starts.append(clock.now)
    return starts


def gaps(starts: list[float]) -> list[float]:
    return [round(b - a, 9) for a, b in itertools.pairwise(starts)]


async def test_the_pace_begins_at_97_5_percent_of_the_rate(clock: FakeClock) -> None:
    limiter = limiter_at_200(clock)
    starts = await slots(limiter, clock, 11)
    assert limiter.pace == pytest.approx(195.0, abs=0.02)
    # 1/195 s apart (the first one a millisecond early, the tolerance), creeping up by 0.2/s a second.
    assert gaps(starts)[1:] == pytest.approx([1 / 195] * 9, abs=1e-6)


async def test_too_frequent_steps_the_pace_down_to_97_5_percent(clock: FakeClock) -> None:
    limiter = limiter_at_200(clock)
    await slots(limiter, clock, 3)
    assert await limiter.over_rate(0.3) == pytest.approx(195.0 * 0.975, abs=0.01)  # 190.125
    starts = await slots(limiter, clock, 4)
    assert limiter.pace == pytest.approx(190.125, abs=0.01)
    # The slot booked before the step keeps its place; those after it are 1/190.125 s apart.
    assert gaps(starts)[1:] == pytest.approx([1 / 190.125] * 2, abs=1e-6)


async def test_one_step_per_window(clock: FakeClock) -> None:
    """Replies to requests sent before a step, or within a second after it, are about windows that
    held the faster pace: they step no further. A request sent a second after the step may."""
    limiter = limiter_at_200(clock)
    await slots(limiter, clock, 1)
    assert await limiter.over_rate(0.3) is not None
    stepped_at = clock.now
    clock.now = stepped_at + 0.2
    assert await limiter.over_rate(0.4) is None  # sent before the step
    clock.now = stepped_at + 1.4
    assert await limiter.over_rate(0.5) is None  # sent 0.9 s after it
    clock.now = stepped_at + 1.5
    # Sent 1.1 s after it: 97.5% of 190.125, crept up by 0.3 in the 1.5 s since.
    assert await limiter.over_rate(0.4) == pytest.approx(185.66, abs=0.01)
    await slots(limiter, clock, 1)
    assert limiter.pace == pytest.approx(185.66, abs=0.01)


async def test_the_pace_creeps_back_up_to_the_ceiling_and_never_above(clock: FakeClock) -> None:
    limiter = limiter_at_200(clock)
    await slots(limiter, clock, 1)
    await limiter.over_rate(0.0)  # 190.125 a second
    starts = await slots(limiter, clock, 1000)  # about 5 s
    # Up by 0.1% of the ceiling a second: 0.199 requests a second more, a second.
    elapsed = starts[-1] - starts[0]
    assert limiter.pace == pytest.approx(190.125 + 0.199 * elapsed, abs=0.02)
    starts += await slots(limiter, clock, 10_000)  # 50 s more: long past the 45 s back to the ceiling
    assert limiter.pace == pytest.approx(CEILING, abs=1e-9)
    assert min(gaps(starts)[1:]) == pytest.approx(1.005 / 200, abs=1e-9)  # 5.025 ms: never closer
    assert gaps(starts)[-100:] == pytest.approx([1.005 / 200] * 100, abs=1e-9)
    assert max_in_any_window(starts) <= 200


async def test_the_pace_stops_at_half_the_ceiling(clock: FakeClock) -> None:
    limiter = limiter_at_200(clock)
    stepped: list[float] = []
    while len(stepped) < 100:  # "too frequent" every 1.5 s, each to a request sent 1.2 s after the last step
        clock.now += 1.5
        pace = await limiter.over_rate(0.3)
        if pace is None:
            break
        stepped.append(pace)
    # Whole steps of 97.5% (less what the pace crept up in between), down to half the ceiling: 99.50 a second.
    assert 20 < len(stepped) < 40
    assert all(0.975 <= b / a < 0.98 for a, b in itertools.pairwise(stepped))
    assert CEILING / 2 <= stepped[-1] < CEILING / 2 / 0.975
    # Near the floor a step would go below it: none is taken while the pace creeps the 2.5% back up.
    for _ in range(6):
        clock.now += 1.5
        assert await limiter.over_rate(0.3) is None
    await slots(limiter, clock, 5)
    assert CEILING / 2 <= limiter.pace < CEILING / 2 / 0.975


async def test_after_an_idle_second_the_pace_begins_again(clock: FakeClock) -> None:
    limiter = limiter_at_200(clock)
    await slots(limiter, clock, 6000)  # 30 s: at the ceiling
    assert limiter.pace == pytest.approx(CEILING, abs=1e-9)
    clock.now += 2.0  # nothing sent for two seconds: the server's window is empty
    await slots(limiter, clock, 1)
    assert limiter.pace == pytest.approx(195.0, abs=1e-9)
    # A pace below the start stays where it is.
    await limiter.over_rate(0.0)
    clock.now += 2.0
    await slots(limiter, clock, 1)
    assert limiter.pace == pytest.approx(190.125 + 0.199 * 2, abs=0.01)


async def test_a_fixed_pace_starts_at_the_ceiling(clock: FakeClock) -> None:
    """`start=1.0` with no over_rate is the fixed pace send_group_msg's groups get (95% of 40 a second)."""
    limiter = RateLimiter(200, clock=clock.time, sleep=clock.sleep, before_slot=lambda: None, start=1.0)
    starts = await slots(limiter, clock, 5)
    assert limiter.pace == pytest.approx(CEILING, abs=1e-9)
    assert gaps(starts)[1:] == pytest.approx([1.005 / 200] * 3, abs=1e-9)
