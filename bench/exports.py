"""Benchmarks of exports (issue 19): a 10,000,000-recipient export as text and as a gzipped CSV, and one of
100,000,000 generated on the fly into a FIFO (nothing of it is kept on disk but the run's own spool).

    .venv/bin/python bench/run.py --only exports-10m --only exports-100m   # --quick: a tenth of each

For each export: the dry run's peak RSS and wall time, the IDs a second through validation (the rows
over the dry run's wall time less that of a dry run of a one-line export: the start-up), and, sent at
--rate 200 to a sandbox in another process whose strict one-second window is the cap: the time from
the start to the first request (from the journal: a line's time less its latency), the whole run
against the time the cap allows, the replies 60007 and the most arrivals in any one second.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from bench.run import ENV, OUT, PY, ROOT, Run, Sandbox, journal_starts, measure, most_in_one_second

CAP = 200
BATCH = 500


def ids(start: int, count: int) -> bytes:
    """`count` UserIDs from `start`, one a line: u00000000042 (12 bytes and a newline, as the export the
    issue measured: 10M of them are 130 MB)."""
    digits = 11
    numbers = np.arange(start, start + count, dtype=np.int64)
    table = np.empty((count, digits + 2), np.uint8)
    table[:, 0] = ord("u")
    for place in range(digits):
        table[:, digits - place] = ord("0") + (numbers // 10**place) % 10
    table[:, -1] = ord("\n")
    return table.tobytes()


def write_text(path: Path, count: int) -> None:
    with path.open("wb") as handle:
        for start in range(0, count, 1_000_000):
            handle.write(ids(start, min(1_000_000, count - start)))


def write_csv_gz(path: Path, count: int) -> None:
    """A BigQuery-like shard: a header, the ID and another column, gzipped."""
    with gzip.open(path, "wb", compresslevel=6) as handle:
        handle.write(b"user_id,country\n")
        for start in range(0, count, 1_000_000):
            block = ids(start, min(1_000_000, count - start))
            handle.write(block.replace(b"\n", b",SG\n"))


def jobs_file(name: str, job: dict[str, object]) -> Path:
    path = OUT / f"{name}.jsonl"
    path.write_bytes(orjson.dumps({"job_id": name, "GroupId": "@TGS#export", "Content": "Your statement.", **job}))
    return path


def dry_run(jobs: Path) -> tuple[Run, dict[str, object]]:
    summary = jobs.with_suffix(".plan.json")
    run = measure([PY, "-m", "dispatcher", "send", str(jobs), "--dry-run", "--summary-json", str(summary)])
    assert run.returncode == 0, run
    return run, orjson.loads(summary.read_bytes())


def sent_at_cap(jobs: Path, recipients: int, env: dict[str, str] | None = None) -> dict[str, float]:
    """Send `jobs` at --rate CAP to a sandbox whose strict one-second window is the cap, with `env` added
    to the process's: the figures of the run (its journal is removed after)."""
    out = jobs.with_suffix(".outcomes.jsonl")
    summary_path = jobs.with_suffix(".summary.json")
    out.unlink(missing_ok=True)
    saved = dict(ENV)
    ENV.update(env or {})
    try:
        with Sandbox("--rate", str(CAP)) as box:
            cmd = [PY, "-m", "dispatcher", "send", str(jobs), "--endpoint", box.url, "--out", str(out)]
            cmd += ["--rate", str(CAP), "--no-progress", "--summary-json", str(summary_path)]
            started = time.time()
            run = measure(cmd)
            stats = box.stats()
    finally:
        ENV.clear()
        ENV.update(saved)
    summary = orjson.loads(summary_path.read_bytes())
    starts = journal_starts(out)
    requests = -(-recipients // BATCH)
    allowed = requests / CAP
    out.unlink(missing_ok=True)
    return {
        "first_s": starts[0] - started,
        "wall_s": run.wall_s,
        "of_cap": run.wall_s / allowed,
        "allowed_s": allowed,
        "requests": requests,
        "sent": summary["recipients"],
        "replies_60007": summary["error_codes"].get("60007", 0),
        "most_in_1s": stats["max_arrivals_1s"],
        "most_in_1s_journal": most_in_one_second(starts),
        "rss_mb": run.max_rss_mb,
        "exit": run.returncode,
    }


def at_cap(jobs: Path, recipients: int) -> None:
    doc = sent_at_cap(jobs, recipients)
    print(
        f"  sent at --rate {CAP} ({doc['requests']:,.0f} requests, {doc['allowed_s']:.0f} s at the cap): first "
        f"request {doc['first_s']:.2f} s after the start; whole run {doc['wall_s']:.1f} s = {doc['of_cap']:.3f}x; "
        f"replies 60007: {doc['replies_60007']:.0f}; most arrivals in 1 s: {doc['most_in_1s']:.0f} (journal: "
        f"{doc['most_in_1s_journal']:.0f}); peak RSS {doc['rss_mb']:.0f} MB; exit {doc['exit']:.0f}"
    )


def report(label: str, jobs: Path, recipients: int, start_up: float, send: bool) -> None:
    run, plan = dry_run(jobs)
    assert plan["recipients"] == recipients, plan
    reading = max(run.wall_s - start_up, 1e-9)
    print(
        f"{label}: dry run {run.wall_s:.2f} s, peak RSS {run.max_rss_mb:.0f} MB, CPU {run.cpu_s:.1f} s; "
        f"{recipients / reading / 1e6:.2f} M IDs/s through validation ({reading:.2f} s after a start-up of "
        f"{start_up:.2f} s)"
    )
    if send:
        at_cap(jobs, recipients)


def start_up() -> float:
    (OUT / "one.txt").write_bytes(b"u00000000001\n")
    runs = [dry_run(jobs_file("one", {"recipients_file": "one.txt"}))[0].wall_s for _ in range(3)]
    return sorted(runs)[1]


def exports_10m(recipients: int, send: bool = True) -> None:
    base = start_up()
    write_text(OUT / "ten.txt", recipients)
    write_csv_gz(OUT / "ten.csv.gz", recipients)
    text = jobs_file("ten-text", {"recipients_file": "ten.txt"})
    report(f"text export of {recipients:,}", text, recipients, base, send)
    csv = jobs_file("ten-csv", {"recipients_file": "ten.csv.gz", "recipients_column": "user_id"})
    report(f"CSV.gz export of {recipients:,}", csv, recipients, base, send)
    for name in ("ten.txt", "ten.csv.gz"):
        (OUT / name).unlink()


def exports_100m(recipients: int) -> None:
    """A text export written into a FIFO by another process as it is read (2 GB that never touch the disk)."""
    base = start_up()
    with tempfile.TemporaryDirectory(dir=OUT) as scratch:
        fifo = Path(scratch) / "hundred.txt"
        os.mkfifo(fifo)
        code = (
            "import sys; from bench.exports import ids\n"
            f"with open({str(fifo)!r}, 'wb') as f:\n"
            f"    [f.write(ids(s, min(1_000_000, {recipients} - s))) for s in range(0, {recipients}, 1_000_000)]\n"
        )
        writer = subprocess.Popen([PY, "-c", code], cwd=ROOT, env=ENV)
        jobs = Path(scratch) / "hundred.jsonl"
        jobs.write_bytes(orjson.dumps({"GroupId": "@TGS#export", "Content": "x", "recipients_file": "hundred.txt"}))
        report(f"text export of {recipients:,} from a FIFO (generated on the fly)", jobs, recipients, base, False)
        writer.wait(timeout=60)
