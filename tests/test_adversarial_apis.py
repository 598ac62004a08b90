"""An adversarial pass over the successor APIs: what an operator's mistakes and odd servers do to
the three promises (never twice, never skipped, never over the rate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dispatcher.jobs import Rejection, read_jobs
from dispatcher.sandbox import ALL_MEMBERS, Sandbox
from tests.conftest import journal, run_engine, write_jobs

GROUP = "@TGS#2C5SZEAEF"
HELLO_KEY = '[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]'  # as the sandbox's ledger keys it


def rejections(tmp_path: Path, *docs: dict[str, Any]) -> list[tuple[str | None, str]]:
    jobs = write_jobs(tmp_path / "jobs.jsonl", docs)
    items = list(read_jobs([str(jobs)], 500))
    assert all(isinstance(item, Rejection) for item in items), items
    return [(item.field, item.reason) for item in items if isinstance(item, Rejection)]


async def test_group_message_in_flight_at_a_crash_resumed_with_another_batch_size_is_not_sent_twice(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # --batch-size means nothing to a group message (one job, one request), so it must not change
    # the job's Random: a resume that sends it again is then dropped by the server.
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"job_id": "m", "api": "send_group_msg", "GroupId": GROUP, "Text": "hello"}]
    )
    out = tmp_path / "out.jsonl"
    assert (await run_engine(sandbox, jobs, out)).exit_code == 0
    out.write_bytes(b"")  # killed (-9) after the request left, before its reply was on record
    summary = await run_engine(sandbox, jobs, out, resume=True, batch_size=100)
    assert (summary.exit_code, summary.ok, summary.rejected) == (0, 1, 0)
    assert sandbox.ledger.times(ALL_MEMBERS, GROUP, HELLO_KEY) == 1
    assert sandbox.stats["duplicates_dropped"] == 1
    assert [d["status"] for d in journal(out)] == ["ok"]


def test_recipients_in_a_group_message_job_are_refused_without_a_hint_to_the_sender_field(tmp_path: Path) -> None:
    # A group message reaches every member; "did you mean From_Account?" for To_Account would lead
    # the operator to a whole-group message from the account meant to receive it.
    reason = (
        "send_group_msg sends one message to every member of the group and takes no recipients; "
        'to send to named accounts, use "api": "batchsendmsg"'
    )
    base = {"api": "send_group_msg", "GroupId": GROUP, "Text": "hello"}
    assert rejections(
        tmp_path,
        {**base, "To_Account": ["peter"]},
        {**base, "ToMembers_Account": ["peter"]},
        {**base, "recipients_file": "ids.txt"},
    ) == [("To_Account", reason), ("ToMembers_Account", reason), ("recipients_file", reason)]
