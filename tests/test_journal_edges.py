"""Journals met at their edges: lines edited by hand or written by a newer version, blank lines, and a
journal deleted while its run writes it."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from dispatcher.errors import JournalError
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


def outcome(job_id: str, batch: int, batches: int, status: str) -> bytes:
    doc = {
        "job_id": job_id,
        "batch": batch,
        "batches": batches,
        "attempt": 1,
        "status": status,
        "final": True,
        "group_id": GROUP,
        "recipients": None,
        "error_code": 0,
        "error_info": "",
        "http_status": 200,
        "latency_ms": 1.0,
        "at": "2026-11-25T20:14:50.268Z",
        "job_hash": "2a9d0b2b7ba0e4e4d0a6f1c6b1e0c9a1",
    }
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (outcome("j1", 0, 1, "sent"), "unknown status 'sent'"),  # a newer version's, or a hand edit
        (outcome("j1", 0, 1, "OK"), "unknown status 'OK'"),
        (outcome("j1", 1, 1, "ok"), "batch 1 of 1"),  # the report said ok while a resume sent batch 0
        (outcome("j1", 5, 2, "ok"), "batch 5 of 2"),
        (outcome("j1", -1, 1, "ok"), "batch -1"),
    ],
)
async def test_an_unknown_status_or_a_batch_outside_batches_is_damage(
    sandbox: Sandbox, tmp_path: Path, bad: bytes, why: str
) -> None:
    jobs = numbered_jobs(tmp_path / "jobs.jsonl", 2)
    out = tmp_path / "out.jsonl"
    out.write_bytes(outcome("j0", 0, 1, "ok") + b"\n" + bad + b"\n")
    message = f"{out}:2: not an outcome line; the journal is damaged"
    with pytest.raises(JournalError, match=re.escape(message)) as refused:
        await run_engine(sandbox, jobs, out, resume=True)
    assert why in str(refused.value)
    assert sandbox.stats["requests"] == 0
    with pytest.raises(JournalError) as report_refused:
        summarise(out)
    assert str(report_refused.value) == str(refused.value)


async def test_a_whole_last_line_with_an_unknown_status_is_damage_not_a_torn_line(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    jobs = numbered_jobs(tmp_path / "jobs.jsonl", 2)
    out = tmp_path / "out.jsonl"
    written = outcome("j0", 0, 1, "ok") + b"\n" + outcome("j1", 0, 1, "delivered")  # its newline lost
    out.write_bytes(written)
    with pytest.raises(JournalError, match=re.escape(f"{out}:2: not an outcome line; the journal is damaged")):
        await run_engine(sandbox, jobs, out, resume=True)
    assert out.read_bytes() == written  # not cut off as if a write had been torn
    assert sandbox.stats["requests"] == 0
