"""Journals met at their edges: lines edited by hand or written by a newer version, blank lines, and a
journal deleted while its run writes it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import threading
from pathlib import Path

import orjson
import pytest

from dispatcher.errors import JournalError, JournalLockedError, JournalWriteError
from dispatcher.journal.outcomes import Journal
from dispatcher.observe.events import Event, ReplyRecorded
from dispatcher.observe.report import summarise
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Faults, Sandbox
from tests.conftest import (
    BIG_JOBS_GROUP,
    big_jobs,
    finish,
    journal,
    make_config,
    run_engine,
    start_send,
    wait_for_lines,
    write_jobs,
)

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


# -- a journal deleted while its run writes it ----------------------------------------------------


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


async def test_a_deleted_journal_is_restored_whole_locked_and_written_on(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = Journal(out)
    try:
        for i in range(3):
            writer.write({"job_id": f"j{i}", "batch": 0, "batches": 1, "status": "ok", "final": True})
        out.unlink()  # a clean-up job's rm
        moved = await writer.keep_path()
        assert moved is not None and not moved.stop
        assert moved.message.startswith(f"{out} was deleted during the run (or moved away); restored it")
        assert [orjson.loads(raw)["job_id"] for raw in lines_of(out)] == ["j0", "j1", "j2"]
        writer.write({"job_id": "j3", "batch": 0, "batches": 1, "status": "ok", "final": True})
        assert [orjson.loads(raw)["job_id"] for raw in lines_of(out)] == ["j0", "j1", "j2", "j3"]
        # The restored file is locked like the one it replaces: a second run cannot start on it.
        with pytest.raises(JournalLockedError, match=rf"is in use by another run \(pid {os.getpid()}\)"):
            Journal(out)
        assert await writer.keep_path() is None  # the path names the file it writes again
        assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left behind
    finally:
        writer.close()
    Journal(out).close()


def hold_the_copy(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Hold the thread that copies a journal back once its copy is made: (made, release)."""
    real_fsync = os.fsync
    made, release = threading.Event(), threading.Event()

    def fsync(fd: int) -> None:
        if threading.current_thread().name == "dispatcher-journal":
            made.set()
            release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return made, release


async def test_a_deleted_journal_is_copied_back_off_the_event_loop_while_lines_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy ran on the event loop: a journal of millions of lines held every request of the
    run (and its pace) for as long as the copy took."""
    out = tmp_path / "out.jsonl"
    writer = Journal(out)
    for i in range(3):
        writer.write({"job_id": f"j{i}", "batch": 0, "batches": 1, "status": "ok", "final": True})
    out.unlink()
    real_read = os.read
    read_on: list[str] = []  # the thread of every read of the journal's lines

    def read(fd: int, size: int) -> bytes:
        data = real_read(fd, size)
        if data.startswith(b'{"job_id":'):
            read_on.append(threading.current_thread().name)
        return data

    monkeypatch.setattr(os, "read", read)
    copied, release = hold_the_copy(monkeypatch)
    try:
        restoring = asyncio.create_task(writer.keep_path())
        assert await asyncio.to_thread(copied.wait, 10), "the lines were not copied in a thread"
        # The loop is free while the copy is made: a reply's line is written meanwhile, and restored too.
        writer.write({"job_id": "j3", "batch": 0, "batches": 1, "status": "ok", "final": True})
        release.set()
        moved = await restoring
        writer.write({"job_id": "j4", "batch": 0, "batches": 1, "status": "ok", "final": True})
    finally:
        release.set()
        writer.close()
    assert moved is not None and not moved.stop
    assert [orjson.loads(raw)["job_id"] for raw in lines_of(out)] == ["j0", "j1", "j2", "j3", "j4"]
    assert read_on == ["dispatcher-journal", "MainThread"]  # j0-j2 in the thread; j3, written meanwhile, after it
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


async def test_a_name_taken_while_the_journal_is_copied_back_is_left_alone_and_the_run_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    writer = Journal(out)
    writer.write({"job_id": "mine", "batch": 0, "batches": 1, "status": "ok", "final": True})
    out.unlink()
    made, release = hold_the_copy(monkeypatch)
    try:
        restoring = asyncio.create_task(writer.keep_path())
        assert await asyncio.to_thread(made.wait, 10)
        out.write_bytes(b'{"job_id": "theirs"}\n')  # the next run's journal, started while the copy was made
        release.set()
        moved = await restoring
    finally:
        release.set()
        writer.close()
    saved = tmp_path / f"out.jsonl.{os.getpid()}.saved"
    assert moved is not None and moved.stop
    assert moved.message.startswith(f"{out} is another file since the run began")
    assert out.read_bytes() == b'{"job_id": "theirs"}\n'
    assert [orjson.loads(raw)["job_id"] for raw in lines_of(saved)] == ["mine"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", saved.name]


async def test_a_restoring_cancelled_mid_copy_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    writer = Journal(out)
    writer.write({"job_id": "j0", "batch": 0, "batches": 1, "status": "ok", "final": True})
    out.unlink()
    made, release = hold_the_copy(monkeypatch)
    restoring = asyncio.create_task(writer.keep_path())
    assert await asyncio.to_thread(made.wait, 10)
    assert [p.name.endswith(".restoring") for p in tmp_path.iterdir()] == [True]
    restoring.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await restoring
    (copier,) = [t for t in threading.enumerate() if t.name == "dispatcher-journal"]
    release.set()
    await asyncio.to_thread(copier.join, 10)
    for _ in range(5):  # turns of the loop, for the copy's end to reach it and be discarded
        await asyncio.sleep(0)
    assert list(tmp_path.iterdir()) == []
    writer.close()


async def test_a_deleted_journal_is_restored_on_the_loop_when_no_thread_can_be_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    writer = Journal(out)
    writer.write({"job_id": "j0", "batch": 0, "batches": 1, "status": "ok", "final": True})
    out.unlink()

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    try:
        moved = await writer.keep_path()
    finally:
        writer.close()
    assert moved is not None and not moved.stop
    assert [orjson.loads(raw)["job_id"] for raw in lines_of(out)] == ["j0"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


async def test_a_journal_moved_away_is_restored_and_the_moved_file_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = Journal(out)
    writer.write({"job_id": "j0", "batch": 0, "batches": 1, "status": "ok", "final": True})
    out.rename(tmp_path / "old.jsonl")
    moved = await writer.keep_path()
    writer.write({"job_id": "j1", "batch": 0, "batches": 1, "status": "ok", "final": True})
    writer.close()
    assert moved is not None and not moved.stop
    assert len(lines_of(out)) == 2 and len(lines_of(tmp_path / "old.jsonl")) == 1


async def test_a_journal_replaced_by_another_file_is_not_overwritten_and_the_run_stops(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = Journal(out)
    writer.write({"job_id": "mine", "batch": 0, "batches": 1, "status": "ok", "final": True})
    out.unlink()
    out.write_bytes(b'{"job_id": "theirs"}\n')  # say, the next run's journal, started once the path was free
    moved = await writer.keep_path()
    saved = tmp_path / f"out.jsonl.{os.getpid()}.saved"
    assert moved is not None and moved.stop
    assert moved.message == (
        f"{out} is another file since the run began (the journal was deleted or moved and the name taken "
        f"again); it was left alone, and this run's lines are saved in {saved}: put them back before a --resume"
    )
    writer.write({"job_id": "in flight", "batch": 0, "batches": 1, "status": "ok", "final": True})
    writer.close()
    assert out.read_bytes() == b'{"job_id": "theirs"}\n'
    assert [orjson.loads(raw)["job_id"] for raw in lines_of(saved)] == ["mine", "in flight"]


async def test_the_periodic_sync_notices_a_deleted_journal(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = Journal(out, fsync_interval=0)
    writer.write({"job_id": "j0", "batch": 0, "batches": 1, "status": "ok", "final": True})
    writer.sync()
    told: list[str] = []
    heard = asyncio.Event()

    def tell(message: str) -> None:
        told.append(message)
        heard.set()

    task = asyncio.create_task(writer.sync_periodically(lambda exc: tell(str(exc)), lambda m: tell(m.message)))
    try:
        await asyncio.sleep(0)
        out.unlink()
        await asyncio.wait_for(heard.wait(), 10)  # the copy runs in a thread: wait for its news, not for time
    finally:
        task.cancel()
        writer.close()
    assert [m.split(";")[0] for m in told] == [f"{out} was deleted during the run (or moved away)"]
    assert len(lines_of(out)) == 1


async def test_a_journal_deleted_mid_run_holds_every_line_and_a_resume_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    recipients = [f"u{i:03d}" for i in range(40)]
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"job_id": "j", "GroupId": GROUP, "Content": "x", "ToMembers_Account": recipients}]
    )
    replies = 0

    def clean_up(event: Event) -> None:
        nonlocal replies
        if isinstance(event, ReplyRecorded):
            replies += 1
            if replies == 10:
                out.unlink()

    async with Sandbox(rate=100_000) as box:
        config = make_config(box, jobs, out, batch_size=1, concurrency=1)
        summary = await Engine(config, subscribers=[clean_up]).run()
        assert (summary.ok, summary.exit_code) == (40, 0)
        assert [(d["batch"], d["status"]) for d in journal(out)] == [(i, "ok") for i in range(40)]
        logged = [line for line in capsys.readouterr().out.splitlines() if "was deleted during the run" in line]
        assert len(logged) == 1 and str(out) in logged[0]
        summary = await Engine(make_config(box, jobs, out, batch_size=1, resume=True)).run()
        assert (summary.requests, summary.skipped, summary.exit_code) == (0, 40, 0)
        assert box.ledger.recipients(GROUP, "x") == collections.Counter(dict.fromkeys(recipients, 1))


async def test_a_journal_whose_directory_is_gone_cannot_be_restored_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run" / "out.jsonl"
    out.parent.mkdir()
    writer = Journal(out)
    writer.write({"job_id": "j0", "batch": 0, "batches": 1, "status": "ok", "final": True})
    out.unlink()
    out.parent.rmdir()
    with pytest.raises(JournalWriteError, match=re.escape(f"{out} was deleted during the run (or moved away) and")):
        await writer.keep_path()
    writer.close()


async def test_rm_of_the_journal_during_a_send_is_one_warning_and_loses_nothing(tmp_path: Path) -> None:
    jobs, ids = big_jobs(tmp_path)
    out = tmp_path / "out.jsonl"
    async with Sandbox(faults=Faults(latency=0.02)) as box:
        proc = await start_send(jobs, out, box.url)
        await wait_for_lines(out, 20, proc)
        assert proc.returncode is None, "the run finished before its journal could be removed"
        out.unlink()
        code, stderr = await finish(proc)
        assert code == 0, stderr
        (warning,) = [orjson.loads(line) for line in stderr.splitlines() if "was deleted during the run" in line]
        assert warning["level"] == "warning" and warning["event"].startswith(f"{out} was deleted during the run")
        # Every request is on record at the path: the journal's ok lines are exactly what was delivered.
        ok = [u for d in journal(out) if d["status"] == "ok" for u in d["recipients"]]
        assert sorted(ok) == sorted(ids) == sorted(box.ledger.recipients(BIG_JOBS_GROUP, "hello"))
        requests = box.stats["requests"]
        code, stderr = await finish(await start_send(jobs, out, box.url, "--resume"))
        assert code == 0, stderr
        assert box.stats["requests"] == requests  # nothing sent twice


async def test_a_sync_cancelled_while_its_fsync_runs_is_done_again_by_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import threading

    out = tmp_path / "out.jsonl"
    writer = Journal(out, fsync_interval=0)
    writer.write({"job_id": "j0", "batch": 0, "batches": 1, "status": "ok", "final": True})
    real_fsync = os.fsync
    entered, release = threading.Event(), threading.Event()
    calls: list[tuple[str, int]] = []  # (thread, descriptor) of every fsync

    def slow_fsync(fd: int) -> None:
        calls.append((threading.current_thread().name, fd))
        if threading.current_thread().name == "dispatcher-fsync":
            entered.set()
            release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    task = asyncio.create_task(writer.sync_periodically(lambda exc: None, lambda moved: None))
    assert await asyncio.to_thread(entered.wait, 10)  # the periodic fsync is under way
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    journal_fd = writer._fd
    writer.close()  # the run ends: its last sync must not be skipped
    release.set()
    assert [name for name, _ in calls] == ["dispatcher-fsync", "MainThread"]
    assert calls[0][1] != journal_fd  # the thread synced a descriptor of its own, not one close() frees


def test_a_resume_splits_a_partly_delivered_batch_in_linear_time() -> None:
    from dispatcher.core.state import JobRecord, JournalState

    hashed = 0

    class Uid(str):
        __slots__ = ()

        def __hash__(self) -> int:
            nonlocal hashed
            hashed += 1
            return str.__hash__(self)

    uids = [Uid(f"u{i:03d}") for i in range(500)]
    errors: dict[str, int | None] = {uid: 90992 for uid in uids}
    state = JournalState({"j": JobRecord("h", {0: ("retry", 1)}, {0: (errors, tuple(uids[:250]))})})
    hashed = 0
    resend, lost = state.undelivered("j", 0, retry_failed=False)  # type: ignore[misc]
    assert (len(resend), len(lost)) == (250, 250)
    assert hashed <= 1_000  # each UserID hashed a few times, not once per other UserID (was 125,000)
