"""The send pipeline against the in-process sandbox: batching, retries, the error table, secrets."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from pathlib import Path

import pytest

from dispatcher.errors import JournalError
from dispatcher.observe.events import Event, ReplyRecorded
from dispatcher.observe.logs import configure
from dispatcher.observe.summary import Summary
from dispatcher.pacing.memory import RateLimiter
from dispatcher.run.engine import Engine
from dispatcher.run.retry import RetryPolicy
from dispatcher.sandbox import ALL_MEMBERS, Group, Sandbox
from dispatcher.tim.config import Credentials
from dispatcher.tim.usersig import Signer
from tests.conftest import SAFETY_CAP, FakeClock, Timeline, journal, make_config, run_engine, users, write_jobs

GROUP = "@TGS#2C5SZEAEF"


async def test_batches_of_500_500_250_and_everyone_once(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = users(1250)
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"job_id": "sale", "GroupId": GROUP, "Content": "hi", "ToMembers_Account": ids + ids[:10]}],
    )
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl")
    assert summary.exit_code == 0
    assert (summary.batches, summary.ok, summary.requests, summary.recipients) == (3, 3, 3, 1250)
    lines = journal(tmp_path / "out.jsonl")
    assert sorted((d["batch"], len(d["recipients"])) for d in lines) == [(0, 500), (1, 500), (2, 250)]
    assert all(d["status"] == "ok" and d["final"] and d["batches"] == 3 and d["attempt"] == 1 for d in lines)
    assert sandbox.ledger.recipients(GROUP, "hi") == collections.Counter(dict.fromkeys(ids, 1))


async def test_outcome_line_has_every_spec_key(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "ToMembers_Account": ["p"]}])
    await run_engine(sandbox, jobs, tmp_path / "out.jsonl")
    (line,) = journal(tmp_path / "out.jsonl")
    assert list(line) == [
        "job_id",
        "batch",
        "batches",
        "attempt",
        "status",
        "final",
        "group_id",
        "recipients",
        "error_code",
        "error_info",
        "http_status",
        "latency_ms",
        "at",
        "job_hash",
    ]
    assert line["job_id"] == "auto-f6762f7f77c6e8b6"  # made from GroupId, TopicId, Content, recipients
    assert (line["error_code"], line["http_status"], line["recipients"]) == (0, 200, ["p"])
    assert line["at"].endswith("Z") and len(line["job_hash"]) == 32


async def test_all_members_avchatroom_and_topic(tmp_path: Path) -> None:
    groups = {
        "@TGS#pub": Group("Public", frozenset({"a", "b"})),
        "@TGS#live": Group("AVChatRoom"),
        "@TGS#com": Group("Community", frozenset({"a", "b"}), frozenset({"@TGS#com@TOPIC#t"})),
    }
    async with Sandbox(groups=groups) as box:
        jobs = write_jobs(
            tmp_path / "jobs.jsonl",
            [
                {"GroupId": "@TGS#pub", "Content": "all"},
                {"GroupId": "@TGS#live", "Content": "live", "group_type": "AVChatRoom"},
                {
                    "GroupId": "@TGS#com",
                    "Content": "topic",
                    "group_type": "Community",
                    "TopicId": "@TGS#com@TOPIC#t",
                    "ToMembers_Account": ["b"],
                },
            ],
        )
        summary = await run_engine(box, jobs, tmp_path / "out.jsonl")
        assert (summary.ok, summary.exit_code) == (3, 0)
        assert box.ledger.recipients("@TGS#pub", "all") == {"a": 1, "b": 1}
        assert box.ledger.recipients("@TGS#live") == {ALL_MEMBERS: 1}
        assert box.ledger.times("b", "@TGS#com", "topic", topic_id="@TGS#com@TOPIC#t") == 1
        assert all(d["recipients"] is None for d in journal(tmp_path / "out.jsonl")[:2])


async def test_rejected_jobs_are_recorded_and_others_go_on(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"GroupId": GROUP, "Content": "typo", "ToMember_Account": ["p"]},
            {"GroupId": GROUP, "Content": "good", "ToMembers_Account": ["p"]},
            {"GroupId": GROUP, "Content": "null", "ToMembers_Account": None},
        ],
    )
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl")
    assert (summary.jobs, summary.rejected, summary.ok, summary.exit_code) == (3, 2, 1, 1)
    rejections = [d for d in journal(tmp_path / "out.jsonl") if d["status"] == "rejected"]
    assert [d["job_id"] for d in rejections] == ["jobs.jsonl:1", "jobs.jsonl:3"]
    assert all(d["final"] and d["batch"] is None for d in rejections)
    assert "ToMember_Account" in rejections[0]["error_info"] and rejections[0]["field"] == "ToMember_Account"
    assert sandbox.ledger.total() == 1  # nobody got "typo" or "null", least of all all members


async def test_bad_userid_late_in_export_sends_nothing_of_the_job(sandbox: Sandbox, tmp_path: Path) -> None:
    lines = users(3000)
    lines[2999] = "y" * 40
    (tmp_path / "r.txt").write_text("\n".join(lines))
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x", "recipients_file": "r.txt"}])
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl")
    assert (summary.rejected, summary.requests) == (1, 0)
    assert sandbox.ledger.total() == 0


async def test_10002_is_retried_then_ok(sandbox: Sandbox, tmp_path: Path, clock: FakeClock) -> None:
    sandbox.script(10002, 10002)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x", "ToMembers_Account": ["p"]}])
    start = clock.now
    summary = await run_engine(
        sandbox,
        jobs,
        tmp_path / "out.jsonl",
        clock=clock,
        rng=random.Random(1),
        policy=RetryPolicy(base=1.0, cap=30.0),
        concurrency=1,
    )
    lines = journal(tmp_path / "out.jsonl")
    assert [(d["attempt"], d["status"], d["final"], d["error_code"]) for d in lines] == [
        (1, "retry", False, 10002),
        (2, "retry", False, 10002),
        (3, "ok", True, 0),
    ]
    assert (summary.requests, summary.retries, summary.ok, summary.exit_code) == (3, 2, 1, 0)
    assert summary.error_codes == {"10002": 2, "0": 1}
    # A backoff after each 10002, drawn with full jitter from [0, 1 s] and then [0, 2 s]: with this
    # seed, 0.134 s and 1.695 s. The limiter never waits at 10,000/s, so these are all the run slept.
    assert clock.sleeps == pytest.approx([0.1343642, 1.6948675], abs=1e-6)
    assert clock.now - start == pytest.approx(0.1343642 + 1.6948675, abs=1e-6)
    assert sandbox.ledger.times("p", GROUP) == 1


@pytest.mark.parametrize("code", [10002, 60008, 70169, 70202, 70500, 60007, 60011, 10006, 10023])
async def test_retryable_codes(sandbox: Sandbox, tmp_path: Path, clock: FakeClock, code: int) -> None:
    sandbox.script(code)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x"}])
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl", clock=clock)
    assert [d["status"] for d in journal(tmp_path / "out.jsonl")] == ["retry", "ok"]
    assert summary.exit_code == 0


@pytest.mark.parametrize("code", [10003, 10004, 10007, 10010, 10015, 80001, 80002, 60001, 70398])
async def test_permanent_codes_one_attempt(sandbox: Sandbox, tmp_path: Path, code: int) -> None:
    sandbox.script(code)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x"}])
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl")
    lines = journal(tmp_path / "out.jsonl")
    assert [(d["status"], d["final"], d["error_code"]) for d in lines] == [("failed", True, code)]
    assert (summary.failed, summary.requests, summary.exit_code) == (1, 1, 1)


@pytest.mark.parametrize(("fault", "info"), [("502", "HTTP 502"), ("drop", "ServerDisconnected"), ("hang", "timeout")])
async def test_transport_faults_are_retried(
    sandbox: Sandbox, tmp_path: Path, clock: FakeClock, fault: str, info: str
) -> None:
    sandbox.script(fault)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x", "ToMembers_Account": ["p"]}])
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl", clock=clock, timeout=0.3)
    first, second = journal(tmp_path / "out.jsonl")
    assert (first["status"], first["error_code"], second["status"]) == ("retry", None, "ok")
    assert info in first["error_info"]
    assert first["http_status"] == (502 if fault == "502" else None)
    assert summary.error_codes["transport"] == 1
    assert sandbox.ledger.times("p", GROUP) == 1


async def test_attempts_are_bounded(sandbox: Sandbox, tmp_path: Path, clock: FakeClock) -> None:
    sandbox.script(*[10002] * 10)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x"}])
    summary = await run_engine(
        sandbox,
        jobs,
        tmp_path / "out.jsonl",
        clock=clock,
        rng=random.Random(3),
        policy=RetryPolicy(max_attempts=3, base=1.0, cap=2.0),
    )
    assert [d["status"] for d in journal(tmp_path / "out.jsonl")] == ["retry", "retry", "failed"]
    assert (summary.failed, summary.requests, summary.exit_code) == (1, 3, 1)
    # Three attempts, so two backoffs between them (none after the last): with this seed 0.238 s,
    # drawn from [0, 1 s], then 1.088 s, from [0, 2 s], the cap.
    assert clock.sleeps == pytest.approx([0.2379646, 1.0884585], abs=1e-6)


async def test_signature_renewed_at_once_on_70001(sandbox: Sandbox, tmp_path: Path) -> None:
    clock = FakeClock(start=time.time())  # the sandbox checks expiry against the real time
    sandbox.script(70001)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x"}])
    config = make_config(sandbox, jobs, tmp_path / "out.jsonl", concurrency=1)
    creds = config.credentials
    signer = Signer(creds.sdkappid, creds.identifier, creds.secret_key, clock=clock.time)
    limiter = RateLimiter(config.rate, clock=clock.time, sleep=clock.sleep)
    engine = Engine(config, limiter=limiter, sleep=clock.sleep, signer=signer)
    before = signer.current()
    clock.now += 5  # well inside its lifetime: only the 70001 makes it renew
    summary = await engine.run()
    assert [d["status"] for d in journal(tmp_path / "out.jsonl")] == ["retry", "ok"]
    assert summary.exit_code == 0
    assert signer.current() != before
    assert all(s < 0.01 for s in clock.sleeps)  # retried at once, no backoff


class RecordingLimiter(RateLimiter):
    """The in-process limiter, in virtual time, noting each start (with the task that took it) and
    each pause, in the order they happen."""

    def __init__(self, rate: float, clock: FakeClock) -> None:
        super().__init__(rate, clock=clock.time, sleep=clock.sleep)
        self.fake = clock
        self.events: list[tuple[str, float, int]] = []

    async def acquire(self, cost: int = 1) -> None:
        await super().acquire(cost)
        self.events.append(("start", self.fake.now, id(asyncio.current_task())))

    def pause(self, seconds: float) -> None:
        self.events.append(("pause", self.fake.now, 0))
        super().pause(seconds)


async def test_70050_pauses_all_sending(sandbox: Sandbox, tmp_path: Path, clock: FakeClock) -> None:
    """Four workers: once the 70050 is in, none of them starts a request, a retry or a new batch,
    until the minute is over.

    Only the limiter's waits move the virtual clock. A worker's own sleep (a backoff) is noted and
    takes no virtual time: were the pause a sleep of the worker told alone, the other workers'
    starts would be stamped inside the minute (a clock that every sleeper moves would hide that)."""
    sandbox.script(70050)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": f"n{i}"} for i in range(40)])
    config = make_config(sandbox, jobs, tmp_path / "out.jsonl", concurrency=4)
    limiter = RecordingLimiter(config.rate, clock)
    own_sleeps: list[float] = []

    async def own_sleep(seconds: float) -> None:
        own_sleeps.append(seconds)
        await asyncio.sleep(0)

    summary = await Engine(config, limiter=limiter, sleep=own_sleep).run()
    statuses = collections.Counter(d["status"] for d in journal(tmp_path / "out.jsonl"))
    assert statuses == {"ok": 40, "retry": 1}
    assert (summary.requests, summary.exit_code) == (41, 0)
    (pause_index,) = [i for i, event in enumerate(limiter.events) if event[0] == "pause"]
    paused_at = limiter.events[pause_index][1]
    after = limiter.events[pause_index + 1 :]
    assert len(after) >= 20  # the retry, and the batches no worker had taken when the 70050 came (36 here)
    assert all(when >= paused_at + 60 for _, when, _ in after)
    assert len({task for _, _, task in after}) == 4  # every worker waited, not only the one told
    assert own_sleeps == []  # the wait was the limiter's, shared: no worker slept on its own


# The reference's list, written out: a code wrongly added to (or dropped from) api.CONFIG_CODES
# must fail here or in test_permanent_codes_one_attempt, not pass because the test reads the table.
@pytest.mark.parametrize("code", [60004, 60010, 60026, 70003, 70009, 70013, 70014, 70016, 70020, 70403])
async def test_config_error_stops_the_run(sandbox: Sandbox, tmp_path: Path, code: int) -> None:
    sandbox.script(code)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": f"n{i}"} for i in range(50)])
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl", concurrency=1)
    lines = journal(tmp_path / "out.jsonl")
    assert [(d["status"], d["final"]) for d in lines] == [("retry", False)]
    assert summary.exit_code == 2
    assert summary.stopped and str(code) in summary.stopped
    assert summary.failed == 0


async def test_wrong_key_stops_then_resume_finishes(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": f"n{i}"} for i in range(20)])
    out = tmp_path / "out.jsonl"
    wrong = Credentials(sandbox.credentials.sdkappid, sandbox.credentials.identifier, "wrong-key")
    summary = await run_engine(sandbox, jobs, out, credentials=wrong, concurrency=2)
    assert summary.exit_code == 2 and summary.ok == 0
    assert all(d["status"] == "retry" and d["error_code"] == 70003 for d in journal(out))
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.ok, summary.exit_code) == (20, 0)
    assert sandbox.ledger.total() == 20


class RunTimeline(Timeline):
    """Virtual time for a whole run against the in-process sandbox. The clock moves to the next
    sleeper's wake-up only when every request started has come back and been recorded: each request
    arrives at the sandbox at the virtual time it started, however long its real round trip takes."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0  # slots the limiter granted: one request each
        self.recorded = 0  # requests that came back
        self.changed = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.changed.set()
        await super().sleep(seconds)

    def limiter(self, rate: float) -> RateLimiter:
        timeline = self

        class Counting(RateLimiter):
            async def acquire(self, cost: int = 1) -> None:
                await super().acquire(cost)
                timeline.started += 1
                timeline.changed.set()

        return Counting(rate, clock=self.time, sleep=self.sleep)

    def on_event(self, event: Event) -> None:
        if isinstance(event, ReplyRecorded):
            self.recorded += 1
            self.changed.set()

    async def drive(self, run: asyncio.Task[Summary]) -> Summary:
        """Move the clock, wake-up by wake-up, until `run` is done; its summary."""
        async with asyncio.timeout(SAFETY_CAP):
            while not run.done():
                self.changed.clear()
                pending = [entry for entry in self.sleepers if not entry[1].done()]
                if pending and self.started == self.recorded:
                    self.now = min(when for when, _ in pending)
                    for when, fut in pending:
                        if when <= self.now:
                            fut.set_result(None)
                    await self.settle()  # those woken run on to their next wait: a start (counted), a sleep, a lock
                    continue
                changed = asyncio.ensure_future(self.changed.wait())
                await asyncio.wait({changed, run}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
        return await run


async def test_nothing_over_the_rate_in_any_window(tmp_path: Path) -> None:
    """Virtual time, small numbers: the sandbox counts every window and answers 60007 to any excess."""
    timeline = RunTimeline()
    async with Sandbox(rate=40, clock=timeline.time) as box:
        jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": f"n{i}"} for i in range(60)])
        config = make_config(box, jobs, tmp_path / "out.jsonl", rate=40, concurrency=20)
        engine = Engine(
            config,
            limiter=timeline.limiter(40),
            sleep=timeline.sleep,
            clock=timeline.time,
            subscribers=[timeline.on_event],
        )
        summary = await timeline.drive(asyncio.create_task(engine.run()))
        assert summary.ok == 60
        assert "60007" not in summary.error_codes
        assert box.stats["60007"] == 0


async def test_existing_journal_is_refused_without_resume(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x"}])
    out = tmp_path / "out.jsonl"
    out.write_text('{"job_id": "old"}\n')
    # Raised to a library caller in its words (issue 26); the command line's are kept in for_cli.
    with pytest.raises(JournalError, match=r"set RunConfig\(resume=True\)") as refused:
        await run_engine(sandbox, jobs, out)
    assert "--resume" in refused.value.for_cli
    assert sandbox.stats["requests"] == 0


async def test_no_secret_in_logs_or_outcomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    secret = "very-secret-key-1234567890"
    creds = Credentials(1400000000, "administrator", secret)
    async with Sandbox(credentials=creds) as box:
        box.script("drop", 10002, "502")
        configure("json", level="debug", secrets=creds.secrets())
        jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x"}, {"GroupId": "bad id é"}])
        config = make_config(box, jobs, tmp_path / "out.jsonl", credentials=creds, timeout=5)
        engine = Engine(config)
        sig = engine.signer.current()
        summary = await engine.run()
        assert summary.ok == 1
    captured = capsys.readouterr()
    text = captured.err + captured.out + (tmp_path / "out.jsonl").read_text()
    assert "first reply with this error" in captured.err
    assert secret not in text
    assert sig not in text
    assert "usersig=" not in text.lower().replace("usersig=[redacted]", "")


class _BrokenLimiter(RateLimiter):
    """A limiter with a bug: its first slot raises."""

    async def acquire(self, cost: int = 1) -> None:
        raise RuntimeError("a bug in the limiter")


async def test_a_worker_that_crashes_with_the_queue_full_ends_the_run(sandbox: Sandbox, tmp_path: Path) -> None:
    # One worker, a queue of two, six batches: the producer waits on a full queue when the worker dies.
    # The run used to hang for good (the cancelled producer then waited to queue the workers' ends).
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x", "ToMembers_Account": users(6)}])
    config = make_config(sandbox, jobs, tmp_path / "out.jsonl", concurrency=1, batch_size=1)
    engine = Engine(config, limiter=_BrokenLimiter(config.rate))
    with pytest.raises(ExceptionGroup) as raised:
        await asyncio.wait_for(engine.run(), timeout=30)  # a bound on the hang, not a wait: it ends at once
    assert [str(exc) for exc in raised.value.exceptions] == ["a bug in the limiter"]
    assert sandbox.stats["requests"] == 0
