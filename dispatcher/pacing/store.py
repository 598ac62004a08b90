"""The rate store URI (`--rate-store`), and the factory of the limiter it names.

`memory://` is the in-process `RateLimiter` (a budget of one process). `redis://`, `rediss://` and
`unix://` hold the budget in Redis, shared by every process of the app on any machine
(`dispatcher.pacing.redis`); `postgresql://` and `postgres://` hold the same budget in PostgreSQL
(`dispatcher.pacing.postgres`). The `redis` and `psycopg` packages are optional extras, each imported
only when such a store is asked for, so `memory://` costs no new dependency at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from dispatcher.errors import ConfigError, UsageError
from dispatcher.pacing.base import DEFAULT_PREFIX, POSTGRES_SCHEMES, Clock, Limiter, Quota, Sleep, StoreURI
from dispatcher.tim.apis import Endpoint
from dispatcher.version import DISTRIBUTION

if TYPE_CHECKING:
    from dispatcher.pacing.postgres import PostgresLimiter
    from dispatcher.pacing.redis import RedisLimiter

MEMORY = "memory://"
ENV_VAR = "DISPATCHER_RATE_STORE"
_REDIS_SCHEMES = ("redis", "rediss", "unix")
MISSING_EXTRA = f"--rate-store {{uri}} needs the redis extra: pip install '{DISTRIBUTION}[redis]'"
MISSING_POSTGRES_EXTRA = f"--rate-store {{uri}} needs the postgres extra: pip install '{DISTRIBUTION}[postgres]'"
# Of a PostgreSQL store's query: what the budget reads itself (`journal=` names a journal in the same
# database, whose URI may be given as the store: the budget has no use for it); the rest is libpq's.
_OURS = ("prefix", "journal")


def parse_store(uri: str) -> StoreURI:
    """Check a `--rate-store` URI; a bad one is a UsageError that never repeats its password."""
    if uri in (MEMORY, "memory"):
        return StoreURI("memory", MEMORY)
    _refuse_unencoded_userinfo(uri)
    if urllib.parse.urlsplit(uri).scheme in POSTGRES_SCHEMES:
        return _parse_postgres(urllib.parse.urlsplit(uri))
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        parts = urllib.parse.urlsplit(uri)
        raise UsageError(f"--rate-store {_shown(parts)}: the port must be a number from 1 to 65535") from None
    shown = _shown(parts)
    if parts.scheme not in _REDIS_SCHEMES:
        raise UsageError(f"--rate-store {shown}: use memory://, redis://, rediss://, unix:///path or postgresql://")
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


# How a run records, and messages name, the budget a PostgreSQL journal's own database keeps: not its
# URI, since workers on other machines may reach the same database by other names.
JOURNAL_DATABASE = "the journal's database"


def in_journal_database(conninfo: str) -> StoreURI:
    """The budget kept in the database of a journal (its libpq URI): a run in PostgreSQL paces there
    unless a store is named."""
    return dataclasses.replace(parse_store(conninfo), shown=JOURNAL_DATABASE)


def _parse_postgres(parts: urllib.parse.SplitResult) -> StoreURI:
    """A libpq connection URI: `postgresql://[user[:password]@][host][:port][,...][/dbname][?param=value&...]`.
    Only the ports are checked here (libpq checks the rest when it connects, without psycopg
    imported now); `prefix=` and `journal=` are taken out of what libpq is given."""
    shown = _shown(parts)
    for host in parts.netloc.rpartition("@")[2].split(","):
        _, colon, port = host.rpartition("]")[2].rpartition(":")
        if colon and port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise UsageError(f"--rate-store {shown}: the port must be a number from 1 to 65535")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in reversed(query) if name == "prefix"), DEFAULT_PREFIX)
    passwords = [value for name, value in query if name == "password"]
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in _OURS])
    url = f"{parts.scheme}://{parts.netloc}{parts.path}" + (
        f"?{rest}" if rest else ""
    )  # urlunsplit drops an empty host
    first = parts.netloc.rpartition("@")[2].split(",")[0].rpartition("]")[2]
    return StoreURI(
        parts.scheme,
        shown,
        host=parts.hostname or "",
        port=int(first.rpartition(":")[2] or 5432) if ":" in first else 5432,
        prefix=prefix,
        url=url,
        password=parts.password or (passwords[-1] if passwords else ""),
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
    """Refuse at once, before anything is read or sent, a Redis store without the redis extra, or a
    PostgreSQL one without the postgres extra."""
    if store.is_memory:
        return
    if store.is_postgres:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(MISSING_POSTGRES_EXTRA.format(uri=store.shown)) from None
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
    documented: float | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[Limiter]:
    """The run's limiter for `store`, connected and checked (a Redis budget at another rate or
    quota is refused here; so is a PostgreSQL one), and closed at the end. `documented`: the API's
    documented rate, from which a higher `rate` ramps up. `clock` and `sleep` pace an in-process one
    (in virtual time in tests); a shared budget is timed by its server's clock."""
    if store.is_memory:
        from dispatcher.pacing.memory import RateLimiter

        yield RateLimiter(rate, quota=quota, documented=documented, clock=clock, sleep=sleep)
        return
    check_available(store)
    key = budget_key(store.prefix, sdkappid, api_path)
    if store.is_postgres:
        from dispatcher.pacing import postgres

        limiter: PostgresLimiter | RedisLimiter = await postgres.connect(
            store, rate=rate, quota=quota, key=key, documented=documented
        )
    else:
        from dispatcher.pacing import redis

        limiter = await redis.connect(store, rate=rate, quota=quota, key=key, documented=documented)
    try:
        yield limiter
    finally:
        await limiter.aclose()
