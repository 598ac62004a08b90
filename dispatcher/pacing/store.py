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
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from dispatcher import uris
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
    """Check a `--rate-store` URI; a bad one is a UsageError that never repeats its password. Its
    library words name the `store` that Runner and work take."""
    try:
        return _parse_store(uri)
    except UsageError as exc:
        text = str(exc)
        raise UsageError(text, library="store " + text.removeprefix("--rate-store ")) from None


def _parse_store(uri: str) -> StoreURI:
    if uri in (MEMORY, "memory"):
        return StoreURI("memory", MEMORY)
    parts = uris.split(uri)
    # The user name is left out too: it can be half a secret.
    shown = parts.shown(keep=("prefix",))
    if parts.spilled:
        raise UsageError(
            f"--rate-store {shown}: a user name or password with / ? or # in it must be percent-encoded (%2F %3F %23)"
        )
    if parts.scheme in POSTGRES_SCHEMES:
        return _parse_postgres(parts, shown)
    try:
        host, port = parts.host()
    except ValueError as exc:
        raise UsageError(f"--rate-store {shown}: {exc}") from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise UsageError(f"--rate-store {shown}: use memory://, redis://, rediss://, unix:///path or postgresql://")
    query = parts.pairs()
    prefix = DEFAULT_PREFIX
    for name, value in query:
        if name == "prefix":
            prefix = value
    url = parts.written(parts.query_without("prefix"))
    if parts.scheme == "unix":
        if not parts.path:
            raise UsageError(f"--rate-store {shown}: give the socket's path, as in unix:///run/redis.sock")
        return StoreURI("unix", shown, host=parts.path, prefix=prefix, url=url, password=parts.secret())
    if not host:
        raise UsageError(f"--rate-store {shown}: give a host, as in redis://127.0.0.1:6379/0")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise UsageError(f"--rate-store {shown}: the database must be a number, as in redis://host:6379/0")
    return StoreURI(parts.scheme, shown, host=host, port=port or 6379, prefix=prefix, url=url, password=parts.secret())


# How a run records, and messages name, the budget a PostgreSQL journal's own database keeps: not its
# URI, since workers on other machines may reach the same database by other names.
JOURNAL_DATABASE = "the journal's database"


def in_journal_database(conninfo: str) -> StoreURI:
    """The budget kept in the database of a journal (its libpq URI): a run in PostgreSQL paces there
    unless a store is named."""
    return dataclasses.replace(parse_store(conninfo), shown=JOURNAL_DATABASE)


def _parse_postgres(parts: uris.URI, shown: str) -> StoreURI:
    """A libpq connection URI: `postgresql://[user[:password]@][host][:port][,...][/dbname][?param=value&...]`.
    Only the ports are checked here (libpq checks the rest when it connects, without psycopg
    imported now); `prefix=` and `journal=` are taken out of what libpq is given."""
    try:
        hosts = [uris.host_port(host) for host in parts.hosts.split(",")]
    except ValueError as exc:
        raise UsageError(f"--rate-store {shown}: {exc}") from None
    query = parts.pairs()
    prefix = next((value for name, value in reversed(query) if name == "prefix"), DEFAULT_PREFIX)
    url = parts.written(parts.query_without(*_OURS))
    host, port = hosts[0]
    return StoreURI(parts.scheme, shown, host=host, port=port or 5432, prefix=prefix, url=url, password=parts.secret())


def quota_of(endpoint: Endpoint, message_quota: int) -> Quota | None:
    """The second window of an API's budget: its per-minute message quota, or its calls a day, if it has one."""
    if endpoint.call_quota is not None:
        limit, per = endpoint.call_quota
        return Quota(limit, per, even=False)
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
            text = MISSING_POSTGRES_EXTRA.format(uri=store.shown)
            raise ConfigError(text, library="store " + text.removeprefix("--rate-store ")) from None
        return
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        text = MISSING_EXTRA.format(uri=store.shown)
        raise ConfigError(text, library="store " + text.removeprefix("--rate-store ")) from None


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
