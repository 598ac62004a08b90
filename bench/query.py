"""Benchmark of a query as the audience (issue 27): the 10,000,000 recipients of bench/exports.py given
as `recipients_query` over a PostgreSQL table of 10,000,000 rows, against the same recipients as a
CSV.gz export of 8 shards read from local disk.

    .venv/bin/python -m bench.query [--recipients 10000000]

Each is sent at --rate 200 to a sandbox in another process whose strict one-second window is the cap.
For each: the time from the start to the first request (from the journal: a line's time less its
latency), the whole run against the time the cap allows, the replies 60007, the most arrivals in any
one second, and the peak RSS; then the ratio of the query's first request to the local export's. The
PostgreSQL server is one of the benchmark's own (initdb in a temporary directory, 127.0.0.1).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.exports import ids, jobs_file, sent_at_cap
from bench.run import OUT, PostgresServer

SHARDS = 8


def write_shards(directory: Path, count: int) -> None:
    """The export as BigQuery writes one: 8 gzipped CSV shards with a header, the ID and another column."""
    directory.mkdir(parents=True, exist_ok=True)
    per = -(-count // SHARDS)
    for shard in range(SHARDS):
        start, end = shard * per, min(count, (shard + 1) * per)
        with gzip.open(directory / f"part-{shard:012d}.csv.gz", "wb", compresslevel=6) as handle:
            handle.write(b"user_id,country\n")
            for at in range(start, end, 1_000_000):
                handle.write(ids(at, min(1_000_000, end - at)).replace(b"\n", b",SG\n"))


def load_table(server: PostgresServer, count: int) -> float:
    """The same IDs (u00000000000 ...) as a table of `count` rows, at rest; the seconds it took.

    Vacuumed here: else autovacuum reads and rewrites the fresh table's 500 MB during the first run
    measured, on the same two cores as the sender and the sandbox."""
    began = time.monotonic()
    sql = (
        "DROP TABLE IF EXISTS audience; "
        "CREATE TABLE audience AS SELECT 'u' || lpad(g::text, 11, '0') AS user_id, 'SG'::text AS country "
        f"FROM generate_series(0, {count - 1}) AS g"
    )
    cmd = [str(server.bin / "psql"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", "postgres"]
    subprocess.run([*cmd, "-q", "-c", sql], check=True)
    subprocess.run([*cmd, "-q", "-c", "VACUUM (ANALYZE) audience"], check=True)  # not in a transaction block
    return time.monotonic() - began


def at_cap(jobs: Path, recipients: int) -> dict[str, float]:
    """As `exports.sent_at_cap`, with the query's copy beside the journal removed before and after."""
    copies = jobs.with_suffix(".outcomes.jsonl.queries")
    shutil.rmtree(copies, ignore_errors=True)
    try:
        return sent_at_cap(jobs, recipients)
    finally:
        shutil.rmtree(copies, ignore_errors=True)


def shown(label: str, doc: dict[str, float]) -> str:
    return (
        f"{label}: {doc['requests']:,} requests ({doc['allowed_s']:.0f} s at the cap), {doc['sent']:,} recipients; "
        f"first request {doc['first_s']:.2f} s after the start; whole run {doc['wall_s']:.1f} s = "
        f"{doc['of_cap']:.3f}x; replies 60007: {doc['replies_60007']}; most arrivals in 1 s: {doc['most_in_1s']} "
        f"(journal: {doc['most_in_1s_journal']}); peak RSS {doc['rss_mb']:.0f} MB; exit {doc['exit']}"
    )


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def query_10m(recipients: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs; load before {load()}")
    shards = OUT / "query-shards"
    write_shards(shards, recipients)
    local = jobs_file("ten-shards", {"recipients_file": "query-shards/part-*.csv.gz", "recipients_column": "user_id"})
    with PostgresServer() as server:
        took = load_table(server, recipients)
        print(f"table of {recipients:,} rows loaded in {took:.1f} s; load {load()}")
        query = jobs_file(
            "ten-query",
            {"recipients_query": "SELECT user_id FROM audience", "recipients_database": server.url},
        )
        disk = at_cap(local, recipients)
        print(shown(f"CSV.gz export of {recipients:,} in {SHARDS} shards on local disk", disk) + f"; load {load()}")
        sql = at_cap(query, recipients)
        print(shown(f"the same as a query over a PostgreSQL table of {recipients:,} rows", sql) + f"; load {load()}")
    print(f"first request: query / local disk = {sql['first_s'] / disk['first_s']:.2f}x (at most 1.5x)")
    shutil.rmtree(shards, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=10_000_000)
    query_10m(parser.parse_args().recipients)


if __name__ == "__main__":
    main()
