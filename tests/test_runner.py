"""The run assembled in the library: `Runner` does what `dispatcher send` does, with the same results."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import orjson

from dispatcher import RunConfig, Runner
from dispatcher.tim.config import DEMO_CREDENTIALS
from tests.conftest import DEMO_ENV, DISPATCHER, ROOT, cli_env, journal, users, write_jobs

JOBS = [
    {"job_id": "ok", "GroupId": "@TGS#runner", "Content": "hi", "ToMembers_Account": users(700)},
    {"job_id": "typo", "GroupId": "@TGS#runner", "Content": "hi", "ToMember_Account": ["u1"]},
]


async def test_the_runner_sends_as_send_does_exit_status_included(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", JOBS)
    config = RunConfig(jobs=(str(jobs),), out=tmp_path / "lib.jsonl", endpoint="", credentials=DEMO_CREDENTIALS)
    summary = await Runner(config, sandbox=True, handle_signals=False).run()
    cli = await asyncio.to_thread(
        subprocess.run,
        DISPATCHER(
            "send",
            str(jobs),
            "--sandbox",
            "--out",
            str(tmp_path / "cli.jsonl"),
            "--no-progress",
            "--summary-json",
            str(tmp_path / "cli.json"),
        ),
        env=cli_env(**DEMO_ENV),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    from_cli = orjson.loads((tmp_path / "cli.json").read_bytes())
    ours = summary.to_dict()
    assert (summary.exit_code, cli.returncode) == (1, 1)  # a job rejected
    for key in ("jobs", "rejected", "batches", "ok", "failed", "pending", "requests", "recipients", "error_codes"):
        assert ours[key] == from_cli[key], key
    assert (ours["ok"], ours["rejected"], ours["recipients"]) == (2, 1, 700)
    statuses = [(line["job_id"], line["status"]) for line in journal(tmp_path / "lib.jsonl")]
    assert sorted(statuses) == [("ok", "ok"), ("ok", "ok"), ("typo", "rejected")]


async def test_a_runner_refused_for_a_journal_in_use_raises_the_same_error(tmp_path: Path) -> None:
    import pytest

    from dispatcher import JournalLockedError
    from dispatcher.journal.outcomes import open_journal

    jobs = write_jobs(tmp_path / "jobs.jsonl", JOBS[:1])
    config = RunConfig(jobs=(str(jobs),), out=tmp_path / "out.jsonl", endpoint="", credentials=DEMO_CREDENTIALS)
    held = open_journal(tmp_path / "out.jsonl", resume=False)
    try:
        with pytest.raises(JournalLockedError):
            await Runner(config, sandbox=True, handle_signals=False).run()
    finally:
        held.close()


async def test_a_runner_run_a_second_time_still_answers_stop(tmp_path: Path) -> None:
    from dispatcher.observe.events import Event, ReplyRecorded

    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"job_id": f"j{i}", "GroupId": "@TGS#again", "Content": "hi", "ToMembers_Account": ["u1"]} for i in range(60)],
    )
    config = RunConfig(
        jobs=(str(jobs),), out=tmp_path / "first.jsonl", endpoint="", credentials=DEMO_CREDENTIALS, concurrency=1
    )
    second = False
    runner: Runner

    def stop_on_first_reply(event: Event) -> None:
        if second and isinstance(event, ReplyRecorded):
            runner.stop()

    runner = Runner(config, sandbox=True, handle_signals=False, subscribers=[stop_on_first_reply])
    assert (await runner.run()).exit_code == 0
    second = True
    runner.config = RunConfig(
        jobs=(str(jobs),), out=tmp_path / "second.jsonl", endpoint="", credentials=DEMO_CREDENTIALS, concurrency=1
    )
    summary = await runner.run()
    assert (summary.exit_code, summary.interrupted) == (130, True)
    assert summary.ok < 60


async def test_a_budget_opened_after_the_budgets_closed_is_closed_at_once() -> None:
    """An opening given up by a signal may still go through once the run has closed its budgets:
    that budget is closed at once, never left open in a closed stack."""
    import pytest

    from dispatcher import Budgets
    from dispatcher.tim.apis import REGISTRY

    budgets = Budgets(rate=200, sdkappid=1400000000, message_quota=12_000)
    await budgets.get(REGISTRY["send_group_system_notification"])
    await budgets.aclose()
    with pytest.raises(asyncio.CancelledError):
        await budgets.get(REGISTRY["batchsendmsg"])
    assert budgets.paths() == []
