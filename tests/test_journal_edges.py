"""Journals met at their edges: lines edited by hand or written by a newer version, blank lines, and a
journal deleted while its run writes it."""

from __future__ import annotations

from pathlib import Path

from dispatcher.report import summarise
from dispatcher.sandbox import Sandbox
from tests.conftest import journal, run_engine, write_jobs

GROUP = "@TGS#edges"


def numbered_jobs(path: Path, count: int) -> Path:
    return write_jobs(path, [{"job_id": f"j{i}", "GroupId": GROUP, "Content": "x"} for i in range(count)])


async def test_blank_lines_in_a_journal_are_skipped_by_the_resume_and_the_report(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    jobs = numbered_jobs(tmp_path / "jobs.jsonl", 3)
    out = tmp_path / "out.jsonl"
    await run_engine(sandbox, jobs, out)
    first, second, third = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"\n" + first + b"   \n\t\r\n" + second + b"\n" + third + b"\n")  # as an editor leaves it
    assert summarise(out)["ok"] == 3
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.requests, summary.skipped, summary.exit_code) == (0, 3, 0)
    assert [d["job_id"] for d in journal(out)] == ["j0", "j1", "j2"]

    with out.open("ab") as handle:
        handle.write(b"  ")  # a blank last line without its newline
    numbered_jobs(jobs, 4)
    summary = await run_engine(sandbox, jobs, out, resume=True)
    assert (summary.requests, summary.skipped, summary.exit_code) == (1, 3, 0)
    assert [d["job_id"] for d in journal(out)] == ["j0", "j1", "j2", "j3"]
    assert summarise(out)["ok"] == 4
