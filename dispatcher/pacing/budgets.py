"""A run's budgets: one limiter per API path, opened once, paused together and closed together.

This is the one owner of the limiters' lifetimes. A runner opens the budgets of every API its jobs
name before the first request (a store that cannot be reached, or holds another rate, is refused
before anything is sent); an API first met later (in a stream of jobs) has its budget opened when
the run first sends with it. A pause (70050, Retry-After) holds every budget, also one opened
after it began. A --rate above what Tencent documents for an API is one warning line when its budget
opens: apps can buy more, so it is not refused, and the pace ramps up to it (`adaptive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping

import structlog

from dispatcher.pacing.base import Clock, Limiter, Sleep, StoreURI, rate_text
from dispatcher.pacing.store import MEMORY, open_limiter, parse_store, quota_of
from dispatcher.tim.apis import Endpoint

log = structlog.get_logger("dispatcher")


def api_rate(endpoint: Endpoint, rate: float, api_rates: Mapping[str, float]) -> float:
    """The calls a second `endpoint`'s budget holds: --api-rate's for it, else the API's own pace
    (the Push Service's 30), else --rate. So --rate keeps its meaning for the APIs at 200."""
    given = api_rates.get(endpoint.name)
    if given is not None:
        return given
    return endpoint.default_rate if endpoint.default_rate is not None else rate


class Budgets:
    """The limiters of one run (`async with Budgets(...) as budgets`). `shared`: one limiter for
    every API instead, which then counts calls only (tests, and library users who pace themselves)."""

    def __init__(
        self,
        store: StoreURI | str = MEMORY,
        *,
        rate: float,
        sdkappid: int,
        message_quota: int,
        shared: Limiter | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        api_rates: Mapping[str, float] | None = None,
    ) -> None:
        """`rate`: --rate, the calls a second of every API without a pace of its own; `api_rates`:
        --api-rate, by API name, which wins over both (see `rate_of`)."""
        self._api_rates = dict(api_rates or {})
        self.store = parse_store(store) if isinstance(store, str) else store
        self._rate = rate
        self._sdkappid = sdkappid
        self._message_quota = message_quota
        self._shared = shared
        self._clock = clock
        self._sleep = sleep
        self._opened: dict[str, Limiter] = {}  # API path -> its limiter
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()
        self._paused_until = 0.0  # by `clock`: every start is held until then
        self._closed = False

    def rate_of(self, endpoint: Endpoint) -> float:
        """The calls a second `endpoint`'s budget holds (`api_rate`)."""
        return api_rate(endpoint, self._rate, self._api_rates)

    @property
    def counts_quota(self) -> bool:
        """Whether a request's recipients are a cost to its limiter (not with one shared limiter)."""
        return self._shared is None

    async def get(self, endpoint: Endpoint) -> Limiter:
        """The budget of `endpoint`'s API, opened on first use (raises what opening raises:
        RateStoreError, ConfigError for a budget at another rate)."""
        if self._shared is not None:
            return self._shared
        found = self._opened.get(endpoint.path)
        if found is not None:
            return found
        async with self._lock:  # one opening per API, however many workers ask at once
            found = self._opened.get(endpoint.path)
            if found is None:
                rate = self.rate_of(endpoint)
                found = await self._stack.enter_async_context(
                    open_limiter(
                        self.store,
                        rate=rate,
                        sdkappid=self._sdkappid,
                        api_path=endpoint.path,
                        quota=quota_of(endpoint, self._message_quota),
                        documented=endpoint.documented_rate,
                        clock=self._clock,
                        sleep=self._sleep,
                    )
                )
                if self._closed:  # an opening given up (a signal) that went through after the run closed
                    await self._stack.aclose()
                    raise asyncio.CancelledError
                held = self._paused_until - self._clock()
                if held > 0:  # a pause from before this API's first request holds it too
                    found.pause(held)
                self._opened[endpoint.path] = found
                if rate > endpoint.documented_rate:
                    log.warning(
                        "--rate is above what Tencent documents for this API (an app can buy more): "
                        "the pace begins at the documented rate and ramps up while the server takes it",
                        api=endpoint.name,
                        rate=rate_text(rate),
                        documented=rate_text(endpoint.documented_rate),
                    )
            return found

    async def open(self, endpoints: Iterable[Endpoint]) -> None:
        """Open these APIs' budgets now, before anything is sent."""
        for endpoint in endpoints:
            await self.get(endpoint)

    def pause(self, seconds: float) -> None:
        """Hold every API's starts (70050 is about our signatures; Retry-After about the server)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        for limiter in [self._shared] if self._shared is not None else self._opened.values():
            limiter.pause(seconds)

    def limiters(self) -> list[Limiter]:
        """The limiters opened so far."""
        return [self._shared] if self._shared is not None else list(self._opened.values())

    def paths(self) -> list[str]:
        """The API paths whose budgets are open, in the order they were opened."""
        return list(self._opened)

    async def aclose(self) -> None:
        """Close every budget; one whose opening is still under way is closed once it is opened."""
        self._closed = True
        self._opened.clear()
        await self._stack.aclose()

    async def __aenter__(self) -> Budgets:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
