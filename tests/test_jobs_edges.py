"""Jobs at their edges: huge values quoted back, white space around UserIDs, a jobs file cut short
while a run reads it."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.observe.events import Event, JobAccepted
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Sandbox
from tests.conftest import journal, make_config, run_engine, write_jobs

GROUP = "@TGS#edges"
BASE = {"GroupId": GROUP, "Content": "hello"}
HUGE = "a" * 1_048_576  # a 1 MB value, as a broken export script or a template gone wrong makes one
HUGE_SHOWN = "'" + "a" * 64 + "'… (1,048,576 bytes)"


def rejection(tmp_path: Path, job: dict[str, Any]) -> Rejection:
    (item,) = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", [job]))], 500)
    assert isinstance(item, Rejection), item
    return item


@pytest.mark.parametrize(
    ("job", "field", "reason"),
    [
        (
            {**BASE, "ToMembers_Account": ["peter", HUGE]},
            "ToMembers_Account",
            f"item 1 ({HUGE_SHOWN}): UserID must be at most 32 bytes",
        ),
        (
            {"api": "batchsendmsg", "Text": "hi", "To_Account": [HUGE]},
            "To_Account",
            f"item 0 ({HUGE_SHOWN}): UserID must be at most 32 bytes",
        ),
        ({**BASE, "api": HUGE}, "api", f"unknown API {HUGE_SHOWN}; known: "),
    ],
)
def test_a_huge_value_is_quoted_back_cut_short_with_its_size(
    tmp_path: Path, job: dict[str, Any], field: str, reason: str
) -> None:
    rej = rejection(tmp_path, job)
    assert rej.field == field
    assert rej.reason.startswith(reason)
    assert len(rej.message) < 500


def test_a_huge_unknown_key_is_named_cut_short(tmp_path: Path) -> None:
    rej = rejection(tmp_path, {**BASE, "k" * 1_048_576: 1})
    assert rej.field == "k" * 64 + "… (1,048,576 bytes)"
    assert rej.message.startswith(f"{tmp_path / 'jobs.jsonl'}:1: field {'k' * 64}… (1,048,576 bytes): unknown key")


def test_a_huge_group_id_is_recorded_cut_short(tmp_path: Path) -> None:
    rej = rejection(tmp_path, {**BASE, "GroupId": "g" * 1_048_576})
    assert rej.group_id == "g" * 64 + "… (1,048,576 bytes)"
    assert rej.reason == "must be at most 48 bytes"


async def test_the_rejected_line_and_the_log_hold_no_huge_value(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "job_id": "big", "ToMembers_Account": [HUGE]}])
    out = tmp_path / "out.jsonl"
    summary = await run_engine(sandbox, jobs, out)
    assert (summary.rejected, summary.requests) == (1, 0)
    assert out.stat().st_size < 1000
    assert HUGE_SHOWN in out.read_text()
    logged = capsys.readouterr()
    assert "(1,048,576 bytes)" in logged.out + logged.err
    assert len(logged.out) + len(logged.err) < 2000


def test_a_huge_recipients_file_name_is_quoted_cut_short(tmp_path: Path) -> None:
    rej = rejection(tmp_path, {**BASE, "recipients_file": "r" * 1_048_576})
    assert rej.reason == "r" * 4096 + "… (1,048,576 bytes): cannot read: File name too long"


# The hashes of these jobs written without white space, as every version so far made them: padding
# that is trimmed away leaves a job's hash, and so its resume, as it was.
NOTIFICATION_HASH = "b490ea63a814a1c9cd9a04ab1fa6a267"
DM_HASH = "9c0aa8402a627091de1785c2d5528a1d"
PADDED = [" alice", "bob\t", "  carol  ", "alice"]


@pytest.mark.parametrize("where", ["inline", "export"])
async def test_white_space_around_a_userid_is_trimmed_inline_and_in_an_export_alike(
    sandbox: Sandbox, tmp_path: Path, where: str
) -> None:
    (tmp_path / "padded.txt").write_text("".join(f"{uid}\n" for uid in PADDED))
    notification: dict[str, Any] = {**BASE, "Content": "trimmed"}
    dm: dict[str, Any] = {"api": "batchsendmsg", "Text": "trimmed"}
    if where == "inline":
        notification["ToMembers_Account"], dm["To_Account"] = PADDED, PADDED
    else:
        notification["recipients_file"] = dm["recipients_file"] = "padded.txt"
    jobs = write_jobs(tmp_path / "jobs.jsonl", [notification, dm])
    assert [item.job_hash for item in read_jobs([str(jobs)], 500)] == [NOTIFICATION_HASH, DM_HASH]  # type: ignore[union-attr]
    out = tmp_path / "out.jsonl"
    summary = await run_engine(sandbox, jobs, out)
    assert (summary.ok, summary.rejected, summary.exit_code) == (2, 0, 0)
    assert [d["recipients"] for d in journal(out)] == [["alice", "bob", "carol"]] * 2
    assert sandbox.ledger.recipients(GROUP, "trimmed") == collections.Counter({"alice": 1, "bob": 1, "carol": 1})


@pytest.mark.parametrize(
    ("uid", "reason"),
    [
        ("   ", "item 0 ('   '): UserID must not be empty"),
        (" " + "x" * 32, f"item 0 (' {'x' * 32}'): UserID must be at most 32 bytes"),  # as an export's padded line
        ("  " + "é" * 16, f"item 0 ('  {'é' * 16}'): UserID must be at most 32 bytes"),
    ],
)
def test_white_space_is_judged_inline_as_in_an_export(tmp_path: Path, uid: str, reason: str) -> None:
    assert rejection(tmp_path, {**BASE, "ToMembers_Account": [uid]}).reason == reason


@pytest.mark.parametrize(
    ("ids", "reason"),
    [
        (["alice", "bob", 7], "item 2 (7): UserID must be a string"),
        (["alice", ""], "item 1 (''): UserID must not be empty"),
        (["alice", "x" * 33], f"item 1 ('{'x' * 33}'): UserID must be at most 32 bytes"),
        (["alice", "é" * 17], f"item 1 ('{'é' * 17}'): UserID must be at most 32 bytes"),
        (
            ["alice", "bo\x00b"],
            "item 1 ('bo\\x00b'): UserID must not contain control or invisible characters (a damaged export?)",
        ),
    ],
)
def test_one_bad_userid_among_good_ones_is_named_by_its_place(tmp_path: Path, ids: list[Any], reason: str) -> None:
    assert rejection(tmp_path, {**BASE, "ToMembers_Account": ids}).reason == reason


@pytest.mark.parametrize(
    ("ids", "kept"),
    [
        (["alice", "bob", "alice"], ("alice", "bob")),
        (["alice", " bob", "carol "], ("alice", "bob", "carol")),
        (["x" * 32, "日本"], ("x" * 32, "日本")),
        (["a b", "c"], ("a b", "c")),
    ],
)
def test_valid_userids_are_kept_once_in_order_and_trimmed(
    tmp_path: Path, ids: list[str], kept: tuple[str, ...]
) -> None:
    (job,) = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "ToMembers_Account": ids}]))], 500)
    assert not isinstance(job, Rejection), job
    assert job.recipients is not None and tuple(job.recipients) == kept


async def test_a_jobs_file_cut_short_while_it_is_read_is_one_warning_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [orjson.dumps({"job_id": f"j{i}", **BASE, "Content": f"{i:04d} " + "x" * 1000}) + b"\n" for i in range(600)]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(b"".join(lines))
    cut = len(b"".join(lines[:400]))  # on a line boundary: no job is torn, so none is rejected

    def clean_up(event: Event) -> None:
        # The reader has read a chunk of jobs (at most 256 and 64 KiB past them) and waits for the
        # next turn: the file is cut in place, 400 jobs in, as a job that rewrites it would.
        if isinstance(event, JobAccepted) and event.job_id == "j0":
            os.truncate(jobs, cut)

    async with Sandbox(rate=100_000) as box:  # 400 requests at once: the run's pace is not what is tested
        summary = await Engine(make_config(box, jobs, tmp_path / "out.jsonl"), subscribers=[clean_up]).run()
    assert (summary.jobs, summary.ok, summary.rejected, summary.pending) == (400, 400, 0, 0)
    assert summary.exit_code == 1  # 200 jobs were never read, and nothing of them is on record
    assert summary.to_dict()["jobs_cut_short"] == [str(jobs)]
    logged = capsys.readouterr().out
    (warning,) = [line for line in logged.splitlines() if "shorter" in line]
    assert "a jobs file became shorter while it was read" in warning
    assert (
        f"file={jobs}" in warning
        and f"read_bytes={cut}" in warning
        and f"bytes_at_open={len(b''.join(lines))}" in warning
    )


async def test_a_jobs_file_read_whole_is_not_warned_about(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"job_id": f"j{i}", **BASE} for i in range(3)])
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl")
    assert (summary.ok, summary.exit_code, summary.to_dict()["jobs_cut_short"]) == (3, 0, [])
