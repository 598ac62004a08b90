"""Reading speed of each export format, in this process: 1,000,000 UserIDs as text, CSV, gzipped CSV,
JSON Lines and Parquet, each read through `read_export` (validation, duplicates, the job hash).

    .venv/bin/python -m bench.formats [--rows 1000000] [--repeats 3] [--only jsonl ...]

For each format: the least CPU time (user and system, every thread of the process) and wall time of
`--repeats` readings, and the load average before and after. The machine may be shared: compare CPU
time, and run the versions to compare alternately.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import time
from pathlib import Path

from bench.exports import ids

DIR = Path(__file__).resolve().parent / "out" / "formats"


def write(rows: int) -> dict[str, dict[str, str]]:
    """The exports, written once for a number of rows, and the job fields that name each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    DIR.mkdir(parents=True, exist_ok=True)
    stem = DIR / f"r{rows}"
    lines = b"".join(ids(start, min(1_000_000, rows - start)) for start in range(0, rows, 1_000_000))
    csv = b"user_id,country\n" + lines.replace(b"\n", b",SG\n")
    files = (
        (".txt", lines),
        (".csv", csv),
        (".jsonl", b"".join(b'{"user_id":"' + line + b'","country":"SG"}\n' for line in lines.split())),
    )
    for suffix, data in files:
        path = stem.with_suffix(suffix)
        if not path.exists():
            path.write_bytes(data)
    gz = stem.with_suffix(".csv.gz")
    if not gz.exists():
        gz.write_bytes(gzip.compress(csv, compresslevel=6))
    parquet = stem.with_suffix(".parquet")
    if not parquet.exists():
        table = pa.table({"user_id": [line.decode() for line in lines.split()], "country": ["SG"] * rows})
        pq.write_table(table, parquet, row_group_size=128 * 1024)
    column = {"recipients_column": "user_id"}
    return {
        "text": {"recipients_file": stem.name + ".txt"},
        "csv": {"recipients_file": stem.name + ".csv", **column},
        "csv.gz": {"recipients_file": stem.name + ".csv.gz", **column},
        "jsonl": {"recipients_file": stem.name + ".jsonl", **column},
        "parquet": {"recipients_file": stem.name + ".parquet", **column},
    }


def read(job: dict[str, str]) -> tuple[float, float, int]:
    """CPU and wall seconds of one reading of the export a job names, and the recipients read."""
    from dispatcher.jobs import exports, sources

    spec = sources.spec_of(job, inline=False)
    assert spec is not None
    cpu, wall = time.process_time(), time.perf_counter()
    done = exports.read_export(spec, DIR, hashlib.blake2b())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if not isinstance(done.recipients, tuple):
        done.recipients.spool.close()
    return cpu, wall, done.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", action="append", help="a format to read (text, csv, csv.gz, jsonl, parquet)")
    args = parser.parse_args()
    jobs = write(args.rows)
    if args.only:
        jobs = {kind: job for kind, job in jobs.items() if kind in args.only}
    load = os.getloadavg()[0]
    read(next(iter(jobs.values())))  # imports and first faults out of the way
    print(f"{'format':<9}{'CPU s':>8}{'wall s':>8}  (least of {args.repeats}, {args.rows:,} rows)")
    for kind, job in jobs.items():
        runs = [read(job) for _ in range(args.repeats)]
        assert all(count == args.rows for _cpu, _wall, count in runs), runs
        print(f"{kind:<9}{min(r[0] for r in runs):>8.3f}{min(r[1] for r in runs):>8.3f}")
    print(f"load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
