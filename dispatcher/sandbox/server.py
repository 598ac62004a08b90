"""A faithful local emulator of the REST APIs the dispatcher drives, for demos, rehearsals and tests.

It serves on 127.0.0.1 only. What all APIs share is here: the UserSig verified, the admin
identifier, `random` and `contenttype`, bodies of at most 1 MiB (HTTP 413), the per-app rate of
each API in any one-second window (excess: 60007), faults and scripted replies, and the ledger.
What each API checks and does (send_group_system_notification: GroupId and UserID limits, at most
500 named members, AVChatRoom all-members only, TopicId for Community groups only, Content of at
most 12 KiB (80002); send_group_msg: Random deduplication for five minutes, 40 messages a second per
group; batchsendmsg: partial replies, unknown accounts, the per-minute message quota) is in its
module of dispatcher.sandbox.apis.
Optional faults (10002 replies, latency, arrival jitter, dropped connections, HTTP 502) rehearse bad days; a seed
makes them repeatable. A ledger records who received which notification how many times, readable
in-process (`Sandbox.ledger`) and over HTTP (`GET /sandbox/ledger`, `GET /sandbox/stats`).
A test aid, in-process only: `hold_replies` delivers requests past a given count but holds their
replies until `release_replies`, so that a test acts while requests are surely in flight.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import functools
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web

from dispatcher.errors import SignatureError
from dispatcher.pacing.memory import frozen_heap
from dispatcher.sandbox.apis import EMULATORS, Emulator, Refusal
from dispatcher.sandbox.groups import Group
from dispatcher.sandbox.ledger import ALL_MEMBERS, Ledger
from dispatcher.tim import rules, usersig
from dispatcher.tim.config import DEMO_CREDENTIALS, Credentials

# A larger request body is refused with HTTP 413 before more of it is read, as the real server's front
# end does; a valid body (500 UserIDs and 12 KiB of Content, even all escaped) is far smaller.
MAX_BODY_BYTES = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0  # share of requests answered 10002
    latency: float = 0.0  # seconds added to every reply
    jitter: float = 0.0  # +- seconds, uniform, around `latency`
    drop_rate: float = 0.0  # share of connections closed without a reply
    http502_rate: float = 0.0  # share answered HTTP 502 with an HTML body
    seed: int | None = None
    # Up to this many seconds, uniform, between a request's sending and its arrival, each request
    # its own: a network path that jitters. A request is counted against the rate when it arrives,
    # so two sent 5 ms apart may arrive the other way round, and arrivals bunch.
    arrival_jitter: float = 0.0


def _reply(code: int = 0, info: str = "", extra: Mapping[str, Any] | None = None) -> web.Response:
    doc: dict[str, Any] = {"ErrorCode": code, "ErrorInfo": info}
    if code != rules.INTERNAL_ERROR:  # the real server omits it on some replies; clients must not rely on it
        doc = {"ActionStatus": "OK" if code == 0 else "FAIL", **doc}
    if extra:
        doc.update(extra)
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


class Sandbox:
    """The emulator. `groups=None` accepts any valid GroupId as a Public group with open membership."""

    def __init__(
        self,
        credentials: Credentials = DEMO_CREDENTIALS,
        groups: Mapping[str, Group] | None = None,
        rate: int = rules.DEFAULT_RATE,
        faults: Faults = Faults(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        *,
        accounts: Iterable[str] | None = None,
        message_quota: int = rules.DEFAULT_MESSAGE_QUOTA,
        group_rate: int = rules.GROUP_RATE,
        wall_clock: Callable[[], float] = time.time,
        api_rates: Mapping[str, int] | None = None,
        push_enabled: bool = True,
        push_daily_limit: int = 100,
        push_tags: Mapping[str, Iterable[str]] | None = None,
        push_attrs: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """`accounts`: the app's accounts, for one-to-one messages (None: every valid UserID exists);
        `message_quota`: batchsendmsg's messages a minute, counted per recipient; `group_rate`:
        send_group_msg's messages a second into one group before they are dropped; `wall_clock`:
        the server's time of day, by which a UserSig expires and which its `Date` header tells (a
        test sets it apart from the sender's to emulate a clock that is off); `api_rates`: calls a
        second of an API whose rate is its own, by API name (the Push Service's: 10, 30 or 40 by
        edition; 30 unless given); `push_enabled` False answers every push 90045; `push_daily_limit`:
        timpush_push's calls a day (100; 10 on the free edition); `push_tags` and `push_attrs`: each
        user's tags and attributes, which a push's Condition selects by."""
        if credentials.secret_key is None:
            raise ValueError("the sandbox needs the secret key to verify signatures")
        self.credentials = credentials
        self.groups = None if groups is None else dict(groups)
        self.rate = rate
        self.faults = faults
        self.ledger = Ledger()
        self.stats: collections.Counter[str] = collections.Counter()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._rng = random.Random(faults.seed)
        self.accounts = None if accounts is None else frozenset(accounts)
        self.message_quota = message_quota
        self.group_rate = group_rate
        self.api_rates = dict(api_rates or {})
        self.push_enabled = push_enabled
        self.push_daily_limit = push_daily_limit
        self.push_tags = {user: tuple(tags) for user, tags in (push_tags or {}).items()}
        self.push_attrs = {user: dict(attrs) for user, attrs in (push_attrs or {}).items()}
        # Each API's emulation, holding that API's state (deduplication, quotas) for this sandbox alone.
        self.emulators: tuple[Emulator, ...] = tuple(emulator() for emulator in EMULATORS)
        self._recipient_script: dict[str, collections.deque[int]] = {}
        # The budget is per app and API: each path has its own window.
        self._windows: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        # Every arrival at the rate rule, admitted or refused, in the last second; and the most seen
        # at once. It measures the sender's bunching as the server sees it (GET /sandbox/stats).
        self._arrivals: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self.max_arrivals_1s = 0
        self._runner: web.AppRunner | None = None
        self._script: collections.deque[int | str] = collections.deque()
        self._verified: dict[str, float] = {}  # UserSig -> when it expires, so each is checked once
        self.hang_seconds = 30.0
        self.url = ""
        self._hold_after: int | None = None  # see hold_replies
        self._released = asyncio.Event()
        self._held_changed = asyncio.Event()
        self.held = 0  # replies held now

    def script(self, *replies: int | str) -> None:
        """Answer the next requests with these, in order, before any other rule, delivering nothing:
        an ErrorCode (int), or "drop" (close unanswered), "hang" (never answer in time), or an HTTP
        status as a string: "502", "413", "429", and "429:VALUE" with the header `Retry-After: VALUE`."""
        self._script.extend(replies)

    def hold_replies(self, after: int) -> None:
        """A test aid: past the first `after` requests this sandbox received, handle each request as
        usual (deliver it, or refuse it) but hold its reply until `release_replies()`, as a server
        that answers late. `held` counts the replies held now; `await wait_held(n)` waits until n
        are. A test can then act (kill or stop the sender, start others) while requests are surely
        in flight, and the run cannot end first. Scripted replies, drops and 502s are not held."""
        self._hold_after = after
        self._released.clear()

    def release_replies(self) -> None:
        """Send every held reply, and hold no more."""
        self._hold_after = None
        self._released.set()

    async def wait_held(self, count: int) -> None:
        """Wait until at least `count` replies are held at once."""
        while self.held < count:
            self._held_changed.clear()
            await self._held_changed.wait()

    async def _hold(self, number: int) -> None:
        """Hold the reply to the `number`th request, if hold_replies asks it."""
        if self._hold_after is None or number <= self._hold_after:
            return
        self.held += 1
        self._held_changed.set()
        try:
            await self._released.wait()
        finally:
            self.held -= 1

    def script_recipients(self, user: str, *codes: int) -> None:
        """batchsendmsg: fail `user` with these codes in its next requests' ErrorLists, in order."""
        self._recipient_script.setdefault(user, collections.deque()).extend(codes)

    def recipient_reply(self, user: str) -> int:
        """The scripted failure of `user` in this request, or 0."""
        queue = self._recipient_script.get(user)
        return queue.popleft() if queue else 0

    # -- rules ---------------------------------------------------------------------------------

    def rate_of(self, emulator: Emulator) -> int:
        """The calls a second `emulator`'s API takes: its own (`api_rates`, the Push Service's edition), or `rate`."""
        # A read-only call (`check`'s) is no job's API: it has a name of its own, and --rate's pace.
        name = getattr(emulator, "name", None) or emulator.api.name
        return self.api_rates.get(name, emulator.rate or self.rate)

    def _admit(self, path: str, now: float, rate: int) -> bool:
        """The per-app rate of one API: at most `rate` requests accepted in any one-second window."""
        arrivals = self._arrivals[path]
        while arrivals and arrivals[0] <= now - 1.0:
            arrivals.popleft()
        arrivals.append(now)
        self.max_arrivals_1s = max(self.max_arrivals_1s, len(arrivals))
        window = self._windows[path]
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= rate:
            return False
        window.append(now)
        return True

    def _authenticate(self, query: Mapping[str, str]) -> None:
        creds = self.credentials
        if query.get("sdkappid") != str(creds.sdkappid):
            raise Refusal(rules.SDKAPPID_NOT_FOUND, f"SDKAppID {query.get('sdkappid')!r} not found")
        if query.get("identifier") != creds.identifier:
            raise Refusal(rules.NOT_ADMIN, "identifier is not an App admin")
        sig = query.get("usersig", "")
        expires = self._verified.get(sig)
        now = self._wall_clock()
        if expires is None or now >= expires:
            try:
                doc = usersig.verify(sig, creds.sdkappid, creds.identifier, creds.secret_key or "", now=now)
            except SignatureError as exc:
                raise Refusal(exc.code, str(exc)) from None
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified[sig] = int(doc["TLS.time"]) + int(doc["TLS.expire"])
        rnd = query.get("random", "")
        if not (rnd.isdigit() and int(rnd) <= rules.UINT32_MAX):
            raise Refusal(rules.INVALID_PARAMETER, "random must be an unsigned 32-bit integer")
        if query.get("contenttype") != "json":
            raise Refusal(rules.INVALID_PARAMETER, "contenttype must be json")

    def group(self, gid: object) -> tuple[str, Group]:
        """A valid, existing GroupId and its group; else the refusal the server gives."""
        problem = rules.group_id_problem(gid)
        if problem:
            raise Refusal(rules.INVALID_GROUP_ID, f"GroupId {problem}")
        assert isinstance(gid, str)
        if self.groups is None:
            return gid, Group()
        group = self.groups.get(gid)
        if group is None:
            raise Refusal(rules.GROUP_NOT_FOUND, f"group {gid} does not exist")
        return gid, group

    def topic(self, group: Group, topic: object) -> str | None:
        """A valid TopicId of `group`, or None if none is given."""
        if topic is None:
            return None
        if not isinstance(topic, str) or not topic:
            raise Refusal(rules.INVALID_PARAMETER, "TopicId must be a non-empty string")
        if not rules.accepts_topics(group.type):
            raise Refusal(rules.INVALID_PARAMETER, "TopicId applies to Community groups only")
        if group.topics is not None and topic not in group.topics:
            raise Refusal(rules.GROUP_NOT_FOUND, f"topic {topic} does not exist")
        return topic

    def members(self, group: Group, named: list[str] | None) -> Iterable[str]:
        """Who gets a message to `named` members of `group` (None: all); non-members are skipped, as
        the API does."""
        if named is None:
            return sorted(group.members) if group.members is not None else (ALL_MEMBERS,)
        if group.members is None:
            return named
        users = [u for u in named if u in group.members]
        self.stats["non_members"] += len(named) - len(users)
        return users

    # -- HTTP ----------------------------------------------------------------------------------

    def _answer(self, code: int = 0, info: str = "", extra: Mapping[str, Any] | None = None) -> web.Response:
        """Reply with an ErrorCode, and count it in the stats."""
        self.stats[str(code)] += 1
        return _reply(code, info, extra)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        self.stats["dropped"] += 1
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # nothing is answered on a dropped connection

    def _too_large(self) -> web.StreamResponse:
        self.stats["http413"] += 1
        return web.Response(
            status=413,
            text="<html><body><h1>413 Request Entity Too Large</h1></body></html>",
            content_type="text/html",
        )

    def _bad_gateway(self) -> web.StreamResponse:
        self.stats["http502"] += 1
        return web.Response(
            status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
        )

    async def _scripted(self, request: web.Request, reply: int | str) -> web.StreamResponse:
        if reply == "drop":
            return self._drop(request)
        if reply == "502":
            return self._bad_gateway()
        if reply == "hang":
            await self._sleep(self.hang_seconds)
            return _reply(rules.INTERNAL_ERROR, "answered too late")
        if isinstance(reply, str):
            status, _, after = reply.partition(":")
            self.stats[f"http{status}"] += 1
            headers = {"Retry-After": after} if after else None
            return web.Response(status=int(status), text=f"<html>HTTP {status}</html>", headers=headers)
        return self._answer(reply, "scripted reply")

    async def _send(self, emulator: Emulator, request: web.Request) -> web.StreamResponse:
        faults = self.faults
        if faults.arrival_jitter:  # the way there: before anything else, the rate's window included
            await self._sleep(self._rng.uniform(0.0, faults.arrival_jitter))
        self.stats["requests"] += 1
        number = self.stats["requests"]
        if self._script:
            return await self._scripted(request, self._script.popleft())
        if faults.drop_rate and self._rng.random() < faults.drop_rate:
            return self._drop(request)
        if faults.http502_rate and self._rng.random() < faults.http502_rate:
            return self._bad_gateway()
        try:
            raw = await request.read()  # reads no more than MAX_BODY_BYTES + one chunk
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()
        try:
            if not self._admit(emulator.path, self._clock(), self.rate_of(emulator)):
                raise Refusal(rules.OVER_RATE, "over the frequency limit")
            self._authenticate(request.query)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise Refusal(emulator.json_error_code, "body is not valid JSON") from None
            if not isinstance(body, dict):
                raise Refusal(emulator.json_error_code, "body must be a JSON object")
            deliver = emulator.emulate(self, body)
            if faults.latency or faults.jitter:
                await self._sleep(max(0.0, faults.latency + self._rng.uniform(-faults.jitter, faults.jitter)))
            if faults.error_rate and self._rng.random() < faults.error_rate:
                raise Refusal(rules.INTERNAL_ERROR, "internal error, try again")
            extra = deliver(self._clock())
        except Refusal as refusal:
            await self._hold(number)
            return self._answer(refusal.code, refusal.info, refusal.extra)
        await self._hold(number)
        return self._answer(0, "", extra)

    async def _ledger(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"deliveries": self.ledger.entries()}), content_type="application/json")

    async def _stats(self, _request: web.Request) -> web.Response:
        doc = {**self.stats, "max_arrivals_1s": self.max_arrivals_1s, **self.api_stats()}
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    def api_stats(self) -> dict[str, int]:
        """Each API's own figures (batchsendmsg: the most messages admitted in any minute)."""
        out: dict[str, int] = {}
        for emulator in self.emulators:
            out.update(emulator.stats())
        return out

    async def _date(self, _request: web.Request, response: web.StreamResponse) -> None:
        """Every reply's Date is the sandbox's time of day, as a server's is its own."""
        response.headers["Date"] = email.utils.formatdate(self._wall_clock(), usegmt=True)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.on_response_prepare.append(self._date)
        for emulator in self.emulators:
            app.router.add_post(emulator.path, functools.partial(self._send, emulator))
        app.router.add_get("/sandbox/ledger", self._ledger)
        app.router.add_get("/sandbox/stats", self._stats)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: a free port); return the URL, `http://127.0.0.1:PORT`."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def serve(self, port: int, stopped: asyncio.Event, ready: Callable[[str], None]) -> None:
        """Serve on 127.0.0.1:port until `stopped` is set, as the program of its own (`dispatcher sandbox`);
        `ready` is told the URL once it listens.

        What is alive once it listens (modules, the app) is kept out of the garbage collector's full passes
        while it serves. A full pass over them stalled the sandbox, and the requests that arrived meanwhile
        were counted against the rate together, so a window held more than 200 arrivals of requests written
        at most 200 a second, and the excess was refused (docs/guide/measurements.md#sandbox-frozen-heap).
        In-process (`send --sandbox`, the tests) it shares the engine's frozen
        heap (`pacing.memory.frozen_heap`) or the caller's collector instead.
        """
        url = await self.start(port=port)
        ready(url)
        try:
            async with frozen_heap():
                await stopped.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
