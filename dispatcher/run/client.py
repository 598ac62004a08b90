"""The HTTP client for the REST APIs (dispatcher.tim.apis): one request in, one `Reply` out.

It never raises for what the server or the network does: a transport fault is a Reply whose
`error_code` is None, so the engine has one place (its endpoint's `classify`) that decides what happens next.
A Reply also says whether the request surely never left (`connect_failed`: refused, DNS, TLS,
connect timeout) and when the server asked to be tried again (`retry_after`, seconds).
"""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from dispatcher.observe.logs import redact
from dispatcher.tim.apis import DEFAULT_ENDPOINT, Endpoint
from dispatcher.tim.apis.base import NO_DETAILS, Details
from dispatcher.tim.usersig import Signer

JSON_HEADERS = {"Content-Type": "application/json"}


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
    # What to do about it is the endpoint's call (`Endpoint.classify`): the same code means different
    # things to different APIs.

    @property
    def server_time(self) -> float | None:
        """The server's clock when it answered (seconds since the epoch, from `date`), if it said."""
        return http_date(self.date)


def new_session(concurrency: int, timeout: float) -> aiohttp.ClientSession:
    """One session for the whole run: keep-alive connections, at most `concurrency` of them.

    Connecting gets half the request's time, so that a host that never accepts is told apart (a
    connect timeout: nothing was sent) from one that accepted and did not answer (maybe delivered).
    """
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300)
    timeouts = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout / 2)
    return aiohttp.ClientSession(connector=connector, timeout=timeouts, headers=JSON_HEADERS)


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


class Client:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        sdkappid: int,
        identifier: str,
        signer: Signer,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._query = f"sdkappid={sdkappid}&identifier={quote(identifier, safe='')}"
        base = URL(endpoint.rstrip("/"))
        self._scheme, self._authority = base.scheme, base.raw_authority
        self._prefix = base.raw_path.rstrip("/")  # an endpoint URL may carry a path of its own
        self._signer = signer
        self._sig = ""
        self._signed: dict[str, str] = {}  # API path -> the query up to `random=`, for the current UserSig
        # `random` only has to be fresh and uniform, not secret: a seeded PRNG spares a syscall a request.
        self._rng = rng or random.Random()
        self.timeout = session.timeout.total or 0.0
        self.connect_timeout = session.timeout.sock_connect or 0.0

    def _url(self, path: str) -> URL:
        # A fresh uniform uint32 `random` for every request, as the API asks. The signed part of
        # the URL is rebuilt only when the signer hands out a new UserSig.
        sig = self._signer.current()
        if sig is not self._sig:
            self._sig = sig
            self._signed = {}
        signed = self._signed.get(path)
        if signed is None:
            signed = f"{self._query}&usersig={quote(sig, safe='*-_')}&contenttype=json&random="
            self._signed[path] = signed
        # Built from its parts, already encoded: a URL string would be parsed again for every request.
        return URL.build(
            scheme=self._scheme,
            authority=self._authority,
            path=self._prefix + path,
            query_string=f"{signed}{self._rng.getrandbits(32)}",
            encoded=True,
        )

    async def send(self, body: bytes, endpoint: Endpoint = DEFAULT_ENDPOINT) -> Reply:
        start = time.perf_counter()
        status: int | None = None
        retry_after: str | None = None
        try:
            async with self._session.post(self._url(endpoint.path), data=body) as resp:
                status = resp.status
                if status != 200:
                    retry_after = resp.headers.get("Retry-After")
                date = resp.headers.get("Date")
                raw = await resp.read()
        except aiohttp.ConnectionTimeoutError:
            return Reply(
                None, f"connect timeout after {self.connect_timeout:g}s", None, _ms(start), connect_failed=True
            )
        except TimeoutError:
            return Reply(None, f"timeout after {self.timeout:g}s", None, _ms(start))
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS: the request never left
            return Reply(None, redact(f"{type(exc).__name__}: {exc}"), None, _ms(start), connect_failed=True)
        except aiohttp.ClientError as exc:
            return Reply(None, redact(f"{type(exc).__name__}: {exc}"), status, _ms(start))
        latency = _ms(start)
        if status == 413:
            info = f"HTTP 413: the server refused a request of {len(body):,} bytes as too large"
            return Reply(None, info, status, latency)
        if status != 200:
            return Reply(None, f"HTTP {status}", status, latency, retry_after=parse_retry_after(retry_after))
        try:
            doc = orjson.loads(raw)
            code = int(doc["ErrorCode"])
            info = str(doc.get("ErrorInfo", ""))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            return Reply(None, "unparsable response body", status, latency)
        return Reply(code, info, status, latency, details=endpoint.details(doc), date=date)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


__all__ = ["Client", "Reply", "new_session"]
