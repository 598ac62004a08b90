"""The progress display says what the run is doing: scanning, reading, sending at the recent pace.

Its clock is injected: what it shows at a given second is asserted without waiting for it."""

from __future__ import annotations

import io

from rich.console import Console

from dispatcher.observe.events import BatchSkipped, JobsRead, RateWaited, ReplyRecorded
from dispatcher.observe.progress import RichProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reply(batch: int, status: str = "ok", retry: bool = False) -> ReplyRecorded:
    return ReplyRecorded("batchsendmsg", "big", batch, retry, "0", "", "", status, 500, 0.05)


def display(clock: Clock) -> tuple[RichProgress, io.StringIO]:
    out = io.StringIO()
    return RichProgress(console=Console(file=out, width=140), clock=clock), out


def test_the_scan_is_shown_as_a_scan_with_the_rows_read() -> None:
    clock = Clock()
    progress, _ = display(clock)
    assert progress.line() == "scanning the jobs: 0 rows read"
    progress.rows_read(1)  # the jobs line
    progress.rows_read(1_999_999)  # its export's rows
    assert progress.line() == "scanning the jobs: 2,000,000 rows read"


def test_a_resume_shows_its_skipped_batches_before_sending_and_the_reading_of_the_jobs() -> None:
    clock = Clock()
    progress, _ = display(clock)
    progress.rows_read(2_000_001)
    progress.planned(3960, skipped=1200)
    assert progress.line() == "reading the jobs: 0 rows read; 1,200/3,960 batches, 1,200 skipped (already final)"
    progress(JobsRead(250_000))
    assert progress.line() == "reading the jobs: 250,000 rows read; 1,200/3,960 batches, 1,200 skipped (already final)"
    for index in range(1200):  # the run skips them one by one: they were counted already
        progress(BatchSkipped("big", index, failed=False))
    assert progress.line().endswith("1,200/3,960 batches, 1,200 skipped (already final)")


def test_req_s_is_the_pace_of_the_last_seconds_not_an_average_that_includes_the_scan() -> None:
    clock = Clock()
    progress, out = display(clock)
    progress.rows_read(2_000_001)
    clock.now = 4.0  # the scan took 4 s; the run reads the jobs again before its first request
    progress.planned(3960, skipped=1200)
    clock.now = 100.0
    progress(RateWaited(0.0, "batchsendmsg", 200.0))
    for index in range(20):  # 10 requests a second for 2 s
        progress(reply(index))
        clock.now += 0.1
    clock.now = 102.0
    expected = "1,220/3,960 batches  10.0 req/s  retries 0  failed 0  skipped 1,200  ETA 0:04:34"
    assert progress.line() == expected
    out.truncate(0)
    progress._live.console.print(progress.renderable())
    assert expected in out.getvalue() and "━" in out.getvalue()  # the bar, once it is sending
    clock.now = 105.0  # 5 s on, 5 a second over the last five
    for index in range(20, 25):
        progress(reply(index, status="failed" if index == 24 else "ok", retry=index == 20))
    assert progress.line() == "1,225/3,960 batches  5.0 req/s  retries 1  failed 1  skipped 1,200  ETA 0:09:07"
    clock.now = 120.0  # nothing came back for 15 s: it says so, rather than an average that hides it
    assert progress.line() == "1,225/3,960 batches  0.0 req/s  retries 1  failed 1  skipped 1,200  ETA -:--:--"


def test_a_resume_with_nothing_left_to_send_is_done() -> None:
    clock = Clock()
    progress, _ = display(clock)
    progress.planned(2, skipped=2)
    assert progress.line() == "2/2 batches  0.0 req/s  retries 0  failed 0  skipped 2  ETA 0:00:00"
