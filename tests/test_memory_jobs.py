"""Jobs held in memory, from Python: `Runner(config, jobs=...)` checks, sends and journals them as it does
a jobs file's lines, names each by its index, resumes them, and a library caller's errors name
RunConfig's fields where the command line names flags."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import DEMO_CREDENTIALS, JournalError, ReplyRecorded, RunConfig, Runner, Sandbox, UsageError
from dispatcher.core.job import Job
from dispatcher.jobs.memory import MemoryJobs
from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.testing import run_config
from tests.conftest import DEMO_ENV, DISPATCHER, PostgresServer, cli_env, journal, make_config, write_jobs

NOTICE = {"GroupId": "@TGS#mem", "Content": "hi"}


def ids(n: int, prefix: str = "u") -> Iterator[str]:
    """UserIDs one at a time, as a query of millions would give them."""
    return (f"{prefix}{i}" for i in range(n))


def test_a_job_from_python_is_the_same_job_as_its_line_in_a_file(tmp_path: Path) -> None:
    """A dict, the same dict with its recipients in a generator, and its line in a file are one job: the
    same job_id and hash (so a run of one resumes with another), the same recipients, each once."""
    jobs: list[dict[str, Any]] = [
        {**NOTICE, "ToMembers_Account": ["b", "a", "b", " c"]},
        {"api": "batchsendmsg", "Text": "yo", "To_Account": ["u1", "u2", "u1"]},
        {"GroupId": "@TGS#mem", "Content": "to all"},
        {**NOTICE, "ToMembers_Account": ['q"uote', "é", "back\\slash"]},
    ]
    streamed = [
        {key: iter(value) if key in ("ToMembers_Account", "To_Account") else value for key, value in job.items()}
        for job in jobs
    ]
    from_file = list(read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", jobs))], 500))
    from_dicts = list(MemoryJobs(jobs).read(500))
    from_streams = list(MemoryJobs(streamed).read(500))
    seen = [
        [(j.job_id, j.job_hash, list(j.recipients or ()), j.recipient_count, j.duplicates) for j in items]  # type: ignore[union-attr]
        for items in (from_file, from_dicts, from_streams)
    ]
    assert seen[0] == seen[1] == seen[2]
    assert [row[2] for row in seen[2]] == [["b", "a", "c"], ["u1", "u2"], [], ['q"uote', "é", "back\\slash"]]
    assert [row[4] for row in seen[2]] == [1, 1, 0, 0]
    assert [job.source for job in from_streams] == ["jobs[0]", "jobs[1]", "jobs[2]", "jobs[3]"]


def cursor_lost() -> Iterator[str]:
    """A query's rows that stop part of the way: its job is rejected whole, nothing of it sent."""
    yield from ids(70_000)
    raise ConnectionError("cursor lost")


def test_a_bad_job_from_python_is_rejected_alone_naming_its_index() -> None:
    jobs: list[object] = [
        {"GroupId": 3, "Content": "x"},
        "jobs.jsonl",
        {**NOTICE, "ToMembers_Account": iter(["ok", "", "z"])},
        {**NOTICE, "ToMembers_Account": {"a", "b"}},
        {**NOTICE, "ToMembers_Account": iter([])},
        {**NOTICE, "Content": iter("x")},
        {**NOTICE, "ToMember_Account": ["a"]},
        {**NOTICE, "job_id": "twice"},
        {**NOTICE, "job_id": "twice", "Content": "again"},
        {**NOTICE, "Content": b"hi"},
        {**NOTICE, "ToMembers_Account": ["fine"]},
        {**NOTICE, "ToMembers_Account": cursor_lost()},
    ]
    items = list(MemoryJobs(jobs).read(500))
    assert [item.message for item in items if isinstance(item, Rejection)] == [
        "jobs[0]: field GroupId: must be a string, not int",
        "jobs[1]: a job must be a dict (one JSON object) or a job value, not str",
        "jobs[2]: field ToMembers_Account: item 1 (''): UserID must not be empty",
        "jobs[3]: field ToMembers_Account: is a set, which has no order: give a list or a generator, in the same "
        "order on a resume",
        "jobs[4]: field ToMembers_Account: is empty; leave the field out to notify all members",
        "jobs[5]: field Content: must be a JSON value, not an iterable (only ToMembers_Account may be one)",
        "jobs[6]: field ToMember_Account: unknown key (did you mean ToMembers_Account?); known keys: GroupId, "
        "Content, ToMembers_Account, recipients_file, recipients_column, recipients_format, exclude_file, "
        "exclude_column, exclude_format, recipients_query, recipients_database, exclude_query, exclude_database, "
        "TopicId, job_id, group_type",
        "jobs[8]: field job_id: repeats the job_id of jobs[7]",
        "jobs[9]: field Content: is not a JSON value (Type is not JSON serializable: bytes)",
        "jobs[11]: field ToMembers_Account: raised ConnectionError after 65,536 UserIDs: cursor lost",
    ]
    assert [item.job_id for item in items if isinstance(item, Rejection)][:2] == ["jobs[0]", "jobs[1]"]


async def test_jobs_held_in_memory_are_sent_journaled_and_resumed_each_recipient_once(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A run stopped after its first reply, then resumed with the same jobs (new generators) and again from
    a file: every recipient gets the notification once, and the rejection names the job by its index."""

    def jobs() -> list[dict[str, Any]]:
        return [
            {**NOTICE, "ToMembers_Account": ids(1_200)},
            {"GroupId": 3, "Content": "x"},
            {"api": "batchsendmsg", "Text": "yo", "To_Account": ids(3, "d")},
        ]

    out = tmp_path / "out.jsonl"
    runner: Runner

    def stop_at_first_reply(event: object) -> None:
        if isinstance(event, ReplyRecorded):
            runner.stop()

    runner = Runner(
        run_config(sandbox, [], out, rate=10_000, concurrency=1),
        jobs=jobs(),
        handle_signals=False,
        subscribers=[stop_at_first_reply],
    )
    first = await runner.run()
    assert (first.interrupted, first.ok) == (True, 1)
    resumed = await Runner(
        run_config(sandbox, [], out, rate=10_000, resume=True), jobs=jobs(), handle_signals=False
    ).run()
    assert (resumed.exit_code, resumed.ok, resumed.skipped, resumed.rejected) == (1, 3, 1, 1)
    received = sandbox.ledger.recipients("@TGS#mem")
    assert (len(received), set(received.values())) == (1_200, {1})
    assert sandbox.stats["requests"] == 4
    listed = [
        {**NOTICE, "ToMembers_Account": list(ids(1_200))},
        {"api": "batchsendmsg", "Text": "yo", "To_Account": ["d0", "d1", "d2"]},
    ]
    again = make_config(sandbox, write_jobs(tmp_path / "jobs.jsonl", listed), out, resume=True)
    from_file = await Runner(again, handle_signals=False).run()
    assert (from_file.exit_code, from_file.skipped, sandbox.stats["requests"]) == (0, 4, 4)
    rejected = [line for line in journal(out) if line["status"] == "rejected"]
    assert [(line["job_id"], line["source"], line["field"], line["error_info"]) for line in rejected] == [
        ("jobs[1]", "jobs[1]", "GroupId", "jobs[1]: field GroupId: must be a string, not int")
    ] * 2


def test_jobs_in_memory_are_an_iterable_of_jobs_not_a_file_name_nor_one_job(tmp_path: Path) -> None:
    config = RunConfig(jobs=(), out=tmp_path / "out.jsonl", endpoint="", credentials=DEMO_CREDENTIALS)
    with pytest.raises(UsageError) as named:
        Runner(config, jobs="jobs.jsonl")  # type: ignore[arg-type]
    assert str(named.value) == (
        "Runner(jobs=...) takes jobs held in memory, not a file name: name jobs files in RunConfig(jobs=(...))"
    )
    with pytest.raises(UsageError) as one:
        Runner(config, jobs=NOTICE)  # type: ignore[arg-type]
    assert str(one.value) == "Runner(jobs=...) takes an iterable of jobs, not one job: give jobs=[job]"
    with_files = RunConfig(jobs=("jobs.jsonl",), out=tmp_path / "out.jsonl", endpoint="", credentials=DEMO_CREDENTIALS)
    with pytest.raises(UsageError) as both:
        Runner(with_files, jobs=[NOTICE])
    assert str(both.value) == (
        "give the jobs as files (RunConfig(jobs=...)) or held in memory (Runner(jobs=...)), not both: "
        "set RunConfig(jobs=())"
    )


def test_a_library_callers_errors_name_runconfig_fields_and_the_command_lines_name_flags(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(UsageError) as refused:
        RunConfig(jobs=(), out=out, endpoint="", credentials=DEMO_CREDENTIALS, retry_failed=True)
    assert str(refused.value) == (
        "RunConfig(retry_failed=True) needs RunConfig(resume=True) (it re-drives the failed batches of a journal)"
    )
    with pytest.raises(UsageError) as lease:
        RunConfig(jobs=(), out=out, endpoint="", credentials=DEMO_CREDENTIALS, lease=0)
    assert str(lease.value) == "RunConfig.lease must be more than 0 seconds"
    with pytest.raises(UsageError) as store:
        Runner(RunConfig(jobs=(), out=out, endpoint="", credentials=DEMO_CREDENTIALS), store="ftp://host")
    assert str(store.value) == "store ftp://host: use memory://, redis://, rediss://, unix:///path or postgresql://"


async def test_a_journal_that_is_not_empty_is_refused_in_each_ones_words(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"job_id":"x"}\n')
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**NOTICE, "ToMembers_Account": ["a"]}])
    config = RunConfig(jobs=(str(jobs),), out=out, endpoint="", credentials=DEMO_CREDENTIALS)
    with pytest.raises(JournalError) as refused:
        await Runner(config, sandbox=True, handle_signals=False).run()
    assert str(refused.value) == (
        f"{out} exists and is not empty; set RunConfig(resume=True) to continue it, or choose another RunConfig.out"
    )
    sent = await asyncio.to_thread(
        subprocess.run,
        DISPATCHER("send", str(jobs), "--sandbox", "--out", str(out), "--no-progress"),
        env=cli_env(**DEMO_ENV),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (sent.returncode, sent.stderr) == (
        2,
        f"dispatcher: error: {out} exists and is not empty; pass --resume to continue it, or choose another --out\n",
    )


def test_job_values_are_the_jobs_their_dicts_are(tmp_path: Path) -> None:
    """A Notification, DirectMessage or GroupMessage is the dict of a jobs file's line, named in Python."""
    from dispatcher import DirectMessage, GroupMessage, Notification

    values = [
        Notification("@TGS#mem", "hi", to=iter(["a", "b"]), job_id="n"),
        Notification("@TGS#mem", "to all"),
        DirectMessage(["u1"], text="yo", sender="admin", fields={"SyncOtherMachine": 2}),
        GroupMessage("@TGS#mem", text="hello", fields={"MsgPriority": "High"}),
        DirectMessage(["u1"], text="yo", fields={"To_Account": ["u2"]}),
    ]
    dicts: list[dict[str, Any]] = [
        {"job_id": "n", "GroupId": "@TGS#mem", "Content": "hi", "ToMembers_Account": ["a", "b"]},
        {"GroupId": "@TGS#mem", "Content": "to all"},
        {"api": "batchsendmsg", "To_Account": ["u1"], "Text": "yo", "From_Account": "admin", "SyncOtherMachine": 2},
        {"api": "send_group_msg", "GroupId": "@TGS#mem", "Text": "hello", "MsgPriority": "High"},
    ]
    from_values = list(MemoryJobs(values).read(500))
    from_file = list(read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", dicts))], 500))
    jobs = [j for j in from_values if isinstance(j, Job)]
    assert [(j.job_id, j.job_hash) for j in jobs] == [(j.job_id, j.job_hash) for j in from_file if isinstance(j, Job)]
    assert [list(j.recipients or ()) for j in jobs] == [["a", "b"], [], ["u1"], []]
    assert isinstance(from_values[4], Rejection)
    assert from_values[4].message == "jobs[4]: fields repeats To_Account; give each once"


def test_a_metrics_port_in_use_names_the_option_a_library_caller_set() -> None:
    import socket

    from dispatcher import Exporter, MetricsOptions, OutputError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OutputError) as refused:
            Exporter(MetricsOptions(port=port), started=0.0).serve()
    assert str(refused.value) == f"MetricsOptions(port={port}): cannot listen on 127.0.0.1: Address already in use"
    assert refused.value.for_cli == f"--metrics-port {port}: cannot listen on 127.0.0.1: Address already in use"


async def test_jobs_held_in_memory_go_into_a_run_in_postgresql_and_resume_there(
    sandbox: Sandbox, postgres_server: PostgresServer
) -> None:
    from dispatcher.journal.uri import parse_journal_uri

    def jobs() -> list[dict[str, Any]]:
        return [{**NOTICE, "ToMembers_Account": ids(700)}, {**NOTICE, "GroupId": None}]

    uri = parse_journal_uri(postgres_server.journal("memory"))
    config = dataclasses.replace(run_config(sandbox, [], "unused", rate=10_000), out=uri)
    first = await Runner(config, jobs=jobs(), handle_signals=False).run()
    assert (first.exit_code, first.ok, first.rejected) == (1, 2, 1)
    again = dataclasses.replace(config, resume=True)
    resumed = await Runner(again, jobs=jobs(), handle_signals=False).run()
    assert (resumed.ok, resumed.skipped, sandbox.stats["requests"]) == (0, 2, 2)
    received = sandbox.ledger.recipients("@TGS#mem")
    assert (len(received), set(received.values())) == (700, {1})


async def test_jobs_that_fail_part_of_the_way_halt_the_run_exit_2(sandbox: Sandbox, tmp_path: Path) -> None:
    def jobs() -> Iterator[dict[str, Any]]:
        yield {**NOTICE, "ToMembers_Account": ["a", "b"]}
        raise ConnectionError("cursor lost")

    summary = await Runner(
        run_config(sandbox, [], tmp_path / "out.jsonl", rate=10_000), jobs=jobs(), handle_signals=False
    ).run()
    # As a jobs file that cannot be read: the run halts, exit 2; a resume reads them again.
    assert (summary.exit_code, summary.stopped) == (
        2,
        "cannot read the jobs: the jobs raised ConnectionError after 1 jobs: cursor lost",
    )
    with pytest.raises(UsageError) as refused:
        Runner(run_config(sandbox, [], tmp_path / "out.jsonl"), jobs=3)  # type: ignore[arg-type]
    assert str(refused.value) == "Runner(jobs=...) takes an iterable of jobs, not one job: give jobs=[job]"
