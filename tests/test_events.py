"""The run's one event stream: what the engine says happened, and outputs that cannot disagree about it."""

from __future__ import annotations

from pathlib import Path

from dispatcher.journal.outcomes import load_state
from dispatcher.observe.events import (
    BatchSkipped,
    Event,
    Halted,
    JobAccepted,
    JobRejected,
    RateWaited,
    ReplyRecorded,
    StopRequested,
)
from dispatcher.observe.plan import make_plan
from dispatcher.observe.report import summarise
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Sandbox
from tests.conftest import journal, make_config, users, write_jobs

GROUP = "@TGS#events"


def jobs_file(tmp_path: Path) -> Path:
    return write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "a", "GroupId": GROUP, "Content": "x", "ToMembers_Account": users(700)},  # 2 batches
            {"job_id": "bad", "GroupId": GROUP, "Content": "x", "ToMember_Account": ["p"]},  # a typo
        ],
    )


async def run(sandbox: Sandbox, tmp_path: Path, **kwargs: object) -> tuple[list[Event], Engine]:
    events: list[Event] = []
    engine = Engine(
        make_config(sandbox, jobs_file(tmp_path), tmp_path / "out.jsonl", **kwargs), subscribers=[events.append]
    )
    await engine.run()
    return events, engine


async def test_a_run_is_told_as_events(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.script(10002)  # the first request is answered 10002, and retried
    events, engine = await run(sandbox, tmp_path, concurrency=1)
    jobs = [e for e in events if isinstance(e, JobAccepted | JobRejected)]
    assert jobs[0] == JobAccepted("a", 2)
    assert isinstance(jobs[1], JobRejected) and jobs[1].job_id == "bad" and jobs[1].recorded
    assert "field ToMember_Account" in jobs[1].reason
    replies = [
        (e.job_id, e.batch, e.retry, e.code, e.status, e.recipients) for e in events if isinstance(e, ReplyRecorded)
    ]
    assert replies == [
        ("a", 0, False, "10002", "retry", 500),
        ("a", 0, True, "0", "ok", 500),
        ("a", 1, False, "0", "ok", 200),
    ]
    assert all(e.api == "send_group_system_notification" and e.recorded for e in events if isinstance(e, ReplyRecorded))
    assert sum(isinstance(e, RateWaited) for e in events) == 3  # one slot per request
    # The summary is counted from the same events.
    assert (engine.summary.jobs, engine.summary.rejected, engine.summary.ok, engine.summary.retries) == (2, 1, 2, 1)


async def test_a_resume_skips_as_events(sandbox: Sandbox, tmp_path: Path) -> None:
    await run(sandbox, tmp_path)
    events, engine = await run(sandbox, tmp_path, resume=True)
    assert [e for e in events if isinstance(e, BatchSkipped)] == [
        BatchSkipped("a", 0, False),
        BatchSkipped("a", 1, False),
    ]
    assert not any(isinstance(e, ReplyRecorded) for e in events)
    assert engine.summary.skipped == 2


async def test_a_stop_and_a_halt_are_events(sandbox: Sandbox, tmp_path: Path) -> None:
    events: list[Event] = []
    engine: Engine | None = None

    def stop_after_first_reply(event: Event) -> None:
        events.append(event)
        if isinstance(event, ReplyRecorded) and engine is not None:
            engine.stop()  # as a signal handler would, right after the first reply is on record

    config = make_config(sandbox, jobs_file(tmp_path), tmp_path / "out.jsonl", concurrency=1)
    engine = Engine(config, subscribers=[stop_after_first_reply])
    summary = await engine.run()
    assert [e for e in events if isinstance(e, StopRequested)] == [StopRequested(at_once=False, grace_s=30.0)]
    assert (summary.interrupted, summary.exit_code, summary.ok, summary.pending) == (True, 130, 1, 1)

    sandbox.script(70003)  # a configuration error: the run stops early
    elsewhere = tmp_path / "halt"
    elsewhere.mkdir()
    halted, engine = await run(sandbox, elsewhere, concurrency=1)
    (halt,) = [e for e in halted if isinstance(e, Halted)]
    assert halt.first and "70003" in halt.reason
    assert engine.summary.stopped == halt.reason


async def test_the_plan_the_summary_and_the_report_count_alike(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.script(10004)  # batch 0 of "a" fails for good
    jobs = jobs_file(tmp_path)
    out = tmp_path / "out.jsonl"
    first = await Engine(make_config(sandbox, jobs, out, concurrency=1)).run()
    assert (first.ok, first.failed, first.rejected) == (1, 1, 1)

    plan = make_plan([str(jobs)], 500, 200.0, load_state(out, repair=False))
    resumed = await Engine(make_config(sandbox, jobs, out, resume=True)).run()
    assert (plan.jobs, plan.rejected, plan.batches, plan.skipped) == (2, 1, 2, 2)
    assert (resumed.jobs, resumed.rejected, resumed.batches, resumed.skipped) == (2, 1, 2, 2)

    report = summarise(out)
    assert (report["ok"], report["failed"], report["rejected"]) == (1, 1, 1)
    assert report["error_codes"] == dict(first.error_codes) == {"0": 1, "10004": 1}


def test_a_server_inventing_error_codes_cannot_flood_the_log() -> None:
    """The first reply with each code is a warning, for the first 50 codes; then one line says so."""
    from structlog.testing import capture_logs

    from dispatcher.observe.events import ReplyRecorded
    from dispatcher.observe.runlog import RunLog

    runlog = RunLog()
    with capture_logs() as logged:
        for n in range(200):
            for _ in range(2):
                runlog(ReplyRecorded("api", "job", n, False, str(90000 + n), "no", "failed", "failed", 1, 0.01))
    assert [entry["event"] for entry in logged] == ["first reply with this error"] * 50 + [
        "more than 50 error codes: the rest are not logged; the summary counts them"
    ]
    assert logged[49]["error_code"] == "90049"


async def test_a_subscriber_that_raises_stops_the_run_with_every_reply_in_flight_recorded(tmp_path: Path) -> None:
    from dispatcher.sandbox.server import Faults
    from dispatcher.tim.config import DEMO_CREDENTIALS

    box = Sandbox(DEMO_CREDENTIALS, faults=Faults(latency=0.05))
    await box.start()
    try:
        jobs = write_jobs(
            tmp_path / "jobs.jsonl",
            [{"job_id": "big", "GroupId": GROUP, "Content": "x", "ToMembers_Account": users(20)}],
        )
        replies = 0

        def broken(event: Event) -> None:
            nonlocal replies
            if isinstance(event, ReplyRecorded):
                replies += 1
                if replies == 2:
                    raise RuntimeError("display broke")

        config = make_config(box, jobs, tmp_path / "out.jsonl", batch_size=1, concurrency=4)
        summary = await Engine(config, subscribers=[broken]).run()
    finally:
        await box.stop()
    lines = [line for line in journal(tmp_path / "out.jsonl") if line["status"] == "ok"]
    assert summary.exit_code == 2
    assert summary.stopped is not None and "internal error in an output of the run" in summary.stopped
    assert box.stats["0"] >= 4  # the other workers' requests were in flight when it broke
    assert len(lines) == box.stats["0"]  # and every one the server answered is on record
