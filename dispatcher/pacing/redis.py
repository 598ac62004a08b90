"""A rate budget in Redis, shared by every process of an app on any machine (`--rate-store redis://`).

The same GCRA as `memory.RateLimiter` (a bucket of one slot, refilled every `interval`, no burst
after idle), with its state in one Redis hash per app and endpoint, updated atomically by one Lua
script per slot, and timed by Redis's own clock (`TIME`), so machines whose clocks disagree still
agree on the budget. It is the pattern of redis-cell and of the `limits` library's Redis storage,
with two differences that the guarantee needs:

- A slot is only taken when it is due and its caller is awake to use it. The script never books a
  slot ahead: it answers "taken" or "ask again in N us". A process told to wait sleeps and asks
  again, so a process that stalls never holds slots that would later fire in a bunch with other
  processes' (docs/guide/measurements.md#no-booking-ahead).
- The pace is 98% of the rate at most (HEADROOM), wider than the in-process 99.5%: a slot is granted at
  Redis's clock, and the request reaches the server after a round trip to Redis and a trip through
  the caller's event loop, on another machine perhaps. Why 98%: docs/guide/measurements.md#shared-headroom.

The pace adapts below that ceiling as in memory (`dispatcher.pacing.adaptive`), and the budget holds it:
a reply "too frequent" to any process steps the pace down for all of them (STEP_DOWN, below), and
every TAKE paces by the shared share, creeping back up. The rate the budget was claimed at stays
what is compared (another rate is still refused); the pace is separate state beside it.

A budget may also hold a quota (`limiter.Quota`: batchsendmsg's 12,000 messages a minute), kept as
in memory: its units paced evenly (`utat`) and a guard over the log of the last window's calls, a
list beside the budget (`key:log`), in the same script.

Faults: a store that cannot be reached at start is a RateStoreError (exit 2); one lost mid-run makes
`acquire` raise RateStoreError, on which the engine starts nothing more and halts resumably. Lost is
a connection refused or cut off after three quick retries (within half a second), or no answer
within TIMEOUT_S, which is not asked again. Never a private budget instead: that would overrun the
app's cap.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dispatcher.pacing import adaptive
from dispatcher.pacing.base import SHARED_HEADROOM, rate_text
from dispatcher.pacing.shared import STEP_ARGS, SharedBudget

if TYPE_CHECKING:
    import redis.asyncio

    from dispatcher.pacing.base import Quota, StoreURI

Sleep = Callable[[float], Awaitable[None]]

HEADROOM = SHARED_HEADROOM  # pace at 98% of the rate: 196/s at 200 (see above for why more than in-process)
# A slot may be taken this much before its theoretical time, so that a sleep that wakes late does
# not lose that time for good; it stays far below what HEADROOM leaves.
# Why 3 ms: docs/guide/measurements.md#redis-tolerance
TOLERANCE_US = 3_000
TTL_S = 600  # an unused budget disappears 10 minutes after its last use (or after its pause ends)
# A Redis that does not answer in this long is lost: halt rather than wait. A stall is not retried
# (retries made a stalled Redis lost only after seconds more: docs/guide/measurements.md#redis-timeout);
# a refused or dropped connection is, three times within half a second (`connect`).
TIMEOUT_S = 2.0


# KEYS[1] the budget, a hash: rate and quota (as the first user gave them), tat (the theoretical
#         time of the next call, us), utat (of the next unit of the quota), logged (the units in
#         the quota's log), paused_until (us), taken (slots granted, ever); and the adaptive pace
#         (see `_PACE` below): pace, pace_at, stepped, slots, refused.
# KEYS[2] the quota's log: a list of "time:units", one per call of the last window, oldest first.
# ARGV[1] the rate as text, ARGV[2] the quota as text or '': the budget keeps the first it is given
#         and refuses any other (never two budgets mixed)
# ARGV[3] cost: the call's units for the quota; 0 only checks the budget and claims it
# ARGV[4] tolerance, us; ARGV[5] the budget's time to live, ms, renewed on every use
# ARGV[6] now, us, or '' for Redis's own clock (tests pass a virtual one)
# ARGV[7] the calls' emission interval, us
# ARGV[8] the units' emission interval, us; ARGV[9] the quota's limit; ARGV[10] its window, us
# ARGV[11..16] the adaptive pace's top and first share (ppm of the ceiling), INCREASE (ppm a second),
#         IDLE (us), RAMP (ppm), SETTLE (us)
# (whole numbers: Lua keeps them exactly). Returns {1, us, pace, number} taken (and nobody's next call
# can win within that long; the slot was paced at `pace`, ppm of the ceiling, and is the budget's
# `number`th: `taken` counts them), {0, us} not yet (ask again in that long), {-1, rate} or {-2,
# quota} the budget holds another.
def _now_from(argv: int) -> str:
    """Lua that sets `now`, in microseconds: Redis's own clock, or the virtual one a test passes in ARGV."""
    return f"""local now
if ARGV[{argv}] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[{argv}])
end
"""


# -- The adaptive pace, in Lua: the twin of adaptive.Pace, on Redis's clock ------------------------
# The budget's pace is a share of the ceiling in parts per million: `pace` at the moment `pace_at`
# (us), growing from there to 1,000,000 (the ceiling, where a budget without these fields is);
# `stepped` is when it last stepped down (none: it ramps while below the line from `top`), and
# `slots` and `refused` count the second after a step (refused -1, or none: not counted). TAKE reads
# it and counts its slots; STEP_DOWN lowers it. Neither touches `rate`: the rate a budget was
# claimed at stays what TAKE compares.
_PACE = f"""local ramped = {adaptive.RAMPED:g}
local function share_at(t, level, since, stepped, top, increase, ramp)
  local elapsed = math.max(0, t - since) / 1000000
  local line = (stepped and level or top) * (1 + increase * elapsed)
  local share = math.min(1000000, line)
  if not stepped then
    share = math.min(share, level * ramp ^ math.min(elapsed, ramped))
  end
  return share
end
"""


# KEYS[1] the budget. ARGV[1] how long ago the request that was told "too frequent" was sent, us;
# ARGV[2] now, us, or ''; ARGV[3] the pace's top and ARGV[4] its first share (ppm); ARGV[5] the
# ceiling's interval, us; ARGV[6] the slots granted in the second before the request, as its process
# counted them (-1: unknown); ARGV[7..13] DECREASE, FLOOR (ppm), SETTLE (us), INCREASE (ppm a
# second), RAMP, TOO_MANY, IN_USE (ppm). `refused` -2: the last step was to what filled the window.
# Returns {1, pace} stepped down to `pace` (ppm), or {0, pace} did not: see
# `adaptive.Pace.told_too_frequent`, line for line; or there is no budget (expired or deleted: the
# next TAKE makes a new one, at the start).
STEP_DOWN = (
    """
local key = KEYS[1]
"""
    + _now_from(2)
    + _PACE
    + """local held = redis.call('HMGET', key, 'rate', 'pace', 'pace_at', 'stepped', 'slots', 'refused')
if not held[1] then
  return {0, 0}
end
local sent = now - tonumber(ARGV[1])
local top, first, unit, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local decrease, floor, settle = tonumber(ARGV[7]) / 1000000, tonumber(ARGV[8]), tonumber(ARGV[9])
local increase, ramp = tonumber(ARGV[10]) / 1000000, tonumber(ARGV[11]) / 1000000
local too_many, in_use = tonumber(ARGV[12]) / 1000000, tonumber(ARGV[13]) / 1000000
local level, since = tonumber(held[2] or '1000000'), tonumber(held[3] or '0')
local stepped = held[4] and tonumber(held[4])
local slots, refused = tonumber(held[5] or '0'), tonumber(held[6] or '-1')
local share = share_at(now, level, since, stepped, top, increase, ramp)
local at = string.format('%d', now)
if not stepped and sent >= since then  -- never stepped: the window held what was sent since the start
  local a, b = (math.max(sent - 1000000, since) - since) / 1000000, (sent - since) / 1000000
  local allowed = top * ((b - a) + increase * (b * b - a * a) / 2)
  if b <= ramped then
    allowed = math.min(allowed, level * (ramp ^ b - ramp ^ a) / math.log(ramp))
  end
  local filled = allowed
  if window >= 0 then
    filled = window * unit
  end
  local target = share
  if filled >= in_use * allowed then  -- else others filled the window (or a stray reply): a step
    target = math.max(first, decrease * filled)
  end
  if target < share * decrease then
    local lower = math.floor(math.max(floor, target))
    redis.call('HSET', key, 'pace', string.format('%d', lower), 'pace_at', at, 'stepped', at, 'slots', '0',
      'refused', '-2')
    return {1, lower}
  end
end
if refused == -2 and stepped and sent < stepped and window >= 0 then  -- about the window stepped to: lower it
  local lower = math.floor(math.max(floor, first, decrease * window * unit))
  if lower < level then
    redis.call('HSET', key, 'pace', string.format('%d', lower))
  end
  return {0, math.floor(share)}
end
if stepped and sent < stepped + settle then  -- the window still held the pace before the step
  if refused >= 0 and sent >= stepped then
    redis.call('HSET', key, 'refused', string.format('%d', refused + 1))
  end
  return {0, math.floor(share)}
end
local target = share * decrease
local steady = sent - 1000000 >= since
if stepped and refused > too_many * slots and sent < stepped + 2 * settle then
  local took = decrease * (slots - refused) * unit / settle * 1000000
  if took < target then
    target, steady = took, false
  end
end
local lower = math.floor(math.max(floor, target))
if lower > share * decrease then  -- near the floor: less than a whole step is not taken
  return {0, math.floor(share)}
end
redis.call('HSET', key, 'pace', string.format('%d', lower), 'pace_at', at, 'stepped', at, 'slots', '0',
  'refused', steady and '0' or '-1')
return {1, lower}
"""
)

# -- TAKE ----------------------------------------------------------------------------------------

TAKE = (
    """
local key, log = KEYS[1], KEYS[2]
"""
    + _now_from(6)
    + _PACE
    + """local held = redis.call('HMGET', key, 'rate', 'quota', 'tat', 'utat', 'logged', 'paused_until', 'pace',
  'pace_at', 'stepped', 'refused')
if held[1] and held[1] ~= ARGV[1] then
  return {-1, held[1]}
end
if held[2] and held[2] ~= ARGV[2] then
  return {-2, held[2]}
end
if not held[1] then  -- a new budget (or one deleted by hand): no log of an old one counts
  redis.call('DEL', log)
end
local cost = tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
local quota = ARGV[2] ~= ''
if cost > 0 then
  local tolerance = tonumber(ARGV[4])
  local tat = tonumber(held[3] or '0')
  local top, increase, ramp = tonumber(ARGV[11]), tonumber(ARGV[13]) / 1000000, tonumber(ARGV[15]) / 1000000
  local level, since = tonumber(held[7] or '1000000'), tonumber(held[8] or '0')
  local stepped = held[9] and tonumber(held[9])
  local share
  if not held[3] or now - tat > tonumber(ARGV[14]) then
    if held[3] then  -- idle: from where it was at the last slot, at most from the top; nothing counted
      share = math.floor(math.min(share_at(tat, level, since, stepped, top, increase, ramp), top))
    else  -- new (or deleted by hand): the pace begins
      share = tonumber(ARGV[12])
    end
    redis.call('HSET', key, 'pace', string.format('%d', share), 'pace_at', string.format('%d', now), 'refused', '-1')
  else
    share = share_at(now, level, since, stepped, top, increase, ramp)
  end
  local interval = math.ceil(tonumber(ARGV[7]) * 1000000 / share)
  local wait = math.max(tonumber(held[6] or '0'), tat - tolerance) - now
  local utat, logged, unit, limit, window
  if quota then
    unit, limit, window = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
    utat = tonumber(held[4] or '0')
    logged = tonumber(held[5] or '0')
    if utat - tolerance - now > wait then wait = utat - tolerance - now end
    -- The guard: a call counts while it lies in [now - window, now]; the oldest leave first.
    while true do
      local entry = redis.call('LINDEX', log, 0)
      if not entry then break end
      local sep = string.find(entry, ':', 1, true)
      if tonumber(string.sub(entry, 1, sep - 1)) >= now - window then break end
      logged = logged - tonumber(string.sub(entry, sep + 1))
      redis.call('LPOP', log)
    end
    redis.call('HSET', key, 'logged', string.format('%d', logged))
    local excess = logged + cost - limit
    local first = 0
    while excess > 0 do
      local entries = redis.call('LRANGE', log, first, first + 99)
      if #entries == 0 then break end
      for _, entry in ipairs(entries) do
        local sep = string.find(entry, ':', 1, true)
        excess = excess - tonumber(string.sub(entry, sep + 1))
        if excess <= 0 then
          local leaves = tonumber(string.sub(entry, 1, sep - 1)) + window + 1 - now
          if leaves > wait then wait = leaves end
          break
        end
      end
      first = first + 100
    end
  end
  if wait > 0 then
    return {0, math.ceil(wait)}
  end
  tat = math.max(now, tat) + interval
  local after = tat - tolerance - now
  redis.call('HSET', key, 'tat', string.format('%d', tat))
  local number = redis.call('HINCRBY', key, 'taken', 1)  -- which slot of the budget this is
  if stepped and now < stepped + tonumber(ARGV[16]) and tonumber(held[10] or '-1') >= 0 then
    redis.call('HINCRBY', key, 'slots', 1)  -- the second after a step is counted
  end
  if quota then
    utat = math.max(now, utat) + cost * unit
    if utat - tolerance - now > after then after = utat - tolerance - now end
    redis.call('HSET', key, 'utat', string.format('%d', utat), 'logged', string.format('%d', logged + cost))
    redis.call('RPUSH', log, string.format('%d:%d', now, cost))
    redis.call('PEXPIRE', log, ttl)
  end
  redis.call('HSET', key, 'rate', ARGV[1], 'quota', ARGV[2])
  if redis.call('PTTL', key) < ttl then  -- never shorten what a pause set
    redis.call('PEXPIRE', key, ttl)
  end
  return {1, math.max(0, math.ceil(after)), math.floor(share), number}
end
redis.call('HSET', key, 'rate', ARGV[1], 'quota', ARGV[2])
if redis.call('PTTL', key) < ttl then
  redis.call('PEXPIRE', key, ttl)
end
return {1, 0}
"""
)

# KEYS[1] the budget; ARGV[1] the pause, us; ARGV[2] time to live after it, ms; ARGV[3] now, us, or ''.
# Every process's next TAKE honours paused_until; a shorter pause never cuts a longer one.
PAUSE = (
    """
local key = KEYS[1]
"""
    + _now_from(3)
    + """local till = now + tonumber(ARGV[1])
if till > tonumber(redis.call('HGET', key, 'paused_until') or '0') then
  redis.call('HSET', key, 'paused_until', string.format('%d', till))
end
local keep = tonumber(ARGV[2]) + math.ceil(tonumber(ARGV[1]) / 1000)
if redis.call('PTTL', key) < keep then
  redis.call('PEXPIRE', key, keep)
end
return 1
"""
)


class RedisLimiter(SharedBudget):
    """The Limiter protocol over a budget in Redis. Build it with `connect`; `aclose` at the end."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        key: str,
        rate: float,
        *,
        shown: str,
        quota: Quota | None = None,
        secrets: tuple[str, ...] = (),
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        clock_us: Callable[[], int] | None = None,
        start: float | None = None,
        documented: float | None = None,
    ) -> None:
        """`clock_us`: tests only, a virtual clock in place of Redis's TIME; the rest: SharedBudget's."""
        super().__init__(
            key,
            rate,
            shown=shown,
            quota=quota,
            secrets=secrets,
            sleep=sleep,
            clock=clock,
            start=start,
            documented=documented,
        )
        # What every TAKE sends but cost and now: the budget's identity and shape. The quota's log
        # lives beside the budget (`key:log`) and both outlive the quota's window.
        ttl_ms = TTL_S * 1000
        self._keys = [key, f"{key}:log"]
        quota_args: list[str | int] = ["", "", ""]
        if quota is not None:
            ttl_ms = max(ttl_ms, math.ceil(quota.window * 1000) + 60_000)
            quota_args = [math.ceil(quota.unit_interval * 1e6), quota.limit, math.ceil(quota.window * 1e6)]
        self._ttl_ms = ttl_ms
        self._head: list[str | int] = [rate_text(rate), "" if quota is None else quota.text()]
        self._tail: list[str | int] = [TOLERANCE_US, ttl_ms]
        pace_args = [
            round(self._top * 1e6),
            round(self._first * 1e6),
            round(adaptive.INCREASE * 1e6),
            round(adaptive.IDLE * 1e6),
            round(adaptive.RAMP * 1e6),
            round(adaptive.SETTLE * 1e6),
        ]
        self._shape: list[str | int] = [self._unit_us, *quota_args, *pace_args]
        # Each slot's TAKE goes over a connection of the limiter's own, used only under `_turn`
        # (see _fast_take); the client, with its pool, connects, loads the scripts, retries, and
        # sends PAUSE from a task of its own.
        self._client = client
        self._take_script = client.register_script(TAKE)
        self._pause_script = client.register_script(PAUSE)
        self._step_down_script = client.register_script(STEP_DOWN)
        self._conn: redis.asyncio.connection.AbstractConnection | None = None
        self._packed: dict[int, list[bytes]] = {}  # TAKE as sent, by cost (see _fast_take)
        self._clock_us = clock_us

    def _now(self) -> str:
        return "" if self._clock_us is None else str(self._clock_us())

    async def _step(self, sent_ago_us: int, window: int) -> tuple[int, int] | None:
        import redis.exceptions

        args: list[str | int] = [
            sent_ago_us,
            self._now(),
            round(self._top * 1e6),
            round(self._first * 1e6),
            self._unit_us,
            window,
            *STEP_ARGS,
        ]
        try:
            stepped, share = await self._step_down_script(keys=[self.key], args=args)
        except (redis.exceptions.RedisError, OSError):
            return None  # the next acquire meets the same fault and halts the run
        return int(stepped), int(share)

    async def _share_pause(self, seconds: float) -> None:
        import redis.exceptions

        args: list[str | int] = [math.ceil(max(0.0, seconds) * 1e6), self._ttl_ms, self._now()]
        try:
            await self._pause_script(keys=[self.key], args=args)
        except (redis.exceptions.RedisError, OSError):
            pass  # the next acquire meets the same fault and halts the run

    async def _take(self, cost: int, *, starting: bool = False) -> tuple[bool, int, int, int]:
        """One TAKE: whether the slot was taken, the microseconds until the next may be, the share of
        the ceiling (ppm) the slot was paced at and its number in the budget (when taken)."""
        import redis.exceptions

        now = self._now()
        args = [*self._head, cost, *self._tail, now, *self._shape]
        try:
            reply = None if starting else await self._fast_take(args, cost, now)
            if reply is None:
                reply = await self._take_script(keys=self._keys, args=args)
            status, value, *pace = reply
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._fault(str(exc) or type(exc).__name__, starting) from None
        if status < 0:
            raise self._mismatch(status, value.decode() if isinstance(value, bytes) else str(value), str(self._head[1]))
        if not pace:  # a claim (cost 0)
            return status == 1, int(value), 1_000_000, 0
        return status == 1, int(value), int(pace[0]), int(pace[1])

    async def _fast_take(self, args: list[str | int], cost: int, now: str) -> Any:
        """EVALSHA on the limiter's own connection, past redis-py's client layer.

        Measured per slot: the client's pool, retry wrapper and observability hooks cost 40-70 us
        of CPU, and a socket timeout on the write another 9 us and two turns of the event loop
        (`asyncio.wait_for` runs the write as a task). So this connection has no socket timeout:
        the write only lands in the kernel's buffer (one command of 300 bytes at a time cannot fill
        it), and the read has the timeout of its own. None when the connection cannot be made, the
        script is not loaded (Redis restarted), or after a fault: the caller then goes the client's
        way, which connects, loads and retries, and raises RateStoreError if the store is lost.
        A store that does not answer within TIMEOUT_S raises redis's TimeoutError: it is lost."""
        import redis.exceptions

        conn = self._conn
        if conn is None:
            pool = self._client.connection_pool
            conn = self._conn = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        if not conn.is_connected:
            try:
                async with asyncio.timeout(TIMEOUT_S):  # its handshake has no socket timeout either
                    await conn.connect()  # type: ignore[no-untyped-call]
            except TimeoutError:
                await conn.disconnect()
                raise redis.exceptions.TimeoutError(f"no answer within {TIMEOUT_S:g} s") from None
            except (redis.exceptions.RedisError, OSError):
                return None
        # In a real run only the cost varies (Redis reads its own clock): packing, 9 us, is done once a cost.
        packed = self._packed.get(cost) if now == "" else None
        if packed is None:
            packed = conn.pack_command("EVALSHA", self._take_script.sha, len(self._keys), *self._keys, *args)
            if now == "" and len(self._packed) < 1024:
                self._packed[cost] = packed
        try:
            await conn.send_packed_command(packed, check_health=False)
            reply = await conn.read_response(timeout=TIMEOUT_S)
        except redis.exceptions.NoScriptError:
            return None
        except redis.exceptions.TimeoutError:
            await conn.disconnect()
            raise
        except (redis.exceptions.ConnectionError, OSError):
            await conn.disconnect()
            return None
        if reply is None:
            # A read given its own timeout returns None when it runs out, and redis-py keeps the
            # connection: the reply still comes, and a next slot would read it as its own (a 70050
            # pause read as a slot granted). TAKE always answers a list, so None is that. The store
            # did not answer in TIMEOUT_S: it is lost, not asked again the client's way.
            await conn.disconnect()
            raise redis.exceptions.TimeoutError(f"no answer within {TIMEOUT_S:g} s")
        return reply

    def _change(self) -> str:
        return (
            f"or change the budget by deleting the key (redis-cli DEL '{self.key}') once no run "
            f"uses it, or wait for it to expire ({self._ttl_ms // 1000} s after its last use)"
        )

    async def aclose(self) -> None:
        """Let a pause being written land (briefly), then close the connections."""
        await self._land_pauses(TIMEOUT_S)
        if self._conn is not None:
            await self._conn.disconnect()
        await self._client.aclose()


async def connect(
    store: StoreURI,
    *,
    rate: float,
    key: str,
    quota: Quota | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    clock_us: Callable[[], int] | None = None,
    start: float | None = None,
    documented: float | None = None,
) -> RedisLimiter:
    """A RedisLimiter on `store`, its budget checked; RateStoreError if unreachable or at another rate."""
    import redis.asyncio
    import redis.exceptions
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    client = redis.asyncio.Redis.from_url(
        store.url,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        # A blip (a failover, a dropped connection) is retried a few times within half a second;
        # past that the store is lost and the run halts resumably. A timeout is not retried: no
        # answer within TIMEOUT_S is a lost store, as the README says.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 3, supported_errors=(redis.exceptions.ConnectionError,)),
    )
    limiter = RedisLimiter(
        client,
        key,
        rate,
        shown=store.shown,
        quota=quota,
        secrets=(store.password,),
        sleep=sleep,
        clock=clock,
        clock_us=clock_us,
        start=start,
        documented=documented,
    )
    try:
        await limiter.check()
    except BaseException:
        await client.aclose()
        raise
    return limiter
