"""An adversarial pass over the successor APIs: what an operator's mistakes and odd servers do to
the three promises (never twice, never skipped, never over the rate)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.journal.outcomes import load_state
from dispatcher.observe.plan import make_plan
from dispatcher.observe.report import render_text, summarise
from dispatcher.pacing.group import GroupPacer
from dispatcher.sandbox import ALL_MEMBERS, C2C, Sandbox
from dispatcher.tim.apis import REGISTRY
from dispatcher.tim.config import DEMO_CREDENTIALS as DEMO
from tests.conftest import FakeClock, journal, run_engine, two_messages_into_a_group_at_one_a_second, write_jobs

GROUP = "@TGS#2C5SZEAEF"
HELLO_KEY = '[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]'  # as the sandbox's ledger keys it


def rejections(tmp_path: Path, *docs: dict[str, Any]) -> list[tuple[str | None, str]]:
    jobs = write_jobs(tmp_path / "jobs.jsonl", docs)
    items = list(read_jobs([str(jobs)], 500))
    assert all(isinstance(item, Rejection) for item in items), items
    return [(item.field, item.reason) for item in items if isinstance(item, Rejection)]


async def test_group_message_in_flight_at_a_crash_resumed_with_another_batch_size_is_not_sent_twice(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # --batch-size means nothing to a group message (one job, one request), so it must not change
    # the job's Random: a resume that sends it again is then dropped by the server.
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"job_id": "m", "api": "send_group_msg", "GroupId": GROUP, "Text": "hello"}]
    )
    out = tmp_path / "out.jsonl"
    assert (await run_engine(sandbox, jobs, out)).exit_code == 0
    out.write_bytes(b"")  # killed (-9) after the request left, before its reply was on record
    summary = await run_engine(sandbox, jobs, out, resume=True, batch_size=100)
    assert (summary.exit_code, summary.ok, summary.rejected) == (0, 1, 0)
    assert sandbox.ledger.times(ALL_MEMBERS, GROUP, HELLO_KEY) == 1
    assert sandbox.stats["duplicates_dropped"] == 1
    assert [d["status"] for d in journal(out)] == ["ok"]


def test_recipients_in_a_group_message_job_are_refused_without_a_hint_to_the_sender_field(tmp_path: Path) -> None:
    # A group message reaches every member; "did you mean From_Account?" for To_Account would lead
    # the operator to a whole-group message from the account meant to receive it.
    reason = (
        "send_group_msg sends one message to every member of the group and takes no recipients; "
        'to send to named accounts, use "api": "batchsendmsg"'
    )
    base = {"api": "send_group_msg", "GroupId": GROUP, "Text": "hello"}
    assert rejections(
        tmp_path,
        {**base, "To_Account": ["peter"]},
        {**base, "ToMembers_Account": ["peter"]},
        {**base, "recipients_file": "ids.txt"},
    ) == [("To_Account", reason), ("ToMembers_Account", reason), ("recipients_file", reason)]


# -- batchsendmsg against a server whose replies a test writes ------------------------------------


class Scripted:
    """A batchsendmsg server on 127.0.0.1 that answers the replies given, in order, and keeps each
    request's To_Account."""

    def __init__(self, *replies: dict[str, Any]) -> None:
        self.replies = list(replies)
        self.sent: list[list[str]] = []
        self.url = ""
        self.credentials = DEMO
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        self.sent.append(orjson.loads(await request.read())["To_Account"])
        return web.json_response({"ActionStatus": "OK", "ErrorInfo": "", **self.replies.pop(0)})

    async def __aenter__(self) -> Scripted:
        app = web.Application()
        app.router.add_post(REGISTRY["batchsendmsg"].path, self._answer)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def dm_jobs(tmp_path: Path, to: list[str]) -> Path:
    return write_jobs(
        tmp_path / "jobs.jsonl", [{"job_id": "dm", "api": "batchsendmsg", "Text": "hi", "To_Account": to}]
    )


async def test_an_error_list_naming_an_account_not_sent_to_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with Scripted({"ErrorCode": 0, "ErrorList": [{"To_Account": "stranger", "ErrorCode": 70107}]}) as server:
        summary = await run_engine(server, dm_jobs(tmp_path, ["amara", "jun"]), out)  # type: ignore[arg-type]
    assert (summary.exit_code, summary.ok, summary.requests, summary.recipients) == (0, 1, 1, 2)
    assert server.sent == [["amara", "jun"]]
    assert [(d["status"], d.get("recipient_errors")) for d in journal(out)] == [("ok", None)]


async def test_every_account_failing_transiently_in_a_reply_of_code_0_is_sent_again_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    failed = {"ErrorCode": 0, "ErrorList": [{"To_Account": u, "ErrorCode": 90994} for u in ("amara", "jun")]}
    async with Scripted(failed, {"ErrorCode": 0}) as server:
        summary = await run_engine(server, dm_jobs(tmp_path, ["amara", "jun"]), out)  # type: ignore[arg-type]
    assert (summary.exit_code, summary.ok, summary.requests, summary.recipients) == (0, 1, 2, 2)
    assert server.sent == [["amara", "jun"], ["amara", "jun"]]
    assert [(d["status"], d.get("recipient_errors"), d.get("resend")) for d in journal(out)] == [
        ("retry", {"amara": 90994, "jun": 90994}, ["amara", "jun"]),
        ("ok", None, None),
    ]


async def test_an_error_list_entry_with_error_code_0_is_a_delivery(tmp_path: Path) -> None:
    # Read as a failure, it would be reported not notified, and --retry-failed would send it again.
    out = tmp_path / "out.jsonl"
    reply = {
        "ErrorCode": 0,
        "ErrorList": [{"To_Account": "amara", "ErrorCode": 0}, {"To_Account": "jun", "ErrorCode": 70107}],
    }
    async with Scripted(reply) as server:
        summary = await run_engine(server, dm_jobs(tmp_path, ["amara", "jun"]), out)  # type: ignore[arg-type]
    assert (summary.exit_code, summary.failed, summary.recipients) == (1, 1, 1)
    assert [(d["status"], d.get("recipient_errors")) for d in journal(out)] == [("failed", {"jun": 70107})]


async def test_a_failed_reply_naming_each_account_is_judged_per_recipient_also_when_its_code_is_transient(
    tmp_path: Path,
) -> None:
    # None got it: the reply's own code is jun's transient one, and its ErrorList names each account.
    # Only jun may clear on a retry; ghost does not exist, and sending to it again spends the quota.
    async with Sandbox(accounts={"amara", "jun"}) as box:
        box.script_recipients("amara", 91000)
        box.script_recipients("jun", 90994)
        out = tmp_path / "out.jsonl"
        summary = await run_engine(box, dm_jobs(tmp_path, ["amara", "jun", "ghost"]), out)
    assert (summary.exit_code, summary.failed, summary.requests, summary.recipients) == (1, 1, 2, 2)
    assert [
        (d["status"], d["error_code"], d["recipients"], d.get("recipient_errors"), d.get("resend"))
        for d in journal(out)
    ] == [
        ("retry", 90994, ["amara", "jun", "ghost"], {"amara": 91000, "jun": 90994, "ghost": 70107}, ["amara", "jun"]),
        ("failed", 0, ["amara", "jun"], {"ghost": 70107}, None),
    ]
    assert box.ledger.recipients(C2C) == collections.Counter({"amara": 1, "jun": 1})
    assert box.stats["messages"] == 5


async def test_report_counts_a_message_dropped_by_frequency_control_as_the_summary_does(tmp_path: Path) -> None:
    summary, out, _ = await two_messages_into_a_group_at_one_a_second(tmp_path)
    assert dict(summary.error_codes) == {"0": 2, "0-dropped": 1}
    assert summarise(out)["error_codes"] == {"0": 2, "0-dropped": 1}


async def test_an_account_over_the_quota_in_an_error_list_is_sent_again(tmp_path: Path) -> None:
    # 60018 ("too frequent") is retried for a whole request; for one account it is no more final.
    out = tmp_path / "out.jsonl"
    over = {"ErrorCode": 0, "ErrorList": [{"To_Account": "jun", "ErrorCode": 60018}]}
    async with Scripted(over, {"ErrorCode": 0}) as server:
        summary = await run_engine(server, dm_jobs(tmp_path, ["amara", "jun"]), out)  # type: ignore[arg-type]
    assert (summary.exit_code, summary.ok, summary.requests, summary.recipients) == (0, 1, 2, 2)
    assert server.sent == [["amara", "jun"], ["jun"]]


def test_an_api_named_in_capitals_or_by_its_path_is_refused_with_the_name_to_use(tmp_path: Path) -> None:
    known = "known: send_group_system_notification, batchsendmsg, send_group_msg, timpush_batch, timpush_push"
    base = {"GroupId": GROUP, "Text": "hello"}
    assert rejections(
        tmp_path,
        {**base, "api": "BATCHSENDMSG"},
        {**base, "api": "/v4/group_open_http_svc/send_group_msg"},
        {**base, "api": "batchSendMsg"},
    ) == [
        ("api", f"unknown API 'BATCHSENDMSG' (did you mean batchsendmsg?); {known}"),
        ("api", f"unknown API '/v4/group_open_http_svc/send_group_msg' (did you mean send_group_msg?); {known}"),
        ("api", f"unknown API 'batchSendMsg' (did you mean batchsendmsg?); {known}"),
    ]


def test_a_misspelt_recipient_key_is_never_hinted_to_be_the_sender(tmp_path: Path) -> None:
    group = {"api": "send_group_msg", "GroupId": GROUP, "Text": "hello"}
    dm = {"api": "batchsendmsg", "Text": "hello", "To_Account": ["peter"]}
    found = rejections(
        tmp_path,
        {**group, "ToAccount": ["peter"]},
        {**group, "to_account": ["peter"]},
        {**dm, "Member_Account": ["peter"]},
        {**dm, "from_account": "support"},
    )
    assert [(field, reason.split(";")[0]) for field, reason in found] == [
        ("ToAccount", "unknown key"),
        ("to_account", "unknown key"),
        ("Member_Account", "unknown key"),
        ("from_account", "unknown key (did you mean From_Account?)"),
    ]


async def test_dry_run_of_a_resume_counts_only_the_messages_still_to_send(tmp_path: Path) -> None:
    ids = [f"u{i:03d}" for i in range(250)]
    async with Sandbox(accounts=set(ids[:99]) | set(ids[100:])) as box:
        box.script_recipients("u001", 91000)  # batch 0: u001 transient, u099 gone
        box.script_recipients("u150", 90994)  # batch 1: u150 transient
        jobs = dm_jobs(tmp_path, ids)
        out = tmp_path / "out.jsonl"
        await run_engine(box, jobs, out, batch_size=100)
    lines = out.read_bytes().splitlines(keepends=True)
    # Killed after batch 0's partial reply and batch 2's success, before batch 1 had any reply.
    kept = [line for line in lines if b'"batch":0,' in line][:1] + [line for line in lines if b'"batch":2,' in line]
    out.write_bytes(b"".join(kept))
    plan = make_plan([str(jobs)], 100, 200, state=load_state(out, repair=False))
    # Batch 0 sends u001 only, batch 1 all its 100, batch 2 nothing.
    assert (plan.requests, plan.skipped, plan.quota_messages) == (2, 1, 101)


async def test_many_messages_into_one_group_are_paced_under_its_40_a_second(tmp_path: Path, clock: FakeClock) -> None:
    # At the call rate (200/s) four in five were dropped by the group's frequency control, and after
    # five attempts some were recorded failed: 75 of 400 in one run.
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"job_id": f"m{i}", "api": "send_group_msg", "GroupId": GROUP, "Text": f"hello {i}"} for i in range(120)],
    )
    other = write_jobs(
        tmp_path / "other.jsonl",
        [{"job_id": f"o{i}", "api": "send_group_msg", "GroupId": f"@TGS#other{i}", "Text": "hi"} for i in range(40)],
    )
    async with Sandbox(clock=clock.time) as box:
        out = tmp_path / "out.jsonl"
        summary = await run_engine(box, jobs, out, clock=clock, rate=200)
        assert (summary.exit_code, summary.ok, summary.requests) == (0, 120, 120)
        assert box.stats["freq_dropped"] == 0
        # 120 messages at 38 a second: the first at once, the last 119 / 38 s later.
        assert 3.1 < clock.now - 1000.0 < 3.2
        started = clock.now
        summary = await run_engine(box, other, tmp_path / "other.out.jsonl", clock=clock, rate=200)
        assert (summary.ok, box.stats["freq_dropped"]) == (40, 0)
        assert clock.now - started < 0.25  # 40 groups, one message each: paced by the call rate alone


async def test_the_group_pacer_holds_only_the_groups_in_use(clock: FakeClock) -> None:
    pacer = GroupPacer(clock.time, clock.sleep)
    for i in range(3000):
        await pacer.acquire(f"@TGS#g{i}", 40)
        clock.now += 0.01
    assert len(pacer) <= 1024
    last = clock.now - 0.01  # when the last group's message started
    await pacer.acquire("@TGS#g2999", 40)  # that group is still held: its next message waits
    assert 1 / 40 - 0.001 <= clock.now - last <= 1 / 38 + 0.001


async def test_rejections_of_the_other_apis_name_their_api_in_the_journal_and_the_report(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "dm", "api": "batchsendmsg", "Text": "hi", "To_Account": []},
            {"job_id": "chat", "api": "send_group_msg", "GroupId": GROUP, "Content": "hi"},
            {"job_id": "note", "Content": "hi"},
            {"job_id": "dm", "api": "batchsendmsg", "Text": "hi", "To_Account": ["peter"]},
        ],
    )
    out = tmp_path / "out.jsonl"
    await run_engine(sandbox, jobs, out)
    assert [(d["job_id"], d["status"], d.get("api")) for d in journal(out)] == [
        ("dm", "rejected", "batchsendmsg"),
        ("chat", "rejected", "send_group_msg"),
        ("note", "rejected", None),
        ("dm", "rejected", "batchsendmsg"),  # repeats the job_id
    ]
    report = summarise(out)
    assert [(j["job_id"], j["fate"], j.get("api")) for j in report["jobs"]] == [
        ("dm", "rejected", "batchsendmsg"),
        ("chat", "rejected", "send_group_msg"),
        ("note", "rejected", None),
    ]
    lines = render_text(report, str(out)).splitlines()
    assert [line.split("batches")[0].split() for line in lines if line.startswith("  ")] == [
        ["dm", "rejected", "batchsendmsg", "one-to-one"],
        ["chat", "rejected", "send_group_msg", "group", GROUP],
        ["note", "rejected", "no", "group"],
    ]


def old_line(job_id: str, batch: int, batches: int, group: str, recipients: list[str] | None, job_hash: str) -> str:
    """A line as the dispatcher wrote it before it drove other APIs (no "api" key)."""
    doc = {
        "job_id": job_id,
        "batch": batch,
        "batches": batches,
        "attempt": 1,
        "status": "ok",
        "final": True,
        "group_id": group,
        "recipients": recipients,
        "error_code": 0,
        "error_info": "",
        "http_status": 200,
        "latency_ms": 1.8,
        "at": "2026-11-25T20:14:50.268Z",
        "job_hash": job_hash,
    }
    return orjson.dumps(doc).decode()


async def test_a_journal_of_the_version_before_the_other_apis_resumes_as_it_was_written(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Lines and hashes as written by the version before the endpoint seam (d1b1c7b), at --batch-size 500.
    (tmp_path / "r.txt").write_text("".join(f"u{i}\n" for i in range(1200)))
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"GroupId": "@TGS#A", "Content": "all members, no id"},
            {"GroupId": "@TGS#B", "Content": "named, no id", "ToMembers_Account": ["a", "b", "c"]},
            {"job_id": "exp", "GroupId": "@TGS#C", "Content": "export", "recipients_file": "r.txt"},
        ],
    )
    out = tmp_path / "out.jsonl"
    old = [
        old_line("auto-18d8db2d70b78938", 0, 1, "@TGS#A", None, "11a4975fd2b97048866a860ac3a4591e"),
        old_line("auto-2ad2753a27817aec", 0, 1, "@TGS#B", ["a", "b", "c"], "63936e279edea3b872a8e7573a276f80"),
        old_line("exp", 0, 3, "@TGS#C", [f"u{i}" for i in range(500)], "ee09985a6df927ba9d5b73b7b53a2373"),
    ]
    out.write_text("\n".join(old) + "\n")
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.exit_code, summary.rejected, summary.skipped, summary.requests) == (0, 0, 3, 2)
    assert [(d["job_id"], d["batch"]) for d in journal(out)[3:]] == [("exp", 1), ("exp", 2)]
    assert all("api" not in d for d in journal(out))


def test_a_group_messages_hash_and_random_are_those_of_the_version_that_introduced_it(tmp_path: Path) -> None:
    # At the default --batch-size, as journals written before the batch size left its hash hold them.
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"job_id": "m", "api": "send_group_msg", "GroupId": GROUP, "Text": "hello"}]
    )
    for size in (500, 100):
        (job,) = read_jobs([str(jobs)], size)
        assert isinstance(job, Job)
        assert (job.job_hash, next(split(job)).random) == ("16b8e088d6ac1fec64cd2fa20bed7caa", 3364623127)


def test_a_group_in_a_one_to_one_job_is_refused_pointing_to_send_group_msg(tmp_path: Path) -> None:
    reason = (
        "batchsendmsg sends one-to-one messages to the accounts in To_Account and takes no group; "
        'to send into a group, use "api": "send_group_msg"'
    )
    dm = {"api": "batchsendmsg", "Text": "hello", "To_Account": ["peter"]}
    assert rejections(tmp_path, {**dm, "GroupId": GROUP}, {**dm, "TopicId": "t"}) == [
        ("GroupId", reason),
        ("TopicId", reason),
    ]


async def test_a_partial_reply_line_torn_by_a_kill_resumes_from_the_last_whole_line(tmp_path: Path) -> None:
    async with Sandbox(accounts={"amara", "jun", "peter"}) as box:
        box.script_recipients("jun", 91000)
        jobs = dm_jobs(tmp_path, ["amara", "jun", "ghost", "peter"])
        out = tmp_path / "out.jsonl"
        await run_engine(box, jobs, out)
        first, second = out.read_bytes().splitlines(keepends=True)
        out.write_bytes(first + second[:40])  # killed while the retry's line was being written
        assert summarise(out)["not_notified"] == [
            {
                "job_id": "dm",
                "group_id": None,
                "batch": 0,
                "status": "pending",
                "recipients": ["ghost", "jun"],
                "recipient_errors": {"ghost": 70107, "jun": 91000},
                "meanings": {
                    "70107": "the account does not exist, never imported",
                    "91000": "internal server error, retried",
                },
                "api": "batchsendmsg",
            }
        ]
        summary = await run_engine(box, jobs, out, resume=True)
        assert (summary.requests, summary.failed, summary.recipients) == (1, 1, 1)
        # The torn line's request was in flight as far as the journal knows: jun gets it again.
        assert box.ledger.recipients(C2C) == collections.Counter({"amara": 1, "jun": 2, "peter": 1})
    assert [(d["attempt"], d["status"], d["recipients"]) for d in journal(out)] == [
        (1, "retry", ["amara", "jun", "ghost", "peter"]),
        (2, "failed", ["jun"]),
    ]


def test_an_empty_text_element_is_refused_as_the_text_convenience_is(tmp_path: Path) -> None:
    blank = [{"MsgType": "TIMTextElem", "MsgContent": {"Text": ""}}]
    assert rejections(
        tmp_path,
        {"api": "batchsendmsg", "MsgBody": blank, "To_Account": ["peter"]},
        {"api": "send_group_msg", "GroupId": GROUP, "Text": ""},
    ) == [("MsgBody", "item 0: a TIMTextElem needs Text, a non-empty string"), ("Text", "must not be empty")]


def test_dry_run_least_time_counts_the_pace_into_one_group(tmp_path: Path) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"job_id": f"m{i}", "api": "send_group_msg", "GroupId": GROUP, "Text": f"hello {i}"} for i in range(400)]
        + [{"job_id": "o", "api": "send_group_msg", "GroupId": "@TGS#other", "Text": "hi"}],
    )
    plan = make_plan([str(jobs)], 500, 200)
    # 399 waits of 1.005 / 38 s, as the engine paces them (the call rate alone: 400 x 1.005 / 200 = 2.0 s).
    assert (plan.requests, plan.least_seconds, plan.least_reason, plan.busiest_group) == (
        401,
        10.552,
        "group",
        (GROUP, 400),
    )
