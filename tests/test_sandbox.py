"""The sandbox: each rule and error code of the API, the rate window, faults, and the ledger."""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dispatcher.errors import SignatureError
from dispatcher.sandbox import ALL_MEMBERS, Faults, Group, Ledger, Sandbox
from dispatcher.tim import rules, usersig
from dispatcher.tim.apis import REGISTRY
from dispatcher.tim.config import DEMO_CREDENTIALS as DEMO
from tests.conftest import DEMO_ENV, DISPATCHER, ROOT, FakeClock, cli_env

GROUPS = {
    "@TGS#public": Group("Public", frozenset({"peter", "leckie", "amara"})),
    "@TGS#live": Group("AVChatRoom"),
    "@TGS#community": Group("Community", topics=frozenset({"@TGS#community@TOPIC#news"})),
}


def query(**overrides: str) -> dict[str, str]:
    q = {
        "sdkappid": str(DEMO.sdkappid),
        "identifier": DEMO.identifier,
        "usersig": usersig.generate(DEMO.sdkappid, DEMO.identifier, DEMO.secret_key or ""),
        "random": "12345",
        "contenttype": "json",
    }
    q.update(overrides)
    return q


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, box: Sandbox, body: Any, path: str = rules.SEND_PATH, **q: str
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(box.url + path, params=query(**q), data=data) as resp:
        return resp.status, orjson.loads(await resp.read())


async def started(box: Sandbox) -> Sandbox:
    await box.start()
    return box


@pytest.fixture
async def box() -> AsyncIterator[Sandbox]:
    emulator = await started(Sandbox(groups=GROUPS))
    yield emulator
    await emulator.stop()


async def test_delivers_to_named_members_and_records_it(http: aiohttp.ClientSession, box: Sandbox) -> None:
    status, doc = await post(http, box, {"GroupId": "@TGS#public", "Content": "hi", "ToMembers_Account": ["peter"]})
    assert (status, doc) == (200, {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""})
    assert box.ledger.times("peter", "@TGS#public", "hi") == 1
    assert box.ledger.times("leckie", "@TGS#public") == 0


async def test_all_members(http: aiohttp.ClientSession, box: Sandbox) -> None:
    await post(http, box, {"GroupId": "@TGS#public", "Content": "all"})
    assert box.ledger.recipients("@TGS#public", "all") == {"peter": 1, "leckie": 1, "amara": 1}
    await post(http, box, {"GroupId": "@TGS#live", "Content": "live"})
    assert box.ledger.recipients("@TGS#live") == {ALL_MEMBERS: 1}


async def test_non_members_are_skipped(http: aiohttp.ClientSession, box: Sandbox) -> None:
    await post(http, box, {"GroupId": "@TGS#public", "Content": "x", "ToMembers_Account": ["peter", "stranger"]})
    assert box.ledger.recipients("@TGS#public") == {"peter": 1}
    assert box.stats["non_members"] == 1


@pytest.mark.parametrize(
    ("q", "code"),
    [
        ({"sdkappid": "1400009999"}, rules.SDKAPPID_NOT_FOUND),
        ({"identifier": "not-admin"}, rules.NOT_ADMIN),
        ({"usersig": usersig.generate(DEMO.sdkappid, DEMO.identifier, "forged-key")}, rules.SIG_INVALID),
        (
            {"usersig": usersig.generate(DEMO.sdkappid, DEMO.identifier, DEMO.secret_key or "", 60, now=1e9)},
            rules.SIG_EXPIRED,
        ),
        ({"usersig": "garbage"}, rules.SIG_INVALID),
        ({"random": "4294967296"}, rules.INVALID_PARAMETER),
        ({"random": "-1"}, rules.INVALID_PARAMETER),
        ({"contenttype": "xml"}, rules.INVALID_PARAMETER),
    ],
)
async def test_query_rules(http: aiohttp.ClientSession, box: Sandbox, q: dict[str, str], code: int) -> None:
    status, doc = await post(http, box, {"GroupId": "@TGS#public", "Content": "hi"}, **q)
    assert status == 200
    assert doc["ErrorCode"] == code
    assert doc["ActionStatus"] == "FAIL"
    assert box.ledger.total() == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"GroupId": "@TGS#" + "x" * 44, "Content": "hi"}, rules.INVALID_GROUP_ID),  # 49 bytes
        ({"GroupId": "grüppe", "Content": "hi"}, rules.INVALID_GROUP_ID),
        ({"GroupId": "", "Content": "hi"}, rules.INVALID_GROUP_ID),
        ({"GroupId": "@TGS#nosuchgroup", "Content": "hi"}, rules.GROUP_NOT_FOUND),
        ({"GroupId": "@TGS#public", "Content": ""}, rules.INVALID_PARAMETER),
        ({"GroupId": "@TGS#public"}, rules.INVALID_PARAMETER),
        ({"GroupId": "@TGS#public", "Content": "hi", "ToMembers_Account": ["u"] * 501}, rules.INVALID_PARAMETER),
        ({"GroupId": "@TGS#public", "Content": "hi", "ToMembers_Account": [""]}, rules.INVALID_PARAMETER),
        ({"GroupId": "@TGS#public", "Content": "hi", "ToMembers_Account": ["x" * 33]}, rules.INVALID_PARAMETER),
        ({"GroupId": "@TGS#public", "Content": "hi", "ToMembers_Account": [7]}, rules.INVALID_PARAMETER),
        ({"GroupId": "@TGS#live", "Content": "hi", "ToMembers_Account": ["peter"]}, rules.INVALID_PARAMETER),
        ({"GroupId": "@TGS#public", "Content": "hi", "TopicId": "@TGS#public@TOPIC#x"}, rules.INVALID_PARAMETER),
        ({"GroupId": "@TGS#community", "Content": "hi", "TopicId": "@TGS#community@TOPIC#nope"}, rules.GROUP_NOT_FOUND),
        ({"GroupId": "@TGS#public", "Content": "hi", "ToMember_Account": ["peter"]}, rules.INVALID_PARAMETER),
        (b"{not json", rules.INVALID_PARAMETER),
        ([1, 2], rules.INVALID_PARAMETER),
    ],
)
async def test_body_rules(http: aiohttp.ClientSession, box: Sandbox, body: Any, code: int) -> None:
    status, doc = await post(http, box, body)
    assert (status, doc["ErrorCode"]) == (200, code)
    assert box.ledger.total() == 0


async def test_content_over_12_kib_is_refused_as_too_long(http: aiohttp.ClientSession, box: Sandbox) -> None:
    status, doc = await post(http, box, {"GroupId": "@TGS#public", "Content": "é" * 6_144 + "x"})
    assert (status, doc) == (
        200,
        {
            "ActionStatus": "FAIL",
            "ErrorCode": 80002,
            "ErrorInfo": "message too long: Content is 12,289 bytes; at most 12,288 bytes (UTF-8) can be sent",
        },
    )
    assert box.ledger.total() == 0
    _status, doc = await post(http, box, {"GroupId": "@TGS#public", "Content": "é" * 6_144})
    assert doc["ErrorCode"] == 0
    assert box.ledger.times("peter", "@TGS#public", "é" * 6_144) == 1


async def test_body_over_1_mib_is_refused_with_an_html_413(http: aiohttp.ClientSession, box: Sandbox) -> None:
    body = orjson.dumps({"GroupId": "@TGS#public", "Content": "x" * (2 * 1024 * 1024)})
    async with http.post(box.url + rules.SEND_PATH, params=query(), data=body) as resp:
        assert (resp.status, resp.content_type) == (413, "text/html")
        assert "<html>" in await resp.text()
    assert box.ledger.total() == 0
    assert box.stats["http413"] == 1


async def test_topic_of_a_community_group(http: aiohttp.ClientSession, box: Sandbox) -> None:
    body = {
        "GroupId": "@TGS#community",
        "Content": "news",
        "TopicId": "@TGS#community@TOPIC#news",
        "ToMembers_Account": ["amara"],
    }
    assert (await post(http, box, body))[1]["ErrorCode"] == 0
    assert box.ledger.times("amara", "@TGS#community", topic_id="@TGS#community@TOPIC#news") == 1


async def test_exactly_500_members_are_accepted(http: aiohttp.ClientSession) -> None:
    box = await started(Sandbox())  # open groups: anyone named is a member
    try:
        members = [f"user{i}" for i in range(500)]
        _status, doc = await post(http, box, {"GroupId": "@TGS#any", "Content": "hi", "ToMembers_Account": members})
        assert doc["ErrorCode"] == 0
        assert len(box.ledger.recipients("@TGS#any")) == 500
    finally:
        await box.stop()


async def test_rate_window_with_a_controlled_clock(http: aiohttp.ClientSession, clock: FakeClock) -> None:
    box = await started(Sandbox(rate=3, clock=clock.time))
    try:
        body = {"GroupId": "@TGS#any", "Content": "hi"}
        codes = [(await post(http, box, body))[1]["ErrorCode"] for _ in range(4)]
        assert codes == [0, 0, 0, rules.OVER_RATE]
        clock.now += 0.999  # still within the same one-second window
        assert (await post(http, box, body))[1]["ErrorCode"] == rules.OVER_RATE
        clock.now += 0.002  # the first three have left the window
        assert [(await post(http, box, body))[1]["ErrorCode"] for _ in range(4)] == [0, 0, 0, rules.OVER_RATE]
        assert box.stats["60007"] == 3
    finally:
        await box.stop()


@pytest.mark.parametrize(("arrival_jitter", "second"), [(0.0, rules.OVER_RATE), (0.05, 0)])
async def test_a_request_is_counted_when_it_arrives(
    http: aiohttp.ClientSession, clock: FakeClock, arrival_jitter: float, second: int
) -> None:
    """Arrival jitter: each request reaches the server 0-50 ms after it was sent, a delay of its own,
    and the rate's window counts it then. At one a second, a request sent a hair less than a second
    after the first arrived is over the rate, unless its way there took longer than that hair."""
    faults = Faults(arrival_jitter=arrival_jitter, seed=1)
    box = await started(Sandbox(rate=1, clock=clock.time, sleep=clock.sleep, faults=faults))
    try:
        body = {"GroupId": "@TGS#any", "Content": "hi"}
        assert (await post(http, box, body))[1]["ErrorCode"] == 0
        clock.now += 0.999_999  # the fake sleep moved the clock to the first one's arrival
        assert (await post(http, box, body))[1]["ErrorCode"] == second
        if arrival_jitter:
            assert len(clock.sleeps) == 2 and all(0 < s <= 0.05 for s in clock.sleeps)
            assert clock.sleeps[0] != clock.sleeps[1]
        else:
            assert clock.sleeps == []
    finally:
        await box.stop()


def test_ledger_counts_deliveries_added_between_reads() -> None:
    ledger = Ledger()
    ledger.add("@TGS#a", None, "hi", ["u1", "u2"])
    assert (ledger.times("u1", "@TGS#a"), ledger.total()) == (1, 2)
    ledger.add("@TGS#a", None, "hi", ("u1",))
    ledger.add("@TGS#a", "@TGS#a@TOPIC#t", "hi", ["u1"])
    assert ledger.recipients("@TGS#a", "hi") == {"u1": 3, "u2": 1}
    assert (ledger.times("u1", "@TGS#a", topic_id="@TGS#a@TOPIC#t"), ledger.total()) == (1, 4)
    assert len(ledger.entries()) == 3


async def test_max_arrivals_in_one_second_counts_refused_requests_too(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    box = await started(Sandbox(rate=3, clock=clock.time))
    try:
        body = {"GroupId": "@TGS#any", "Content": "hi"}
        codes = [(await post(http, box, body))[1]["ErrorCode"] for _ in range(4)]
        assert codes == [0, 0, 0, rules.OVER_RATE]
        clock.now += 0.5
        codes = [(await post(http, box, body))[1]["ErrorCode"] for _ in range(2)]
        assert codes == [rules.OVER_RATE, rules.OVER_RATE]
        clock.now += 0.6  # the first four have left the window; two refused ones remain in it
        assert (await post(http, box, body))[1]["ErrorCode"] == 0
        async with http.get(box.url + "/sandbox/stats") as resp:
            stats = await resp.json()
        assert (stats["max_arrivals_1s"], stats["60007"], stats["0"]) == (6, 3, 4)
    finally:
        await box.stop()


async def test_fault_10002_omits_action_status(http: aiohttp.ClientSession) -> None:
    box = await started(Sandbox(faults=Faults(error_rate=1.0)))
    try:
        status, doc = await post(http, box, {"GroupId": "@TGS#any", "Content": "hi"})
        assert (status, doc) == (200, {"ErrorCode": 10002, "ErrorInfo": "internal error, try again"})
        assert box.ledger.total() == 0
    finally:
        await box.stop()


async def test_fault_502_has_an_html_body(http: aiohttp.ClientSession) -> None:
    box = await started(Sandbox(faults=Faults(http502_rate=1.0)))
    try:
        async with http.post(box.url + rules.SEND_PATH, params=query(), data=b"{}") as resp:
            assert resp.status == 502
            assert "<html>" in await resp.text()
    finally:
        await box.stop()


async def test_fault_dropped_connection(http: aiohttp.ClientSession) -> None:
    box = await started(Sandbox(faults=Faults(drop_rate=1.0)))
    try:
        with pytest.raises(aiohttp.ClientError):
            await post(http, box, {"GroupId": "@TGS#any", "Content": "hi"})
        assert box.stats["dropped"] == 1
        assert box.ledger.total() == 0
    finally:
        await box.stop()


async def test_fault_latency_with_jitter(http: aiohttp.ClientSession) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    box = await started(Sandbox(faults=Faults(latency=0.3, jitter=0.05, seed=1), sleep=sleep))
    try:
        for _ in range(20):
            await post(http, box, {"GroupId": "@TGS#any", "Content": "hi"})
        assert len(waits) == 20
        assert all(0.25 <= w <= 0.35 for w in waits)
        assert len(set(waits)) > 1
    finally:
        await box.stop()


async def test_seed_makes_faults_repeatable(http: aiohttp.ClientSession) -> None:
    async def codes(seed: int) -> list[int]:
        box = await started(Sandbox(faults=Faults(error_rate=0.5, seed=seed)))
        try:
            return [(await post(http, box, {"GroupId": "@TGS#any", "Content": "x"}))[1]["ErrorCode"] for _ in range(30)]
        finally:
            await box.stop()

    first = await codes(7)
    assert first == await codes(7)
    assert set(first) == {0, 10002}


async def test_scripted_replies_come_first(http: aiohttp.ClientSession, box: Sandbox) -> None:
    box.script(10002, 70001)
    body = {"GroupId": "@TGS#public", "Content": "hi"}
    assert [(await post(http, box, body))[1]["ErrorCode"] for _ in range(3)] == [10002, 70001, 0]


async def test_held_replies_are_delivered_first_and_answered_once_released(
    http: aiohttp.ClientSession, box: Sandbox
) -> None:
    """The test aid: past the first request, each is delivered at once but answered only on release."""
    box.hold_replies(after=1)
    body = {"GroupId": "@TGS#public", "Content": "hi", "ToMembers_Account": ["peter"]}
    assert (await post(http, box, body))[1]["ErrorCode"] == 0  # the first: answered as usual
    held = [asyncio.create_task(post(http, box, {**body, "ToMembers_Account": [u]})) for u in ("leckie", "amara")]
    await asyncio.wait_for(box.wait_held(2), 60)
    assert box.held == 2 and not any(task.done() for task in held)
    assert box.ledger.recipients("@TGS#public", "hi") == {"peter": 1, "leckie": 1, "amara": 1}  # delivered already
    box.release_replies()
    assert [(await task)[1]["ErrorCode"] for task in held] == [0, 0]
    assert box.held == 0
    assert (await post(http, box, body))[1]["ErrorCode"] == 0  # released: nothing is held any more


async def test_ledger_and_stats_over_http(http: aiohttp.ClientSession, box: Sandbox) -> None:
    await post(http, box, {"GroupId": "@TGS#public", "Content": "hi", "ToMembers_Account": ["peter", "amara"]})
    async with http.get(box.url + "/sandbox/ledger") as resp:
        deliveries = (await resp.json())["deliveries"]
    assert sorted(d["user"] for d in deliveries) == ["amara", "peter"]
    assert all(d["count"] == 1 and d["content"] == "hi" for d in deliveries)
    async with http.get(box.url + "/sandbox/stats") as resp:
        assert (await resp.json())["0"] == 1


async def test_every_api_is_served_with_its_own_codes(http: aiohttp.ClientSession, box: Sandbox) -> None:
    """Each API the dispatcher sends is answered by its own emulation: a body that is not JSON, and
    an empty object (no GroupId, no To_Account), get that API's codes."""
    answers = {}
    for name, endpoint in REGISTRY.items():
        not_json = (await post(http, box, b"{", path=endpoint.path))[1]["ErrorCode"]
        empty = (await post(http, box, {}, path=endpoint.path))[1]["ErrorCode"]
        answers[name] = (not_json, empty)
    assert answers == {
        "send_group_system_notification": (10004, 10015),
        "batchsendmsg": (90001, 90003),
        "send_group_msg": (10004, 10015),
        "timpush_batch": (90001, 90001),
        "timpush_push": (90001, 90001),
    }


def test_cli_sandbox_serves_on_port_0_with_groups_and_usersig(tmp_path: Path) -> None:
    groups = tmp_path / "groups.json"
    groups.write_text('{"@TGS#team": {"type": "Public", "members": ["peter", "leckie"]}}')
    env = cli_env(**DEMO_ENV)
    proc = subprocess.Popen(
        DISPATCHER("sandbox", "--port", "0", "--groups", str(groups)),
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        sig = subprocess.run(
            DISPATCHER("usersig", "--expire", "600"), env=env, cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

        async def call() -> dict[str, Any]:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    url + rules.SEND_PATH, params=query(usersig=sig), data=b'{"GroupId": "@TGS#team", "Content": "hi"}'
                ) as resp,
            ):
                return dict(await resp.json())

        assert asyncio.run(call())["ErrorCode"] == 0

        async def ledger() -> list[dict[str, Any]]:
            async with aiohttp.ClientSession() as http, http.get(url + "/sandbox/ledger") as resp:
                return list((await resp.json())["deliveries"])

        assert sorted(d["user"] for d in asyncio.run(ledger())) == ["leckie", "peter"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_cli_usersig_needs_the_key() -> None:
    env = cli_env(TIM_SDKAPPID="1400000000", TIM_IDENTIFIER="administrator")
    result = subprocess.run(DISPATCHER("usersig"), env=env, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "TIM_SECRET_KEY" in result.stderr


def test_usersig_is_fresh_each_time(clock: FakeClock) -> None:
    """A run signs with a UserSig made at its own time, renewed once half its day is gone: one made
    later carries its later time, and is still accepted when the first has expired."""
    key = DEMO.secret_key or ""
    clock.now = 1_700_000_000.0
    signer = usersig.Signer(DEMO.sdkappid, DEMO.identifier, key, clock=clock.time)
    first = signer.current()
    clock.now += 43_200  # half a day later
    second = signer.current()
    made = [(usersig.decode(sig)["TLS.time"], usersig.decode(sig)["TLS.expire"]) for sig in (first, second)]
    assert made == [(1_700_000_000, 86_400), (1_700_043_200, 86_400)]
    # A day after the first was made, the server refuses it as expired, and takes the renewed one.
    with pytest.raises(SignatureError) as refused:
        usersig.verify(first, DEMO.sdkappid, DEMO.identifier, key, now=1_700_086_400)
    assert refused.value.code == 70001
    assert usersig.verify(second, DEMO.sdkappid, DEMO.identifier, key, now=1_700_086_400)["TLS.time"] == 1_700_043_200


async def test_served_on_its_own_it_keeps_its_start_up_heap_out_of_full_collections() -> None:
    # A full pass over the objects alive once it listens held the arrivals of a long run 12-39 ms, and
    # counted them against the rate together. Served as its own program, they are frozen until it stops.
    stopped = asyncio.Event()
    urls: list[str] = []
    assert gc.get_freeze_count() == 0
    serving = asyncio.create_task(Sandbox().serve(0, stopped, urls.append))
    frozen = 0
    for _ in range(1000):  # turns of the loop, until it listens and waits
        await asyncio.sleep(0)
        frozen = gc.get_freeze_count()
        if frozen:
            break
    assert frozen > 1000  # the modules and the app, at least
    assert urls and urls[0].startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as session, session.get(urls[0] + "/sandbox/stats") as reply:
        assert (await reply.json())["max_arrivals_1s"] == 0
    stopped.set()
    await serving
    assert gc.get_freeze_count() == 0
