"""The seam between the engine and whatever paces it: one small protocol, and the rate store URI.

`memory://` is the in-process `RateLimiter` (a budget of one process). `redis://`, `rediss://` and
`unix://` hold the budget in Redis, shared by every process of the app on any machine
(`dispatcher.redislimit`). The `redis` package is an optional extra and is imported only when such
a store is asked for, so `memory://` costs no new dependency at run time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import urllib.parse
from collections.abc import AsyncIterator
from typing import Protocol

from dispatcher import DISTRIBUTION
from dispatcher.errors import ConfigError, UsageError

MEMORY = "memory://"
ENV_VAR = "DISPATCHER_RATE_STORE"
DEFAULT_PREFIX = "dispatcher:"
_REDIS_SCHEMES = ("redis", "rediss", "unix")
MISSING_EXTRA = f"--rate-store {{uri}} needs the redis extra: pip install '{DISTRIBUTION}[redis]'"


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
        """Seconds between units at the even pace."""
        return self.window / self.limit

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
        the pace down (`dispatcher.adaptive`; for every process of a shared budget). The new pace in
        requests a second, or None when it did not step (the request went out within a second of
        the last step, or the pace is at its floor)."""
        ...

    @property
    def pace(self) -> float:
        """Requests a second the latest slot was paced at: never above the rate."""
        ...


@dataclasses.dataclass(frozen=True)
class StoreURI:
    """A parsed `--rate-store`. `shown` is what messages and logs print: never the password."""

    scheme: str
    shown: str
    host: str = ""
    port: int = 0
    prefix: str = DEFAULT_PREFIX
    # What redis-py connects with, and the password, kept out of repr() so a traceback cannot show them.
    url: str = dataclasses.field(default="", repr=False)
    password: str = dataclasses.field(default="", repr=False)

    @property
    def is_memory(self) -> bool:
        return self.scheme == "memory"


def parse_store(uri: str) -> StoreURI:
    """Check a `--rate-store` URI; a bad one is a UsageError that never repeats its password."""
    if uri in (MEMORY, "memory"):
        return StoreURI("memory", MEMORY)
    _refuse_unencoded_userinfo(uri)
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        parts = urllib.parse.urlsplit(uri)
        raise UsageError(f"--rate-store {_shown(parts)}: the port must be a number from 1 to 65535") from None
    shown = _shown(parts)
    if parts.scheme not in _REDIS_SCHEMES:
        raise UsageError(f"--rate-store {shown}: use memory://, redis://, rediss:// or unix:///path")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    for name, value in query:
        if name == "prefix":
            prefix = value
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "prefix"])
    url = urllib.parse.urlunsplit(parts._replace(query=rest))
    if parts.scheme == "unix":
        if not parts.path:
            raise UsageError(f"--rate-store {shown}: give the socket's path, as in unix:///run/redis.sock")
        return StoreURI("unix", shown, host=parts.path, prefix=prefix, url=url, password=parts.password or "")
    if not parts.hostname:
        raise UsageError(f"--rate-store {shown}: give a host, as in redis://127.0.0.1:6379/0")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise UsageError(f"--rate-store {shown}: the database must be a number, as in redis://host:6379/0")
    return StoreURI(
        parts.scheme,
        shown,
        host=parts.hostname,
        port=port or 6379,
        prefix=prefix,
        url=url,
        password=parts.password or "",
    )


def _refuse_unencoded_userinfo(uri: str) -> None:
    """A password with a raw / ? or # ends the URI's host part early, and the rest of it would be
    read, and shown, as the port, database, query or fragment: refuse it, showing only what
    follows its last @ (a user name or password is never shown, whole or in part)."""
    parts = urllib.parse.urlsplit(uri)
    names = [name for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if name != "prefix"]
    if "@" in parts.path or "@" in parts.fragment or any("@" in name for name in names):
        host = uri.rpartition("@")[2]
        raise UsageError(
            f"--rate-store {parts.scheme}://{host}: a user name or password with / ? or # in it must be "
            "percent-encoded (%2F %3F %23)"
        )


def _shown(parts: urllib.parse.SplitResult) -> str:
    """The URI without user name and password (a user name can be half a secret too)."""
    host = parts.netloc.rpartition("@")[2]
    query = "&".join(q for q in parts.query.split("&") if q.startswith("prefix=")) if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}" + (f"?{query}" if query else "")


def budget_key(prefix: str, sdkappid: int, api_path: str) -> str:
    """One budget per app and endpoint: `dispatcher:budget:1400000000:/v4/.../send_group_system_notification`."""
    return f"{prefix}budget:{sdkappid}:{api_path}"


def check_available(store: StoreURI) -> None:
    """Refuse at once, before anything is read or sent, a Redis store without the redis extra."""
    if store.is_memory:
        return
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING_EXTRA.format(uri=store.shown)) from None


@contextlib.asynccontextmanager
async def open_limiter(
    store: StoreURI, *, rate: float, sdkappid: int, api_path: str, quota: Quota | None = None
) -> AsyncIterator[Limiter]:
    """The run's limiter for `store`, connected and checked (a Redis budget at another rate or
    quota is refused here), and closed at the end."""
    if store.is_memory:
        from dispatcher.ratelimit import RateLimiter

        yield RateLimiter(rate, quota=quota)
        return
    check_available(store)
    from dispatcher.redislimit import connect

    limiter = await connect(store, rate=rate, quota=quota, key=budget_key(store.prefix, sdkappid, api_path))
    try:
        yield limiter
    finally:
        await limiter.aclose()
