"""Benchmark: one run kept in PostgreSQL at the cap, `send` plus two `work` processes (in empty
directories, as other machines would be), against a sandbox in its own process that refuses what goes
over 200 a second in a strict one-second window.

    .venv/bin/python -m bench.pg_workers [--runs 3] [--batches 1600] [--store journal|redis]

Prints, for each run and as min/median/max: the share of the cap reached (requests accepted over the
span from the first start to the last), replies 60007, the most arrivals the sandbox saw in any one
second, and whether every recipient got the message exactly once; and the load average around it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

import orjson

from bench.run import ENV, OUT, PY, ROOT, PostgresServer, RedisServer, Sandbox, write_jobs

RATE = 200


def ledger(url: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{url}/sandbox/ledger", timeout=60) as resp:
        entries: list[dict[str, object]] = orjson.loads(resp.read())["deliveries"]
    return entries


def psql(server: PostgresServer, sql: str, check: bool = True) -> str:
    cmd = [str(server.bin / "psql"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", "postgres"]
    return subprocess.run([*cmd, "-At", "-c", sql], check=check, capture_output=True, text=True).stdout


def starts_of(server: PostgresServer, journal: str) -> list[float]:
    """Each request's start: its line's time less its latency (the one clock of this machine)."""
    out = []
    for line in psql(server, f"SELECT doc FROM dispatcher.journal_outcomes WHERE journal = '{journal}'").splitlines():
        doc = orjson.loads(line)
        if doc.get("latency_ms") is None:
            continue
        at = datetime.datetime.fromisoformat(doc["at"].replace("Z", "+00:00")).timestamp()
        out.append(at - doc["latency_ms"] / 1000)
    return sorted(out)


def one_run(server: PostgresServer, store: str, batches: int, recipients: int, seed: int) -> dict[str, Any]:
    journal = f"bench{seed}_{int(time.time())}"
    uri = f"{server.url}?journal={journal}"
    jobs = write_jobs(OUT / f"pg_workers_{seed}.jsonl", batches, recipients)
    extra = ["--rate-store", store] if store else []
    common = ["--no-progress", "--rate", str(RATE), *extra]
    with Sandbox("--rate", str(RATE), "--latency", "0.03", "--jitter", "0.04", "--seed", str(seed)) as box:
        cmd = [PY, "-m", "dispatcher", "send", str(jobs), "--out", uri, "--endpoint", box.url, *common]
        procs = [subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a worker joins a run, never starts one
            if psql(server, f"SELECT 1 FROM dispatcher.journal_runs WHERE journal = '{journal}'", check=False).strip():
                break
            time.sleep(0.05)
        with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
            for empty in (one, two):
                cmd = [PY, "-m", "dispatcher", "work", uri, "--endpoint", box.url, *common]
                procs.append(
                    subprocess.Popen(cmd, env=ENV, cwd=empty, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            codes = [proc.wait(timeout=900) for proc in procs]
        stats = box.stats()
        deliveries = ledger(box.url)
    starts = starts_of(server, journal)
    accepted = stats.get("0", 0)
    once = len(deliveries) == batches * recipients and all(entry["count"] == 1 for entry in deliveries)
    seconds = [0] * (int(starts[-1] - starts[0]) + 1)
    tenths = [0] * 10  # of the first second: how the run gets going
    for start in starts:
        seconds[int(start - starts[0])] += 1
        if start - starts[0] < 1.0:
            tenths[int((start - starts[0]) * 10)] += 1
    return {
        "seconds": seconds,
        "tenths": tenths,
        "share": 100 * accepted / ((starts[-1] - starts[0]) * RATE),
        "60007": stats.get("60007", 0),
        "arrivals": stats.get("max_arrivals_1s", 0),
        "once": float(once),
        "exit": float(max(codes)),
    }


def spread(values: list[float], fmt: str = ".1f") -> str:
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=1600)
    parser.add_argument("--recipients", type=int, default=100, help="per batch")
    parser.add_argument("--store", choices=("journal", "redis"), default="journal")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    where = "the journal's database" if args.store == "journal" else "Redis"
    print(
        f"send + 2 work in PostgreSQL: {args.batches} batches of {args.recipients}, --rate {RATE}, sandbox strict "
        f"at {RATE}/s, latency 30+-40 ms, budget in {where}"
    )
    results = []
    with PostgresServer() as server:
        redis = RedisServer() if args.store == "redis" else None
        try:
            store = "" if redis is None else redis.url
            for seed in range(args.runs):
                run = one_run(server, store, args.batches, args.recipients, seed)
                results.append(run)
                print(
                    f"  run {seed + 1}: {run['share']:.1f}% of the cap, {run['60007']:.0f} replies 60007, at most "
                    f"{run['arrivals']:.0f} arrivals in a second, every recipient once: {bool(run['once'])}, "
                    f"exit {run['exit']:.0f}; requests started in each second: {run['seconds']}, in each tenth of the "
                    f"first: {run['tenths']}"
                )
        finally:
            if redis is not None:
                redis.__exit__()
    print(
        f"  min/median/max: {spread([r['share'] for r in results])}% of the cap; replies 60007 "
        f"{spread([r['60007'] for r in results], '.0f')}; most arrivals in a second "
        f"{spread([r['arrivals'] for r in results], '.0f')}"
    )
    load_after = os.getloadavg()
    print(f"  load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
