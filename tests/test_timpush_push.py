"""The Push Service's push to all users or by tag (timpush_push): an explicit audience, one request a
job, the day's budget held by the limiter, and never twice: a push whose reply never came is
`unknown`, shown by report with what to check, and sent again only with --retry-unknown."""

from __future__ import annotations

import collections
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.observe.report import render_text, summarise
from dispatcher.pacing.base import Quota
from dispatcher.pacing.budgets import Budgets
from dispatcher.pacing.memory import RateLimiter
from dispatcher.pacing.postgres import PostgresLimiter
from dispatcher.pacing.redis import RedisLimiter
from dispatcher.pacing.store import quota_of
from dispatcher.run.client import Reply
from dispatcher.run.decide import may_have_arrived
from dispatcher.run.engine import Engine
from dispatcher.sandbox import ALL_MEMBERS, PUSH, Sandbox
from dispatcher.tim.apis import REGISTRY
from tests.conftest import (
    FakeClock,
    PostgresServer,
    before_exit,
    cli,
    finish,
    in_virtual_time,
    in_virtual_time_on_postgres,
    journal,
    make_config,
    report,
    run_engine,
    start_send,
    write_jobs,
)

SENT_MARK = (
    "sent, no reply yet: as the batch's latest line, the process ended with it in flight; it may have been delivered"
)
INFO = {"PushFlag": 0, "Title": "Maintenance", "Desc": "Tonight 2-3 am"}
KEY = orjson.dumps(INFO, option=orjson.OPT_SORT_KEYS).decode()
PUSH_API = REGISTRY["timpush_push"]


async def run_virtual(box: Sandbox, jobs: Path, out: Path, clock: FakeClock, **kwargs: Any) -> Any:
    """A run in virtual time, each API at its own pace (the sandbox must share the clock)."""
    config = make_config(box, jobs, out, concurrency=1, **kwargs)
    budgets = Budgets(rate=200, sdkappid=box.credentials.sdkappid, message_quota=1, clock=clock.time, sleep=clock.sleep)
    async with budgets:
        return await Engine(config, budgets=budgets, sleep=clock.sleep, clock=clock.time).run()


def replies(out: Path) -> list[dict[str, Any]]:
    """The journal's lines but the marks each push gets before it leaves."""
    return [line for line in journal(out) if line["error_info"] != SENT_MARK]


def job(job_id: str = "all", **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "api": "timpush_push", "From_Account": "admin", "OfflinePushInfo": INFO, **extra}


def parse(tmp_path: Path, doc: dict[str, Any]) -> Job | Rejection:
    (item,) = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", [doc]))], 500)
    return item


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        (job(), "audience", 'names no audience: give "audience": "all"'),
        (job(audience="everyone"), "audience", 'must be "all"'),
        (job(audience="all", Condition={"TagsOr": ["vip"]}), "audience", "contradict each other"),
        (job(Condition={}), "Condition", "must be an object with TagsAnd"),
        (job(Condition={"TagsNot": ["churned"]}), "Condition", "TagsNot is not a condition Tencent documents"),
        (job(Condition={"TagsOr": ["a"], "AttrsAnd": {"city": "Paris"}}), "Condition", "not both"),
        (job(Condition={"TagsOr": ["a"], "TagsAnd": ["a"]}), "Condition", "in both TagsAnd and TagsOr"),
        (job(Condition={"TagsOr": [f"t{i}" for i in range(11)]}), "Condition", "names 11 tags; at most 10"),
        (job(Condition={"TagsOr": [""]}), "Condition", "non-empty string"),
        (job(audience="all", To_Account=["a"]), "To_Account", 'use "api": "timpush_batch"'),
        (job(audience="all", OfflinePushInfo={**INFO, "Ext": "x" * 11_000}), "OfflinePushInfo", "at most 10,240"),
    ],
)
def test_a_push_names_its_audience_and_nothing_wider(
    tmp_path: Path, doc: dict[str, Any], field: str, words: str
) -> None:
    item = parse(tmp_path, doc)
    assert isinstance(item, Rejection), item
    assert (item.field, words in item.reason) == (field, True), item.reason


def test_one_job_is_one_request_with_a_stable_msg_random(tmp_path: Path) -> None:
    item = parse(tmp_path, job("vip", Condition={"TagsAnd": ["vip", "fr"]}))
    again = read_jobs([str(tmp_path / "jobs.jsonl")], 100)  # another --batch-size: the same job
    assert isinstance(item, Job)
    (batch,) = split(item)
    (other,) = split(next(iter(again)))  # type: ignore[arg-type]
    body = orjson.loads(batch.body())
    assert body == {
        "From_Account": "admin",
        "OfflinePushInfo": INFO,
        "Condition": {"TagsAnd": ["vip", "fr"]},
        "MsgRandom": batch.random,
    }
    assert orjson.loads(other.body())["MsgRandom"] == batch.random


async def test_push_to_all_and_by_tag_each_user_once_resume_sends_nothing(tmp_path: Path, clock: FakeClock) -> None:
    tags = {"ana": ["vip"], "bo": ["vip", "fr"], "cy": ["fr"]}
    async with Sandbox(accounts={"ana", "bo", "cy", "dee"}, push_tags=tags, clock=clock.time) as box:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [job(audience="all"), job("vip", Condition={"TagsOr": ["vip"]})])
        out = tmp_path / "out.jsonl"
        summary = await run_virtual(box, jobs, out, clock)
        assert (summary.exit_code, summary.ok, summary.requests) == (0, 2, 2)
        summary = await run_virtual(box, jobs, out, clock, resume=True)
        assert (summary.exit_code, summary.skipped, summary.requests) == (0, 2, 0)
    assert box.ledger.recipients(PUSH, KEY) == collections.Counter({"ana": 2, "bo": 2, "cy": 1, "dee": 1})
    assert sorted((d["job_id"], d["status"], d["task_id"][:5]) for d in replies(out)) == [
        ("all", "ok", "push_"),
        ("vip", "ok", "push_"),
    ]


async def test_a_push_whose_reply_never_came_is_unknown_and_never_resent_on_its_own(tmp_path: Path) -> None:
    now = [0.0]
    async with Sandbox(clock=lambda: now[0]) as box:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [job(audience="all")])
        out = tmp_path / "out.jsonl"
        box.hold_replies(after=0)  # delivered, and its reply held past the sender's timeout
        summary = await run_engine(box, jobs, out, timeout=0.2)
        box.release_replies()
        assert (summary.exit_code, summary.unknown, summary.failed, summary.requests) == (1, 1, 0, 1)
        mark, line = journal(out)  # marked sent before it left, then its timeout
        assert (mark["status"], mark["final"], mark["error_info"]) == ("unknown", True, SENT_MARK)
        assert (line["status"], line["final"], line["error_code"]) == ("unknown", True, None)
        assert box.ledger.times(ALL_MEMBERS, PUSH) == 1
        report = summarise(out)
        assert (report["unknown"], report["jobs"][0]["fate"]) == (1, "unknown")
        (miss,) = report["not_notified"]
        assert miss["check"].startswith("the push may have been delivered: look for the one sent at ")
        assert "--retry-unknown" in render_text(report, str(out))
        # A resume does not send it again: it may have reached every user.
        summary = await run_engine(box, jobs, out, resume=True)
        assert (summary.exit_code, summary.requests, summary.skipped) == (1, 0, 1)
        assert box.ledger.times(ALL_MEMBERS, PUSH) == 1
        # Only --retry-unknown does, knowing it may push twice (a minute later, for the server).
        now[0] = 60.0
        summary = await run_engine(box, jobs, out, resume=True, retry_unknown=True)
        assert (summary.exit_code, summary.ok, summary.requests) == (0, 1, 1)
    assert box.ledger.times(ALL_MEMBERS, PUSH) == 2


def test_what_may_have_arrived() -> None:
    assert [
        may_have_arrived(Reply(None, "timeout after 10s", None, 1.0)),
        may_have_arrived(Reply(None, "HTTP 502", 502, 1.0)),
        may_have_arrived(Reply(None, "unparsable response body", 200, 1.0)),
        may_have_arrived(Reply(None, "cannot connect", None, 1.0, connect_failed=True)),
        may_have_arrived(Reply(None, "HTTP 429", 429, 1.0)),
        may_have_arrived(Reply(91000, "internal", 200, 1.0)),
    ] == [True, True, True, False, False, False]


async def test_a_push_surely_not_delivered_is_sent_again(tmp_path: Path, clock: FakeClock) -> None:
    async with Sandbox(clock=clock.time) as box:
        box.script("429", 91000)  # refused before it was read, then an internal error: neither delivered
        out = tmp_path / "out.jsonl"
        summary = await run_virtual(box, write_jobs(tmp_path / "jobs.jsonl", [job(audience="all")]), out, clock)
    assert (summary.exit_code, summary.ok, summary.requests) == (0, 1, 3)
    # Each attempt is marked sent before it leaves; the reply's line after it says what became of it.
    assert [d["status"] for d in journal(out)] == ["unknown", "retry", "unknown", "retry", "unknown", "ok"]
    # The report counts the replies by code as the run did: a mark is no reply (no transport fault).
    assert summarise(out)["error_codes"] == {"0": 1, "91000": 1, "transport": 1}
    assert box.ledger.times(ALL_MEMBERS, PUSH) == 1


async def test_push_not_enabled_and_the_days_budget_spent_stop_resumably(tmp_path: Path) -> None:
    async with Sandbox(push_enabled=False) as box:
        out = tmp_path / "off.jsonl"
        summary = await run_engine(box, write_jobs(tmp_path / "off-jobs.jsonl", [job(audience="all")]), out)
    assert (summary.exit_code, summary.failed) == (2, 0)
    assert replies(out)[0]["status"] == "retry"
    async with Sandbox(push_daily_limit=1, clock=(clock := FakeClock()).time) as box:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [job("a", audience="all"), job("b", audience="all")])
        out = tmp_path / "out.jsonl"
        summary = await run_virtual(box, jobs, out, clock)
    assert (summary.exit_code, summary.ok, summary.failed) == (2, 1, 0)
    assert "the day's pushes to all users or by tag are spent" in (summary.stopped or "")


async def test_pushes_go_at_least_a_second_apart_whatever_rate_says(tmp_path: Path, clock: FakeClock) -> None:
    async with Sandbox(clock=clock.time) as box:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [job(f"p{i}", Condition={"TagsOr": [f"t{i}"]}) for i in range(4)])
        started = clock.now
        summary = await run_virtual(box, jobs, tmp_path / "out.jsonl", clock)
    assert (summary.exit_code, summary.ok, box.stats["90024"]) == (0, 4, 0)
    assert clock.now - started > 3.0  # three gaps of more than a second


async def test_the_days_budget_is_held_by_the_limiter(clock: FakeClock) -> None:
    quota = quota_of(PUSH_API, 12_000)
    assert quota == Quota(100, 86_400.0, even=False)
    limiter = RateLimiter(1.0, clock=clock.time, sleep=clock.sleep, quota=quota)
    started = clock.now
    for _ in range(100):
        await limiter.acquire()
    assert clock.now - started < 105  # a second apart, not 864 s apart
    await limiter.acquire()  # the 101st waits until the first is a day old
    assert clock.now - started == pytest.approx(86_400.5, abs=0.01)


PUSH_KEY = "dispatcher:budget:1400000000:/v4/timpush/push"


@pytest.mark.parametrize("store", ["redis", "postgres"])
async def test_the_days_budget_is_shared_by_runs_through_the_store(
    store: str, request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    """Two runs a day (two processes, one after the other): the second gets what the first left."""
    quota = quota_of(PUSH_API, 12_000)

    async def open_one() -> RedisLimiter | PostgresLimiter:
        if store == "redis":
            return await in_virtual_time(
                request.getfixturevalue("redis_server"), clock, rate=1.0, key=PUSH_KEY, quota=quota
            )
        server = request.getfixturevalue("postgres_server")
        return await in_virtual_time_on_postgres(server, clock, rate=1.0, key=PUSH_KEY, quota=quota)

    started = clock.now
    first = await open_one()
    for _ in range(60):
        await first.acquire()
    await first.aclose()
    second = await open_one()
    for _ in range(40):
        await second.acquire()
    assert clock.now - started < 110  # a second apart
    await second.acquire()  # the 101st in 24 hours waits for the first to be a day old
    assert clock.now - started == pytest.approx(86_400, abs=1.1)
    await second.aclose()


def test_both_push_apis_in_a_run_kept_in_postgresql(tmp_path: Path, postgres_server: PostgresServer) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            job(audience="all"),
            {**job("named"), "api": "timpush_batch", "To_Account": [f"u{i}" for i in range(700)]},
        ],
    )
    uri = postgres_server.journal("pushes")
    done = cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress")
    assert done.returncode == 0, done.stderr
    doc = report(uri)
    assert (doc["batches"], doc["ok"], doc["unknown"]) == (3, 3, 0)
    jobs_shown: list[dict[str, Any]] = doc["jobs"]  # type: ignore[assignment]
    assert sorted(len(j.get("task_ids", ())) for j in jobs_shown) == [1, 2]
    again = cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress", "--resume", "--retry-unknown")
    assert (again.returncode, again.stderr.strip()) == (
        2,
        "dispatcher: error: --retry-unknown takes a file journal; a run in PostgreSQL keeps its unknown batches final",
    )


async def test_a_push_in_flight_when_the_process_is_killed_is_unknown_and_not_sent_again(tmp_path: Path) -> None:
    # kill -9 leaves no reply's line: the mark made before the push left is the batch's latest line.
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(audience="all")])
    out = tmp_path / "out.jsonl"
    async with Sandbox() as box:
        box.hold_replies(after=0)  # delivered, its reply held
        proc = await start_send(jobs, out, box.url)
        await before_exit(box.wait_held(1), proc, "the push in flight")
        proc.kill()
        assert (await finish(proc))[0] == -signal.SIGKILL
        box.release_replies()
        ((status, final, info),) = [(d["status"], d["final"], d["error_info"]) for d in journal(out)]
        assert (status, final, info) == ("unknown", True, SENT_MARK)
        assert "--retry-unknown" in render_text(summarise(out), str(out))
        proc = await start_send(jobs, out, box.url, "--resume")
        code, _ = await finish(proc)
        assert code == 1  # a fate unknown: check it
        assert box.ledger.times(ALL_MEMBERS, PUSH) == 1
