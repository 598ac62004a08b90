"""Exports in object storage (s3://, gs://): read from real servers of the tests' own (moto's S3 server and
fake-gcs-server on 127.0.0.1), reached the standard ways (AWS_ENDPOINT_URL, STORAGE_EMULATOR_HOST). Objects
are a few bytes; every expectation is a literal."""

from __future__ import annotations

import collections
import gzip
import io
import itertools
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dispatcher.core.batch import split
from dispatcher.core.job import Job
from dispatcher.jobs.inputs import ExportError
from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.sandbox import Sandbox
from tests.conftest import DISPATCHER, ROOT, GcsServer, S3Server, cli_env, free_port, run_engine, write_jobs

BASE = {"GroupId": "@TGS#remote", "Content": "hello"}
_names = itertools.count()


def bucket() -> str:
    """A bucket of its own for each test: the servers live for the whole session."""
    return f"b{next(_names)}-{free_port()}"


def read(tmp_path: Path, job: dict[str, Any]) -> Job | Rejection:
    (item,) = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", [job]))], 500)
    return item


def sent(tmp_path: Path, job: dict[str, Any]) -> list[str]:
    item = read(tmp_path, job)
    assert isinstance(item, Job), item
    return [uid for batch in split(item) for uid in batch.recipients or ()]


def refused(tmp_path: Path, job: dict[str, Any]) -> tuple[str | None, str]:
    item = read(tmp_path, job)
    assert isinstance(item, Rejection), item
    return item.field, item.reason


def job_hash(tmp_path: Path, job: dict[str, Any]) -> str:
    item = read(tmp_path, job)
    assert isinstance(item, Job), item
    return item.job_hash


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def gcs(gcs_server: GcsServer, monkeypatch: pytest.MonkeyPatch) -> GcsServer:
    for key, value in gcs_server.env().items():
        monkeypatch.setenv(key, value)
    return gcs_server


def parquet(ids: list[str]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({"user_id": ids, "n": list(range(len(ids)))}), out)
    return out.getvalue()


def zstd(data: bytes) -> bytes:
    out = pa.BufferOutputStream()
    with pa.CompressedOutputStream(out, "zstd") as stream:
        stream.write(data)
    return bytes(out.getvalue().to_pybytes())


FORMATS = {
    "r.txt": b"ann\nbob\nann\n",
    "r.csv.gz": gzip.compress(b"user_id,country\nann,SG\nbob,JP\n"),
    "r.tsv": b"user_id\tcountry\nann\tSG\nbob\tJP\n",
    "r.jsonl.zst": zstd(b'{"user_id": "ann"}\n{"user_id": "bob"}\n'),
    "r.parquet": parquet(["ann", "bob"]),
}


@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_every_format_and_compression_reads_from_either_store(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = request.getfixturevalue(store)
    where = bucket()
    jobs = []
    for name, body in FORMATS.items():
        column = {} if name == "r.txt" else {"recipients_column": "user_id"}
        jobs.append({**BASE, "job_id": name, "recipients_file": server.put(where, f"export/{name}", body), **column})
    items = read_jobs([str(write_jobs(tmp_path / "jobs.jsonl", jobs))], 500)
    assert {
        item.job_id: [uid for batch in split(item) for uid in batch.recipients or ()]
        for item in items
        if isinstance(item, Job)
    } == {name: ["ann", "bob"] for name in FORMATS}


@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_shards_are_sorted_by_key_and_a_suppression_list_may_lie_in_the_store_too(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = request.getfixturevalue(store)
    where = bucket()
    server.put(where, "export/part-000000000002.csv", b"user_id\nm5\nm1\n")
    server.put(where, "export/part-000000000000.csv", b"user_id\nm1\nm2\n")
    server.put(where, "export/part-000000000001.csv", b"user_id\nm3\nm4\n")
    server.put(where, "other/part-000000000003.csv", b"user_id\nnever\n")
    prefix = "s3" if store == "s3" else "gs"
    stop = server.put(where, "unsubscribed.txt", b"m3\n")
    job = {**BASE, "recipients_file": f"{prefix}://{where}/export/part-*.csv", "exclude_file": stop}
    assert sent(tmp_path, job) == ["m1", "m2", "m4", "m5"]
    item = read(tmp_path, job)
    assert isinstance(item, Job) and item.export is not None
    assert item.export.files == (
        f"{prefix}://{where}/export/part-000000000000.csv",
        f"{prefix}://{where}/export/part-000000000001.csv",
        f"{prefix}://{where}/export/part-000000000002.csv",
    )
    assert (item.duplicates, item.excluded) == (1, 1)


def test_the_job_hash_covers_each_objects_key_size_and_etag(s3: S3Server, tmp_path: Path) -> None:
    where = bucket()
    s3.put(where, "e/part-0.txt", b"a\nb\n")
    s3.put(where, "e/part-1.txt", b"c\n")
    job = {**BASE, "job_id": "j", "recipients_file": f"s3://{where}/e/part-*.txt"}
    first = job_hash(tmp_path, job)
    assert job_hash(tmp_path, job) == first  # read again, unchanged: the same job
    s3.put(where, "e/part-1.txt", b"d\n")  # changed: same size, other ETag and IDs
    changed = job_hash(tmp_path, job)
    assert changed != first
    s3.put(where, "e/part-2.txt", b"e\n")  # added
    added = job_hash(tmp_path, job)
    assert added not in (first, changed)
    s3.delete(where, "e/part-0.txt")  # removed
    assert job_hash(tmp_path, job) not in (first, changed, added)


def test_an_object_rewritten_with_the_same_ids_is_a_changed_job(gcs: GcsServer, tmp_path: Path) -> None:
    where = bucket()
    uri = gcs.put(where, "e/list.txt", b"a\nb\n")
    job = {**BASE, "job_id": "j", "recipients_file": uri}
    first = job_hash(tmp_path, job)
    gcs.put(where, "e/list.txt", b"a\nb\n")  # a new generation, the same bytes
    assert job_hash(tmp_path, job) != first


def test_a_missing_bucket_object_or_match_is_one_line_naming_the_uri(s3: S3Server, tmp_path: Path) -> None:
    where = bucket()
    s3.put(where, "e/part-0.txt", b"a\n")
    assert refused(tmp_path, {**BASE, "recipients_file": "s3://no-such-bucket-here/e/list.txt"}) == (
        "recipients_file",
        "s3://no-such-bucket-here/e/list.txt: no such bucket or object",
    )
    assert refused(tmp_path, {**BASE, "recipients_file": f"s3://{where}/e/gone.txt"}) == (
        "recipients_file",
        f"s3://{where}/e/gone.txt: no such bucket or object",
    )
    assert refused(tmp_path, {**BASE, "recipients_file": f"s3://{where}/e/none-*.txt"}) == (
        "recipients_file",
        f"s3://{where}/e/none-*.txt matches no object; a glob that matches nothing never means all members",
    )
    assert refused(tmp_path, {**BASE, "recipients_file": "s3://just-a-bucket"}) == (
        "recipients_file",
        "s3://just-a-bucket: names no object; give s3://bucket/key",
    )


def test_credentials_in_an_objects_uri_are_refused_and_never_shown(tmp_path: Path) -> None:
    # The libraries read credentials from the environment, never from a URI: one there would be quoted back.
    for uri, shown in (
        ("s3://AKIAEXAMPLE:TopS3cret@exports/list.txt", "s3://exports/list.txt"),
        ("s3://AKIAEXAMPLE:Top/S3cret@exports/list.txt", "s3://exports/list.txt"),
        ("gs://oauth2:TopS3cret@exports/list.txt", "gs://exports/list.txt"),
    ):
        item = read(tmp_path, {**BASE, "recipients_file": uri, "exclude_file": uri})
        assert isinstance(item, Rejection), item
        assert (item.field, item.reason) == (
            "recipients_file",
            f"{shown}: credentials in the URI are not read: give them to the store's library "
            "(the environment, a profile, an instance role or Application Default Credentials)",
        )
        assert (item.exit_code, "S3cret" in str(item), "AKIA" in str(item)) == (2, False, False)


class CuttingProxy:
    """A TCP proxy in front of a server that counts the requests for an object, and may cut each response
    to one after `cut_after` bytes: a connection dropped mid-read, whatever the client retries."""

    def __init__(self, upstream: int, key: str) -> None:
        self.upstream = upstream
        self.key = key.encode()
        self.gets = 0
        self.cut_after: int | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            state = {"object": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        with contextlib_closing(client, server):
            while data := client.recv(65536):
                if data.startswith(b"GET "):
                    state["object"] = self.key in data.split(b" ", 2)[1]
                    self.gets += state["object"]
                server.sendall(data)

    def _down(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        sent = 0
        with contextlib_closing(client, server):
            while data := server.recv(65536):
                if state["object"] and self.cut_after is not None:
                    data = data[: max(0, self.cut_after - sent)]
                    if not data:
                        return
                sent += len(data)
                client.sendall(data)

    def close(self) -> None:
        self.listener.close()


class contextlib_closing:
    def __init__(self, *sockets: socket.socket) -> None:
        self.sockets = sockets

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return True


@pytest.fixture
def proxied(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CuttingProxy, str]]:
    where = bucket()
    uri = s3.put(where, "e/big.txt", b"".join(b"u%07d\n" % i for i in range(20_000)))
    proxy = CuttingProxy(s3.port, f"/{where}/e/big.txt")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    yield proxy, uri
    proxy.close()


def test_a_connection_dropped_mid_read_is_one_line_naming_the_uri(
    proxied: tuple[CuttingProxy, str], tmp_path: Path
) -> None:
    proxy, uri = proxied
    proxy.cut_after = 1000  # of 160,000 bytes
    field, reason = refused(tmp_path, {**BASE, "recipients_file": uri})
    assert field == "recipients_file"
    assert reason.startswith(f"{uri}: cannot read: ")
    assert "\n" not in reason and "testing-secret" not in reason


async def test_a_run_downloads_each_object_once_and_sends_it_all(
    proxied: tuple[CuttingProxy, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    proxy, uri = proxied
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "job_id": "big", "recipients_file": uri}])
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl")
    assert (summary.exit_code, summary.recipients) == (0, 20_000)
    assert proxy.gets == 1


async def test_a_shard_changed_between_a_run_and_its_resume_is_a_changed_job(
    s3: S3Server, sandbox: Sandbox, tmp_path: Path
) -> None:
    where = bucket()
    s3.put(where, "e/part-0.csv", b"user_id\nm1\nm2\n")
    s3.put(where, "e/part-1.csv", b"user_id\nm3\n")
    job = {**BASE, "job_id": "shards", "recipients_file": f"s3://{where}/e/part-*.csv"}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job])
    out = tmp_path / "out.jsonl"
    first = await run_engine(sandbox, jobs, out, batch_size=2)
    assert (first.exit_code, first.recipients) == (0, 3)
    again = await run_engine(sandbox, jobs, out, batch_size=2, resume=True)
    assert (again.exit_code, again.recipients, again.skipped) == (0, 0, 2)
    s3.put(where, "e/part-1.csv", b"user_id\nm4\n")
    changed = await run_engine(sandbox, jobs, out, batch_size=2, resume=True)
    assert (changed.exit_code, changed.rejected, changed.recipients) == (1, 1, 0)
    assert sandbox.ledger.recipients("@TGS#remote", "hello") == collections.Counter({"m1": 1, "m2": 1, "m3": 1})


def test_a_run_sends_the_other_jobs_and_exits_2_when_an_object_cannot_be_read(
    s3_server: S3Server, tmp_path: Path
) -> None:
    where = bucket()
    good = s3_server.put(where, "e/list.txt", b"ann\n")
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {**BASE, "job_id": "gone", "recipients_file": f"s3://{where}/e/gone.txt"},
            {**BASE, "job_id": "good", "recipients_file": good},
        ],
    )
    out = tmp_path / "out.jsonl"
    proxy = CuttingProxy(s3_server.port, f"/{where}/e/list.txt")  # counts the downloads of the good one
    try:
        result = subprocess.run(
            # --sandbox makes a pre-scan (the sandbox's groups): it must leave the objects to the run
            DISPATCHER("send", str(jobs), "--sandbox", "--out", str(out), "--quiet"),
            env=cli_env(**s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        proxy.close()
    assert result.returncode == 2, result.stderr
    assert proxy.gets == 1
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(line["job_id"], line["status"]) for line in lines] == [("gone", "rejected"), ("good", "ok")]
    assert f"s3://{where}/e/gone.txt: no such bucket or object" in result.stderr
    assert "testing-secret" not in result.stderr
    dry = subprocess.run(
        DISPATCHER("send", str(jobs), "--dry-run"),
        env=cli_env(**s3_server.env()),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 2, dry.stderr
    assert f"s3://{where}/e/gone.txt: no such bucket or object" in dry.stdout


def test_refused_credentials_are_one_line_naming_the_uri(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """moto's server checks no signature, so a store that refuses them stands in: one that answers 403."""
    where = bucket()
    uri = s3.put(where, "e/list.txt", b"ann\n")
    with Refusing() as refusing:
        monkeypatch.setenv("AWS_ENDPOINT_URL", refusing.url)
        item = read(tmp_path, {**BASE, "recipients_file": uri})
    assert isinstance(item, Rejection)
    assert (item.field, item.exit_code) == ("recipients_file", 2)
    assert item.reason.startswith(f"{uri}: access refused (")
    assert item.reason.endswith("): check the credentials")
    assert "testing-secret" not in item.reason


class Refusing:
    """An HTTP server that answers every request 403 InvalidAccessKeyId, as S3 does to a key it does not know."""

    def __enter__(self) -> Refusing:
        import http.server

        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS '
            b"Access Key Id you provided does not exist in our records.</Message></Error>"
        )

        class Handler(http.server.BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _refuse

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_missing_extra_is_one_line_naming_it(s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if the s3 extra were not installed
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")  # an environment never seen before: no filesystem made for it
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "recipients_file": "s3://b/e/list.txt"}])
    with pytest.raises(ExportError) as raised:
        list(read_jobs([str(jobs)], 500))
    assert str(raised.value) == (
        f"{jobs}:1: s3://b/e/list.txt: a s3:// export needs s3fs, the s3 extra: pip install 'tim-dispatcher[s3]'"
    )


def test_the_recipients_table_goes_to_an_object_whole_and_credentials_stay_out_of_the_uri(
    s3: S3Server, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**BASE, "job_id": "dm", "ToMembers_Account": ["ann", "bob"]}])
    env = cli_env(**s3.env())
    send = [*DISPATCHER("send", str(jobs), "--sandbox", "--no-progress", "-q")]
    assert subprocess.run(send, env=env, cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    where = bucket()
    s3.put(where, "keep", b"")  # the bucket exists
    journal = str(tmp_path / "jobs.outcomes.jsonl")
    report = [*DISPATCHER("report", journal, "--recipients", f"s3://{where}/fates/run.csv")]
    done = subprocess.run(report, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    body = s3.client().get_object(Bucket=where, Key="fates/run.csv")["Body"].read().decode()
    assert [(row.split(",")[0], row.split(",")[2], row.split(",")[3]) for row in body.splitlines()] == [
        ("job_id", "user_id", "status"),
        ("dm", "ann", "delivered"),
        ("dm", "bob", "delivered"),
    ]
    # A bucket that does not exist: one line naming the URI, exit 2.
    missing = [*DISPATCHER("report", journal, "--recipients", f"s3://{where}-none/run.csv")]
    done = subprocess.run(missing, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"dispatcher: error: s3://{where}-none/run.csv: cannot write the recipients table: ")
    assert "Traceback" not in done.stderr
    # Credentials in the URI are never read, nor shown.
    secret = [*DISPATCHER("report", journal, "--recipients", f"s3://AKIAEXAMPLE:TopS3cret@{where}/run.csv")]
    done = subprocess.run(secret, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "TopS3cret" not in done.stderr
    assert "credentials in the URI are not read" in done.stderr
