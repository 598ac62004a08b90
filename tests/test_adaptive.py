"""The adaptive pace through the in-process limiter, in virtual time: it begins at 97.5% of the rate,
steps down on "too frequent", creeps back up to the ceiling (99.5%) and never above it, follows the
server however far below the rate down to its floor, steps once per window, and begins again after
an idle spell; above the API's documented rate it ramps up, and steps to what the server took; and through
the engine: which replies step it down, and the log line, summary keys and metrics that tell of it."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dispatcher.observe.events import Event, PaceStepped
from dispatcher.observe.metrics import RunMetrics
from dispatcher.observe.summary import Summary
from dispatcher.pacing.memory import RateLimiter
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Sandbox
from tests.conftest import FakeClock, make_config, max_in_any_window, write_jobs

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
    # Sent 1.1 s after it: 97.5% of 190.125, crept up by 0.15 in the 1.5 s since.
    assert await limiter.over_rate(0.4) == pytest.approx(185.52, abs=0.01)
    await slots(limiter, clock, 1)
    assert limiter.pace == pytest.approx(185.52, abs=0.01)


async def test_the_pace_creeps_back_up_to_the_ceiling_and_never_above(clock: FakeClock) -> None:
    limiter = limiter_at_200(clock)
    await slots(limiter, clock, 1)
    await limiter.over_rate(0.0)  # 190.125 a second
    starts = await slots(limiter, clock, 1000)  # about 5 s
    # Up by 0.05% of the pace a second: 0.095 requests a second more, a second.
    elapsed = starts[-1] - starts[0]
    assert limiter.pace == pytest.approx(190.125 + 0.095 * elapsed, abs=0.02)
    starts += await slots(limiter, clock, 20_000)  # 100 s more: past the 93 s back to the ceiling
    assert limiter.pace == pytest.approx(CEILING, abs=1e-9)
    assert min(gaps(starts)[1:]) == pytest.approx(1.005 / 200, abs=1e-9)  # 5.025 ms: never closer
    assert gaps(starts)[-100:] == pytest.approx([1.005 / 200] * 100, abs=1e-9)
    assert max_in_any_window(starts) <= 200


async def test_the_pace_follows_the_server_below_half_the_rate_down_to_its_floor(clock: FakeClock) -> None:
    """However far below --rate the server takes requests, the pace follows it (it stopped at half the
    ceiling, 99.50 a second, before), in whole steps, down to 0.1% of the ceiling."""
    limiter = limiter_at_200(clock)
    stepped: list[float] = []
    while len(stepped) < 400:  # "too frequent" every 1.5 s, each to a request sent 1.2 s after the last step
        clock.now += 1.5
        pace = await limiter.over_rate(0.3)
        if pace is None:
            break
        stepped.append(pace)
    # Whole steps of 97.5% (less what the pace crept up in between), past half the ceiling, down to
    # 0.1% of it: 0.199 a second.
    assert 250 < len(stepped) < 300
    assert all(0.975 <= b / a < 0.98 for a, b in itertools.pairwise(stepped))
    assert stepped[30] < CEILING / 2
    assert 0.199 <= stepped[-1] < 0.199 / 0.975
    # Near the floor a step would go below it: none is taken until the pace has crept 2.5% back up,
    # about 50 s, so a minute of replies "too frequent" steps it (and logs) twice at most.
    later = []
    for _ in range(40):
        clock.now += 1.5
        later.append(await limiter.over_rate(0.3))
    assert 1 <= sum(p is not None for p in later) <= 2
    assert all(p >= 0.199 for p in later if p is not None)


async def test_after_an_idle_second_the_pace_begins_again(clock: FakeClock) -> None:
    limiter = limiter_at_200(clock)
    await slots(limiter, clock, 10_000)  # 50 s: at the ceiling
    assert limiter.pace == pytest.approx(CEILING, abs=1e-9)
    clock.now += 2.0  # nothing sent for two seconds: the server's window is empty
    await slots(limiter, clock, 1)
    assert limiter.pace == pytest.approx(195.0, abs=1e-9)
    # A pace below the start begins again where it was at its last slot.
    await limiter.over_rate(0.0)
    clock.now += 2.0
    await slots(limiter, clock, 1)
    assert limiter.pace == pytest.approx(190.125, abs=0.01)


async def test_a_fixed_pace_starts_at_the_ceiling(clock: FakeClock) -> None:
    """`start=1.0` with no over_rate is the fixed pace send_group_msg's groups get (95% of 40 a second)."""
    limiter = RateLimiter(200, clock=clock.time, sleep=clock.sleep, before_slot=lambda: None, start=1.0)
    starts = await slots(limiter, clock, 5)
    assert limiter.pace == pytest.approx(CEILING, abs=1e-9)
    assert gaps(starts)[1:] == pytest.approx([1.005 / 200] * 3, abs=1e-9)


# -- a --rate above the API's documented rate, and a server that takes far less than the pace ---------


def limiter_at(clock: FakeClock, rate: float) -> RateLimiter:
    """An in-process limiter for an API whose documented rate is 200 a second."""
    return RateLimiter(rate, clock=clock.time, sleep=clock.sleep, before_slot=lambda: None, documented=200)


async def slots_for(limiter: RateLimiter, clock: FakeClock, seconds: float) -> list[float]:
    """Take slots one after another for `seconds`; when each was taken."""
    starts: list[float] = []
    end = clock.now + seconds
    while clock.now < end:
        await limiter.acquire()
        starts.append(clock.now)
    return starts


async def test_above_the_documented_rate_the_pace_begins_there_and_ramps_up(clock: FakeClock) -> None:
    """--rate 2000 for an API documented at 200 a second: a typo, or an app that bought more. The pace
    begins at 97.5% of 200 and doubles every second while the server takes it, to 97.5% of 2,000."""
    limiter = limiter_at(clock, 2000)
    first = await slots(limiter, clock, 1)
    assert limiter.pace == pytest.approx(195.0, abs=0.01)
    starts = first + await slots_for(limiter, clock, 1.0)
    assert limiter.pace == pytest.approx(390.0, abs=1)
    assert max_in_any_window(starts) == pytest.approx(195 / math.log(2), abs=2)  # 281 in the first second
    await slots_for(limiter, clock, 2.4)  # log2(10) = 3.32 s after the start
    assert limiter.pace == pytest.approx(1950.0 * 1.0017, abs=1)  # and creeping from there
    await slots_for(limiter, clock, 2.0)
    assert limiter.pace == pytest.approx(1950.0 * 1.0027, abs=1)


async def test_too_frequent_while_ramping_steps_to_what_filled_the_servers_window(clock: FakeClock) -> None:
    """The server takes 200 in any second: the 201st request since the start is refused. Its reply
    steps the pace to 97.5% of the 200 sent in the second before it, at once; it stopped at half of
    --rate (1,000 a second here) before. Replies to the requests sent before the step say nothing new."""
    limiter = limiter_at(clock, 2000)
    starts = await slots(limiter, clock, 201)
    assert starts[-1] - starts[0] == pytest.approx(0.775, abs=0.001)  # ramping from 195 a second
    clock.now = starts[-1] + 0.3  # its reply comes 300 ms later
    assert await limiter.over_rate(0.3) == pytest.approx(0.975 * 200, abs=0.5)
    clock.now += 0.05
    assert await limiter.over_rate(0.32) is None
    after = await slots(limiter, clock, 6)
    assert gaps(after)[1:] == pytest.approx([1 / 195] * 4, rel=1e-3)


async def test_a_stray_too_frequent_while_ramping_never_takes_the_pace_below_the_documented_rate(
    clock: FakeClock,
) -> None:
    """A request sent 50 ms after the start refused: ten requests cannot have filled a window of 200;
    the pace goes back to where the ramp began, and no further."""
    limiter = limiter_at(clock, 2000)
    await slots_for(limiter, clock, 0.5)
    assert limiter.pace == pytest.approx(195 * 2**0.5, abs=1)
    assert await limiter.over_rate(clock.now - 1000.05) == pytest.approx(195.0, abs=0.1)


async def test_after_a_second_mostly_too_frequent_the_pace_steps_to_what_the_server_took(clock: FakeClock) -> None:
    """At --rate 200, a server that takes half of what is sent (another sender on the app's budget, a
    lower cap): after one step of 2.5%, the second it settles in is counted, and the next step goes to
    97.5% of what the server took in it, not 2.5% lower again."""
    limiter = limiter_at_200(clock)
    await slots_for(limiter, clock, 2.0)
    assert await limiter.over_rate(0.3) == pytest.approx(190.3, abs=0.1)
    counted = await slots(limiter, clock, 190)  # the second after the step
    assert counted[-1] - counted[0] < 1
    for sent in counted[1::2]:  # the server refused every other one: 95
        assert await limiter.over_rate(clock.now - sent) is None
    await slots_for(limiter, clock, 0.2)
    # Refused too, a request sent in the second after that: the server took 95 in one second.
    assert await limiter.over_rate(0.0) == pytest.approx(0.975 * 95, abs=0.01)


async def test_a_few_too_frequent_in_the_counted_second_keep_the_step_at_2_5_percent(clock: FakeClock) -> None:
    """A jittery network gets replies "too frequent" in bunches of one to three at the cap: 3 of 188
    in the counted second is no reason to step further than 2.5%."""
    limiter = limiter_at_200(clock)
    await slots_for(limiter, clock, 2.0)
    await limiter.over_rate(0.3)
    counted = await slots(limiter, clock, 190)
    for sent in counted[100:103]:
        await limiter.over_rate(clock.now - sent)
    await slots_for(limiter, clock, 0.2)
    assert await limiter.over_rate(0.0) == pytest.approx(0.975 * 190.4, abs=0.1)


# -- through the engine ----------------------------------------------------------------------------

NOTIFY = "send_group_system_notification"


async def run_scripted(
    sandbox: Sandbox, tmp_path: Path, clock: FakeClock, job: dict[str, object], *replies: int
) -> tuple[Summary, list[Event], RunMetrics]:
    """One job of one request, whose first replies are scripted, at --rate 200 in virtual time."""
    sandbox.script(*replies)
    events: list[Event] = []
    metrics = RunMetrics(0.0)
    config = make_config(sandbox, write_jobs(tmp_path / "jobs.jsonl", [job]), tmp_path / "out.jsonl", rate=200)
    limiter = RateLimiter(200, clock=clock.time, sleep=clock.sleep)
    engine = Engine(config, subscribers=[events.append, metrics], limiter=limiter, sleep=clock.sleep, clock=clock.time)
    return await engine.run(), events, metrics


async def test_replies_60007_step_the_pace_down_once_a_window(
    sandbox: Sandbox, tmp_path: Path, clock: FakeClock
) -> None:
    """Two replies 60007 in a row: the first steps the pace down (one line, one step in the summary
    and the metrics); the retry went out within a second of it, so the second says nothing new."""
    job: dict[str, object] = {"GroupId": "@TGS#a", "Content": "hi", "ToMembers_Account": ["peter"]}
    with capture_logs() as logged:
        summary, events, metrics = await run_scripted(sandbox, tmp_path, clock, job, 60007, 60007)
    assert (summary.ok, summary.error_codes["60007"]) == (1, 2)
    (stepped,) = [e for e in events if isinstance(e, PaceStepped)]
    assert (stepped.api, stepped.code, round(stepped.pace, 1)) == (NOTIFY, "60007", 190.1)
    lines = [entry for entry in logged if "pace" in entry["event"]]
    assert [(entry["event"], entry["pace"], entry["api"]) for entry in lines] == [
        ("the server said too frequent: the pace steps down", 190.1, NOTIFY)
    ]
    doc = summary.to_dict()
    assert doc["rate_steps_down"] == 1
    assert doc["pace_min"] == pytest.approx(190.13, abs=0.02)  # the retry's slot, at the stepped-down pace
    sample = metrics.registry.get_sample_value
    assert sample("dispatcher_rate_steps_down_total", {"api": NOTIFY}) == 1
    assert sample("dispatcher_pace_requests_per_second", {"api": NOTIFY}) == pytest.approx(190.13, abs=0.02)


@pytest.mark.parametrize(
    ("job", "code", "steps"),
    [
        ({"GroupId": "@TGS#a", "Content": "hi"}, 60011, 1),
        ({"GroupId": "@TGS#a", "Content": "hi"}, 10002, 0),  # transient, not "too frequent"
        ({"api": "send_group_msg", "GroupId": "@TGS#a", "Text": "hi"}, 10023, 1),
        ({"api": "send_group_msg", "GroupId": "@TGS#a", "Text": "hi"}, 10006, 1),
        ({"api": "batchsendmsg", "To_Account": ["peter"], "Text": "hi"}, 60018, 1),
        ({"api": "batchsendmsg", "To_Account": ["peter"], "Text": "hi"}, 60019, 1),
        ({"api": "batchsendmsg", "To_Account": ["peter"], "Text": "hi"}, 91000, 0),
    ],
)
async def test_every_too_frequent_code_steps_the_pace_down(
    sandbox: Sandbox, tmp_path: Path, clock: FakeClock, job: dict[str, object], code: int, steps: int
) -> None:
    summary, _events, _metrics = await run_scripted(sandbox, tmp_path, clock, job, code)
    assert (summary.ok, summary.error_codes[str(code)], summary.rate_steps_down) == (1, 1, steps)
    assert summary.pace_min == pytest.approx(190.13 if steps else 195.0, abs=0.02)


async def test_a_run_that_is_never_told_too_frequent_keeps_its_pace(
    sandbox: Sandbox, tmp_path: Path, clock: FakeClock
) -> None:
    job = {"GroupId": "@TGS#a", "Content": "hi", "ToMembers_Account": [f"u{i}" for i in range(5000)]}
    config = make_config(sandbox, write_jobs(tmp_path / "jobs.jsonl", [job]), tmp_path / "out.jsonl", rate=200)
    limiter = RateLimiter(200, clock=clock.time, sleep=clock.sleep)
    summary = await Engine(config, limiter=limiter, sleep=clock.sleep, clock=clock.time).run()
    doc = summary.to_dict()
    assert (doc["ok"], doc["rate_steps_down"]) == (10, 0)
    assert doc["pace_min"] == pytest.approx(195.0, abs=0.02)


async def test_a_rate_typed_ten_times_too_high_follows_the_server_down_and_fails_nothing(
    tmp_path: Path, clock: FakeClock
) -> None:
    """`--rate 2000` (a typo of 200) against a server that takes 200 a second: one warning line when the
    budget opens, the pace ramps up from 195, the first "too frequent" steps it to what the server
    took, and every batch is delivered. Before: the pace stayed at 1,000 or more, hundreds of
    replies 60007, and batches failed after five of them."""
    from dispatcher.run.retry import RetryPolicy

    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"GroupId": "@TGS#a", "Content": "hi", "ToMembers_Account": [f"u{i}"]} for i in range(600)],
    )
    async with Sandbox(rate=200, clock=clock.time) as box:
        config = make_config(box, jobs, tmp_path / "out.jsonl", rate=2000, policy=RetryPolicy(), concurrency=8)
        with capture_logs() as logged:
            summary = await Engine(config, sleep=clock.sleep, clock=clock.time).run()
    warned = [entry for entry in logged if "documents" in entry["event"]]
    assert [(entry["log_level"], entry["api"], entry["rate"], entry["documented"]) for entry in warned] == [
        ("warning", NOTIFY, "2000", "200")
    ]
    doc = summary.to_dict()
    assert (doc["ok"], doc["failed"], doc["rate_steps_down"]) == (600, 0, 1)
    assert doc["pace_min"] == pytest.approx(195, abs=1)
    assert doc["error_codes"]["60007"] <= 10


async def test_an_hour_without_too_frequent_keeps_the_pace_at_its_ceiling(clock: FakeClock) -> None:
    """A pace that never stepped down and sends a request every 0.9 s for an hour (never idle): it is
    at the ceiling, and a reply "too frequent" then is one step of 2.5%."""
    limiter = limiter_at(clock, 2000)
    for _ in range(4000):
        await limiter.acquire()
        clock.now += 0.9
    assert limiter.pace == pytest.approx(2000 / 1.005, abs=1e-6)
    assert await limiter.over_rate(0.3) == pytest.approx(0.975 * 2000 / 1.005, abs=0.01)
