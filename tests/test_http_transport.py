"""The client's HTTP/1.1 against servers that answer the way real ones may: chunked bodies, a
connection closed after each reply, a body that runs until the server closes, garbage, silence,
TLS with a certificate the machine trusts and one it does not."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import subprocess
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dispatcher.run import transport
from dispatcher.run.client import Client, Reply
from dispatcher.testing import FakeClock
from dispatcher.tim.config import DEMO_CREDENTIALS
from dispatcher.tim.usersig import Signer

OK_BODY = b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}'
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw TCP server on 127.0.0.1 whose handler writes whatever bytes the test says."""

    def __init__(self) -> None:
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.port = 0

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        """One request off the connection (head and body); False at the end of the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        length = next(
            int(v) for k, v in (h.split(b": ", 1) for h in head.split(b"\r\n")[1:-2]) if k == b"Content-Length"
        )
        self.heads.append(head)
        self.bodies.append(await reader.readexactly(length))
        return True


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(replies: Callable[[int], bytes | None], ssl_context: ssl.SSLContext | None = None) -> Server:
        """`replies(n)`: the bytes answering the connection's n-th request (None: close it unanswered,
        b"": answer nothing and hold it open)."""
        state = Server()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            n = 0
            while await state.read_request(reader):
                n += 1
                reply = replies(n)
                if reply is None:
                    break
                if reply == b"":
                    await asyncio.sleep(3600)
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply:
                    break
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
        servers.append(server)
        state.port = server.sockets[0].getsockname()[1]
        return state

    yield start
    for server in servers:
        server.close()


def reply(body: bytes = OK_BODY, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def client(url: str, timeout: float = 5.0) -> Client:
    creds = DEMO_CREDENTIALS
    signer = Signer(creds.sdkappid, creds.identifier, creds.secret_key)
    return Client(url, creds.sdkappid, creds.identifier, signer, concurrency=4, timeout=timeout)


async def send_all(c: Client, count: int) -> list[Reply]:
    try:
        return [await c.send(b'{"GroupId":"@TGS#1","Content":"hi"}') for _ in range(count)]
    finally:
        await c.aclose()


async def test_the_request_is_one_post_with_its_query_and_json_body(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(lambda n: reply())
    (answer,) = await send_all(client(f"http://127.0.0.1:{server.port}/prefix/"), 1)
    assert (answer.error_code, answer.http_status) == (0, 200)
    line, *headers = server.heads[0].decode().split("\r\n")[:-2]
    method, target, version = line.split(" ")
    path, _, query = target.partition("?")
    assert (method, path, version) == (
        "POST",
        "/prefix/v4/group_open_http_svc/send_group_system_notification",
        "HTTP/1.1",
    )
    assert [kv.split("=")[0] for kv in query.split("&")] == [
        "sdkappid",
        "identifier",
        "usersig",
        "contenttype",
        "random",
    ]
    assert 0 <= int(query.rpartition("=")[2]) < 2**32
    assert headers == [
        f"Host: 127.0.0.1:{server.port}",
        "User-Agent: tim-dispatcher/0.1.0",
        "Accept-Encoding: identity",
        "Content-Type: application/json",
        "Content-Length: 35",
    ]
    assert server.bodies == [b'{"GroupId":"@TGS#1","Content":"hi"}']


async def test_requests_share_one_keep_alive_connection(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(lambda n: reply())
    answers = await send_all(client(f"http://127.0.0.1:{server.port}"), 5)
    assert [a.error_code for a in answers] == [0, 0, 0, 0, 0]
    assert (server.connections, len(server.heads)) == (1, 5)


async def test_a_server_that_closes_after_each_reply_gets_a_new_connection_each_time(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    server = await serve(lambda n: reply(OK_BODY, "Connection: close"))
    answers = await send_all(client(f"http://127.0.0.1:{server.port}"), 3)
    assert [a.error_code for a in answers] == [0, 0, 0]
    assert server.connections == 3


async def test_a_chunked_reply_is_read_whole(serve: Callable[..., Awaitable[Server]]) -> None:
    body = b'{"ErrorCode":10002,"ErrorInfo":"try again"}'
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        + f"{10:x}\r\n".encode()
        + body[:10]
        + f"\r\n{len(body) - 10:x}\r\n".encode()
        + body[10:]
        + b"\r\n0\r\n\r\n"
    )
    server = await serve(lambda n: chunked)
    first, second = await send_all(client(f"http://127.0.0.1:{server.port}"), 2)
    assert (first.error_code, first.error_info, first.date) == (10002, "try again", "Sun, 06 Nov 1994 08:49:37 GMT")
    assert (second.error_code, server.connections) == (10002, 1)


async def test_an_interim_100_continue_is_not_taken_for_the_reply(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(lambda n: b"HTTP/1.1 100 Continue\r\n\r\n" + reply())
    first, second = await send_all(client(f"http://127.0.0.1:{server.port}"), 2)
    assert [(a.error_code, a.http_status) for a in (first, second)] == [(0, 200), (0, 200)]
    assert server.connections == 1


REFUSED = b'{"ActionStatus":"FAIL","ErrorCode":10010,"ErrorInfo":"group dismissed"}'
REQUEST = b"POST /v4/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"


class StrayServer(threading.Thread):
    """A blocking server in a thread of its own: it answers each request with `answers[i]` and, after
    the first, sends `stray` when the test says so. The event loop's thread is then free to block
    while the stray bytes arrive, so the client has not read them when its next request goes out."""

    def __init__(self, answers: list[bytes], stray: bytes) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answers, self.stray = answers, stray
        self.go, self.sent = threading.Event(), threading.Event()
        self.connections = 0

    def run(self) -> None:
        answered = 0
        while answered < len(self.answers):
            conn, _ = self.listener.accept()
            self.connections += 1
            with conn:
                while answered < len(self.answers) and self.request(conn):
                    conn.sendall(self.answers[answered])
                    answered += 1
                    if answered == 1:
                        self.go.wait(5)
                        conn.sendall(self.stray)
                        self.sent.set()
        self.listener.close()

    @staticmethod
    def request(conn: socket.socket) -> bool:
        """A request (each comes in one piece), or False once the client closed the connection."""
        try:
            return bool(conn.recv(65536))
        except ConnectionResetError:  # closed with the stray reply unread: the kernel resets it
            return False


async def test_a_reply_that_came_unasked_while_idle_is_not_taken_for_the_next_request() -> None:
    # The server: a second, unsolicited 200 after each reply. Taken as the next request's
    # answer, a refused request (10010) would be recorded delivered.
    server = StrayServer([reply(), reply(REFUSED)], stray=reply(OK_BODY))
    server.start()
    conn = transport.Transport(f"http://127.0.0.1:{server.port}", limit=1, timeout=5, connect_timeout=5)
    try:
        first = await conn.post(REQUEST)
        server.go.set()
        assert server.sent.wait(5)  # blocks the loop: the stray bytes wait in the socket, unread
        second = await conn.post(REQUEST)
    finally:
        conn.close()
    assert (first.body, second.body) == (OK_BODY, REFUSED)
    assert server.connections == 2


async def test_bytes_after_a_whole_reply_in_the_same_read_retire_the_connection(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    # The head of a reply nobody asked for, right behind the first reply: on a reused connection
    # the next request's real answer would be read as that stray reply's body.
    stray_head = b"HTTP/1.1 200 OK\r\nContent-Length: 51\r\n\r\n"
    answers = iter([reply() + stray_head, reply(REFUSED)])
    server = await serve(lambda n: next(answers))
    first, second = await send_all(client(f"http://127.0.0.1:{server.port}"), 2)
    assert [(a.error_code, a.http_status) for a in (first, second)] == [(0, 200), (10010, 200)]
    assert server.connections == 2


async def test_once_a_server_talked_out_of_turn_no_connection_to_it_is_reused() -> None:
    # Its next stray reply could come just after a request leaves, where no check can tell it
    # from the answer: from then on each request gets a connection of its own.
    connections, answered, stray_read = 0, asyncio.Event(), asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await reader.read(65536):  # each request comes in one piece
            writer.write(reply(REFUSED))
            if connections == 1:
                await answered.wait()
                writer.write(reply(OK_BODY))
        if connections == 1:
            stray_read.set()  # the client read the stray reply and closed the connection
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = transport.Transport(f"http://127.0.0.1:{port}", limit=1, timeout=5, connect_timeout=5)
    try:
        bodies = [(await conn.post(REQUEST)).body]
        answered.set()
        await asyncio.wait_for(stray_read.wait(), 5)
        bodies += [(await conn.post(REQUEST)).body for _ in range(3)]
    finally:
        conn.close()
        server.close()
    assert bodies == [REFUSED] * 4
    assert connections == 4


async def test_a_408_on_an_idle_connection_is_a_goodbye_not_a_stray_reply() -> None:
    # Some servers send 408 Request Timeout before they close an idle connection: keep-alive goes on.
    connections, answered, goodbye_read = 0, asyncio.Event(), asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await reader.read(65536):
            writer.write(reply())
            if connections == 1:
                await answered.wait()
                writer.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        if connections == 1:
            goodbye_read.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = transport.Transport(f"http://127.0.0.1:{port}", limit=1, timeout=5, connect_timeout=5)
    try:
        await conn.post(REQUEST)
        answered.set()
        await asyncio.wait_for(goodbye_read.wait(), 5)
        bodies = [(await conn.post(REQUEST)).body for _ in range(3)]
    finally:
        conn.close()
        server.close()
    assert bodies == [OK_BODY] * 3
    assert connections == 2


async def test_an_idle_connection_expires_after_four_seconds(serve: Callable[..., Awaitable[Server]]) -> None:
    # A load balancer may drop an idle connection without a word: a request after a pause gets a new one.
    server = await serve(lambda n: reply())
    clock = FakeClock()
    conn = transport.Transport(
        f"http://127.0.0.1:{server.port}", limit=1, timeout=5, connect_timeout=5, clock=clock.time
    )
    try:
        await conn.post(REQUEST)
        clock.now += 3.5
        await conn.post(REQUEST)
        assert server.connections == 1
        clock.now += 4.5
        await conn.post(REQUEST)
        assert server.connections == 2
    finally:
        conn.close()


async def test_a_servers_keep_alive_timeout_is_honoured_with_a_margin(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    server = await serve(lambda n: reply(OK_BODY, "Keep-Alive: timeout=3, max=100"))
    clock = FakeClock()
    conn = transport.Transport(
        f"http://127.0.0.1:{server.port}", limit=1, timeout=5, connect_timeout=5, clock=clock.time
    )
    try:
        await conn.post(REQUEST)
        clock.now += 1.5
        await conn.post(REQUEST)
        assert server.connections == 1
        clock.now += 2.5  # within the server's 3 s, but not a second short of them
        await conn.post(REQUEST)
        assert server.connections == 2
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda body: zlib.compress(body)[2:-4]),  # raw deflate, as some servers send it
    ],
)
async def test_a_compressed_reply_not_asked_for_is_read(
    serve: Callable[..., Awaitable[Server]], encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    server = await serve(lambda n: reply(compress(OK_BODY), f"Content-Encoding: {encoding}"))
    first, second = await send_all(client(f"http://127.0.0.1:{server.port}"), 2)
    assert [(a.error_code, a.http_status) for a in (first, second)] == [(0, 200), (0, 200)]


async def test_a_compressed_reply_that_does_not_decompress_is_a_fault(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(lambda n: reply(gzip.compress(OK_BODY)[:-9], "Content-Encoding: gzip"))
    (answer,) = await send_all(client(f"http://127.0.0.1:{server.port}"), 1)
    assert (answer.error_code, answer.http_status) == (None, None)
    assert answer.error_info == "BadReply: a gzip body that does not decompress"


async def test_a_compressed_reply_too_big_for_an_api_once_inflated_is_dropped(
    serve: Callable[..., Awaitable[Server]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "MAX_BODY", 100)
    server = await serve(lambda n: reply(gzip.compress(b"x" * 101), "Content-Encoding: gzip"))
    (answer,) = await send_all(client(f"http://127.0.0.1:{server.port}"), 1)
    assert answer.error_info == "BadReply: a reply of over 100 bytes"


async def test_a_reply_in_an_encoding_not_known_is_a_fault(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(lambda n: reply(b"\x28\xb5\x2f\xfd", "Content-Encoding: zstd"))
    (answer,) = await send_all(client(f"http://127.0.0.1:{server.port}"), 1)
    assert answer.error_info == "BadReply: a body in an encoding not asked for (zstd)"


async def test_a_connection_in_use_when_the_client_closes_is_closed_after_its_reply() -> None:
    asked, answer, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n{}")
        asked.set()
        await answer.wait()
        writer.write(reply())
        if await reader.read() == b"":  # the client closed its side
            ended.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = transport.Transport(f"http://127.0.0.1:{port}", limit=1, timeout=5, connect_timeout=5)
    try:
        request = asyncio.create_task(conn.post(REQUEST))
        await asyncio.wait_for(asked.wait(), 5)
        conn.close()
        answer.set()
        assert (await request).body == OK_BODY
        await asyncio.wait_for(ended.wait(), 5)  # bounds a failure; a pass does not wait
    finally:
        server.close()


async def test_a_body_that_ends_when_the_server_closes(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(lambda n: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + OK_BODY)
    (answer,) = await send_all(client(f"http://127.0.0.1:{server.port}"), 1)
    assert (answer.error_code, answer.http_status) == (0, 200)


async def test_retry_after_of_a_429_is_read(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(lambda n: b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n")
    (answer,) = await send_all(client(f"http://127.0.0.1:{server.port}"), 1)
    assert (answer.error_code, answer.error_info, answer.http_status, answer.retry_after) == (
        None,
        "HTTP 429",
        429,
        7.0,
    )


async def test_a_connection_closed_before_the_reply_is_a_fault_and_the_next_request_reconnects(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    connections: list[Server] = []
    server = await serve(lambda n: None if connections[0].connections == 1 else reply())
    connections.append(server)
    first, second = await send_all(client(f"http://127.0.0.1:{server.port}"), 2)
    assert (first.error_code, first.http_status, first.connect_failed) == (None, None, False)
    assert first.error_info == "ServerDisconnected: the server closed the connection before it answered"
    assert (second.error_code, server.connections) == (0, 2)


async def test_garbage_is_a_fault_not_a_reply(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(lambda n: b"SMTP ready\r\n\r\n")
    (answer,) = await send_all(client(f"http://127.0.0.1:{server.port}"), 1)
    assert (answer.error_code, answer.http_status, answer.connect_failed) == (None, None, False)
    assert answer.error_info.startswith("BadReply: not an HTTP/1.1 reply")


async def test_a_reply_too_big_for_an_api_is_dropped(
    serve: Callable[..., Awaitable[Server]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "MAX_BODY", 100)
    server = await serve(lambda n: reply(b"x" * 101))
    (answer,) = await send_all(client(f"http://127.0.0.1:{server.port}"), 1)
    assert answer.error_info == "BadReply: a reply of over 100 bytes"


async def test_silence_is_a_timeout_after_the_request_left(serve: Callable[..., Awaitable[Server]]) -> None:
    server = await serve(lambda n: b"")
    (answer,) = await send_all(client(f"http://127.0.0.1:{server.port}", timeout=0.05), 1)
    assert (answer.error_code, answer.error_info, answer.connect_failed) == (None, "timeout after 0.05s", False)


async def test_refused_is_a_connection_never_made() -> None:
    (answer,) = await send_all(client("http://127.0.0.1:1"), 1)
    assert (answer.error_code, answer.http_status, answer.connect_failed) == (None, None, True)
    assert answer.error_info.startswith("ClientConnectorError: cannot connect to 127.0.0.1:1: ")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_with_a_trusted_certificate_and_a_refused_one(
    serve: Callable[..., Awaitable[Server]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await serve(lambda n: reply(), context)
    url = f"https://127.0.0.1:{server.port}"

    (untrusted,) = await send_all(client(url), 1)  # a self-signed certificate the machine does not trust
    assert (untrusted.error_code, untrusted.connect_failed) == (None, True)
    assert "certificate verify failed" in untrusted.error_info

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # OpenSSL's own way to name the trusted CAs
    answers = await send_all(client(url), 2)
    assert [(a.error_code, a.http_status) for a in answers] == [(0, 200), (0, 200)]
    assert server.connections == 1  # the TLS connection is kept: nothing left unread while idle
    assert f"Host: 127.0.0.1:{server.port}" in server.heads[-1].decode()


def test_the_host_header_is_the_authority_as_written() -> None:
    hosts = [
        transport.Transport(url, limit=1, timeout=1, connect_timeout=1).host_header
        for url in ("https://[::1]", "http://user@127.0.0.1:8080", "https://console.tim.qq.com")
    ]
    assert hosts == ["[::1]", "127.0.0.1:8080", "console.tim.qq.com"]
