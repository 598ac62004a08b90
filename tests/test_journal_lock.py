"""One run owns its journal: a second `send` on a journal in use refuses before sending anything."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
from pathlib import Path

import pytest

from dispatcher.errors import JournalLockedError
from dispatcher.journal.outcomes import Journal
from dispatcher.sandbox import Faults, Sandbox
from tests.conftest import (
    DEMO_ENV,
    DISPATCHER,
    ROOT,
    cli_env,
    finish,
    journal,
    start_send,
    users,
    wait_for_lines,
    write_jobs,
)

GROUP = "@TGS#lock"


def jobs_of(tmp_path: Path, recipients: int = 200) -> tuple[Path, list[str]]:
    ids = users(recipients)
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"job_id": "a", "GroupId": GROUP, "Content": "hi", "ToMembers_Account": ids}]
    )
    return jobs, ids


def test_a_second_journal_in_this_process_is_refused_with_our_pid(tmp_path: Path) -> None:
    first = Journal(tmp_path / "out.jsonl")
    try:
        with pytest.raises(JournalLockedError, match=rf"out.jsonl is in use by another run \(pid {os.getpid()}\)"):
            Journal(tmp_path / "out.jsonl")
    finally:
        first.close()
    Journal(tmp_path / "out.jsonl").close()  # closing released it


@pytest.mark.parametrize("second_args", [("--resume",), ()])
async def test_second_run_on_a_journal_in_use_refuses_and_sends_nothing(
    tmp_path: Path, second_args: tuple[str, ...]
) -> None:
    jobs, ids = jobs_of(tmp_path)
    out = tmp_path / "out.jsonl"
    async with Sandbox(faults=Faults(latency=0.05)) as box:
        box.hold_replies(3)  # the first run cannot end before the second has tried
        first = await start_send(jobs, out, box.url)
        await wait_for_lines(out, 3, first)
        assert first.returncode is None, "the first run finished too early to overlap"

        second = await start_send(jobs, out, box.url, *second_args)
        code, stderr = await finish(second)
        assert code == 2
        (line,) = stderr.splitlines()  # one line, naming the journal and the pid that holds it
        assert f"{out} is in use by another run (pid {first.pid})" in line

        box.release_replies()
        code, stderr = await finish(first)
        assert code == 0, stderr
        # Everyone exactly once: the second run sent nothing.
        assert box.ledger.recipients(GROUP, "hi") == collections.Counter(dict.fromkeys(ids, 1))


async def test_the_lock_dies_with_a_killed_run(tmp_path: Path) -> None:
    jobs, ids = jobs_of(tmp_path)
    out = tmp_path / "out.jsonl"
    async with Sandbox(faults=Faults(latency=0.05)) as box:
        box.hold_replies(3)  # the first run is still under way when it is killed
        first = await start_send(jobs, out, box.url)
        await wait_for_lines(out, 3, first)
        first.kill()
        await finish(first)
        box.release_replies()
        code, stderr = await finish(await start_send(jobs, out, box.url, "--resume"))
        assert code == 0, stderr  # nothing to clean up by hand
        assert set(box.ledger.recipients(GROUP, "hi")) == set(ids)


async def test_report_and_dry_run_read_a_journal_in_use(tmp_path: Path) -> None:
    jobs, _ids = jobs_of(tmp_path)
    out = tmp_path / "out.jsonl"
    async with Sandbox(faults=Faults(latency=0.05)) as box:
        box.hold_replies(3)  # the first run is still under way while they read its journal
        first = await start_send(jobs, out, box.url)
        await wait_for_lines(out, 3, first)
        for args in (
            ("report", str(out), "--json"),
            ("send", str(jobs), "--out", str(out), "--batch-size", "5", "--dry-run", "--resume"),
        ):
            result = await asyncio.to_thread(
                subprocess.run, DISPATCHER(*args), env=cli_env(**DEMO_ENV), cwd=ROOT, capture_output=True, timeout=60
            )
            assert result.returncode == 0, result.stderr
        assert first.returncode is None  # they did not wait for it
        box.release_replies()
        assert (await finish(first))[0] == 0
    assert all(line["status"] == "ok" for line in journal(out))
