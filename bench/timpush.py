"""Benchmark: 1,000,000 accounts by batch push (`timpush_batch`) at the standard edition's 30 calls a
second, against a sandbox in its own process that refuses what goes over 30 in a strict one-second
window (60007). 2,000 calls of 500: at 30 a second, 67 s.

    .venv/bin/python -m bench.timpush [--accounts 1000000] [--latency 0.05]

Prints the share of 30 a second reached (calls over the span from the first reply to the last, each
answered after the same latency), replies 60007, the most arrivals the sandbox saw in any one second,
whether every account is in the sandbox's ledger exactly once, the wall time, and the load average
before and after. The send is given no --rate: the push API's pace is its own.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import urllib.request

import orjson

from bench.run import OUT, Sandbox, send

RATE = 30  # the standard edition's calls a second, the sandbox's and the dispatcher's default for the API


def ledger(url: str) -> collections.Counter[str]:
    """Account -> pushes, from the sandbox's ledger."""
    with urllib.request.urlopen(f"{url}/sandbox/ledger", timeout=120) as resp:
        entries = orjson.loads(resp.read())["deliveries"]
    counts: collections.Counter[str] = collections.Counter()
    for entry in entries:
        if entry["group_id"] == "PUSH":
            counts[entry["user"]] += entry["count"]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--latency", type=float, default=0.05, help="the sandbox's reply latency, seconds")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ids = OUT / "push-accounts.txt"
    ids.write_text("".join(f"user{i:09d}\n" for i in range(args.accounts)))
    jobs = OUT / "push.jsonl"
    doc = {
        "job_id": "push",
        "api": "timpush_batch",
        "From_Account": "administrator",
        "OfflinePushInfo": {"PushFlag": 0, "Title": "Sale", "Desc": "Half price today"},
        "recipients_file": ids.name,
    }
    jobs.write_bytes(orjson.dumps(doc) + b"\n")
    before = os.getloadavg()
    with Sandbox("--latency", str(args.latency)) as box:
        run, summary = send(jobs, box.url)
        stats = box.stats()
        pushed = ledger(box.url)
    after = os.getloadavg()
    times = sorted(
        datetime.datetime.fromisoformat(orjson.loads(line)["at"].replace("Z", "+00:00")).timestamp()
        for line in jobs.with_suffix(".outcomes.jsonl").read_bytes().splitlines()
    )
    span = times[-1] - times[0]
    share = (len(times) - 1) / span / RATE * 100 if span else 0.0
    once = len(pushed) == args.accounts and set(pushed.values()) == {1}
    print(
        f"timpush_batch ({args.accounts:,} accounts, batches of 500, no --rate: its own {RATE}/s; sandbox "
        f"strict 1 s window at {RATE}, latency {args.latency:g} s): exit {summary['exit_code']}, "
        f"{summary['requests']:,} requests ({summary['retries']} retries); {share:.1f}% of {RATE}/s over "
        f"{span:.1f} s; replies 60007: {summary['error_codes'].get('60007', 0)}; most arrivals in any second: "
        f"{stats.get('max_arrivals_1s', 0)}; in the ledger: {len(pushed):,} accounts, each exactly once: {once}; "
        f"wall {run.wall_s:.1f} s, CPU {run.cpu_s:.1f} s, peak RSS {run.max_rss_mb:.0f} MB; "
        f"load average {before[0]:.2f} before, {after[0]:.2f} after"
    )


if __name__ == "__main__":
    main()
