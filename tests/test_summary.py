"""The summary says what set the pace, and what a stop at once left unanswered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from dispatcher.cli.output import summary_rows
from dispatcher.observe.events import RateWaited, ReplyRecorded, RequestUnanswered, StopRequested
from dispatcher.observe.summary import Summary
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Sandbox
from tests.conftest import DISPATCHER, journal, make_config, run_in_pty, users, write_jobs

GROUP = "@TGS#summary"


def batchsendmsg_run(requests: int, rate: float) -> Summary:
    summary = Summary(out="out.jsonl", rate_limit=rate, message_quota=12_000)
    for index in range(requests):
        summary.on_event(RateWaited(0.0, "batchsendmsg", 195.0, 500))
        summary.on_event(ReplyRecorded("batchsendmsg", "dm", index, False, "0", "", "ok", "ok", 500, 0.05, True, 500))
    summary.elapsed_s = summary.sending_s = 12.6
    return summary


def test_the_summary_names_the_quota_when_it_set_the_pace() -> None:
    held = batchsendmsg_run(6, rate=200).to_dict()
    shown = (held["paced_by"], held["quota_messages"], held["message_quota"], held["rate"])
    assert shown == ("quota", 3000, 12_000, 0.4)
    time = dict(summary_rows(held))["Time"]
    assert time == (
        "12.6 s, 0.4 requests a second, held by batchsendmsg's quota of 12,000 messages a minute "
        "(3,000 messages), not by --rate"
    )
    # At 0.1 a second, 6 requests take 50 s: the rate, not the quota's 12.6 s, set that pace.
    slow = batchsendmsg_run(6, rate=0.1).to_dict()
    assert slow["paced_by"] == "rate" and dict(summary_rows(slow))["Time"] == "12.6 s, 0.4 requests a second"


def test_a_terminal_sees_the_scan_then_the_batches_and_the_quota_named_in_the_summary(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("".join(f"{uid}\n" for uid in users(20)))
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"job_id": "dm", "api": "batchsendmsg", "From_Account": "a", "Text": "hi", "recipients_file": "ids.txt"}],
    )
    summary = tmp_path / "summary.json"
    args = ["send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--summary-json", str(summary)]
    # 1,000 messages a minute, 10 a request: the second request waits 0.6 s for the first one's.
    args += ["--batch-size", "10", "--message-quota", "1000"]
    shown = run_in_pty(DISPATCHER(*args), tmp_path, NO_COLOR="1")
    assert "scanning the jobs: " in shown and " rows read" in shown
    assert "2/2 batches" in shown and "req/s" in shown
    assert "held by batchsendmsg's quota of 1,000 messages a minute (20 messages), not by --rate" in shown
    doc = orjson.loads(summary.read_bytes())
    assert (doc["paced_by"], doc["quota_messages"], doc["message_quota"], doc["unanswered"]) == ("quota", 20, 1000, 0)


async def test_a_second_stop_tells_how_many_requests_were_left_unanswered_and_to_whom(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.script("hang", "hang")  # two requests that are never answered
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "named", "GroupId": GROUP, "Content": "x", "ToMembers_Account": users(700)},  # 500 + 200
            {"job_id": "later", "GroupId": GROUP, "Content": "y"},
        ],
    )
    stops: list[object] = []
    engine = Engine(
        make_config(sandbox, jobs, tmp_path / "out.jsonl", concurrency=2, timeout=60), subscribers=[stops.append]
    )
    run = asyncio.create_task(engine.run())
    for _ in range(1000):  # until both requests are on the wire
        if sandbox.stats["requests"] >= 2:
            break
        await asyncio.sleep(0.01)
    engine.stop()
    engine.stop()  # the second signal: at once
    summary = await asyncio.wait_for(run, timeout=5)
    # Nothing was answered: each request's line says so, not final (a resume sends it again).
    lines = journal(tmp_path / "out.jsonl")
    assert [
        (line["job_id"], line["batch"], line["status"], line["final"], len(line["recipients"])) for line in lines
    ] == [
        ("named", 0, "retry", False, 500),
        ("named", 1, "retry", False, 200),
    ]
    told = [e for e in stops if isinstance(e, RequestUnanswered | StopRequested)]
    assert told[:2] == [StopRequested(False, 30.0), StopRequested(True, 30.0)]
    doc = summary.to_dict()
    assert (doc["unanswered"], doc["unanswered_recipients"], doc["pending"]) == (2, 700, 3)
    assert doc["unanswered_batches"] == [
        {"job_id": "named", "batch": 0, "api": "send_group_system_notification", "recipients": 500},
        {"job_id": "named", "batch": 1, "api": "send_group_system_notification", "recipients": 200},
    ]
    assert dict(summary_rows(doc))["Unanswered"] == (
        "2 requests in flight when the run stopped at once, to 700 recipients: never answered (their journal lines "
        "say so); a resume sends them again, and they may have been delivered already (named batch 0, named batch 1)"
    )


def test_unanswered_all_members_batches_are_named_as_such() -> None:
    summary = Summary(out="out.jsonl")
    summary.on_event(RequestUnanswered("send_group_system_notification", "everyone", 0, None))
    for index in range(11):
        summary.on_event(RequestUnanswered("batchsendmsg", "dm", index, 500))
    assert dict(summary_rows(summary.to_dict()))["Unanswered"] == (
        "12 requests in flight when the run stopped at once, to 5,500 recipients and all members of the group in "
        "1 batch: never answered (their journal lines say so); a resume sends them again, and they may have been "
        "delivered already (dm batch 0, dm batch 1, dm batch 2, dm batch 3, dm batch 4, dm batch 5, dm batch 6, "
        "dm batch 7, dm batch 8, dm batch 9 and 2 more)"
    )
