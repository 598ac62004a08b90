"""`dispatcher report` over several journals: one run split over machines merges; a job_id reused by
other jobs (a cron job's fixed "daily") never stands for them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.observe.report import render_text, summarise, undelivered
from dispatcher.sandbox import Group, Sandbox
from tests.conftest import run_engine, write_jobs

MONDAY = {"job_id": "daily", "GroupId": "@TGS#monday", "Content": "Monday's digest", "ToMembers_Account": ["p", "q"]}
TUESDAY = {"job_id": "daily", "GroupId": "@TGS#gone", "Content": "Tuesday's digest", "ToMembers_Account": ["p", "r"]}
MONDAY_HASH = "53a491c40c7bc5bab7e930518feb2db6"
TUESDAY_HASH = "fb3530fac90eeeff30aa3e52374e3724"


async def two_days(tmp_path: Path, tuesday: dict[str, Any]) -> tuple[Path, Path]:
    """Monday's and Tuesday's runs of the cron job, each with its own journal; Tuesday's group does not exist."""
    async with Sandbox(groups={"@TGS#monday": Group("Public")}) as box:
        mon, tue = tmp_path / "mon.out.jsonl", tmp_path / "tue.out.jsonl"
        await run_engine(box, write_jobs(tmp_path / "mon.jsonl", [MONDAY]), mon)
        await run_engine(box, write_jobs(tmp_path / "tue.jsonl", [tuesday]), tue)
    return mon, tue


@pytest.mark.parametrize("tuesday_first", [True, False])
async def test_a_reused_job_id_keeps_both_fates_apart(tmp_path: Path, tuesday_first: bool) -> None:
    mon, tue = await two_days(tmp_path, TUESDAY)
    journals = (str(tue), str(mon)) if tuesday_first else (str(mon), str(tue))
    report = summarise(*journals)
    assert {k: report[k] for k in ("batches", "ok", "failed", "rejected", "pending")} == {
        "batches": 2,
        "ok": 1,
        "failed": 1,
        "rejected": 0,
        "pending": 0,
    }
    monday = {
        "job_id": "daily",
        "group_id": "@TGS#monday",
        "fate": "ok",
        "batches": 1,
        "ok": 1,
        "failed": 0,
        "pending": 0,
        "job_hash": MONDAY_HASH,
        "journal": str(mon),
    }
    tuesday = {
        "job_id": "daily",
        "group_id": "@TGS#gone",
        "fate": "failed",
        "batches": 1,
        "ok": 0,
        "failed": 1,
        "pending": 0,
        "job_hash": TUESDAY_HASH,
        "journal": str(tue),
        "not_notified_by_reason": [
            {
                "error_code": "10010",
                "meaning": "the group does not exist, or was disbanded",
                "recipients": 2,
                "batches": 1,
                "all_members_batches": 0,
            }
        ],
    }
    assert report["jobs"] == ([tuesday, monday] if tuesday_first else [monday, tuesday])
    assert report["not_notified"] == [
        {
            "job_id": "daily",
            "group_id": "@TGS#gone",
            "batch": 0,
            "status": "failed",
            "recipients": ["p", "r"],
            "error_code": "10010",
            "meaning": "the group does not exist, or was disbanded",
            "job_hash": TUESDAY_HASH,
            "journal": str(tue),
        }
    ]
    text = render_text(report, *journals)
    assert (
        f"  daily  failed  group @TGS#gone  batches 1 (ok 0, failed 1, pending 0)  [{tue}, job_hash {TUESDAY_HASH}]"
        in text
    )
    assert (
        f"  daily  ok  group @TGS#monday  batches 1 (ok 1, failed 0, pending 0)  [{mon}, job_hash {MONDAY_HASH}]"
        in text
    )
    assert (
        f"  daily batch 0 (failed) group @TGS#gone: 2 recipients: p, r (10010: the group does not exist, or was "
        f"disbanded)  [{tue}, job_hash {TUESDAY_HASH}]" in text
    )
    assert "    not notified: 10010 (the group does not exist, or was disbanded): 2 recipients in 1 batch" in text


@pytest.mark.parametrize("tuesday_first", [True, False])
async def test_a_reused_job_id_rejected_on_one_day_is_not_hidden_by_the_other(
    tmp_path: Path, tuesday_first: bool
) -> None:
    mon, tue = await two_days(tmp_path, {**TUESDAY, "ToMembers_Account": []})  # rejected: nothing sent
    journals = (str(tue), str(mon)) if tuesday_first else (str(mon), str(tue))
    report = summarise(*journals)
    assert {k: report[k] for k in ("batches", "ok", "failed", "rejected", "pending")} == {
        "batches": 1,
        "ok": 1,
        "failed": 0,
        "rejected": 1,
        "pending": 0,
    }
    assert sorted((j["journal"], j["job_hash"], j["fate"]) for j in report["jobs"]) == [
        (str(mon), MONDAY_HASH, "ok"),
        (str(tue), None, "rejected"),
    ]
    text = render_text(report, *journals)
    assert f"reason: {tmp_path / 'tue.jsonl'}:1: field ToMembers_Account: is empty" in text
    assert f"[{tue}, job_hash none: never sent]" in text


async def test_one_job_split_over_two_journals_is_one_run(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**MONDAY, "ToMembers_Account": ["p", "q", "r"]}])
    whole = tmp_path / "whole.jsonl"
    await run_engine(sandbox, jobs, whole, batch_size=1)
    lines = whole.read_bytes().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"".join(lines[:2]))
    second.write_bytes(b"".join(lines[2:]))
    report = summarise(first, second)
    assert (report["batches"], report["ok"]) == (3, 3)
    assert report["jobs"] == [
        {"job_id": "daily", "group_id": "@TGS#monday", "fate": "ok", "batches": 3, "ok": 3, "failed": 0, "pending": 0}
    ]


async def test_a_job_rejected_then_fixed_and_resumed_is_one_job(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**MONDAY, "ToMembers_Account": []}])
    await run_engine(sandbox, jobs, out)
    write_jobs(jobs, [MONDAY])
    await run_engine(sandbox, jobs, out, resume=True)
    # Its rejection carries no job_hash, its lines since do: one job, whose latest line says ok.
    for journals in ((out,), (out, tmp_path / "empty.jsonl")):
        (tmp_path / "empty.jsonl").touch()
        report = summarise(*journals)
        assert (report["ok"], report["rejected"]) == (1, 0)
        assert [(j["job_id"], j["fate"], "job_hash" in j) for j in report["jobs"]] == [("daily", "ok", False)]


def test_lines_without_a_job_hash_before_the_hashed_ones_fold_into_that_job(tmp_path: Path) -> None:
    """Written by hand, or by a tool of the user's: lines without a job_hash are their journal's job."""
    hashed = (
        b'{"job_id": "a", "batch": 1, "batches": 2, "attempt": 1, "status": "ok", "final": true, "group_id": "@TGS#a",'
        b' "recipients": ["q"], "error_code": 0, "error_info": "", "job_hash": "h1"}\n'
    )
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_bytes(
        hashed.replace(b'"batch": 1', b'"batch": 0').replace(b'"ok", "final": true', b'"failed", "final": true')
    )
    later = tmp_path / "later.jsonl"
    later.write_bytes(hashed.replace(b', "job_hash": "h1"', b"").replace(b'"batch": 1', b'"batch": 0') + hashed)
    report = summarise(earlier, later)
    # Batch 0 failed in the earlier journal and was sent ok in the later one: one job, all ok.
    assert (report["batches"], report["ok"], report["failed"], report["not_notified"]) == (2, 2, 0, [])
    assert [(j["job_id"], j["fate"], j["ok"]) for j in report["jobs"]] == [("a", "ok", 2)]


def failed_run(path: Path, batches: int, per_batch: int) -> Path:
    """A journal of a run whose every batch failed (the group was gone), written in reverse batch order."""
    with path.open("wb") as out:
        for batch in reversed(range(batches)):
            doc = {
                "job_id": "spring",
                "batch": batch,
                "batches": batches,
                "attempt": 1,
                "status": "failed",
                "final": True,
                "group_id": "@TGS#gone",
                "recipients": [f"u{batch}-{i}" for i in range(per_batch)],
                "error_code": 10010,
                "error_info": "group id invalid",
                "job_hash": "h",
            }
            out.write(orjson.dumps(doc) + b"\n")
    return path


def test_a_run_of_many_failed_batches_reports_its_total_and_why_then_a_few_batches_sorted(tmp_path: Path) -> None:
    journal_path = failed_run(tmp_path / "out.jsonl", batches=479, per_batch=500)
    report = summarise(journal_path)
    assert report["recipients_not_notified"] == 239_500
    assert [m["batch"] for m in report["not_notified"][:3]] == [0, 1, 2]
    text = render_text(report, str(journal_path))
    assert "not notified: 239,500 named recipients, by reason:" in text
    assert "  10010 (the group does not exist, or was disbanded): 239,500 recipients in 479 batches" in text
    listed = [line for line in text.splitlines() if line.startswith("  spring batch ")]
    assert [line.split()[2] for line in listed] == [str(n) for n in range(10)]
    assert text.endswith(
        "469 more batches not listed here; `--undelivered FILE` writes every recipient not notified, with the reason"
    )


def test_undelivered_writes_every_recipient_with_the_reason_as_csv(tmp_path: Path) -> None:
    journal_path = failed_run(tmp_path / "out.jsonl", batches=3, per_batch=2)
    out = io.StringIO()
    assert undelivered(out, journal_path) == 6
    assert out.getvalue().splitlines() == [
        "job_id,user_id,error_code,meaning",
        'spring,u2-0,10010,"the group does not exist, or was disbanded"',
        'spring,u2-1,10010,"the group does not exist, or was disbanded"',
        'spring,u1-0,10010,"the group does not exist, or was disbanded"',
        'spring,u1-1,10010,"the group does not exist, or was disbanded"',
        'spring,u0-0,10010,"the group does not exist, or was disbanded"',
        'spring,u0-1,10010,"the group does not exist, or was disbanded"',
    ]
