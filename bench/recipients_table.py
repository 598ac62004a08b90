"""Benchmark: `dispatcher report JOURNAL --recipients FILE` on a 10,000,000-recipient journal (issue 27, item 3).

    .venv/bin/python -m bench.recipients_table [--runs 1] [--lines 20221] [--formats parquet,csv.gz,csv,jsonl]
    .venv/bin/python -m bench.recipients_table --from-jobs [--rows 10000000] [--formats parquet]

The journal is bench/report_page.py's: 20,000 lines of 500 recipients as a run at the cap leaves them,
with retried replies and 100 batches failed for good. Its export's counts are added to its first line
(as a run writes them), so the report's reconciliation covers all 10,000,000. For each format, prints
the wall time and peak RSS of the whole command (the report and the table; the kernel's count, from a
launcher process of its own, see bench/run.py), the rows and size of the table, and the load average
before and after. The bar: at most 60 s and 256 MB. 20,221 lines are 20,000 batches: 10,000,000 recipients.

`--from-jobs` measures `--jobs` instead: a text export of 10,000,000 IDs, 2 of every 1,000 of them repeated
and the first 1,000 excluded, whose run stopped after its first batch. Its journal holds that one line
(with the job's true hash); the table lists the rest again from the export: pending, duplicate, excluded.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import orjson

from bench.report_page import PER_LINE, loadavg, write_journal
from bench.run import OUT, PY, measure

WALL_S, RSS_MB = 60.0, 256.0


def with_export(path: Path, batches: int) -> None:
    """Give the journal's first line the export's counts, as a run writes them (in place: one line grows)."""
    with path.open("rb") as handle:
        first = orjson.loads(handle.readline())
        rest = handle.read()
    rows = batches * PER_LINE
    first["export"] = {"files": 8, "rows": rows, "distinct": rows, "duplicates": 0, "excluded": 0}
    path.write_bytes(orjson.dumps(first) + b"\n" + rest)


def count_rows(table: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(table).metadata.num_rows)
    if fmt == "csv.gz":
        import gzip

        with gzip.open(table, "rb") as handle:
            return sum(1 for _ in handle) - 1
    with table.open("rb") as handle:
        return sum(1 for _ in handle) - (1 if fmt == "csv" else 0)


def stopped_run(rows: int) -> tuple[Path, Path, int]:
    """An export, its jobs file, and the journal of its run stopped after batch 0; the rows the table will hold."""
    from dispatcher.jobs.reader import Rejection, read_jobs

    export, excluded, jobs = OUT / "rt_export.txt", OUT / "rt_exclude.txt", OUT / "rt_jobs.jsonl"
    with export.open("w") as out:
        for start in range(0, rows, 100_000):
            out.write("".join(f"u{i:011d}\n" for i in range(start, min(rows, start + 100_000))))
        out.write("".join(f"u{i:011d}\n" for i in range(0, rows, 500)))  # 2 of every 1,000 again
    excluded.write_text("".join(f"u{i:011d}\n" for i in range(1, 1001)))
    job = {"job_id": "spring", "GroupId": "@TGS#spring", "Content": "hi", "recipients_file": export.name}
    job["exclude_file"] = excluded.name
    jobs.write_bytes(orjson.dumps(job) + b"\n")
    (read,) = list(read_jobs([str(jobs)], PER_LINE))
    assert not isinstance(read, Rejection), read
    assert read.export is not None
    first = [f"u{i:011d}" for i in [0, *range(1001, 1001 + PER_LINE - 1)]]
    line = {
        "job_id": "spring", "batch": 0, "batches": read.batches, "attempt": 1, "status": "ok", "final": True,
        "group_id": "@TGS#spring", "recipients": first, "error_code": 0, "error_info": "", "http_status": 200,
        "latency_ms": 30.0, "at": "2026-03-02T12:00:00.030Z", "job_hash": read.job_hash,
        "export": read.export.to_json(),
    }  # fmt: skip
    journal = OUT / "rt_stopped.outcomes.jsonl"
    journal.write_bytes(orjson.dumps(line) + b"\n")
    return journal, jobs, read.export.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--lines", type=int, default=20_221, help="journal lines of 500 recipients (default 20221)")
    parser.add_argument("--formats", default="parquet,csv.gz,csv,jsonl")
    parser.add_argument("--from-jobs", action="store_true", help="measure --jobs: the table from the export again")
    parser.add_argument("--rows", type=int, default=10_000_000, help="with --from-jobs: the export's distinct IDs")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    extra: list[str] = []
    if args.from_jobs:
        journal, jobs, expected = stopped_run(args.rows)
        extra = ["--jobs", str(jobs)]
        print(f"export: {expected:,} rows; journal: its first batch alone")
    else:
        journal = OUT / "recipients_table.outcomes.jsonl"
        held = write_journal(journal, args.lines)
        with_export(journal, held["batches"])
        expected = held["batches"] * PER_LINE
        print(
            f"journal: {held['lines']:,} lines, {held['batches']:,} batches ({expected:,} recipients), "
            f"{held['retries']} retried replies, {held['failed']} batches failed; "
            f"{os.path.getsize(journal) / 1e6:.0f} MB"
        )
    for fmt in args.formats.split(","):
        table = OUT / f"recipients_table.{fmt}"
        print(f"{fmt}: load average before: {loadavg()}")
        walls, rss = [], []
        for number in range(1, args.runs + 1):
            run = measure(
                [PY, "-m", "dispatcher", "report", str(journal), "--json", "--recipients", str(table), *extra]
            )
            assert run.returncode == 0, run
            walls.append(run.wall_s)
            rss.append(run.max_rss_mb)
            print(f"  run {number}: {run.wall_s:.2f} s wall, {run.cpu_s:.2f} s CPU, peak RSS {run.max_rss_mb:.0f} MB")
        rows = count_rows(table, fmt)
        assert rows == expected, rows
        verdict = "within" if max(walls) <= WALL_S and max(rss) <= RSS_MB else "OVER"
        print(
            f"  {rows:,} rows, {os.path.getsize(table) / 1e6:.0f} MB; wall s min/median/max "
            f"{min(walls):.2f}/{statistics.median(walls):.2f}/{max(walls):.2f}; peak RSS MB "
            f"{min(rss):.0f}/{statistics.median(rss):.0f}/{max(rss):.0f}: {verdict} {WALL_S:.0f} s and {RSS_MB:.0f} MB"
        )
        print(f"  load average after: {loadavg()}")


if __name__ == "__main__":
    main()
