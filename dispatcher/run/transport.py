"""HTTP/1.1 for the REST APIs: keep-alive connections that carry one POST at a time, parsed by llhttp.

The engine's requests are all alike: a small JSON POST to one host, whose small JSON reply comes
back on the same connection. A general client pays for what they never use (cookies, redirects,
proxies, tracing, multipart, a header multidict and a URL object per request): more than the rest
of a request's work together (docs/guide/measurements.md#transport). Here a request is one `write` of bytes
built from a prefix made once per API path, and its reply one pass of httptools' parser (the
C parser of Node.js, llhttp, which also handles chunked bodies, folded lengths and keep-alive).

A connection is reused only while nothing can be wrong with it: nothing unread came on it (a stray
reply would be taken for the next request's), it has been idle less than its keep-alive time (a
load balancer may drop it without a word), and its transport is not closed. Once a server has sent
a reply nobody asked for, no connection to it is reused: its next stray reply could come right
after a request leaves, where nothing tells it from the answer.

The client asks for `Accept-Encoding: identity`; a body compressed anyway (gzip, deflate) is
decompressed, since the API acted on the request and its reply says how.

What a reply or a fault is stays the client's business (`dispatcher.run.client`): this module
answers `Response` or raises one of its errors, telling apart a connection that was never made
(`ConnectFailed`: nothing was sent) from one that broke or went silent after the request left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import select
import socket
import ssl
import time
import zlib
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

# A reply bigger than this is not an API's reply: the connection is dropped rather than buffered.
MAX_BODY = 16 * 1024 * 1024
# Seconds an idle connection is kept: under the 5 s of common servers' keep-alive (Apache, Node.js)
# and well under load balancers' idle timeouts (60 s and more), so a pause never ends on a socket
# the other side dropped. A shorter `Keep-Alive: timeout=N` from the server wins (see `_keep_for`).
KEEP_ALIVE = 4.0


class TransportError(Exception):
    """The request got no reply. `str()` says why, in one line."""


class ConnectFailed(TransportError):
    """No connection was made (refused, DNS, TLS): the request never left."""


class ConnectTimeout(ConnectFailed, TimeoutError):
    """The connection was not made within the connect timeout: the request never left."""


class ReplyTimeout(TransportError, TimeoutError):
    """The request left and no whole reply came within the timeout."""


class Disconnected(TransportError):
    """The connection broke, or the server closed it, before the whole reply came."""


class BadReply(TransportError):
    """What came back is not HTTP/1.1 (or is over MAX_BODY)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    retry_after: str | None = None
    date: str | None = None


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time (the pool hands it to one sender)."""

    def __init__(self, talked_out_of_turn: Callable[[], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = False
        self._talked_out_of_turn = talked_out_of_turn  # tells the transport its server sent a reply unasked
        self.idle_since = 0.0  # on the transport's clock, when the last reply was read
        self.keep_for = KEEP_ALIVE
        self._unread = select.poll()  # polls the socket for bytes nobody asked for (see `reusable`)
        self._parser = httptools.HttpResponseParser(self)
        self._reply: asyncio.Future[Response] | None = None
        self._answered = False  # the request got its reply (not a fault): anything more is unasked
        self._body: list[bytes] = []
        self._size = 0
        self._retry_after: str | None = None
        self._date: str | None = None
        self._encoding = b""  # Content-Encoding, lowercased; empty when absent
        self._headers_done = False
        self._framed = False  # the reply says where its body ends (Content-Length or chunked)
        self.keep_alive = True

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._unread.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        if self._reply is None or self._reply.done():
            # Nothing is asked (the reply was read, or is being handed over): a server that talks
            # out of turn is not reused, or what it said would be taken for the next reply.
            if self._answered and data[9:12] != b"408":  # a 408 on an idle connection is a goodbye
                self._talked_out_of_turn()
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadReply("the server asked to switch protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BadReply(f"BadReply: not an HTTP/1.1 reply ({exc})"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._reply is not None and not self._reply.done():
            if self._headers_done and not self._framed and exc is None:
                self.on_message_complete()  # a body that runs until the server closes
            else:
                reason = f": {exc}" if exc is not None else ""
                closed = "ServerDisconnected: the server closed the connection before it answered"
                self._fail(Disconnected(closed + reason))

    # -- httptools' callbacks

    def on_message_begin(self) -> None:
        if self._answered:
            # Bytes after the whole reply, in the same read: the start of a reply nobody asked for.
            self.keep_alive = False
            self._talked_out_of_turn()

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"date":
            self._date = value.decode("latin-1")
        elif lowered == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True
        elif lowered == b"content-encoding":
            self._encoding = value.strip().lower()
        elif lowered == b"keep-alive":
            self.keep_for = _keep_for(value)

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            self._fail(BadReply(f"BadReply: a reply of over {MAX_BODY:,} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        reply = self._reply
        if reply is None or reply.done():
            return
        if 100 <= self._parser.get_status_code() < 200:
            # An interim reply (100 Continue, 103 Early Hints), which a server may send unasked: the
            # reply to the request comes after it. Taken for the reply, the request would look
            # unanswered and be sent again.
            self._body, self._size, self._retry_after, self._date, self._encoding = [], 0, None, None, b""
            self._headers_done = self._framed = False
            return
        self.keep_alive = self._parser.should_keep_alive()
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        if self._encoding and self._encoding != b"identity":
            try:
                body = _decompress(self._encoding, body)
            except BadReply as exc:
                self._fail(exc)
                return
        self._answered = True
        reply.set_result(Response(self._parser.get_status_code(), body, self._retry_after, self._date))

    # -- the sender's side

    def request(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._reply = asyncio.get_running_loop().create_future()
        self._answered = False
        self._body = []
        self._size = 0
        self._retry_after = self._date = None
        self._encoding = b""
        self._headers_done = self._framed = False
        self.transport.write(data)
        return self._reply

    def done(self, now: float) -> None:
        """The reply was read: the next request may use this connection, if both sides keep it."""
        self._reply = None
        self.idle_since = now
        if not self.keep_alive:
            self.close()

    def reusable(self, now: float) -> bool:
        """Open, idle for less than its keep-alive time, and nothing unread on it. Bytes that came
        while idle (found by polling the socket, before the event loop reads them) mean the server
        closed it or answered something never asked: the next request would get that answer."""
        if not self.open or now - self.idle_since >= self.keep_for:
            return False
        return not self._unread.poll(0)

    def _fail(self, exc: TransportError) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


class Transport:
    """Connections to one origin (`http://host:port` or `https://...`), at most `limit` of them,
    the idle ones kept for the next request. `timeout` bounds a request from start to whole
    reply; `connect_timeout` the connecting part of it. `clock` (monotonic seconds) times how long a
    connection has been idle."""

    def __init__(
        self,
        origin: str,
        *,
        limit: int,
        timeout: float,
        connect_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(origin)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.host_header = parts.netloc.rpartition("@")[2]  # the authority as written: an IPv6 host keeps its []
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._clock = clock
        self._limit = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self._reuse = True  # until the server talks out of turn (see `_distrust`)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.scheme != "https":
            return None
        if self._ssl is None:  # made on first use: loading the CA store costs tens of milliseconds
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _protocol(self) -> _Connection:
        return _Connection(self._distrust)

    def _distrust(self) -> None:
        """The server sent a reply nobody asked for: from now on each request gets a connection of its own."""
        self._reuse = False
        while self._idle:
            self._idle.pop().close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(self._protocol, self.host, self.port, ssl=self._ssl_context())
        except TimeoutError:
            raise ConnectTimeout(f"connect timeout after {self.connect_timeout:g}s") from None
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS handshake with {self.host}:{self.port} failed: {exc}") from None
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror)
            what = "cannot resolve" if isinstance(exc, socket.gaierror) else "cannot connect to"
            raise ConnectFailed(f"ClientConnectorError: {what} {self.host}:{self.port}: {exc}") from None
        sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def post(self, data: bytes) -> Response:
        """Send one whole request (`data`, made by the client) and read its reply."""
        if self._closed:
            raise Disconnected("the transport is closed")
        loop = asyncio.get_running_loop()
        async with self._limit:
            deadline = loop.time() + self.timeout
            conn = None
            now = self._clock()
            while self._idle:
                candidate = self._idle.pop()
                if candidate.reusable(now):
                    conn = candidate
                    break
                candidate.close()
            if conn is None:
                conn = await self._connect()
            reply = conn.request(data)
            timer = loop.call_at(deadline, _expire, reply, self.timeout)
            try:
                response = await reply
            except BaseException:
                conn.close()  # a request cut off midway leaves the connection in no known state
                raise
            finally:
                timer.cancel()
            conn.done(self._clock())
            if self._closed or not self._reuse:  # closed while this request was out, or distrusted
                conn.close()
            elif conn.open:
                self._idle.append(conn)
            return response

    def close(self) -> None:
        """Close the idle connections now, and each one in use when its request ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


def _keep_for(value: bytes) -> float:
    """How long to keep a connection idle, given a `Keep-Alive: timeout=N, max=M` header: a second
    short of N (for the reply's travel and the clocks' drift), at least half of it, at most KEEP_ALIVE."""
    for param in value.split(b","):
        name, _, number = param.partition(b"=")
        if name.strip().lower() == b"timeout":
            try:
                timeout = float(number)
            except ValueError:
                break
            if timeout >= 0:
                return min(KEEP_ALIVE, max(timeout - 1, timeout / 2))
    return KEEP_ALIVE


def _decompress(encoding: bytes, body: bytes) -> bytes:
    """A body compressed although `identity` was asked: lost, a delivered message would look
    unanswered and be sent again. `deflate` is zlib's format, or raw deflate as some servers send."""
    if encoding in (b"gzip", b"x-gzip"):
        formats = [16 + zlib.MAX_WBITS]
    elif encoding == b"deflate":
        formats = [zlib.MAX_WBITS, -zlib.MAX_WBITS]
    else:
        raise BadReply(f"BadReply: a body in an encoding not asked for ({encoding.decode('latin-1')})")
    for wbits in formats:
        inflate = zlib.decompressobj(wbits)
        try:
            plain = inflate.decompress(body, MAX_BODY + 1)  # bounded: a small body may inflate to gigabytes
        except zlib.error:
            continue
        if len(plain) > MAX_BODY:
            raise BadReply(f"BadReply: a reply of over {MAX_BODY:,} bytes")
        if inflate.eof:
            return plain
    raise BadReply(f"BadReply: a {encoding.decode('latin-1')} body that does not decompress")


def _expire(reply: asyncio.Future[Response], timeout: float) -> None:
    if not reply.done():
        reply.set_exception(ReplyTimeout(f"timeout after {timeout:g}s"))


__all__ = [
    "BadReply",
    "ConnectFailed",
    "ConnectTimeout",
    "Disconnected",
    "ReplyTimeout",
    "Response",
    "Transport",
    "TransportError",
]
