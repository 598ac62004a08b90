"""The work behind an export's reading: in order, bounded, and a failure never passed over."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import pytest

from dispatcher.jobs.behind import Behind
from dispatcher.jobs.exports import ExportError
from dispatcher.jobs.reader import read_jobs
from tests.conftest import write_jobs


def test_calls_run_in_the_order_given_and_all_have_run_when_wait_returns() -> None:
    done: list[int] = []
    with Behind("test") as behind:
        for n in range(100):
            behind.call(done.append, n)
        behind.wait()
        assert done == list(range(100))


def test_a_failed_call_is_raised_at_the_next_call_and_the_calls_after_it_are_skipped() -> None:
    done: list[str] = []
    failed = threading.Event()

    def fail() -> None:
        failed.set()
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"), Behind("test") as behind:
        behind.call(done.append, "a")
        behind.call(fail)
        behind.call(done.append, "b")  # may be queued before the failure is known: never run
        failed.wait()
        behind.wait()
    assert done == ["a"]


def test_a_failure_of_the_last_call_is_raised_as_the_work_ends() -> None:
    def fail() -> None:
        raise ValueError("the last one")

    with pytest.raises(ValueError, match="the last one"), Behind("test") as behind:
        behind.call(fail)


def test_the_callers_own_failure_skips_what_waits_and_ends_the_thread_first() -> None:
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def slow() -> None:
        started.set()
        release.wait()
        done.append("slow")

    with pytest.raises(KeyboardInterrupt), Behind("test", ahead=4) as behind:
        behind.call(slow)
        started.wait()
        behind.call(done.append, "queued")
        release.set()
        raise KeyboardInterrupt
    assert done == ["slow"]  # the call under way ended; the one waiting was skipped
    assert not [t for t in threading.enumerate() if t.name == "test"]


def test_a_failed_call_wins_over_the_callers_later_error_as_if_run_in_turn() -> None:
    # Reading on after a block whose write failed (a full disk) finds a bad row: run in turn, the write
    # failed first, so the full disk is what is raised, not the row.
    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"), Behind("test") as behind:
        behind.call(fail)
        raise ValueError("a bad row read after it")


def test_a_full_disk_while_spooling_is_raised_before_a_bad_row_of_a_later_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda: open("/dev/full", "w+b"))  # noqa: SIM115 - ENOSPC
    monkeypatch.setattr(tempfile, "gettempdir", lambda: "/var/tmp")
    # The first 1 MiB block is written to the spool; the second holds a line too long.
    (tmp_path / "r.txt").write_text("".join(f"member{i:08d}\n" for i in range(70_000)) + "x" * 40 + "\n")
    path = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#g", "Content": "hi", "recipients_file": "r.txt"}])
    with pytest.raises(ExportError) as caught:
        list(read_jobs([str(path)], 500))
    assert str(caught.value) == (
        f"{path}:1: r.txt: cannot write a temporary file under /var/tmp (TMPDIR): No space left on device"
    )
