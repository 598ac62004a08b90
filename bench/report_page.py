"""Benchmark: `dispatcher report JOURNAL --html FILE` on a 10,000,000-recipient journal (issue 26, item 3).

    .venv/bin/python -m bench.report_page [--runs 3] [--lines 20000] [--failed 100]

The journal is written as a run at the cap would have left it: 20,000 lines of 500 recipients, a request
started every 1/195 s. Of them, 200 are replies 60007 retried (their batch's next line is attempt 2), 20
are 70050 pauses retried too, and 100 batches failed for good (10010): 50,000 recipients not notified
(`--failed 19780`: every batch, 9,890,000). Prints, for each run and as min/median/max, the wall time and
the peak RSS of the command (the kernel's count, from a launcher process of its own: see bench/run.py),
the page's size, and the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
from pathlib import Path

import orjson

from bench.run import OUT, PY, measure

PER_LINE = 500
PACE = 195.0  # requests a second: a run at the cap of 200
START = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=datetime.UTC).timestamp()


def write_journal(path: Path, lines: int, failing: int = 100) -> dict[str, int]:
    """The journal, written as it streams; what it holds."""
    over_rate, paused, failed = set(range(7, lines, lines // 200)), set(range(11, lines, lines // 20)), 0
    batches = lines - len(over_rate) - len(paused)
    batch, written = 0, 0
    with path.open("wb") as out:
        while written < lines:
            retry = written in over_rate or written in paused
            code = 60007 if written in over_rate else 70050 if written in paused else 0
            last = batch >= batches - failing  # the last ones: the group was disbanded meanwhile
            if last and not retry:
                code, failed = 10010, failed + 1
            start = START + written / PACE
            latency = 25.0 + written % 40
            at = datetime.datetime.fromtimestamp(start + latency / 1000, datetime.UTC)
            doc = {
                "job_id": "spring",
                "batch": batch,
                "batches": batches,
                "attempt": 2 if written - 1 in over_rate or written - 1 in paused else 1,
                "status": "ok" if code == 0 else "failed",
                "final": not retry,
                "group_id": "@TGS#spring",
                "recipients": [f"u{batch * PER_LINE + i:011d}" for i in range(PER_LINE)],
                "error_code": code,
                "error_info": "OK" if code == 0 else "refused",
                "http_status": 200,
                "latency_ms": latency,
                "at": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
                "job_hash": "0123456789abcdef",
            }
            out.write(orjson.dumps(doc) + b"\n")
            written += 1
            batch += 0 if retry else 1
    return {"lines": lines, "batches": batches, "retries": len(over_rate) + len(paused), "failed": failed}


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lines", type=int, default=20_000, help="journal lines of 500 recipients (default 20000)")
    parser.add_argument(
        "--failed", type=int, default=100, help="batches failed for good, the last ones (default 100; 19780: all)"
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    journal, page = OUT / "report_page.outcomes.jsonl", OUT / "report_page.html"
    held = write_journal(journal, args.lines, args.failed)
    print(
        f"journal: {held['lines']:,} lines, {held['batches']:,} batches, {held['lines'] * PER_LINE:,} recipients "
        f"named, {held['retries']} retried replies, {held['failed']} batches failed; "
        f"{os.path.getsize(journal) / 1e6:.0f} MB"
    )
    print(f"load average before: {loadavg()}")
    walls, rss = [], []
    for number in range(1, args.runs + 1):
        run = measure([PY, "-m", "dispatcher", "report", str(journal), "--html", str(page)])
        assert run.returncode == 0, run
        walls.append(run.wall_s)
        rss.append(run.max_rss_mb)
        print(f"run {number}: {run.wall_s:.2f} s wall, {run.cpu_s:.2f} s CPU, peak RSS {run.max_rss_mb:.0f} MB")
    print(f"page: {os.path.getsize(page) / 1e3:.0f} kB")
    print(
        f"wall s min/median/max {min(walls):.2f}/{statistics.median(walls):.2f}/{max(walls):.2f}; "
        f"peak RSS MB {min(rss):.0f}/{statistics.median(rss):.0f}/{max(rss):.0f}"
    )
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
