"""The HTTP client for the REST APIs (dispatcher.tim.apis): one request in, one `Reply` out.

It never raises for what the server or the network does: a transport fault is a Reply whose
`error_code` is None, so the engine has one place (its endpoint's `classify`) that decides what happens next.
A Reply also says whether the request surely never left (`connect_failed`: refused, DNS, TLS,
connect timeout) and when the server asked to be tried again (`retry_after`, seconds).

Given a backup endpoint, the client sends to it for a while after the main one could not be reached
(`dispatcher.run.failover` says when): only a request that never left moves the run's requests.
"""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from dispatcher.observe.logs import redact
from dispatcher.run.failover import Failover
from dispatcher.run.transport import ConnectFailed, Transport, TransportError
from dispatcher.tim.apis import DEFAULT_ENDPOINT, Endpoint
from dispatcher.tim.apis.base import NO_DETAILS, Details
from dispatcher.tim.usersig import Signer
from dispatcher.version import DISTRIBUTION, __version__

USER_AGENT = f"{DISTRIBUTION}/{__version__}"


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    error_code: int | None  # None: transport fault
    error_info: str
    http_status: int | None  # None: no response came
    latency_ms: float
    connect_failed: bool = False  # no connection was made: the request never reached the server
    retry_after: float | None = None  # seconds, from a Retry-After header on a non-200 reply
    details: Details = NO_DETAILS  # per-recipient failures, a dropped message (the endpoint reads them)
    date: str | None = None  # the server's Date header, as sent: its clock, for a signature refused as expired
    # A connection never made to the main domain, after which the next attempts go to the backup one:
    # it says nothing yet of whether the service can be reached (the outage rules leave it out).
    failed_over: bool = False
    # What to do about it is the endpoint's call (`Endpoint.classify`): the same code means different
    # things to different APIs.

    @property
    def server_time(self) -> float | None:
        """The server's clock when it answered (seconds since the epoch, from `date`), if it said."""
        return http_date(self.date)


def http_date(value: str | None) -> float | None:
    """An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) as seconds since the epoch; None if absent or bad."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return when.timestamp()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = http_date(value)
    if when is None:
        return None
    return max(0.0, when - (time.time() if now is None else now))


class _Origin:
    """One endpoint's connections and the start of its requests (the path prefix, the Host header)."""

    def __init__(self, endpoint: str, query: str, *, concurrency: int, timeout: float) -> None:
        base = urlsplit(endpoint.rstrip("/"))
        self.transport = Transport(
            f"{base.scheme}://{base.netloc}", limit=concurrency, timeout=timeout, connect_timeout=timeout / 2
        )
        self.query = query
        self.prefix = base.path.rstrip("/")  # an endpoint URL may carry a path of its own
        self.tail = (
            f" HTTP/1.1\r\nHost: {self.transport.host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept-Encoding: identity\r\nContent-Type: application/json\r\nContent-Length: "
        )
        self.sig = ""
        self.signed: dict[str, str] = {}  # API path -> the request line up to `random=`, for the current UserSig

    def request(self, sig: str, path: str, body: bytes, random_value: int) -> bytes:
        # The signed part of the request line is rebuilt only when the signer hands out a new UserSig.
        if sig is not self.sig:
            self.sig = sig
            self.signed = {}
        line = self.signed.get(path)
        if line is None:
            line = f"POST {self.prefix}{path}?{self.query}&usersig={quote(sig, safe='*-_')}&contenttype=json&random="
            self.signed[path] = line
        return f"{line}{random_value}{self.tail}{len(body)}\r\n\r\n".encode() + body


class Client:
    """Sends the run's requests to one endpoint, over keep-alive connections of its own (at most
    `concurrency`), and turns what happens into a `Reply`. Close it at the end (`await aclose()`).

    A connection gets half the request's time to be made, so that a host that never accepts is
    told apart (a connect timeout: nothing was sent) from one that accepted and did not answer
    (maybe delivered).

    `failover`: the endpoint's backup (`Failover.backup`), where requests go for a while after the
    main endpoint could not be reached, and the rule of when. Without it, every request goes to `endpoint`."""

    def __init__(
        self,
        endpoint: str,
        sdkappid: int,
        identifier: str,
        signer: Signer,
        *,
        concurrency: int,
        timeout: float,
        rng: random.Random | None = None,
        failover: Failover | None = None,
    ) -> None:
        query = f"sdkappid={sdkappid}&identifier={quote(identifier, safe='')}"
        self._failover = failover or Failover(endpoint, None)
        backup = self._failover.backup
        self._main = self._backup = _Origin(endpoint, query, concurrency=concurrency, timeout=timeout)
        if backup is not None:
            self._backup = _Origin(backup, query, concurrency=concurrency, timeout=timeout)
        self._signer = signer
        # `random` only has to be fresh and uniform, not secret: a seeded PRNG spares a syscall a request.
        self._rng = rng or random.Random()
        self.timeout = timeout
        self.connect_timeout = timeout / 2

    async def send(self, body: bytes, endpoint: Endpoint = DEFAULT_ENDPOINT) -> Reply:
        return (await self._exchange(endpoint.path, body, endpoint.details))[0]

    async def call(self, path: str, body: bytes) -> tuple[Reply, dict[str, Any]]:
        """A request to any API `path` (the read-only calls of `dispatcher check`), signed and sent
        as a send is: its Reply, and the reply's JSON object (empty when there is none)."""
        return await self._exchange(path, body, _no_details)

    async def _exchange(
        self, path: str, body: bytes, details: Callable[[dict[str, Any]], Details]
    ) -> tuple[Reply, dict[str, Any]]:
        start = time.perf_counter()
        failover = self._failover
        route = failover.pick()
        origin = self._backup if route == "backup" else self._main
        # A fresh uniform uint32 `random` for every request, as the API asks.
        request = origin.request(self._signer.current(), path, body, self._rng.getrandbits(32))
        try:
            resp = await origin.transport.post(request)
        except ConnectFailed as exc:  # refused, DNS, TLS, connect timeout: the request never left
            info = redact(str(exc))
            moved = failover.unreachable(route, info)
            return Reply(None, info, None, _ms(start), connect_failed=True, failed_over=moved), {}
        except TransportError as exc:  # it left: its fate is the engine's rules', wherever its retry goes
            failover.connected(route)
            return Reply(None, redact(str(exc)), None, _ms(start)), {}
        except BaseException:
            failover.abandoned(route)
            raise
        failover.connected(route)
        latency = _ms(start)
        status = resp.status
        if status == 413:
            info = f"HTTP 413: the server refused a request of {len(body):,} bytes as too large"
            return Reply(None, info, status, latency), {}
        if status != 200:
            return Reply(None, f"HTTP {status}", status, latency, retry_after=parse_retry_after(resp.retry_after)), {}
        try:
            doc = orjson.loads(resp.body)
            code = int(doc["ErrorCode"])
            info = str(doc.get("ErrorInfo", ""))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            return Reply(None, "unparsable response body", status, latency), {}
        return Reply(code, info, status, latency, details=details(doc), date=resp.date), doc

    async def aclose(self) -> None:
        """Close the idle connections; one still in use closes when its request ends."""
        self._main.transport.close()
        self._backup.transport.close()


def _no_details(_doc: dict[str, Any]) -> Details:
    return NO_DETAILS


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


__all__ = ["Client", "Reply"]
