"""The shared budget in a real Redis: the Lua script's pacing (in virtual time), one budget for
several processes, the shared pause, another rate refused, and the store's faults. What both
limiters promise is in test_limiter_contract."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatcher.errors import RateStoreError
from dispatcher.pacing.base import Quota
from dispatcher.pacing.redis import TAKE, RedisLimiter, connect
from dispatcher.pacing.store import parse_store
from tests.conftest import (
    FakeClock,
    RedisServer,
    free_port,
    in_virtual_time,
    max_in_any_window,
)

KEY = "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification"


@pytest.fixture
async def limiters(redis_server: RedisServer, clock: FakeClock) -> AsyncIterator[list[RedisLimiter]]:
    """Three limiters on one budget, as three processes would hold them, in virtual time."""
    made = [await in_virtual_time(redis_server, clock, rate=200, start=1.0) for _ in range(3)]
    yield made
    for limiter in made:
        await limiter.aclose()


@pytest.mark.parametrize(("rate", "most", "achieved"), [(3, 3, 2.94), (200, 197, 196.19)])
async def test_paced_at_98_percent_and_never_over_the_rate(
    redis_server: RedisServer, clock: FakeClock, rate: int, most: int, achieved: float
) -> None:
    limiter = await in_virtual_time(redis_server, clock, rate=rate, start=1.0)  # at the ceiling
    starts = []
    for _ in range(rate * 5 + 7):
        await limiter.acquire()
        starts.append(clock.now)
    await limiter.aclose()
    assert max_in_any_window(starts) == most
    assert (len(starts) - 1) / (starts[-1] - starts[0]) == pytest.approx(achieved, abs=0.01)


async def test_three_processes_share_one_budget(limiters: list[RedisLimiter], clock: FakeClock) -> None:
    starts = []
    for i in range(600):
        await limiters[i % 3].acquire()
        starts.append(clock.now)
    assert max_in_any_window(starts) == 197  # together, not 3 x 197
    assert (len(starts) - 1) / (starts[-1] - starts[0]) == pytest.approx(196.27, abs=0.01)


async def slots_of(limiter: RedisLimiter, clock: FakeClock, n: int) -> list[float]:
    starts = []
    for _ in range(n):
        await limiter.acquire()
        starts.append(clock.now)
    return starts


async def test_a_fleet_begins_at_96_5_percent_of_the_rate(redis_server: RedisServer, clock: FakeClock) -> None:
    """Processes that share a budget keep closer to its pace than one process keeps to its own (each
    grant raced for, none lost to a late wake-up), and its grants reach their writes through the
    store: they begin at 96.5% of the rate, where one process begins at 97.5%. Three of them take
    194 slots in their first second together, not 196."""
    fleet = [await in_virtual_time(redis_server, clock) for _ in range(3)]
    starts: list[float] = []
    while not starts or starts[-1] < starts[0] + 1.2:
        await fleet[len(starts) % 3].acquire()
        starts.append(clock.now)
    assert len([t for t in starts if t < starts[0] + 1]) == 194
    assert [limiter.pace for limiter in fleet] == pytest.approx([193.0] * 3, abs=0.2)
    for limiter in fleet:
        await limiter.aclose()


async def test_a_step_down_slows_every_process_of_the_budget(redis_server: RedisServer, clock: FakeClock) -> None:
    """Two processes on one budget, which begins at 96.5% of the rate (193 a second: a fleet keeps
    closer to its pace than one process). A reply 60007 to one steps the shared pace down to 97.5% of
    that, and the other's next slots are paced at it: 5.31 ms apart, not 5.18. The budget still
    holds --rate 200 and refuses another."""
    one, two = [await in_virtual_time(redis_server, clock) for _ in range(2)]
    for i in range(10):
        await (one, two)[i % 2].acquire()
    assert [one.pace, two.pace] == pytest.approx([193.0, 193.0], abs=0.02)
    assert await one.over_rate(0.3) == pytest.approx(188.18, abs=0.02)
    starts = await slots_of(two, clock, 5)
    assert two.pace == pytest.approx(188.18, abs=0.02)
    # The slot booked before the step keeps its place; the ones after it are at the new pace.
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)][1:] == [0.005315] * 3
    # One window, one step: a reply to a request sent before the step, to either process, says nothing new.
    clock.now += 0.5
    assert await two.over_rate(0.6) is None
    assert await one.over_rate(0.6) is None
    # A process that joins the budget now paces at it too.
    three = await in_virtual_time(redis_server, clock)
    await three.acquire()
    assert three.pace == pytest.approx(188.22, abs=0.02)  # crept up 0.05% a second for half a second
    with pytest.raises(RateStoreError, match="holds --rate 200, and this run asks for --rate 100"):
        await in_virtual_time(redis_server, clock, rate=100)
    for limiter in (one, two, three):
        await limiter.aclose()


async def test_the_shared_pace_creeps_up_to_the_ceiling_and_begins_again_after_idle(
    redis_server: RedisServer, clock: FakeClock
) -> None:
    """Up by 0.05% of the pace a second, never above the ceiling (196.08 a second); after a second in
    which no process took a slot, the budget's pace begins again at 96.5% of the rate."""
    one, two = [await in_virtual_time(redis_server, clock) for _ in range(2)]
    await one.acquire()
    await two.over_rate(0.0)  # 188.18 a second
    starts = await slots_of(one, clock, 1000)  # about 5.3 s
    assert one.pace == pytest.approx(188.18 + 0.094 * (starts[-1] - starts[0]), abs=0.03)
    starts = await slots_of(two, clock, 17_000)  # 88 s more: past the 83 s back to the ceiling
    assert two.pace == pytest.approx(200 / 1.02, abs=1e-9)
    assert {round(b - a, 6) for a, b in itertools.pairwise(starts[-100:])} == {0.0051}
    assert max_in_any_window(starts) <= 197
    clock.now += 2.0
    await one.acquire()
    assert one.pace == pytest.approx(193.0, abs=1e-9)
    for limiter in (one, two):
        await limiter.aclose()


QUOTA_KEY = "dispatcher:budget:1400000000:/v4/openim/batchsendmsg"


async def test_a_different_quota_is_refused(redis_server: RedisServer, clock: FakeClock) -> None:
    store = parse_store(redis_server.url)
    first = await connect(store, rate=200, quota=Quota(12_000, 60), key=QUOTA_KEY)
    with pytest.raises(RateStoreError) as refused:
        await connect(store, rate=200, quota=Quota(10_000, 60), key=QUOTA_KEY)
    assert str(refused.value) == (
        f"the shared budget {QUOTA_KEY} in redis://127.0.0.1:{redis_server.port}/0 holds a quota of 12000 units "
        "per 60 s, and this run asks for a quota of 10000 units per 60 s: run with the budget's quota, or change "
        f"the budget by deleting the key (redis-cli DEL '{QUOTA_KEY}') once no run uses it, or wait "
        "for it to expire (600 s after its last use)"
    )
    with pytest.raises(RateStoreError, match="holds a quota of 12000 units per 60 s, and this run asks for no quota"):
        await connect(store, rate=200, key=QUOTA_KEY)
    await first.aclose()


async def test_a_pause_holds_every_process(limiters: list[RedisLimiter], clock: FakeClock) -> None:
    """70050 seen by one process: the others wait too, even after the first has exited."""
    first, second, _ = limiters
    await second.acquire()
    paused_at = clock.now
    first.pause(60)
    await first.aclose()  # lets the pause land
    await second.acquire()
    assert clock.now - paused_at == pytest.approx(60.0, abs=1e-6)


async def test_a_worker_cancelled_while_its_pause_lands_does_not_cancel_the_pause(
    limiters: list[RedisLimiter], clock: FakeClock
) -> None:
    """A graceful stop cancels a worker waiting for this process's 70050 pause to reach Redis: the
    pause must still reach it, or the other processes never hold their starts."""
    first, second, _ = limiters
    await second.acquire()
    paused_at = clock.now
    first.pause(60)
    waiter = asyncio.create_task(first.acquire())  # waits for the pause to land, before its slot
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await first.aclose()  # lets the pause land, if it is still on its way
    await second.acquire()
    assert clock.now - paused_at == pytest.approx(60.0, abs=1e-6)


async def test_a_redis_that_stalls_past_the_read_timeout_leaves_no_reply_behind(
    redis_server: RedisServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis stalls (a fork, a slow script: here CLIENT PAUSE) longer than a slot's read may wait:
    the store is lost (the engine halts), and the reply that comes later on the limiter's own
    connection is never read. Left there, every later slot read the reply of the one before, and a
    70050 pause of 60 s was read as a slot granted at once."""
    import redis

    from dispatcher.pacing import redis as redislimit

    monkeypatch.setattr(redislimit, "TIMEOUT_S", 0.1)  # real seconds: the stall is a real one
    limiter = await in_virtual_time(redis_server, clock, rate=200)
    await limiter.acquire()
    with redis.Redis(port=redis_server.port) as other:
        other.execute_command("CLIENT", "PAUSE", "300", "ALL")
        with pytest.raises(RateStoreError, match=r"^lost the rate store .*: no answer within 0\.1 s; "):
            await limiter.acquire()
        other.ping()  # answered once the stall is over; so is the stalled TAKE, to no one
    await limiter.acquire()  # a caller that goes on anyway gets a fresh connection's answer
    await limiter.acquire()
    paused_at = clock.now
    limiter.pause(60)
    await limiter.acquire()
    assert clock.now - paused_at == pytest.approx(60.0, abs=1e-6)
    await limiter.aclose()


async def test_a_different_rate_is_refused_until_the_budget_is_deleted(
    limiters: list[RedisLimiter], redis_server: RedisServer
) -> None:
    store = parse_store(redis_server.url)
    with pytest.raises(RateStoreError) as refused:
        await connect(store, rate=100, key=KEY)
    assert str(refused.value) == (
        f"the shared budget {KEY} in redis://127.0.0.1:{redis_server.port}/0 holds --rate 200, and this run "
        "asks for --rate 100: run with --rate 200, or change the budget by deleting the key "
        f"(redis-cli DEL '{KEY}') once no run uses it, or wait for it to expire (600 s after its last use)"
    )
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_server.url)
    assert await client.pttl(KEY) > 590_000  # abandoned budgets disappear
    await client.delete(KEY)
    await client.aclose()
    other = await connect(store, rate=100, key=KEY)
    await other.aclose()


async def test_unreachable_at_start_names_host_and_port_never_the_password() -> None:
    port = free_port()
    with pytest.raises(RateStoreError) as refused:
        await connect(parse_store(f"redis://:sekrit-pw@127.0.0.1:{port}/0"), rate=200, key=KEY)
    message = str(refused.value)
    assert message.startswith(
        f"cannot reach the rate store redis://127.0.0.1:{port}/0: Error 111 connecting to 127.0.0.1:{port}."
    )
    assert "sekrit-pw" not in message


async def test_a_wrong_password_is_refused_without_showing_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--requirepass", "right-pw")
    server.start()
    try:
        store = parse_store(f"redis://:wrong-pw@127.0.0.1:{server.port}/0")
        with pytest.raises(RateStoreError) as refused:
            await connect(store, rate=200, key=KEY)
        assert str(refused.value) == (
            f"cannot reach the rate store redis://127.0.0.1:{server.port}/0: "
            "invalid username-password pair or user is disabled."
        )
        good = await connect(parse_store(f"redis://:right-pw@127.0.0.1:{server.port}/0"), rate=200, key=KEY)
        await good.acquire()
        await good.aclose()
    finally:
        server.kill()


async def test_lost_mid_run_raises_on_the_next_slot(redis_server: RedisServer) -> None:
    limiter = await connect(parse_store(redis_server.url), rate=1000, key=KEY)
    await limiter.acquire()
    redis_server.kill()
    with pytest.raises(RateStoreError) as lost:
        await limiter.acquire()
    assert str(lost.value).startswith(f"lost the rate store redis://127.0.0.1:{redis_server.port}/0: ")
    assert str(lost.value).endswith(
        "; no new requests start, those in flight are recorded; resume with --resume when it is back"
    )
    await limiter.aclose()


@pytest.mark.parametrize(
    ("uri", "shown", "prefix"),
    [
        ("redis://127.0.0.1", "redis://127.0.0.1", "dispatcher:"),
        ("redis://user:pw@127.0.0.1:6380/2?prefix=team-a:", "redis://127.0.0.1:6380/2?prefix=team-a:", "team-a:"),
        ("rediss://:pw@cache.internal:6380/0", "rediss://cache.internal:6380/0", "dispatcher:"),
        ("unix:///run/redis/redis.sock", "unix:///run/redis/redis.sock", "dispatcher:"),
    ],
)
def test_store_uris(uri: str, shown: str, prefix: str) -> None:
    store = parse_store(uri)
    assert (store.shown, store.prefix) == (shown, prefix)
    assert "pw" not in repr(store)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "http://:pw@127.0.0.1",
            "--rate-store http://127.0.0.1: use memory://, redis://, rediss://, unix:///path or postgresql://",
        ),
        (
            "redis://:pw@127.0.0.1:99999",
            "--rate-store redis://127.0.0.1:99999: the port must be a number from 1 to 65535",
        ),
        (
            "redis://127.0.0.1/x",
            "--rate-store redis://127.0.0.1/x: the database must be a number, as in redis://host:6379/0",
        ),
        ("unix://", "--rate-store unix://: give the socket's path, as in unix:///run/redis.sock"),
    ],
)
def test_bad_store_uris(uri: str, message: str) -> None:
    from dispatcher.errors import UsageError

    with pytest.raises(UsageError) as bad:
        parse_store(uri)
    assert str(bad.value) == message


@pytest.mark.parametrize(
    "uri",
    [
        "redis://:p@ss:w/rd#1@127.0.0.1:6380/0",  # / and # end the host part early, inside the password
        "redis://:sec/ret@127.0.0.1:6380/0",
        "redis://:sec?ret@127.0.0.1:6380/0",
        "redis://us/er:secret@127.0.0.1:6380/0",
    ],
)
def test_a_password_not_percent_encoded_is_refused_and_never_shown_in_part(uri: str) -> None:
    from dispatcher.errors import UsageError

    with pytest.raises(UsageError) as bad:
        parse_store(uri)
    assert str(bad.value) == (
        "--rate-store redis://127.0.0.1:6380/0: a user name or password with / ? or # in it must be "
        "percent-encoded (%2F %3F %23)"
    )


async def test_a_flushed_script_or_a_dropped_connection_is_not_a_lost_store(redis_server: RedisServer) -> None:
    """Each slot goes straight over the limiter's connection; a Redis that restarted (its scripts
    gone) or a connection cut by the server is taken up again the client's way, not a halt."""
    import redis.asyncio

    limiter = await connect(parse_store(redis_server.url), rate=1000, key=KEY)
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    await limiter.acquire()
    await admin.script_flush()
    await limiter.acquire()
    assert await admin.script_exists(hashlib.sha1(TAKE.encode()).hexdigest()) == [True]  # loaded again
    await admin.client_kill_filter(skipme=True)  # every connection but the admin's
    await limiter.acquire()
    await limiter.acquire()
    budget = await admin.hgetall(KEY)
    assert budget[b"rate"] == b"1000"
    await admin.aclose()
    await limiter.aclose()
