"""Benchmark of an export in object storage (issue 27): 10,000,000 recipients as a BigQuery-like CSV.gz export in
8 shards, on the S3 server of the tests (moto's, on 127.0.0.1), sent at --rate 200 to a sandbox in another
process whose strict one-second window is the cap; and the same shards read from local disk, for the first
request's time.

    .venv/bin/python bench/run.py --only remote-exports-10m           # --quick: a tenth

For each: the time from the start to the first request (from the journal), the whole run against the time
the cap allows, the replies 60007, and the peak RSS.
"""

from __future__ import annotations

import gzip
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from bench.exports import CAP, ids, sent_at_cap
from bench.run import OUT, PY

SHARDS = 8


class Moto:
    """moto's S3 server on a free port of 127.0.0.1 (as tests/conftest.py starts it)."""

    def __enter__(self) -> Moto:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.dir = tempfile.TemporaryDirectory()
        cmd = [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        self.proc = subprocess.Popen(cmd, cwd=self.dir.name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.dir.cleanup()

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench-secret",
        )


def at_cap(label: str, recipients_file: str, recipients: int, extra_env: dict[str, str]) -> float:
    """One run at --rate 200; prints its figures and returns the time to its first request."""
    jobs = OUT / f"{label}.jsonl"
    job = {"job_id": label, "GroupId": "@TGS#export", "Content": "Your statement."}
    job |= {"recipients_file": recipients_file, "recipients_column": "user_id"}
    jobs.write_bytes(orjson.dumps(job))
    doc = sent_at_cap(jobs, recipients, extra_env)
    print(
        f"  {label}: first request {doc['first_s']:.2f} s after the start; whole run {doc['wall_s']:.1f} s = "
        f"{doc['of_cap']:.3f}x the {doc['allowed_s']:.0f} s the cap allows; replies 60007: "
        f"{doc['replies_60007']:.0f}; most arrivals in 1 s: {doc['most_in_1s']:.0f}; "
        f"peak RSS {doc['rss_mb']:.0f} MB; exit {doc['exit']:.0f}"
    )
    return float(doc["first_s"])


def write_shard(path: Path, start: int, count: int) -> None:
    """A BigQuery-like shard: a header, the ID and another column, gzipped; IDs from `start`."""
    with gzip.open(path, "wb", compresslevel=6) as handle:
        handle.write(b"user_id,country\n")
        for at in range(start, start + count, 1_000_000):
            handle.write(ids(at, min(1_000_000, start + count - at)).replace(b"\n", b",SG\n"))


def remote_exports_10m(recipients: int) -> None:
    print(f"CSV.gz export of {recipients:,} recipients in {SHARDS} shards, sent at --rate {CAP}:")
    with tempfile.TemporaryDirectory(dir=OUT) as scratch:
        shards = Path(scratch) / "export"
        shards.mkdir()
        per = recipients // SHARDS
        for i in range(SHARDS):
            write_shard(shards / f"part-{i:012d}.csv.gz", i * per, per)
        local = at_cap("local-8-shards", str(shards / "part-*.csv.gz"), recipients, {})
        with Moto() as moto:
            client = moto.client()
            client.create_bucket(Bucket="exports")
            for path in sorted(shards.iterdir()):
                client.put_object(Bucket="exports", Key=f"audience/{path.name}", Body=path.read_bytes())
            remote = at_cap("s3-8-shards", "s3://exports/audience/part-*.csv.gz", recipients, moto.env())
    print(f"  first request: S3 {remote:.2f} s, local disk {local:.2f} s = {remote / local:.2f}x")
