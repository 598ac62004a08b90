"""A journal that cannot be written (disk full, I/O error) stops the run like a configuration error."""

from __future__ import annotations

import asyncio
import os
import resource
from pathlib import Path

import orjson

from dispatcher.journal.outcomes import open_journal
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Faults, Sandbox
from tests.conftest import DEMO_ENV, DISPATCHER, ROOT, cli_env, journal, make_config, users, write_jobs

GROUP = "@TGS#diskfull"
CONCURRENCY = 8


async def test_a_full_disk_stops_the_run_with_one_line_naming_the_file(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "ToMembers_Account": users(50)}])
    out = tmp_path / "out.jsonl"
    journal_file = open_journal(out, resume=False)
    # The disk fills up: from now on the journal's descriptor is /dev/full, whose every write fails
    # with ENOSPC, as a full file system's would.
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, journal_file._fd)
    os.close(full)
    config = make_config(sandbox, jobs, out, batch_size=1, concurrency=2)
    summary = await Engine(config, journal=journal_file).run()
    assert summary.stopped == f"{out}: cannot write: No space left on device"
    assert summary.exit_code == 2
    assert summary.requests <= 2  # the requests in flight at the first failed write; no new ones
    assert (summary.ok, summary.failed) == (0, 0)  # nothing is done that is not on record


async def test_disk_full_mid_run_then_resume_sends_at_most_the_requests_in_flight_again(tmp_path: Path) -> None:
    ids = users(600)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "ToMembers_Account": ids}])
    out = tmp_path / "out.jsonl"
    args = DISPATCHER(
        "send",
        str(jobs),
        "--out",
        str(out),
        "--batch-size",
        "5",
        "--concurrency",
        str(CONCURRENCY),
        "--no-progress",
    )

    def small_disk() -> None:  # in the child: files may grow to 20 KB, then write(2) fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    async with Sandbox(faults=Faults(latency=0.01)) as box:
        proc = await asyncio.create_subprocess_exec(
            *args,
            "--endpoint",
            box.url,
            env=cli_env(**DEMO_ENV),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=small_disk,
        )
        _stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2, stderr.decode()
        errors = [line for line in stderr.decode().splitlines() if "[error" in line]
        assert len(errors) == 2  # when it stopped, and the end-of-run reminder; both name file and error
        assert all(f"{out}: cannot write: File too large" in line for line in errors)
        assert "Traceback" not in stderr.decode()
        before = journal(out)  # still valid JSONL: a torn last line is skipped by readers
        assert 0 < len(before) < 120
        done_before = {d["batch"] for d in before if d["final"]}

        proc = await asyncio.create_subprocess_exec(
            *args, "--resume", "--endpoint", box.url, env=cli_env(**DEMO_ENV), cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        _stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()

    delivered = box.ledger.recipients(GROUP, "hi")
    assert set(delivered) == set(ids)
    twice = {d["batch"] for d in journal(out) if d["final"] and any(delivered[u] > 1 for u in d["recipients"])}
    assert not twice & done_before  # nothing on record was sent again ...
    assert len(twice) <= CONCURRENCY  # ... only what was in flight at the stop
    for raw in out.read_bytes().splitlines():
        orjson.loads(raw)  # the torn line was cut off before the resume appended
