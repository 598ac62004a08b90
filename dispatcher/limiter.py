"""The seam between the engine and whatever paces it: one small protocol, and the rate store URI.

`memory://` is the in-process `RateLimiter` (a budget of one process). `redis://`, `rediss://` and
`unix://` hold the budget in Redis, shared by every process of the app on any machine
(`dispatcher.redislimit`). The `redis` package is an optional extra and is imported only when such
a store is asked for, so `memory://` costs no new dependency at run time.
"""

from __future__ import annotations

import contextlib
import dataclasses
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


class Limiter(Protocol):
    """What the engine needs from a rate limiter; both implementations are this."""

    async def acquire(self, cost: int = 1) -> None:
        """Wait for a start slot worth `cost` (1: one request). A retry takes one like a first attempt."""
        ...

    def pause(self, seconds: float) -> None:
        """Hold every start for `seconds` (70050, Retry-After); returns at once, takes effect at once."""
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
async def open_limiter(store: StoreURI, *, rate: float, sdkappid: int, api_path: str) -> AsyncIterator[Limiter]:
    """The run's limiter for `store`, connected and checked (a Redis budget at another rate is
    refused here), and closed at the end."""
    if store.is_memory:
        from dispatcher.ratelimit import RateLimiter

        yield RateLimiter(rate)
        return
    check_available(store)
    from dispatcher.redislimit import connect

    limiter = await connect(store, rate=rate, key=budget_key(store.prefix, sdkappid, api_path))
    try:
        yield limiter
    finally:
        await limiter.aclose()
