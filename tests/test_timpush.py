"""The Push Service's batch push (timpush_batch): validation, MsgRandom per batch, the ErrorList as
per-recipient fates, TaskId on the journal and in the report, 90045 stopping the run resumably, its
rate of its own (--api-rate), and the sandbox's emulation of it."""

from __future__ import annotations

import collections
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.observe.plan import make_plan
from dispatcher.observe.report import render_text, summarise
from dispatcher.pacing.budgets import Budgets
from dispatcher.run.engine import Engine
from dispatcher.sandbox import PUSH, Sandbox
from dispatcher.tim import usersig
from dispatcher.tim.apis import REGISTRY
from dispatcher.tim.config import DEMO_CREDENTIALS as DEMO
from tests.conftest import (
    DEMO_ENV,
    DISPATCHER,
    ROOT,
    FakeClock,
    SandboxProcess,
    cli,
    cli_env,
    journal,
    make_config,
    run_engine,
    users,
    write_jobs,
)

PUSH_INFO = {"PushFlag": 0, "Title": "Sale", "Desc": "Half price today"}
PUSH_KEY = orjson.dumps(PUSH_INFO, option=orjson.OPT_SORT_KEYS).decode()  # as the ledger keys a push
PATH = "/v4/timpush/batch"


def push_job(to: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"job_id": "p", "api": "timpush_batch", "From_Account": "admin", "OfflinePushInfo": PUSH_INFO}
    if to is not None:
        doc["To_Account"] = to
    return {**doc, **extra}


def parse(tmp_path: Path, doc: dict[str, Any]) -> Job | Rejection:
    (item,) = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", [doc]))], 500)
    return item


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        (push_job(["a"], OfflinePushInfo=None), "OfflinePushInfo", "must be an object, not null"),
        ({k: v for k, v in push_job(["a"]).items() if k != "OfflinePushInfo"}, "OfflinePushInfo", "is required"),
        (push_job(["a"], OfflinePushInfo={"PushFlag": 0}), "OfflinePushInfo", "needs a Title, Desc or Ext"),
        (push_job(["a"], OfflinePushInfo={"Desc": "x", "PushFlag": 2}), "OfflinePushInfo", "PushFlag must be 0"),
        (push_job(["a"], DataId="x" * 65), "DataId", "is 65 bytes; at most 64 bytes"),
        (push_job(["a"], DataId="é" * 33), "DataId", "is 66 bytes; at most 64 bytes"),
        (push_job(["a"], Text="hi"), "Text", 'use "api": "batchsendmsg"'),
        (push_job(["a"], audience="all"), "audience", 'use "api": "timpush_push"'),
        (push_job(["a"], MsgRandom=19901224), "MsgRandom", "is set by the dispatcher"),
        (push_job(), "To_Account", "is required"),
        ({k: v for k, v in push_job(["a"]).items() if k != "From_Account"}, "From_Account", "is required"),
    ],
)
def test_a_push_job_is_checked_before_anything_is_sent(
    tmp_path: Path, doc: dict[str, Any], field: str, words: str
) -> None:
    item = parse(tmp_path, doc)
    assert isinstance(item, Rejection), item
    assert (item.field, words in item.reason) == (field, True), item.reason


def test_msg_random_is_the_batchs_own_and_the_same_on_every_reading(tmp_path: Path) -> None:
    doc = push_job(users(1200), DataId="campaign-7")
    first = parse(tmp_path, doc)
    again = parse(tmp_path, doc)
    assert isinstance(first, Job) and isinstance(again, Job)
    randoms = [orjson.loads(batch.body())["MsgRandom"] for batch in split(first)]
    assert randoms == [orjson.loads(batch.body())["MsgRandom"] for batch in split(again)]
    assert len(set(randoms)) == 3 and 19901224 not in randoms
    batch = next(iter(split(first)))
    body = orjson.loads(batch.body())
    assert body == {
        "From_Account": "admin",
        "OfflinePushInfo": PUSH_INFO,
        "DataId": "campaign-7",
        "To_Account": users(500),
        "MsgRandom": randoms[0],
    }
    # A retry of some of the batch's accounts (those a partial reply left) is a push of its own.
    assert orjson.loads(batch.body(users(2)))["MsgRandom"] not in randoms


async def test_push_to_named_accounts_unknown_ones_failed_each_pushed_once(tmp_path: Path) -> None:
    ids = users(1100)
    async with Sandbox(accounts=ids[:1000] + ids[1001:]) as box:  # one account never imported
        box.script_recipients(ids[3], 91000)  # an internal error for one account, once
        out = tmp_path / "out.jsonl"
        summary = await run_engine(box, write_jobs(tmp_path / "jobs.jsonl", [push_job(ids)]), out)
    assert (summary.exit_code, summary.ok, summary.failed, summary.requests) == (1, 2, 1, 4)
    assert box.ledger.recipients(PUSH, PUSH_KEY) == collections.Counter({u: 1 for u in ids if u != ids[1000]})
    lines = journal(out)
    assert sorted((d["batch"], d["attempt"], d["status"], str(d.get("recipient_errors"))) for d in lines) == [
        (0, 1, "retry", str({ids[3]: 91000})),
        (0, 2, "ok", "None"),
        (1, 1, "ok", "None"),
        (2, 1, "failed", str({ids[1000]: 70107})),
    ]
    assert all(d["api"] == "timpush_batch" and d["task_id"].startswith("batch_") for d in lines)
    report = summarise(out)
    (job,) = report["jobs"]
    assert len(job["task_ids"]) == 3
    assert report["not_notified"][0]["recipient_errors"] == {ids[1000]: 70107}
    assert "    TaskIds batch_" in render_text(report, str(out))


async def test_push_service_not_enabled_stops_the_run_resumably_with_nothing_failed(tmp_path: Path) -> None:
    async with Sandbox(push_enabled=False) as box:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [push_job(users(3))])
        out = tmp_path / "out.jsonl"
        summary = await run_engine(box, jobs, out)
        assert (summary.exit_code, summary.failed, summary.ok) == (2, 0, 0)
        (line,) = journal(out)
        assert (line["status"], line["final"], line["error_code"]) == ("retry", False, 90045)
        assert "enable the Push Service for this app" in (summary.stopped or "")
        box.push_enabled = True
        summary = await run_engine(box, jobs, out, resume=True)
    assert (summary.exit_code, summary.ok) == (0, 1)
    assert box.ledger.recipients(PUSH) == collections.Counter(dict.fromkeys(users(3), 1))


async def test_batch_push_paced_at_its_own_30_a_second_whatever_rate_says(tmp_path: Path, clock: FakeClock) -> None:
    # Virtual time for sender and sandbox alike: 61 batches with --rate 200, the sandbox's window at 30.
    async with Sandbox(clock=clock.time) as box:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [push_job(users(30_500))])
        config = make_config(box, jobs, tmp_path / "out.jsonl", rate=200, concurrency=1)
        budgets = Budgets(
            rate=200, sdkappid=box.credentials.sdkappid, message_quota=1, clock=clock.time, sleep=clock.sleep
        )
        started = clock.now
        async with budgets:
            summary = await Engine(config, budgets=budgets, sleep=clock.sleep, clock=clock.time).run()
    assert (summary.exit_code, summary.ok, summary.requests) == (0, 61, 61)
    assert box.stats["60007"] == 0
    # 60 gaps at 30 a second (97.5% of it at first, ramping up): a little over 2 s, far from 61 / 200.
    assert 2.0 < clock.now - started < 2.1


def test_api_rate_sets_one_apis_pace_and_the_dry_run_shows_each(tmp_path: Path) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [push_job(users(30_000)), {"job_id": "dm", "api": "batchsendmsg", "Text": "hi", "To_Account": ["a"]}],
    )

    def dry_run(*flags: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            DISPATCHER("send", str(jobs), "--dry-run", *flags),
            env=cli_env(**env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    plain = dry_run()
    assert plain.returncode == 0, plain.stderr
    # 60 batches: 59 gaps at 30 a second with the 0.5% headroom.
    assert "least time  2.0 s at 30 requests/s (timpush_batch)" in plain.stdout
    assert "pace        batchsendmsg 200 requests/s, timpush_batch 30 requests/s" in plain.stdout
    free = dry_run("--api-rate", "timpush_batch=10")
    assert "least time  5.9 s at 10 requests/s (timpush_batch)" in free.stdout
    by_env = dry_run(DISPATCHER_API_RATE="timpush_batch=40")
    assert "timpush_batch 40 requests/s" in by_env.stdout
    assert "batchsendmsg 200 requests/s" in by_env.stdout  # --rate keeps its meaning for the others
    bad = dry_run("--api-rate", "timpush=40")
    assert bad.returncode == 2
    assert "--api-rate timpush: no such API" in bad.stderr
    zero = dry_run("--api-rate", "timpush_batch=0")
    assert (zero.returncode, "the rate must be a positive number" in zero.stderr) == (2, True)
    # A mistake in the environment is named there, not as a flag the command line does not have.
    env_bad = dry_run(DISPATCHER_API_RATE="timpush_batch=40;batchsendmsg=5")
    assert (env_bad.returncode, env_bad.stderr) == (
        2,
        "dispatcher: error: DISPATCHER_API_RATE timpush_batch=40;batchsendmsg=5: the rate must be a positive "
        "number of calls a second\n",
    )
    env_unknown = dry_run(DISPATCHER_API_RATE="timpush=40")
    assert (
        env_unknown.returncode,
        env_unknown.stderr.startswith("dispatcher: error: DISPATCHER_API_RATE timpush: no such API"),
    ) == (2, True)


def test_plan_least_time_per_api(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [push_job(users(60_000))])
    plan = make_plan([str(jobs)], 500, 200.0)
    # 119 gaps of 1.005 / 30 s at the standard edition's rate, whatever --rate is.
    assert (plan.requests, plan.least_seconds, plan.api_rates) == (120, 3.986, {"timpush_batch": 30.0})
    plan = make_plan([str(jobs)], 500, 200.0, api_rates={"timpush_batch": 40})
    assert (plan.least_seconds, plan.api_rates) == (2.99, {"timpush_batch": 40.0})


# -- the sandbox's emulation -------------------------------------------------------------------------------


async def post(box: Sandbox, body: Any) -> dict[str, Any]:
    sig = usersig.generate(DEMO.sdkappid, DEMO.identifier, DEMO.secret_key or "", 3600)
    query = {"sdkappid": str(DEMO.sdkappid), "identifier": DEMO.identifier, "usersig": sig, "random": "1"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(box.url + PATH, params={**query, "contenttype": "json"}, json=body) as resp,
    ):
        doc: dict[str, Any] = await resp.json()
        return doc


GOOD = {"From_Account": "admin", "To_Account": ["a"], "MsgRandom": 7, "OfflinePushInfo": PUSH_INFO}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**GOOD, "To_Account": users(501)}, 90018),
        ({k: v for k, v in GOOD.items() if k != "MsgRandom"}, 90005),
        ({k: v for k, v in GOOD.items() if k != "OfflinePushInfo"}, 90001),
        ({k: v for k, v in GOOD.items() if k != "From_Account"}, 90001),
        ({**GOOD, "DataId": "x" * 65}, 90057),
        ({**GOOD, "MsgBody": []}, 90001),
    ],
)
async def test_sandbox_batch_push_rules(body: dict[str, Any], code: int) -> None:
    async with Sandbox() as box:
        assert (await post(box, body))["ErrorCode"] == code
        assert box.ledger.total() == 0


async def test_sandbox_batch_push_window_task_ids_and_duplicates() -> None:
    now = [0.0]
    async with Sandbox(clock=lambda: now[0], api_rates={"timpush_batch": 10}, push_enabled=True) as box:
        replies = [await post(box, {**GOOD, "MsgRandom": i}) for i in range(11)]
        assert [r["ErrorCode"] for r in replies] == [0] * 10 + [60007]  # the free edition's 10 a second
        assert len({r["TaskId"] for r in replies[:10]}) == 10
        now[0] = 1.5
        again = await post(box, {**GOOD, "MsgRandom": 100})
        repeat = await post(box, {**GOOD, "MsgRandom": 100})  # within the same second: dropped
        assert (again["ErrorCode"], repeat["TaskId"]) == (0, again["TaskId"])
        now[0] = 3.0
        later = await post(box, {**GOOD, "MsgRandom": 100})  # a second on: a push of its own
        assert later["TaskId"] != again["TaskId"]
        assert box.ledger.times("a", PUSH) == 12
        box.push_enabled = False
        assert (await post(box, {**GOOD, "MsgRandom": 5}))["ErrorCode"] == 90045


def test_registry_has_the_push_api() -> None:
    assert REGISTRY["timpush_batch"].path == PATH


def test_the_sandbox_command_takes_the_push_services_settings(tmp_path: Path) -> None:
    box = SandboxProcess("--api-rate", "timpush_batch=10", "--no-push-service")
    try:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [push_job(users(2))])
        done = subprocess.run(
            DISPATCHER("send", str(jobs), "--endpoint", box.url, "--out", str(tmp_path / "o.jsonl"), "--no-progress"),
            env=cli_env(**DEMO_ENV),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert "the server answered 90045" in done.stderr
    finally:
        box.stop()
    bad = subprocess.run(
        DISPATCHER("sandbox", "--api-rate", "timpush_batch=0"),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "dispatcher: error: --api-rate timpush_batch=0: the rate must be a whole number of calls a second, 1 or more",
    )


def test_work_takes_the_api_rates_of_its_run() -> None:
    # A worker paces each API as the run's send does: it is given the same --api-rate, checked alike.
    uri = "postgresql://127.0.0.1:1/postgres?journal=nightly"
    done = cli("work", uri, "--api-rate", "timpush_batch=fast", "--endpoint", "http://127.0.0.1:1")
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith("--api-rate timpush_batch=fast: the rate must be a positive number of calls a second")
    )
    assert "--api-rate API=N" in cli("work", "--help").stdout


def test_a_push_to_all_users_is_never_paced_above_one_a_second() -> None:
    # Two pushes must be more than a second apart, whatever the app bought: 5 a second drew 90024s.
    done = cli("send", "-", "--dry-run", "--sandbox", "--api-rate", "timpush_push=5")
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith("--api-rate timpush_push=5: Tencent takes at most 1 a second, whatever the edition")
    )
