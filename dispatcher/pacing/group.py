"""Pacing per group: at most so many messages a second into any one group, in this process.

send_group_msg has a limit besides the app's calls a second: 40 messages a second into one group,
beyond which the server drops the message (ErrorCode 0 with a MsgDropReason). The engine retries a
drop, but a run of many jobs into one group sent at the call rate would lose four in five to it and
spend their attempts: 400 jobs into one group at 200 calls a second left 75 failed. Each group gets
a `RateLimiter` of its own, made when a message for it first waits and forgotten once it has been
idle long enough to have no say in the next start, so a run into a million groups holds only the
groups in use.
"""

from __future__ import annotations

import asyncio
import time

from dispatcher.pacing.base import Clock, Sleep
from dispatcher.pacing.memory import RateLimiter

# The share of a group's limit that is used: arrivals at the server bunch a little on the way, and a
# message over the limit is dropped (then retried), never counted against the app.
SHARE = 0.95
FORGET_AFTER = 1.0  # seconds idle after which a group's limiter is the same as a new one
KEEP = 1024  # groups held before idle ones are forgotten


class GroupPacer:
    def __init__(self, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._groups: dict[str, tuple[RateLimiter, list[float]]] = {}  # group -> (limiter, [users, last use])

    async def acquire(self, group: str, rate: float) -> None:
        """Wait for the start slot of one message into `group`, at most `rate` a second."""
        held = self._groups.get(group)
        if held is None:
            if len(self._groups) >= KEEP:
                self._forget_idle()
            # No collection before the slot: the app's limiter, taken right after, does that. A fixed
            # pace (start at the ceiling, never stepped down): a drop is not the app's rate.
            limiter = RateLimiter(rate * SHARE, self._clock, self._sleep, lambda: None, start=1.0)
            held = self._groups[group] = (limiter, [0, 0.0])
        limiter, use = held
        use[0] += 1
        try:
            await limiter.acquire()
        finally:
            use[0] -= 1
            use[1] = self._clock()

    def _forget_idle(self) -> None:
        idle_since = self._clock() - FORGET_AFTER
        for group in [g for g, (_, use) in self._groups.items() if not use[0] and use[1] < idle_since]:
            del self._groups[group]

    def __len__(self) -> int:
        return len(self._groups)
