"""The rate store URI (`--rate-store`), and the factory of the limiter it names.

`memory://` is the in-process `RateLimiter` (a budget of one process). `redis://`, `rediss://` and
`unix://` hold the budget in Redis, shared by every process of the app on any machine
(`dispatcher.pacing.redis`). The `redis` package is an optional extra and is imported only when such
a store is asked for, so `memory://` costs no new dependency at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator

from dispatcher.errors import ConfigError, UsageError
from dispatcher.pacing.base import DEFAULT_PREFIX, Clock, Limiter, Quota, Sleep, StoreURI
from dispatcher.tim.apis import Endpoint
from dispatcher.version import DISTRIBUTION

MEMORY = "memory://"
ENV_VAR = "DISPATCHER_RATE_STORE"
_REDIS_SCHEMES = ("redis", "rediss", "unix")
MISSING_EXTRA = f"--rate-store {{uri}} needs the redis extra: pip install '{DISTRIBUTION}[redis]'"


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


def quota_of(endpoint: Endpoint, message_quota: int) -> Quota | None:
    """The second window of an API's budget: its per-minute message quota, if it has one."""
    if endpoint.quota_seconds is None:
        return None
    return Quota(message_quota, endpoint.quota_seconds)


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
    store: StoreURI,
    *,
    rate: float,
    sdkappid: int,
    api_path: str,
    quota: Quota | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[Limiter]:
    """The run's limiter for `store`, connected and checked (a Redis budget at another rate or
    quota is refused here), and closed at the end. `clock` and `sleep` pace an in-process one (in
    virtual time in tests); a shared budget is timed by the Redis server's clock."""
    if store.is_memory:
        from dispatcher.pacing.memory import RateLimiter

        yield RateLimiter(rate, quota=quota, clock=clock, sleep=sleep)
        return
    check_available(store)
    from dispatcher.pacing.redis import connect

    limiter = await connect(store, rate=rate, quota=quota, key=budget_key(store.prefix, sdkappid, api_path))
    try:
        yield limiter
    finally:
        await limiter.aclose()
