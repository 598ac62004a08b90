"""The successor APIs, send_group_msg and batchsendmsg: validation, requests, partial replies,
retries of only the failed recipients, resume, report, the sandbox's rules, the dry run."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.observe.plan import make_plan
from dispatcher.observe.report import summarise
from dispatcher.pacing.budgets import Budgets
from dispatcher.run.engine import Engine
from dispatcher.run.retry import RetryPolicy
from dispatcher.sandbox import ALL_MEMBERS, C2C, Group, Sandbox
from dispatcher.tim import usersig
from dispatcher.tim.apis import REGISTRY
from dispatcher.tim.config import DEMO_CREDENTIALS as DEMO
from tests.conftest import (
    DEMO_ENV,
    DISPATCHER,
    ROOT,
    FakeClock,
    RedisServer,
    SandboxProcess,
    cli_env,
    journal,
    make_config,
    run_engine,
    two_messages_into_a_group_at_one_a_second,
    users,
    wait_for_lines,
    write_jobs,
)

GROUP = "@TGS#2C5SZEAEF"
HELLO = [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hello"}}]
HELLO_KEY = '[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]'  # as the ledger keys a message


def parse(tmp_path: Path, *docs: dict[str, Any] | str, batch_size: int = 500) -> list[Job | Rejection]:
    jobs = write_jobs(tmp_path / "jobs.jsonl", docs)
    return list(read_jobs([str(jobs)], batch_size))


def rejection(tmp_path: Path, doc: dict[str, Any]) -> tuple[str | None, str]:
    (item,) = parse(tmp_path, doc)
    assert isinstance(item, Rejection), item
    return item.field, item.reason


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({"api": "send_group_msgs", "GroupId": GROUP, "Text": "hi"}, "api", "did you mean send_group_msg?"),
        ({"api": 3, "GroupId": GROUP, "Text": "hi"}, "api", "must be a string, not int"),
        ({"api": "send_group_msg", "Text": "hi"}, "GroupId", "is required"),
        ({"api": "send_group_msg", "GroupId": GROUP}, "MsgBody", "is required (or Text"),
        ({"api": "send_group_msg", "GroupId": GROUP, "MsgBdy": HELLO}, "MsgBdy", "did you mean MsgBody?"),
        ({"api": "send_group_msg", "GroupId": GROUP, "Text": "hi", "Random": 7}, "Random", "set by the dispatcher"),
        ({"api": "send_group_msg", "GroupId": GROUP, "Text": "hi", "MsgBody": HELLO}, "Text", "together with MsgBody"),
        (
            {"api": "send_group_msg", "GroupId": GROUP, "Text": "hi", "recipients_file": "x.txt"},
            "recipients_file",
            "takes no recipients",
        ),
        (
            {"api": "send_group_msg", "GroupId": GROUP, "Text": "hi", "TopicId": "t", "group_type": "Public"},
            "TopicId",
            "Community groups only",
        ),
        ({"api": "send_group_msg", "GroupId": GROUP, "Text": "x" * 13_000}, "Text", "at most 12,288 bytes"),
        ({"api": "send_group_msg", "GroupId": GROUP, "Text": "hi", "MsgPriority": "Urgent"}, "MsgPriority", "High"),
        ({"api": "send_group_msg", "GroupId": GROUP, "Text": "hi", "OnlineOnlyFlag": 2}, "OnlineOnlyFlag", "0 to 1"),
        (
            {"api": "send_group_msg", "GroupId": GROUP, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {}}]},
            "MsgBody",
            "needs Text",
        ),
        (
            {"api": "send_group_msg", "GroupId": GROUP, "MsgBody": [{"MsgType": "Text", "MsgContent": {}}]},
            "MsgBody",
            "MsgType must be one of",
        ),
        ({"api": "batchsendmsg", "Text": "hi"}, "To_Account", "is required (or recipients_file)"),
        ({"api": "batchsendmsg", "Text": "hi", "To_Account": []}, "To_Account", "is empty"),
        ({"api": "batchsendmsg", "Text": "hi", "To_Acount": ["a"]}, "To_Acount", "did you mean To_Account?"),
        ({"api": "batchsendmsg", "Text": "hi", "To_Account": ["a", ""]}, "To_Account", "item 1"),
        ({"api": "batchsendmsg", "Text": "hi", "To_Account": ["a"], "MsgRandom": 1}, "MsgRandom", "one per batch"),
        (
            {"api": "batchsendmsg", "Text": "hi", "To_Account": ["a"], "SyncOtherMachine": 3},
            "SyncOtherMachine",
            "1 to 2",
        ),
        ({"api": "batchsendmsg", "Text": "hi", "To_Account": ["a"], "MsgLifeTime": 604801}, "MsgLifeTime", "604,800"),
        ({"api": "batchsendmsg", "Text": "hi", "To_Account": ["a"], "From_Account": "x" * 33}, "From_Account", "32"),
        ({"api": "batchsendmsg", "Text": "hi", "To_Account": ["a"], "GroupId": GROUP}, "GroupId", "takes no group"),
        (
            {"api": "batchsendmsg", "Text": "hi", "To_Account": ["a"], "recipients_file": "x.txt"},
            "recipients_file",
            "together with To_Account",
        ),
        (
            {"api": "batchsendmsg", "To_Account": ["a"], "MsgBody": [{"MsgType": "TIMCustomElem", "MsgContent": {}}]},
            "MsgBody",
            "needs Data",
        ),
    ],
)
def test_each_api_validates_its_own_fields(tmp_path: Path, doc: dict[str, Any], field: str, words: str) -> None:
    got_field, reason = rejection(tmp_path, doc)
    assert got_field == field
    assert words in reason


def test_rejection_names_file_line_and_field(tmp_path: Path) -> None:
    items = parse(
        tmp_path, {"api": "send_group_msg", "GroupId": GROUP, "Text": "ok"}, {"api": "batchsendmsg", "Text": "hi"}
    )
    assert isinstance(items[1], Rejection)
    assert items[1].message.endswith(
        "jobs.jsonl:2: field To_Account: is required (or recipients_file), with the accounts to send to"
    )


def test_group_message_is_one_request_with_a_stable_random(tmp_path: Path) -> None:
    doc = {"api": "send_group_msg", "GroupId": GROUP, "Text": "hello", "From_Account": "admin2", "MsgPriority": "Low"}
    (job,) = parse(tmp_path, doc)
    assert isinstance(job, Job) and job.batches == 1 and job.group_id == GROUP
    (batch,) = list(split(job))
    body = orjson.loads(batch.body())
    assert body == {
        "GroupId": GROUP,
        "MsgBody": HELLO,
        "MsgPriority": "Low",
        "From_Account": "admin2",
        "Random": batch.random,
    }
    (again,) = parse(tmp_path, doc)  # read again, as a resume does: the same Random
    assert isinstance(again, Job)
    assert orjson.loads(next(split(again)).body())["Random"] == body["Random"]
    (other,) = parse(tmp_path, {**doc, "Text": "hello!"})
    assert isinstance(other, Job)
    assert next(split(other)).random != batch.random


def test_batchsendmsg_batches_of_500_from_an_export(tmp_path: Path) -> None:
    ids = users(1200)
    (tmp_path / "accounts.txt").write_text("\n".join(ids + ids[:5]) + "\n")
    (job,) = parse(tmp_path, {"api": "batchsendmsg", "Text": "hi", "recipients_file": "accounts.txt"})
    assert isinstance(job, Job) and job.group_id is None and job.recipient_count == 1200
    batches = list(split(job))
    assert [len(b.recipients or ()) for b in batches] == [500, 500, 200]
    body = orjson.loads(batches[2].body())
    assert body["To_Account"] == ids[1000:]
    assert body["MsgBody"] == [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi"}}]
    assert len({b.random for b in batches}) == 3 and body["MsgRandom"] == batches[2].random


def test_default_ids_differ_by_api(tmp_path: Path) -> None:
    a, b = parse(
        tmp_path,
        {"api": "batchsendmsg", "Text": "hi", "To_Account": ["a"]},
        {"api": "batchsendmsg", "Text": "hi", "To_Account": ["a", "b"]},
    )
    assert isinstance(a, Job) and isinstance(b, Job)
    assert a.job_id.startswith("auto-") and a.job_id != b.job_id


def test_registry_names_every_api() -> None:
    assert {name: e.path for name, e in REGISTRY.items()} == {
        "send_group_system_notification": "/v4/group_open_http_svc/send_group_system_notification",
        "batchsendmsg": "/v4/openim/batchsendmsg",
        "send_group_msg": "/v4/group_open_http_svc/send_group_msg",
        "timpush_batch": "/v4/timpush/batch",
        "timpush_push": "/v4/timpush/push",
    }


# -- send_group_msg against the sandbox ---------------------------------------------------------------


async def test_group_message_delivered_once_and_resume_sends_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "m1", "api": "send_group_msg", "GroupId": GROUP, "MsgBody": HELLO},
            {"job_id": "m2", "api": "send_group_msg", "GroupId": "@TGS#other", "Text": "hello"},
        ],
    )
    out = tmp_path / "out.jsonl"
    summary = await run_engine(sandbox, jobs, out)
    assert (summary.exit_code, summary.ok, summary.requests, summary.recipients) == (0, 2, 2, 0)
    assert sandbox.ledger.times(ALL_MEMBERS, GROUP, HELLO_KEY) == 1
    assert sandbox.ledger.times(ALL_MEMBERS, "@TGS#other", HELLO_KEY) == 1
    assert {d["group_id"] for d in journal(out)} == {GROUP, "@TGS#other"}
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.skipped, summary.requests) == (2, 0)


async def test_dropped_by_frequency_control_is_retried_not_recorded_ok(tmp_path: Path) -> None:
    summary, out, stats = await two_messages_into_a_group_at_one_a_second(tmp_path)
    assert summary.exit_code == 0
    assert dict(summary.error_codes) == {"0": 2, "0-dropped": 1}
    second = [d for d in journal(out) if d["job_id"] == "second"]
    assert [(d["status"], d["final"], d.get("msg_drop_reason")) for d in second] == [
        ("retry", False, "MsgFreqCtrl"),
        ("ok", True, None),
    ]
    assert stats["freq_dropped"] == 1


async def query(**extra: str) -> dict[str, str]:
    sig = usersig.generate(DEMO.sdkappid, DEMO.identifier, DEMO.secret_key or "", 3600)
    return {
        "sdkappid": str(DEMO.sdkappid),
        "identifier": DEMO.identifier,
        "usersig": sig,
        "random": "1",
        "contenttype": "json",
        **extra,
    }


async def post(box: Sandbox, path: str, body: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.post(box.url + path, params=await query(), json=body) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def test_sandbox_drops_a_repeated_random_within_five_minutes(tmp_path: Path) -> None:
    now = [0.0]
    async with Sandbox(clock=lambda: now[0]) as box:
        path = REGISTRY["send_group_msg"].path
        first = await post(box, path, {"GroupId": GROUP, "Random": 42, "MsgBody": HELLO})
        now[0] = 299.0
        again = await post(box, path, {"GroupId": GROUP, "Random": 42, "MsgBody": HELLO})
        assert (first["ErrorCode"], again["ErrorCode"]) == (0, 0)
        assert again["MsgSeq"] == first["MsgSeq"] == 1  # the same message
        assert box.stats["duplicates_dropped"] == 1
        assert box.ledger.times(ALL_MEMBERS, GROUP, HELLO_KEY) == 1
        now[0] = 302.0  # five minutes after the first: a new message
        later = await post(box, path, {"GroupId": GROUP, "Random": 42, "MsgBody": HELLO})
        assert later["MsgSeq"] == 2
        assert box.ledger.times(ALL_MEMBERS, GROUP, HELLO_KEY) == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"GroupId": "@TGS#gone", "Random": 1, "MsgBody": HELLO}, 10010),
        ({"GroupId": "bad id \u00e9", "Random": 1, "MsgBody": HELLO}, 10015),
        ({"GroupId": GROUP, "MsgBody": HELLO}, 10004),
        ({"GroupId": GROUP, "Random": 2**32, "MsgBody": HELLO}, 10004),
        ({"GroupId": GROUP, "Random": 1, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {}}]}, 10004),
        ({"GroupId": GROUP, "Random": 1, "MsgBody": HELLO, "TopicId": "t"}, 10004),
        ({"GroupId": GROUP, "Random": 1, "Content": "hi"}, 10004),
        (
            {
                "GroupId": GROUP,
                "Random": 1,
                "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "x" * 13000}}],
            },
            80002,
        ),
    ],
)
async def test_sandbox_group_message_rules(body: dict[str, Any], code: int) -> None:
    async with Sandbox(groups={GROUP: Group("Public")}) as box:
        reply = await post(box, REGISTRY["send_group_msg"].path, body)
        assert reply["ErrorCode"] == code
        assert box.ledger.total() == 0


# -- batchsendmsg: partial replies ----------------------------------------------------------------------


def c2c_jobs(tmp_path: Path, to: list[str], **extra: Any) -> Path:
    doc = {"job_id": "dm", "api": "batchsendmsg", "Text": "hello", "To_Account": to, **extra}
    return write_jobs(tmp_path / "jobs.jsonl", [doc])


async def test_partial_reply_retries_only_the_transient_recipients(tmp_path: Path) -> None:
    async with Sandbox(accounts={"amara", "jun", "peter"}) as box:
        box.script_recipients("jun", 91000)  # an internal error for jun, once
        out = tmp_path / "out.jsonl"
        summary = await run_engine(box, c2c_jobs(tmp_path, ["amara", "jun", "ghost", "peter"]), out)
    assert (summary.exit_code, summary.failed, summary.requests, summary.recipients) == (1, 1, 2, 3)
    assert box.ledger.recipients(C2C) == collections.Counter({"amara": 1, "jun": 1, "peter": 1})
    lines = journal(out)
    assert [(d["status"], d["recipients"], d.get("recipient_errors"), d.get("resend")) for d in lines] == [
        ("retry", ["amara", "jun", "ghost", "peter"], {"jun": 91000, "ghost": 70107}, ["jun"]),
        ("failed", ["jun"], {"ghost": 70107}, None),
    ]
    report = summarise(out)
    assert report["not_notified"] == [
        {
            "job_id": "dm",
            "group_id": None,
            "batch": 0,
            "status": "failed",
            "recipients": ["ghost"],
            "recipient_errors": {"ghost": 70107},
            "meanings": {"70107": "the account does not exist, never imported"},
            "api": "batchsendmsg",
        }
    ]


async def test_every_recipient_delivered_is_ok(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = users(1100)
    out = tmp_path / "out.jsonl"
    summary = await run_engine(sandbox, c2c_jobs(tmp_path, ids), out, message_quota=1_000_000)
    assert (summary.exit_code, summary.ok, summary.recipients) == (0, 3, 1100)
    assert sandbox.ledger.recipients(C2C) == collections.Counter(dict.fromkeys(ids, 1))
    assert all("recipient_errors" not in d for d in journal(out))


async def test_no_account_exists_fails_the_whole_batch(tmp_path: Path) -> None:
    async with Sandbox(accounts=set()) as box:
        out = tmp_path / "out.jsonl"
        summary = await run_engine(box, c2c_jobs(tmp_path, ["ghost", "phantom"]), out)
    assert (summary.exit_code, summary.failed, summary.requests) == (1, 1, 1)
    (line,) = journal(out)
    assert (line["error_code"], line["recipient_errors"]) == (90012, {"ghost": 70107, "phantom": 70107})
    assert summarise(out)["not_notified"][0]["recipients"] == ["ghost", "phantom"]


async def test_resume_sends_only_what_a_partial_reply_left(tmp_path: Path) -> None:
    async with Sandbox(accounts={"amara", "jun", "peter"}) as box:
        box.script_recipients("jun", 91000)
        out = tmp_path / "out.jsonl"
        jobs = c2c_jobs(tmp_path, ["amara", "jun", "ghost", "peter"])
        await run_engine(box, jobs, out)
        # As if the run had been killed right after the partial reply was recorded.
        first = out.read_bytes().splitlines(keepends=True)[0]
        out.write_bytes(first)
        summary = await run_engine(box, jobs, out, resume=True)
        assert (summary.requests, summary.failed, summary.recipients) == (1, 1, 1)
        assert journal(out)[-1]["recipients"] == ["jun"]
        assert box.ledger.recipients(C2C) == collections.Counter({"amara": 1, "jun": 2, "peter": 1})


async def test_retry_failed_redrives_only_the_recipients_not_delivered(tmp_path: Path) -> None:
    accounts = {"amara", "peter"}
    async with Sandbox(accounts=accounts) as box:
        out = tmp_path / "out.jsonl"
        jobs = c2c_jobs(tmp_path, ["amara", "ghost", "peter"])
        assert (await run_engine(box, jobs, out)).exit_code == 1
        summary = await run_engine(box, jobs, out, resume=True)
        assert summary.requests == 0  # a recipient failed for good is that batch's fate
        box.accounts = frozenset({"amara", "peter", "ghost"})  # the account was made since
        summary = await run_engine(box, jobs, out, resume=True, retry_failed=True)
        assert (summary.exit_code, summary.ok, summary.requests, summary.recipients) == (0, 1, 1, 1)
        assert journal(out)[-1]["recipients"] == ["ghost"]
        assert box.ledger.recipients(C2C) == collections.Counter({"amara": 1, "peter": 1, "ghost": 1})
        assert summarise(out)["not_notified"] == []


async def test_transient_recipient_failures_use_up_attempts_then_fail(tmp_path: Path) -> None:
    async with Sandbox() as box:
        box.script_recipients("jun", *[90994] * 3)
        out = tmp_path / "out.jsonl"
        summary = await run_engine(
            box, c2c_jobs(tmp_path, ["amara", "jun"]), out, policy=RetryPolicy(max_attempts=3, base=0.001, cap=0.01)
        )
    assert (summary.failed, summary.requests, summary.recipients) == (1, 3, 1)
    assert [d["recipients"] for d in journal(out)] == [["amara", "jun"], ["jun"], ["jun"]]
    assert journal(out)[-1]["recipient_errors"] == {"jun": 90994}


# -- batchsendmsg: the sandbox's rules and quota ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"To_Account": [], "MsgRandom": 1, "MsgBody": HELLO}, 90003),
        ({"To_Account": users(501), "MsgRandom": 1, "MsgBody": HELLO}, 90011),
        ({"To_Account": ["a"], "MsgBody": HELLO}, 90005),
        ({"To_Account": ["a"], "MsgRandom": 1, "MsgBody": {"MsgType": "TIMTextElem"}}, 90007),
        ({"To_Account": ["a"], "MsgRandom": 1, "MsgBody": [{"MsgType": "Nope", "MsgContent": {}}]}, 90002),
        ({"To_Account": ["a"], "MsgRandom": 1, "MsgBody": HELLO, "SyncOtherMachine": 3}, 90031),
        ({"To_Account": ["a"], "MsgRandom": 1, "MsgBody": HELLO, "MsgLifeTime": 604801}, 90026),
        ({"To_Account": ["a"], "MsgRandom": 1, "MsgBody": HELLO, "GroupId": GROUP}, 90001),
    ],
)
async def test_sandbox_batchsendmsg_rules(body: dict[str, Any], code: int) -> None:
    async with Sandbox() as box:
        reply = await post(box, REGISTRY["batchsendmsg"].path, body)
        assert reply["ErrorCode"] == code
        assert box.ledger.total() == 0


async def test_sandbox_counts_the_quota_per_recipient() -> None:
    now = [0.0]
    async with Sandbox(message_quota=1000, clock=lambda: now[0]) as box:
        path = REGISTRY["batchsendmsg"].path
        codes = []
        for i in range(3):
            reply = await post(box, path, {"To_Account": users(500, f"b{i}-"), "MsgRandom": i, "MsgBody": HELLO})
            codes.append(reply["ErrorCode"])
        now[0] = 60.0  # the first two have left the minute
        reply = await post(box, path, {"To_Account": users(500, "late"), "MsgRandom": 9, "MsgBody": HELLO})
        codes.append(reply["ErrorCode"])
        assert codes == [0, 0, 60018, 0]
        assert box.ledger.total() == 1500
        async with aiohttp.ClientSession() as http, http.get(box.url + "/sandbox/stats") as resp:
            stats = await resp.json()
        assert (stats["max_messages_60s"], stats["60018"], stats["messages"]) == (1000, 1, 1500)


# -- the dry run ------------------------------------------------------------------------------------------


def test_dry_run_least_time_under_both_limits(tmp_path: Path) -> None:
    ids = users(30_000)
    (tmp_path / "all.txt").write_text("\n".join(ids) + "\n")
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "dm", "api": "batchsendmsg", "Text": "hi", "recipients_file": "all.txt"},
            {"job_id": "gm", "api": "send_group_msg", "GroupId": GROUP, "Text": "hi"},
        ],
    )
    plan = make_plan([str(jobs)], 500, 200.0)
    # 60 requests take 0.3 s at 200/s. 30,000 messages at 12,000 a minute, paced evenly (one every
    # 60.5 s / 12,000): every call but the last waits for the units of those before it.
    assert (plan.requests, plan.quota_messages, plan.least_seconds, plan.least_reason) == (
        61,
        30_000,
        148.729,
        "quota",
    )
    plan = make_plan([str(jobs)], 500, 200.0, message_quota=12_000_000)
    assert (plan.least_seconds, plan.least_reason) == (0.296, "rate")  # 29,500 x 60.5 / 12e6 = 0.149 s


# -- kill -9 during send_group_msg: the server's Random deduplication makes the resend harmless --------


async def test_sigkill_during_group_messages_then_resume_delivers_each_once(tmp_path: Path) -> None:
    groups = [f"@TGS#kill{i:03d}" for i in range(60)]
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"api": "send_group_msg", "GroupId": gid, "Text": "hello"} for gid in groups]
    )
    out = tmp_path / "out.jsonl"
    server = await asyncio.create_subprocess_exec(
        *DISPATCHER("sandbox", "--port", "0", "--latency", "0.3"),
        env=cli_env(),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None
        url = (await asyncio.wait_for(server.stdout.readline(), 20)).decode().strip()
        send = ("send", str(jobs), "--endpoint", url, "--out", str(out), "--rate", "20", "--concurrency", "8")
        proc = await asyncio.create_subprocess_exec(
            *DISPATCHER(*send, "--no-progress"), env=cli_env(**DEMO_ENV), cwd=ROOT, stderr=asyncio.subprocess.DEVNULL
        )
        await wait_for_lines(out, 12, proc)
        assert proc.returncode is None, "the run ended before it could be killed"
        proc.kill()  # SIGKILL: requests in flight are delivered by the server but never recorded
        await proc.wait()
        unrecorded = 60 - len({d["job_id"] for d in journal(out) if d["final"]})
        proc = await asyncio.create_subprocess_exec(
            *DISPATCHER(*send, "--no-progress", "--resume"),
            env=cli_env(**DEMO_ENV),
            cwd=ROOT,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/sandbox/ledger") as resp:
                ledger = (await resp.json())["deliveries"]
            async with http.get(url + "/sandbox/stats") as resp:
                stats = await resp.json()
        delivered = collections.Counter(d["group_id"] for d in ledger for _ in range(d["count"]))
        assert delivered == collections.Counter(dict.fromkeys(groups, 1))  # every group once: 0 duplicates
        # The resend of what was in flight at the kill reached the server, which dropped it as the same
        # message (at most one a worker; at least one, since the kill came mid-run at 6 in flight).
        assert 1 <= stats["duplicates_dropped"] <= 8
        assert stats["duplicates_dropped"] < unrecorded
    finally:
        server.terminate()
        await server.wait()


async def test_batchsendmsg_paced_by_the_message_quota_with_no_quota_error(tmp_path: Path, clock: FakeClock) -> None:
    # Virtual time for the sender and the sandbox alike: 3,000 messages at 1,000 a minute.
    async with Sandbox(message_quota=1000, clock=clock.time) as box:
        jobs = c2c_jobs(tmp_path, users(3000))
        # One worker: a FakeClock adds up sleeps taken side by side, which only one sleeper makes true.
        config = make_config(box, jobs, tmp_path / "out.jsonl", rate=200, message_quota=1000, concurrency=1)
        budgets = Budgets(
            rate=200, sdkappid=box.credentials.sdkappid, message_quota=1000, clock=clock.time, sleep=clock.sleep
        )
        started = clock.now
        async with budgets:
            summary = await Engine(config, budgets=budgets, sleep=clock.sleep, clock=clock.time).run()
            opened = budgets.paths()
    assert (summary.exit_code, summary.ok, summary.requests, summary.recipients) == (0, 6, 6, 3000)
    assert opened == ["/v4/openim/batchsendmsg"]
    assert box.stats["60018"] == 0
    # One call of 500 every 500 x 60.5 / 1,000 = 30.25 s: the sixth starts 151.25 s after the first.
    assert clock.now - started == pytest.approx(151.25, abs=0.01)


def test_cli_dry_run_and_report_of_one_to_one_messages(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "all.txt").write_text("".join(f"u{i:05d}\n" for i in range(1200)))
    jobs = write_jobs(
        tmp_path / "dm.jsonl", [{"job_id": "dm", "api": "batchsendmsg", "Text": "hi", "recipients_file": "all.txt"}]
    )

    def dry_run(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            DISPATCHER("send", str(jobs), "--dry-run", *flags),
            env=cli_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    dry = dry_run("--message-quota", "600")
    assert dry.returncode == 0, dry.stderr
    # 700 of 1,200 messages wait at 600 a minute: 700 x 60.5 / 600 = 70.6 s.
    assert (
        "least time  70.6 s at 200 requests/s and 600 batchsendmsg messages a minute (1,200 to send; the quota sets it)"
        in dry.stdout
    )
    bad = dry_run("--message-quota", "499")
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "dispatcher: error: --message-quota must be at least --batch-size (500): one full batch of batchsendmsg",
    )
    small = dry_run("--message-quota", "200", "--batch-size", "200")
    assert small.returncode == 0, small.stderr


def test_each_api_has_its_own_shared_budget_in_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    import subprocess

    import redis

    box = SandboxProcess("--rate", "50")
    try:
        jobs = write_jobs(
            tmp_path / "mixed.jsonl",
            [
                {"job_id": "note", "GroupId": GROUP, "Content": "hi", "ToMembers_Account": ["a"]},
                {"job_id": "dm", "api": "batchsendmsg", "Text": "hi", "To_Account": users(600)},
                {"job_id": "gm", "api": "send_group_msg", "GroupId": GROUP, "Text": "hi"},
            ],
        )
        args = ["send", str(jobs), "--out", str(tmp_path / "out.jsonl"), "--endpoint", box.url, "--no-progress"]
        args += ["--rate", "50", "--rate-store", redis_server.url, "--message-quota", "60000"]
        done = subprocess.run(
            DISPATCHER(*args), env=cli_env(**DEMO_ENV), cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert box.get("/sandbox/stats")["messages"] == 600
    finally:
        box.stop()
    keys = set(redis.Redis.from_url(redis_server.url, decode_responses=True).keys("dispatcher:budget:*"))
    assert {
        "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_msg",
        "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification",
        "dispatcher:budget:1400000000:/v4/openim/batchsendmsg",
    } <= keys


def test_sandbox_accounts_file(tmp_path: Path) -> None:
    from dispatcher.sandbox import load_accounts

    path = tmp_path / "accounts.txt"
    path.write_bytes(b"\xef\xbb\xbfpeter\r\n\r\n  amara \njun\n")
    assert load_accounts(path) == frozenset({"peter", "amara", "jun"})


async def test_partial_replies_as_events_count_each_recipient_once(tmp_path: Path) -> None:
    from dispatcher.observe.events import Event, ReplyRecorded

    events: list[Event] = []
    async with Sandbox(accounts={"amara", "jun", "peter"}) as box:
        box.script_recipients("jun", 91000)
        config = make_config(box, c2c_jobs(tmp_path, ["amara", "jun", "ghost", "peter"]), tmp_path / "out.jsonl")
        await Engine(config, subscribers=[events.append]).run()
    replies = [e for e in events if isinstance(e, ReplyRecorded)]
    assert [(e.api, e.code, e.status, e.delivered, e.undelivered) for e in replies] == [
        ("batchsendmsg", "0", "retry", 2, 0),
        ("batchsendmsg", "0", "failed", 1, 1),
    ]


async def test_the_same_message_twice_on_purpose_is_delivered_twice(sandbox: Sandbox, tmp_path: Path) -> None:
    # Two jobs, each its own job_id, same group and text: two messages, not one deduplicated.
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "reminder-1", "api": "send_group_msg", "GroupId": GROUP, "MsgBody": HELLO},
            {"job_id": "reminder-2", "api": "send_group_msg", "GroupId": GROUP, "MsgBody": HELLO},
        ],
    )
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl")
    assert (summary.exit_code, summary.ok) == (0, 2)
    assert sandbox.ledger.times(ALL_MEMBERS, GROUP, HELLO_KEY) == 2
    assert sandbox.stats["duplicates_dropped"] == 0


def test_an_api_budget_at_another_rate_stops_the_run_resumably(tmp_path: Path, redis_server: RedisServer) -> None:
    import subprocess

    import redis

    box = SandboxProcess("--rate", "100")
    try:

        def send(jobs: Path, out: str, rate: str, *extra: str) -> subprocess.CompletedProcess[str]:
            args = ["send", str(jobs), "--out", str(tmp_path / out), "--endpoint", box.url, "--no-progress"]
            args += ["--rate", rate, "--rate-store", redis_server.url, *extra]
            return subprocess.run(
                DISPATCHER(*args), env=cli_env(**DEMO_ENV), cwd=ROOT, capture_output=True, text=True, timeout=60
            )

        dm0 = {"job_id": "dm0", "api": "batchsendmsg", "Text": "hi", "To_Account": ["a"]}
        dm = write_jobs(tmp_path / "dm.jsonl", [dm0])
        assert send(dm, "first.jsonl", "100").returncode == 0  # batchsendmsg's budget now holds --rate 100
        mixed = write_jobs(
            tmp_path / "mixed.jsonl",
            [
                {"job_id": "note", "GroupId": GROUP, "Content": "hi", "ToMembers_Account": ["a"]},
                {"job_id": "dm", "api": "batchsendmsg", "Text": "hi", "To_Account": ["b"]},
            ],
        )
        done = send(mixed, "second.jsonl", "50")
        assert done.returncode == 2, done.stderr
        assert "holds --rate 100" in done.stderr
        # The notification may or may not have gone before the stop; nothing was marked failed.
        assert {(d["job_id"], d["status"]) for d in journal(tmp_path / "second.jsonl")} <= {("note", "ok")}
        # The notifications' budget may hold --rate 50 now, if the note went first: drop it, to resume
        # everything at batchsendmsg's rate.
        redis.Redis.from_url(redis_server.url).delete(
            "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification"
        )
        again = send(mixed, "second.jsonl", "100", "--resume")  # at the budget's rate: finished
        assert again.returncode == 0, again.stderr
        finals = {(d["job_id"], d["status"]) for d in journal(tmp_path / "second.jsonl") if d["final"]}
        assert finals == {("note", "ok"), ("dm", "ok")}
    finally:
        box.stop()
