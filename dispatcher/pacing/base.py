"""What the engine needs from whatever paces it: one small protocol, and the values it takes.

`memory.py` (in-process), `redis.py` (a budget shared through Redis) and `postgres.py` (the same
budget in PostgreSQL) are its implementations, side by side; `store.py` parses `--rate-store` and
opens the one it names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# The slack a quota's guard adds to its window (see `Quota`).
QUOTA_SLACK = 0.5


@dataclasses.dataclass(frozen=True)
class Quota:
    """A second window of a budget: at most `limit` units (messages, counted per recipient) in any
    `per` seconds, beside the rate's calls per second. batchsendmsg's 12,000 messages a minute is
    `Quota(12_000, 60)`.

    Both limiters keep it two ways. Units are paced evenly, one every (per + QUOTA_SLACK) / limit
    seconds, charged after the call (a call of 500 goes now, the next one 500 units later): a
    steady run never bunches. Even pacing alone is not a bound, though: a big call after an idle
    spell followed by small ones can put `limit + cost` units in one window. So a guard also keeps
    the log of the last window's calls and holds a call until the units in the last
    per + QUOTA_SLACK seconds, its own included, are at most `limit`. The slack covers the way from
    a granted slot to the server, so the server's own window, whether sliding or by the minute,
    sees at most `limit`. At 12,000 a minute the pace is 11,901 a minute (99.2%).
    """

    limit: int
    per: float
    # False: a guard alone, no even pace (timpush_push's 100 calls a day: the second push of a day goes a
    # second after the first, not 864 s after it).
    even: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.limit, int) and self.limit >= 1):
            raise ValueError("a quota's limit must be a whole number of at least 1")
        if not (math.isfinite(self.per) and self.per > 0):
            raise ValueError("a quota's window must be a positive number of seconds")

    @property
    def window(self) -> float:
        """The window the guard counts over, seconds."""
        return self.per + QUOTA_SLACK

    @property
    def unit_interval(self) -> float:
        """Seconds between units at the even pace (0: none, the guard alone holds the quota)."""
        return self.window / self.limit if self.even else 0.0

    def text(self) -> str:
        """How a shared budget records it, so that two runs with different quotas never mix: "12000/60"."""
        return f"{self.limit}/{format(self.per, '.17g')}"

    def check_cost(self, cost: int) -> None:
        if cost > self.limit:
            raise ValueError(f"a call of {cost} units can never fit a quota of {self.limit}")


class Limiter(Protocol):
    """What the engine needs from a rate limiter; both implementations are this."""

    async def acquire(self, cost: int = 1) -> None:
        """Wait for a start slot. Every call counts one against the rate (a retry like a first
        attempt); `cost` is what it counts against the budget's quota if it has one (the call's
        recipients), and is ignored if it has none."""
        ...

    def pause(self, seconds: float) -> None:
        """Hold every start for `seconds` (70050, Retry-After); returns at once, takes effect at once."""
        ...

    async def over_rate(self, sent_ago: float) -> float | None:
        """The server answered "too frequent" to a request that started `sent_ago` seconds ago: step
        the pace down (`dispatcher.pacing.adaptive`; for every process of a shared budget). The new
        pace in requests a second, or None when it did not step (the request went out within a
        second of the last step, or the pace is at its floor)."""
        ...

    @property
    def pace(self) -> float:
        """Requests a second the latest slot was paced at: never above the rate."""
        ...


DEFAULT_PREFIX = "dispatcher:"  # of a shared budget's keys (in Redis, or its rows in PostgreSQL)
# How far below the rate each limiter's ceiling is (memory.py and redis.py say why they differ):
# 99.5% of the rate in-process, 98% for a budget shared through Redis or PostgreSQL.
MEMORY_HEADROOM = 0.005
SHARED_HEADROOM = 0.02


POSTGRES_SCHEMES = ("postgresql", "postgres")


def rate_text(rate: float) -> str:
    """The rate as a shared budget keeps it: 200 -> "200", 0.5 -> "0.5" (exact, so equal rates match)."""
    return format(rate, ".17g")


def quota_shown(text: object) -> str:
    """A shared budget's quota as messages say it: "12000/60" -> "a quota of 12000 units per 60 s"."""
    if not text:
        return "no quota"
    limit, _, per = str(text).partition("/")
    return f"a quota of {limit} units per {per} s"


@dataclasses.dataclass(frozen=True)
class StoreURI:
    """A parsed `--rate-store`. `shown` is what messages and logs print: never the password."""

    scheme: str
    shown: str
    host: str = ""
    port: int = 0
    prefix: str = DEFAULT_PREFIX
    # What the client connects with (redis-py, or libpq's connection URI), and the password, kept out
    # of repr() so a traceback cannot show them.
    url: str = dataclasses.field(default="", repr=False)
    password: str = dataclasses.field(default="", repr=False)

    @property
    def is_memory(self) -> bool:
        return self.scheme == "memory"

    @property
    def is_postgres(self) -> bool:
        return self.scheme in POSTGRES_SCHEMES

    @property
    def headroom(self) -> float:
        """How far below the rate its limiter's pace stays at most."""
        return MEMORY_HEADROOM if self.is_memory else SHARED_HEADROOM
