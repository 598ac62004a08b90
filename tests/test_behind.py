"""The work behind an export's reading: in order, bounded, and a failure never passed over."""

from __future__ import annotations

import threading

import pytest

from dispatcher.jobs.behind import Behind


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
