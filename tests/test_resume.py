"""Crash-safe runs: kill -9 and SIGTERM a real `dispatcher send`, resume it, and let the ledger judge."""

from __future__ import annotations

import asyncio
import collections
import os
import pty
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.errors import JournalError
from dispatcher.journal.outcomes import iter_records, load_state
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Faults, Group, Sandbox
from tests.conftest import (
    BIG_JOBS_GROUP,
    DEMO_ENV,
    DISPATCHER,
    ROOT,
    SEND_CONCURRENCY,
    before_exit,
    big_jobs,
    cli_env,
    finish,
    journal,
    log_event,
    make_config,
    run_engine,
    start_send,
    users,
    wait_for_lines,
    write_jobs,
)

GROUP = BIG_JOBS_GROUP


def final_batches(lines: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(d["job_id"], d["batch"]) for d in lines if d["final"] and d["batch"] is not None}


@pytest.mark.parametrize("kill_after_lines", [1, 25, 80])
async def test_sigkill_then_resume_duplicates_only_in_flight(tmp_path: Path, kill_after_lines: int) -> None:
    jobs, ids = big_jobs(tmp_path)
    out = tmp_path / "out.jsonl"
    async with Sandbox() as box:
        # The first requests are answered; the next are delivered and their replies held, so that the
        # run cannot end before the kill, and the requests in flight at it are real deliveries.
        box.hold_replies(after=kill_after_lines)
        proc = await start_send(jobs, out, box.url)
        await wait_for_lines(out, kill_after_lines, proc)
        await before_exit(box.wait_held(SEND_CONCURRENCY), proc, "every worker's request in flight")
        proc.kill()
        assert (await finish(proc))[0] == -signal.SIGKILL  # killed, not ended
        box.release_replies()
        before = journal(out)
        done_before = final_batches(before)
        assert len(done_before) == kill_after_lines

        proc = await start_send(jobs, out, box.url, "--resume")
        code, stderr = await finish(proc)
        assert code == 0, stderr

        delivered = box.ledger.recipients(GROUP, "hello")
        assert set(delivered) == set(ids)  # every recipient notified
        twice = {u for u, n in delivered.items() if n > 1}
        assert all(n <= 2 for n in delivered.values())
        # Duplicates come only from batches that had no final line when the process died ...
        batch_of = {d["recipients"][0]: (d["job_id"], d["batch"]) for d in journal(out) if d["recipients"]}
        dup_batches = {batch_of[u] for u in twice if u in batch_of}
        assert not dup_batches & done_before
        # ... and there can be no more of them than requests in flight at the kill.
        assert len(dup_batches) <= SEND_CONCURRENCY
        assert len(dup_batches) == SEND_CONCURRENCY  # here, each worker's: they were delivered, never recorded
        # Every batch has exactly one final ok line, and resuming again sends nothing.
        finals = collections.Counter((d["job_id"], d["batch"]) for d in journal(out) if d["final"])
        assert len(finals) == 120 and set(finals.values()) == {1}
        requests = box.stats["requests"]
        proc = await start_send(jobs, out, box.url, "--resume")
        assert (await finish(proc))[0] == 0
        assert box.stats["requests"] == requests


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
async def test_stop_signal_exits_130_and_resume_sends_each_once(tmp_path: Path, signum: signal.Signals) -> None:
    jobs, ids = big_jobs(tmp_path)
    out = tmp_path / "out.jsonl"
    summary_path = tmp_path / "summary.json"
    async with Sandbox() as box:
        # Past the 30th request, replies are held until the run has taken the signal: it cannot end
        # first, and what it has in flight then is delivered, answered and recorded.
        box.hold_replies(after=30)
        proc = await start_send(jobs, out, box.url, "--summary-json", str(summary_path))
        await wait_for_lines(out, 30, proc)
        await before_exit(box.wait_held(SEND_CONCURRENCY), proc, "every worker's request in flight")
        assert proc.returncode is None, "the run finished before it could be interrupted"
        proc.send_signal(signum)
        await log_event(proc, "stopping: finishing requests in flight")
        box.release_replies()
        code, stderr = await finish(proc)
        assert code == 130, stderr
        summary = orjson.loads(summary_path.read_bytes())
        assert summary["interrupted"] is True and summary["exit_code"] == 130
        assert summary["pending"] > 0
        # In-flight requests finished and were recorded: the ledger matches the journal exactly.
        ok_recipients = [u for d in journal(out) if d["status"] == "ok" for u in d["recipients"]]
        assert sorted(ok_recipients) == sorted(box.ledger.recipients(GROUP))
        assert box.ledger.total() == len(ok_recipients)

        proc = await start_send(jobs, out, box.url, "--resume", "--summary-json", str(summary_path))
        code, stderr = await finish(proc)
        assert code == 0, stderr
        assert box.ledger.recipients(GROUP, "hello") == collections.Counter(dict.fromkeys(ids, 1))
        summary = orjson.loads(summary_path.read_bytes())
        assert summary["skipped"] + summary["ok"] == summary["batches"] == 120


async def test_torn_last_line_is_cut_before_appending(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": f"n{i}"} for i in range(3)])
    out = tmp_path / "out.jsonl"
    await run_engine(sandbox, jobs, out)
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"job_id": "jobs.jsonl:9", "batch": 0, "sta')
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.requests, summary.skipped, summary.exit_code) == (0, 3, 0)
    assert out.read_bytes() == whole
    for raw in out.read_bytes().splitlines():
        orjson.loads(raw)


async def test_whole_last_line_without_newline_is_kept(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": f"n{i}"} for i in range(2)])
    out = tmp_path / "out.jsonl"
    await run_engine(sandbox, jobs, out)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert summary.requests == 0
    assert len(journal(out)) == 2 and out.read_bytes().endswith(b"\n")


async def test_damage_before_the_last_line_is_an_error(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'garbage\n{"job_id": "a", "batch": 0, "final": true, "status": "ok"}\n')
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x"}])
    with pytest.raises(JournalError, match=r"out.jsonl:1: not an outcome line; the journal is damaged"):
        await run_engine(sandbox, jobs, out, resume=True)
    assert sandbox.stats["requests"] == 0


async def test_changed_job_is_rejected_and_others_go_on(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"job_id": "a", "GroupId": GROUP, "Content": "v1", "ToMembers_Account": ["p", "q"]}]
    )
    await run_engine(sandbox, jobs, out)
    write_jobs(
        jobs,
        [
            {"job_id": "a", "GroupId": GROUP, "Content": "v1", "ToMembers_Account": ["p", "q", "r"]},
            {"job_id": "b", "GroupId": GROUP, "Content": "new", "ToMembers_Account": ["s"]},
        ],
    )
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.rejected, summary.ok, summary.exit_code) == (1, 1, 1)
    last = journal(out)[-2:]
    rejection = next(d for d in last if d["status"] == "rejected")
    assert rejection["job_id"] == "a" and "changed since the outcome journal" in rejection["error_info"]
    assert sandbox.ledger.times("r", GROUP) == 0
    assert sandbox.ledger.times("s", GROUP) == 1


async def test_finished_run_resumed_sends_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x", "ToMembers_Account": users(1200)}])
    await run_engine(sandbox, jobs, out)
    lines = len(journal(out))
    for _ in range(2):
        summary = await run_engine(sandbox, jobs, out, resume=True)
        assert (summary.requests, summary.skipped, summary.pending, summary.exit_code) == (0, 3, 0, 0)
    assert len(journal(out)) == lines
    assert sandbox.stats["requests"] == 3


async def test_retry_failed_redrives_only_failures(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    groups = {GROUP: Group("Public")}
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "good", "GroupId": GROUP, "Content": "x", "ToMembers_Account": ["a"]},
            {"job_id": "late", "GroupId": "@TGS#notyet", "Content": "x", "ToMembers_Account": ["b"]},
        ],
    )
    async with Sandbox(groups=groups) as box:
        summary = await run_engine(box, jobs, out)
        assert (summary.ok, summary.failed, summary.exit_code) == (1, 1, 1)
        summary = await run_engine(box, jobs, out, resume=True)  # a plain resume leaves failures alone
        assert (summary.requests, summary.skipped, summary.exit_code) == (0, 2, 1)
        assert box.groups is not None
        box.groups["@TGS#notyet"] = Group("Public")  # the operator fixes the cause
        summary = await run_engine(box, jobs, out, resume=True, retry_failed=True)
        assert (summary.requests, summary.ok, summary.skipped, summary.exit_code) == (1, 1, 1, 0)
        assert box.ledger.times("a", GROUP) == 1 and box.ledger.times("b", "@TGS#notyet") == 1
    redriven = journal(out)[-1]
    assert (redriven["job_id"], redriven["status"], redriven["attempt"]) == ("late", "ok", 2)
    assert load_state(out).fate("late", 0) == "ok"


async def test_fixed_rejected_job_is_sent_on_resume(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"job_id": "j", "GroupId": GROUP, "Content": "x", "ToMembers_Account": []}]
    )
    assert (await run_engine(sandbox, jobs, out)).rejected == 1
    write_jobs(jobs, [{"job_id": "j", "GroupId": GROUP, "Content": "x", "ToMembers_Account": ["p"]}])
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.rejected, summary.ok, summary.exit_code) == (0, 1, 0)


async def test_stdin_jobs_resume_from_the_journal(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    data = b"".join(orjson.dumps({"GroupId": GROUP, "Content": f"n{i}"}) + b"\n" for i in range(4))
    env = cli_env(**DEMO_ENV)
    for extra in ((), ("--resume",)):
        args = DISPATCHER("send", "-", "--endpoint", sandbox.url, "--out", str(out), "--no-progress", *extra)
        proc = await asyncio.create_subprocess_exec(
            *args,
            env=env,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await proc.communicate(data)
        assert proc.returncode == 0, err.decode()
    assert sandbox.stats["requests"] == 4
    ids = [d["job_id"] for d in iter_records(out)]
    assert len(set(ids)) == 4 and all(i.startswith("auto-") for i in ids)  # from content, as for a file


async def test_stdin_needs_out(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *DISPATCHER("send", "-", "--sandbox"),
        env=cli_env(),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"--out" in err


async def test_second_stop_cancels_requests_in_flight(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.script("hang", "hang")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": f"n{i}"} for i in range(5)])
    engine = Engine(make_config(sandbox, jobs, tmp_path / "out.jsonl", concurrency=2, timeout=60))
    run = asyncio.create_task(engine.run())
    for _ in range(1000):  # until both requests are on the wire (they will not be answered)
        if sandbox.stats["requests"] >= 2:
            break
        await asyncio.sleep(0.01)
    engine.stop()  # graceful: would wait for them, up to the grace period
    await asyncio.sleep(0.05)
    assert not run.done()
    engine.stop()  # the second signal: at once
    summary = await asyncio.wait_for(run, timeout=5)
    assert (summary.interrupted, summary.exit_code, summary.requests) == (True, 130, 0)
    # Nothing was answered: each request on the wire has a line that says so, not final, so a resume
    # sends it again (it may have been delivered).
    lines = journal(tmp_path / "out.jsonl")
    assert [(line["batch"], line["status"], line["final"], line["error_code"]) for line in lines] == [
        (0, "retry", False, None),
        (0, "retry", False, None),
    ]
    assert len({line["job_id"] for line in lines}) == 2
    assert {line["error_info"] for line in lines} == {
        "no reply: the run stopped at once with this request in flight; it may have been delivered"
    }
    assert summary.pending == 5


async def test_closed_terminal_drains_like_sigterm(tmp_path: Path) -> None:
    """The run's terminal goes away (an SSH session drops): SIGHUP, then every write to it fails."""
    jobs, ids = big_jobs(tmp_path)
    out = tmp_path / "out.jsonl"
    summary_path = tmp_path / "summary.json"
    leader, follower = pty.openpty()
    # Make the pseudo-terminal the run's controlling terminal, as a login shell's is, so that
    # closing its other end hangs it up.
    take_terminal = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.argv[1], sys.argv[1:])"
    )
    args = DISPATCHER("send", str(jobs), "--out", str(out), "--batch-size", "5", "--rate", "150")
    async with Sandbox(faults=Faults(latency=0.05)) as box:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", take_terminal, *args, "--endpoint", box.url, "--summary-json", str(summary_path)),
            stdin=follower,
            stdout=follower,
            stderr=follower,
            start_new_session=True,
            cwd=ROOT,
            env={**cli_env(**DEMO_ENV), "TERM": "xterm", "COLUMNS": "120"},
        )
        os.close(follower)
        loop = asyncio.get_running_loop()
        loop.add_reader(leader, lambda: os.read(leader, 65536))  # the terminal shows what it is sent
        for _ in range(6000):
            if out.exists() and out.read_bytes().count(b"\n") >= 30:
                break
            await asyncio.sleep(0.005)
        loop.remove_reader(leader)
        assert proc.returncode is None, "the run finished before its terminal was closed"
        os.close(leader)  # the terminal is gone
        code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 130
        summary = orjson.loads(summary_path.read_bytes())
        assert summary["interrupted"] is True and summary["exit_code"] == 130
        # In-flight requests finished and were recorded: the ledger matches the journal exactly.
        ok_recipients = [u for d in journal(out) if d["status"] == "ok" for u in d["recipients"]]
        assert sorted(ok_recipients) == sorted(box.ledger.recipients(GROUP))
        assert set(ok_recipients) < set(ids)


async def test_a_journal_with_line_based_ids_is_not_resent_under_content_ids(sandbox: Sandbox, tmp_path: Path) -> None:
    """Journals written before default ids came from the content named id-less jobs `file:line`."""
    out = tmp_path / "out.jsonl"
    job = {"GroupId": GROUP, "Content": "x", "ToMembers_Account": ["p", "q"]}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"job_id": "jobs.jsonl:1", **job}])
    await run_engine(sandbox, jobs, out)  # as the old version recorded it
    write_jobs(jobs, [job, {"GroupId": GROUP, "Content": "new", "ToMembers_Account": ["s"]}])
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.rejected, summary.ok, summary.exit_code) == (1, 1, 1)
    rejection = next(d for d in journal(out) if d["status"] == "rejected")
    assert "holds this very job" in rejection["error_info"]
    assert 'give it "job_id": "jobs.jsonl:1"' in rejection["error_info"]
    assert sandbox.ledger.times("p", GROUP, "x") == 1  # not sent again

    write_jobs(jobs, [{"job_id": "jobs.jsonl:1", **job}])  # the operator follows the hint
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.rejected, summary.requests, summary.skipped, summary.exit_code) == (0, 0, 1, 0)


async def test_two_named_jobs_with_one_content_are_both_sent(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    job = {"GroupId": GROUP, "Content": "twice on purpose", "ToMembers_Account": ["p"]}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"job_id": "a", **job}])
    await run_engine(sandbox, jobs, out)
    write_jobs(jobs, [{"job_id": "a", **job}, {"job_id": "b", **job}])
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.rejected, summary.ok, summary.exit_code) == (0, 1, 0)
    assert sandbox.ledger.times("p", GROUP, "twice on purpose") == 2


async def test_naming_a_job_that_was_sent_without_a_job_id_does_not_resend_it(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    job = {"GroupId": GROUP, "Content": "x", "ToMembers_Account": ["p"]}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job])
    await run_engine(sandbox, jobs, out)
    (sent,) = journal(out)
    write_jobs(jobs, [{"job_id": "named-announcement", **job}])
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.rejected, summary.requests, summary.exit_code) == (1, 0, 1)
    assert f'give it "job_id": "{sent["job_id"]}"' in journal(out)[-1]["error_info"]
    assert sandbox.ledger.times("p", GROUP, "x") == 1
