"""What a budget shared through a store does in this process, whatever the store holds it.

`redis.py` and `postgres.py` keep the same budget (GCRA, quota, shared pause, shared adaptive
pace) in Redis and in PostgreSQL; the store's side is theirs (a Lua script, a PL/pgSQL function,
their connections and faults). This process's side is the same for both and lives here: one caller
at a time asks the store for a slot (asyncio.Lock is FIFO), after waiting out the gap the last
grant announced (asking before it cannot win, so a lone process makes one call a slot, not two);
a pause this process asked for lands before its next slot; the pace is the one the store last
said, whichever process set it.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
from collections.abc import Awaitable, Callable

from dispatcher.errors import RateStoreError
from dispatcher.pacing import adaptive
from dispatcher.pacing.base import SHARED_HEADROOM, Quota, quota_shown, rate_text

Sleep = Callable[[float], Awaitable[None]]

HEADROOM = SHARED_HEADROOM

# What a step down is given of the adaptive pace, in ppm and us (the same for every store).
STEP_ARGS = [
    round(adaptive.DECREASE * 1e6),
    round(adaptive.FLOOR * 1e6),
    round(adaptive.SETTLE * 1e6),
    round(adaptive.INCREASE * 1e6),
    round(adaptive.RAMP * 1e6),
    round(adaptive.TOO_MANY * 1e6),
    round(adaptive.IN_USE * 1e6),
]
# Seconds of this process's grants kept, to count the second before a request told "too frequent".
KEPT = 3.0


class SharedBudget:
    """The Limiter protocol over a budget in a store; a store's module supplies the three calls
    (`_take`, `_share_pause`, `_step`), how to change a budget held at another rate (`_change`),
    and `aclose`."""

    def __init__(
        self,
        key: str,
        rate: float,
        *,
        shown: str,
        quota: Quota | None,
        secrets: tuple[str, ...],
        sleep: Sleep,
        clock: Callable[[], float],
        start: float | None,
        documented: float | None = None,
    ) -> None:
        """`shown`: the store as messages name it (no password). `clock`: this process's clock,
        used only to wait out a known gap before asking again. `start`: the share of the ceiling a
        budget's pace begins at (default: the adaptive pace's start for a fleet, 96.5% of the rate).
        `documented`: the API's documented rate: a higher `rate` begins at 96.5% of it and ramps up."""
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("rate must be positive")
        self.rate = rate
        self.quota = quota
        self.key = key
        self.shown = shown
        fleet = adaptive.FLEET_START
        self._top = adaptive.start_share(HEADROOM, fleet) if start is None else start
        self._first = adaptive.first_share(HEADROOM, rate, documented, fleet) if start is None else start
        # Seconds a request takes at the ceiling, in whole microseconds as every TAKE is given it.
        self._unit_us = math.ceil((1 + HEADROOM) / rate * 1e6)
        self._share = self._first  # the pace's share of the ceiling at the latest slot
        # This process's grants of the last KEPT seconds: when (its clock), and their numbers in the
        # budget; and whether the first it kept is the budget's first slot (then none came before).
        self._granted_at: collections.deque[float] = collections.deque()
        self._granted: collections.deque[int] = collections.deque()
        self._from_the_first = False
        self._secrets = tuple(s for s in secrets if s)
        self._sleep = sleep
        self._clock = clock
        # When the budget's next slot is due, as the last grant said.
        self._next_ask = float("-inf")
        self._turn = asyncio.Lock()  # one caller of this process at a time asks; the rest queue here
        self._pauses: set[asyncio.Task[None]] = set()

    # -- what each store does

    async def _take(self, cost: int, *, starting: bool = False) -> tuple[bool, int, int, int]:
        """One TAKE: whether the slot was taken, the microseconds until the next may be, the share of
        the ceiling (ppm) the slot was paced at and its number in the budget (when taken). Raises
        RateStoreError."""
        raise NotImplementedError

    async def _share_pause(self, seconds: float) -> None:
        """Write a pause to the budget; a fault is left for the next TAKE to meet."""
        raise NotImplementedError

    async def _step(self, sent_ago_us: int, window: int) -> tuple[int, int] | None:
        """STEP_DOWN, given the slots granted in the second before the request (-1: unknown):
        (stepped, share in ppm), or None on a fault (the next TAKE meets it)."""
        raise NotImplementedError

    def _change(self) -> str:
        """How to change a budget held at another rate or quota, in this store."""
        raise NotImplementedError

    # -- the Limiter protocol

    async def check(self) -> None:
        """Reach the store and claim the budget at this rate, or refuse: another rate, or no store."""
        await self._take(0, starting=True)

    async def acquire(self, cost: int = 1) -> None:
        if cost < 1:
            raise ValueError("cost must be at least 1")
        if self.quota is None:
            cost = 1  # counted against nothing but the rate: one call
        else:
            self.quota.check_cost(cost)
        async with self._turn:
            while self._pauses:  # a pause this process asked for lands before its next slot
                # asyncio.wait, not gather: a caller cancelled here (a graceful stop) must not
                # cancel the pause on its way to the store, which every other process needs to see.
                await asyncio.wait(set(self._pauses))
            if (gap := self._next_ask - self._clock()) > 0:
                await self._sleep(gap)
            while True:
                taken, wait_us, share, number = await self._take(cost)
                if taken:
                    now = self._clock()
                    self._next_ask = now + wait_us / 1e6
                    self._share = share / 1e6
                    self._keep(now, number)
                    return
                # The store's wait already allows for the tolerance: a sleep that wakes up to a
                # millisecond late still lands on time, and the next ask takes the slot.
                await self._sleep(wait_us / 1e6)

    def pause(self, seconds: float) -> None:
        """Hold every process's starts for `seconds`: written to the budget, which every TAKE reads.
        Returns at once; this process's next `acquire` waits for the write to land."""
        task = asyncio.get_running_loop().create_task(self._share_pause(seconds))
        self._pauses.add(task)
        task.add_done_callback(self._pauses.discard)

    def _keep(self, now: float, number: int) -> None:
        if not self._granted_at:
            self._from_the_first = number == 1
        self._granted_at.append(now)
        self._granted.append(number)
        while self._granted_at[0] < now - KEPT:
            self._granted_at.popleft()
            self._granted.popleft()
            self._from_the_first = False

    def _window(self, sent: float) -> int:
        """Slots the budget granted in the second before a request this process sent at `sent`, from
        the numbers of its own grants (its own request's, and its last one a second before: any
        granted between those two count); -1 when its grants do not reach back that far."""
        at = self._granted_at
        mine = bisect.bisect_right(at, sent) - 1  # the request's own slot
        if mine < 0:
            return -1
        before = bisect.bisect_right(at, sent - 1) - 1
        if before >= 0:
            return self._granted[mine] - self._granted[before] - 1
        return self._granted[mine] - 1 if self._from_the_first else -1

    async def over_rate(self, sent_ago: float) -> float | None:
        """Step the budget's pace down for every process; the new pace, or None if it did not step
        (another process's step within SETTLE counts too: one window, one step)."""
        window = self._window(self._clock() - sent_ago)
        stepped = await self._step(max(0, round(sent_ago * 1e6)), window)
        if stepped is None or not stepped[0]:
            return None
        self._share = int(stepped[1]) / 1e6
        return self.pace

    @property
    def pace(self) -> float:
        """Requests a second the latest slot was paced at, whichever process set the shared pace."""
        return self.rate / (1 + HEADROOM) * self._share

    # -- what both say

    def _mismatch(self, status: int, held: str, asked_quota: str) -> RateStoreError:
        if status == -1:
            return RateStoreError(
                f"the shared budget {self.key} in {self.shown} holds --rate {held}, and this run asks for "
                f"--rate {rate_text(self.rate)}: run with --rate {held}, {self._change()}",
                library=f"the shared budget {self.key} in {self.shown} holds rate {held}, and this run asks for "
                f"RunConfig(rate={rate_text(self.rate)}): run with RunConfig(rate={held}), {self._change()}",
            )
        return RateStoreError(
            f"the shared budget {self.key} in {self.shown} holds {quota_shown(held)}, and this run asks for "
            f"{quota_shown(asked_quota)}: run with the budget's quota, {self._change()}"
        )

    def _fault(self, reason: str, starting: bool) -> RateStoreError:
        for secret in self._secrets:  # the clients do not print passwords; make sure of it
            reason = reason.replace(secret, "***")
        if starting:
            return RateStoreError(f"cannot reach the rate store {self.shown}: {reason}")
        return RateStoreError(
            f"lost the rate store {self.shown}: {reason}; no new requests start, "
            "those in flight are recorded; resume with --resume when it is back"
        )

    async def _land_pauses(self, within: float) -> None:
        """Let a pause being written land (briefly), before the store's connections close."""
        if self._pauses:
            await asyncio.wait(self._pauses, timeout=within)


__all__ = ["HEADROOM", "STEP_ARGS", "SharedBudget"]
