"""Prometheus metrics as an operator's monitoring sees them: the textfile node_exporter reads, the live
/metrics endpoint, and a real Pushgateway; every one parsed back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.observe.events import BatchSkipped, JobAccepted
from dispatcher.observe.metrics import Exporter, MetricsOptions
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Sandbox
from tests.conftest import (
    DISPATCHER,
    ROOT,
    Lines,
    Pushgateway,
    cli_env,
    free_port,
    has_lines,
    make_config,
    users,
    wait_until,
    write_jobs,
)

API = "send_group_system_notification"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str, **only: str) -> Samples:
    """Every sample in exposition text, keyed by name and labels (those in `only` must match, and are
    left out of the key: a Pushgateway adds `job` and `instance`)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if any(labels.get(k) != v for k, v in only.items()):
                continue
            for k in (*only, "instance"):
                labels.pop(k, None)
            out[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return out


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(DISPATCHER(*args), env=env or cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def mixed_jobs(tmp_path: Path) -> Path:
    """1,200 recipients in 3 batches, and one job that is rejected (an unknown key)."""
    return write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "digest", "GroupId": "@TGS#digest", "Content": "hi", "ToMembers_Account": users(1200)},
            {"job_id": "typo", "GroupId": "@TGS#digest", "Content": "hi", "ToMember_Account": ["peter"]},
        ],
    )


def test_the_textfile_holds_the_run_for_node_exporter(mixed_jobs: Path, tmp_path: Path) -> None:
    prom = tmp_path / "dispatcher.prom"
    before = time.time()
    result = run_cli("send", str(mixed_jobs), "--sandbox", "--out", str(tmp_path / "o"), "--metrics-file", str(prom))
    assert result.returncode == 1, result.stderr  # a job was rejected
    found = samples(prom.read_text())
    assert value(found, "dispatcher_requests_total", api=API, code="0") == 3
    assert value(found, "dispatcher_batches_total", status="ok") == 3
    assert value(found, "dispatcher_batches_total", status="failed") == 0
    assert value(found, "dispatcher_batches_total", status="skipped") == 0
    assert value(found, "dispatcher_batches_pending") == 0
    assert value(found, "dispatcher_jobs_total", result="accepted") == 1
    assert value(found, "dispatcher_jobs_total", result="rejected") == 1
    assert value(found, "dispatcher_recipients_notified_total") == 1200
    assert value(found, "dispatcher_recipients_not_notified_total") == 0
    assert value(found, "dispatcher_retries_total") == 0
    assert value(found, "dispatcher_journal_lines_total") == 4  # 3 batches and the rejection
    assert value(found, "dispatcher_request_duration_seconds_count", api=API) == 3
    assert value(found, "dispatcher_exit_code") == 1
    assert value(found, "dispatcher_interrupted") == 0
    assert value(found, "dispatcher_stopped_early") == 0
    assert value(found, "dispatcher_running") == 0
    start = value(found, "dispatcher_run_start_timestamp_seconds")
    end = value(found, "dispatcher_run_end_timestamp_seconds")
    assert start is not None and end is not None and before <= start <= end <= time.time()
    assert value(found, "dispatcher_last_success_timestamp_seconds") is None  # it did not succeed
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("dispatcher.prom")] == ["dispatcher.prom"]
    # Bounded labels only: never a job id or a user id.
    assert {name for _, labels in found for name, _ in labels} == {"api", "code", "status", "result", "le"}


def test_a_failed_run_keeps_the_last_success_of_the_textfile_it_replaces(mixed_jobs: Path, tmp_path: Path) -> None:
    prom = tmp_path / "dispatcher.prom"
    prom.write_text("dispatcher_last_success_timestamp_seconds 1.7e+09\ndispatcher_exit_code 0\n")
    result = run_cli("send", str(mixed_jobs), "--sandbox", "--out", str(tmp_path / "o"), "--metrics-file", str(prom))
    assert result.returncode == 1, result.stderr
    found = samples(prom.read_text())
    assert value(found, "dispatcher_last_success_timestamp_seconds") == 1.7e9
    assert value(found, "dispatcher_exit_code") == 1


def test_a_successful_run_sets_the_last_success(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi", "ToMembers_Account": ["p"]}])
    prom = tmp_path / "dispatcher.prom"
    prom.write_text("dispatcher_last_success_timestamp_seconds 1.7e+09\n")
    before = time.time()
    result = run_cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--metrics-file", str(prom))
    assert result.returncode == 0, result.stderr
    found = samples(prom.read_text())
    last = value(found, "dispatcher_last_success_timestamp_seconds")
    assert last is not None and before <= last <= time.time()
    assert last == value(found, "dispatcher_run_end_timestamp_seconds")


async def test_retries_and_failures_are_counted_by_code(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"job_id": "a", "GroupId": "@TGS#a", "Content": "hi", "ToMembers_Account": users(3)}],
    )
    sandbox.script(10002, 10002, 10004)  # twice transient, then permanent: the batch fails on attempt 3
    exporter = Exporter(MetricsOptions(file=str(tmp_path / "m.prom")), started=1000.0)
    summary = await Engine(make_config(sandbox, jobs, tmp_path / "out.jsonl"), subscribers=[exporter.metrics]).run()
    exporter.finish(summary.exit_code, summary)
    found = samples((tmp_path / "m.prom").read_text())
    assert value(found, "dispatcher_requests_total", api=API, code="10002") == 2
    assert value(found, "dispatcher_requests_total", api=API, code="10004") == 1
    assert value(found, "dispatcher_requests_total", api=API, code="0") is None
    assert value(found, "dispatcher_retries_total") == 2
    assert value(found, "dispatcher_batches_total", status="failed") == 1
    assert value(found, "dispatcher_recipients_not_notified_total") == 3
    assert value(found, "dispatcher_journal_lines_total") == 3
    assert value(found, "dispatcher_run_start_timestamp_seconds") == 1000.0
    assert value(found, "dispatcher_exit_code") == 1


# The reader hands jobs over 256 at a time: a pipe with this much in it, and kept open, has a run
# that sent 256 requests and waits for more.
JOBS_PER_CHUNK = 256
CHUNK = b"".join(
    orjson.dumps({"GroupId": "@TGS#f", "Content": f"n{i}", "ToMembers_Account": ["p", "q"]}) + b"\n"
    for i in range(JOBS_PER_CHUNK)
)


def test_live_metrics_during_a_run_and_a_signal_stop_is_pushed(tmp_path: Path, pushgateway: Pushgateway) -> None:
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.jsonl"
    args = ["send", str(fifo), "--sandbox", "--out", str(out), "--log-format", "json", "--metrics-port", "0"]
    args += ["--pushgateway", pushgateway.url, "--pushgateway-job", "nightly"]
    proc = subprocess.Popen(
        DISPATCHER(*args),
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        served = Lines(proc.stderr).until(lambda line: orjson.loads(line)["event"] == "metrics served", "its URL")
        url = str(orjson.loads(served)["url"])
        assert url.startswith("http://127.0.0.1:")
        with open(fifo, "wb") as writer:  # the pipe stays open, so the run goes on
            writer.write(CHUNK)
            writer.flush()
            wait_until(lambda: has_lines(out, JOBS_PER_CHUNK), proc)
            with urllib.request.urlopen(url, timeout=5) as response:
                live = samples(response.read().decode())
            assert value(live, "dispatcher_requests_total", api=API, code="0") == 256
            assert value(live, "dispatcher_recipients_notified_total") == 512
            assert value(live, "dispatcher_running") == 1
            assert value(live, "dispatcher_exit_code") is None  # not over yet
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    pushed = samples(pushgateway.metrics(), job="nightly")
    assert value(pushed, "dispatcher_interrupted") == 1
    assert value(pushed, "dispatcher_exit_code") == 130
    assert value(pushed, "dispatcher_requests_total", api=API, code="0") == 256
    assert value(pushed, "dispatcher_running") == 0
    with pytest.raises(OSError):  # the endpoint is gone with the run
        urllib.request.urlopen(url, timeout=2)


def test_a_configuration_error_is_pushed_and_keeps_the_last_success(tmp_path: Path, pushgateway: Pushgateway) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    flags = ("--pushgateway", pushgateway.url, "--pushgateway-job", "nightly")
    ok = run_cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "first.jsonl"), *flags)
    assert ok.returncode == 0, ok.stderr
    first = samples(pushgateway.metrics(), job="nightly")
    success = value(first, "dispatcher_last_success_timestamp_seconds")
    assert success is not None and value(first, "dispatcher_exit_code") == 0

    # No credentials in the environment: the nightly run cannot start.
    failed = run_cli("send", str(jobs), "--out", str(tmp_path / "second.jsonl"), *flags)
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        "dispatcher: error: missing credentials in the environment: "
        "TIM_SDKAPPID, TIM_IDENTIFIER, TIM_SECRET_KEY (or TIM_USERSIG)"
    ]
    pushed = samples(pushgateway.metrics(), job="nightly")
    assert value(pushed, "dispatcher_exit_code") == 2
    assert value(pushed, "dispatcher_stopped_early") == 1
    assert value(pushed, "dispatcher_interrupted") == 0
    assert value(pushed, "dispatcher_requests_total", api=API, code="0") is None  # the first run's are replaced
    assert value(pushed, "dispatcher_last_success_timestamp_seconds") == success


def test_a_push_that_fails_is_one_warning_and_the_exit_status_stands(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    gone = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    result = run_cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--pushgateway", gone)
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if "could not push the metrics" in line]
    assert len(warnings) == 1 and gone in warnings[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--metrics-file", "/nonexistent/m.prom"), "--metrics-file /nonexistent/m.prom: no such directory"),
        (("--metrics-port", "70000"), "--metrics-port must be between 0 and 65535"),
        (("--pushgateway", "ftp://gateway"), "--pushgateway ftp://gateway: give an http:// or https:// URL"),
        (("--pushgateway", "http://g", "--pushgateway-job", ""), "--pushgateway-job must be a non-empty name"),
    ],
)
def test_bad_metrics_flags_are_one_line_and_exit_2(tmp_path: Path, flags: tuple[str, ...], message: str) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    result = run_cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), *flags)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert message in line
    assert not (tmp_path / "out.jsonl").exists()


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "o"), "--metrics-port", str(port))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"dispatcher: error: --metrics-port {port}: cannot listen on 127.0.0.1: Address already in use"
    )


async def test_the_textfile_is_written_during_the_run(tmp_path: Path) -> None:
    """A run that lasts replaces its textfile every few seconds (here: every 10 ms), not only at the end."""
    prom = tmp_path / "m.prom"
    exporter = Exporter(MetricsOptions(file=str(prom), write_every=0.01), started=1000.0)
    errors: list[str] = []
    writer = asyncio.create_task(exporter.write_periodically(errors.append))
    exporter.metrics(JobAccepted("a", 2))
    exporter.metrics(BatchSkipped("a", 0, failed=False))
    try:
        for _ in range(500):
            if prom.exists() and value(samples(prom.read_text()), "dispatcher_jobs_total", result="accepted") == 1:
                break
            await asyncio.sleep(0.01)
    finally:
        writer.cancel()
    found = samples(prom.read_text())
    assert value(found, "dispatcher_running") == 1
    assert value(found, "dispatcher_batches_total", status="skipped") == 1
    assert value(found, "dispatcher_exit_code") is None
    assert errors == []


async def test_a_textfile_that_cannot_be_written_stops_the_run(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    exporter = Exporter(MetricsOptions(file=str(directory / "m.prom"), write_every=0.01))
    directory.rmdir()  # gone after the check at start, as a full or unmounted disk would be
    errors: list[str] = []
    await asyncio.wait_for(exporter.write_periodically(errors.append), timeout=10)
    assert errors == [f"{directory / 'm.prom'}: cannot write the metrics: No such file or directory"]


def test_a_late_periodic_write_never_replaces_the_final_file(tmp_path: Path) -> None:
    """The periodic write runs in a thread a stop abandons: if it comes after the end, it is dropped."""
    prom = tmp_path / "m.prom"
    exporter = Exporter(MetricsOptions(file=str(prom)), started=1000.0)
    exporter.finish(0)
    final = prom.read_text()
    exporter.write_file()  # what the abandoned thread would do
    assert prom.read_text() == final
    assert value(samples(final), "dispatcher_running") == 0


def test_the_textfiles_temporary_file_is_named_for_its_process_and_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs writing one metrics file at once never share its temporary file (the summary's had a
    fixed name, PATH.tmp, and clashed); the writer comes from prometheus_client, so this pins it."""
    prom = tmp_path / "m.prom"
    others = tmp_path / "m.prom.tmp"
    others.write_bytes(b"half")
    real_rename, renamed = os.rename, []

    def rename(source: str, target: str) -> None:
        renamed.append((Path(source).name, Path(target).name))
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    Exporter(MetricsOptions(file=str(prom)), started=1000.0).finish(0)
    assert renamed == [(f"m.prom.{os.getpid()}.{threading.get_ident()}", "m.prom")]
    assert others.read_bytes() == b"half"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.prom", "m.prom.tmp"]


def test_a_password_in_the_pushgateway_url_is_never_logged(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    gone = f"http://ops:s3cret@127.0.0.1:{free_port()}"
    result = run_cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--pushgateway", gone)
    assert result.returncode == 0
    assert "could not push the metrics" in result.stderr
    assert "s3cret" not in result.stderr and "ops:[redacted]@127.0.0.1" in result.stderr


class _Recorder:
    """A stand-in Pushgateway on 127.0.0.1 that records what it is sent and answers `reply` raw."""

    def __init__(self, reply: bytes) -> None:
        import socket

        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.port = self._sock.getsockname()[1]
        self._reply = reply
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data.split(b"\r\n\r\n")[0])
                conn.sendall(self._reply)

    def close(self) -> None:
        self._sock.close()


def push_to_recorder(
    tmp_path: Path, reply: bytes, user: str = ""
) -> tuple[subprocess.CompletedProcess[str], _Recorder, str]:
    """A run whose Pushgateway is a recorder answering `reply`: the run, the recorder, its URL."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    gateway = _Recorder(reply)
    url = f"http://{user}127.0.0.1:{gateway.port}"
    try:
        result = run_cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--pushgateway", url)
    finally:
        gateway.close()
    return result, gateway, url


def test_a_pushgateway_password_is_sent_as_basic_auth_never_as_a_host_name(tmp_path: Path) -> None:
    """urllib alone reads `ops:s3cret@127.0.0.1` as a host name and asks the DNS resolver for it."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    result, gateway, _ = push_to_recorder(tmp_path, ok, user="ops:s3cret@")
    assert result.returncode == 0, result.stderr
    assert "could not push the metrics" not in result.stderr and "s3cret" not in result.stderr
    heads = [request.split(b"\r\n") for request in gateway.requests]
    assert [head[0] for head in heads] == [b"GET /metrics HTTP/1.1", b"PUT /metrics/job/dispatcher HTTP/1.1"]
    for head in heads:
        assert b"Authorization: Basic b3BzOnMzY3JldA==" in head
        assert f"Host: 127.0.0.1:{gateway.port}".encode() in head


def test_a_pushgateway_that_does_not_speak_http_is_one_warning(tmp_path: Path) -> None:
    result, _, url = push_to_recorder(tmp_path, b"garbage\r\n\r\n")
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "could not push the metrics" in line]
    assert len(warnings) == 1 and url in warnings[0]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://ops:s3cret@127.0.0.1:notaport", "http://ops:[redacted]@127.0.0.1:notaport"),
        ("http://[::1", "http://[::1"),
        ("http://ops:s3cret@[::1", "http://ops:[redacted]@[::1"),
        ("http://127.0.0.1:70000", "http://127.0.0.1:70000"),
    ],
)
def test_a_pushgateway_url_that_is_no_url_is_one_line_and_exit_2(tmp_path: Path, url: str, shown: str) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    result = run_cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--pushgateway", url)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"dispatcher: error: --pushgateway {shown}: give an http:// or https:// URL"]
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_metrics_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A FIFO blocked the run forever (the previous metrics are read first); /dev/null would be replaced."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    target = tmp_path / "m.prom"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/null")
    out = str(tmp_path / "out.jsonl")
    result = run_cli("send", str(jobs), "--sandbox", "--out", out, "--metrics-file", str(target))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"dispatcher: error: --metrics-file {target}: not a regular file (it is replaced by a new file at the end)"
    ]
    assert Path("/dev/null").is_char_device()


def test_the_metrics_file_may_not_be_the_journal_the_run_will_create(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    out = tmp_path / "out.jsonl"
    result = run_cli("send", str(jobs), "--sandbox", "--out", str(out), "--metrics-file", f"{tmp_path}/./out.jsonl")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"dispatcher: error: --metrics-file {tmp_path}/./out.jsonl: is {out}, which the run reads; choose another file"
    ]
    assert not out.exists()


@pytest.mark.parametrize("secret", ["s3/cret", "s3?cret", "s3#cret", "123/cret"])
def test_a_pushgateway_password_not_percent_encoded_is_refused_and_never_shown(tmp_path: Path, secret: str) -> None:
    """A raw / ? or # ends a URL's host part: `ops:123/cret@host` would push to host `ops`, port 123."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    url = f"http://ops:{secret}@127.0.0.1:9091"
    result = run_cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--pushgateway", url)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "dispatcher: error: --pushgateway http://[redacted]@127.0.0.1:9091: "
        "percent-encode a / ? or # in the user name or password"
    ]


def test_a_server_inventing_error_codes_cannot_grow_the_series_without_end(tmp_path: Path) -> None:
    """200 distinct ErrorCodes: the first 50 are labels of their own, the other 150 replies count as `other`."""
    from dispatcher.observe.events import ReplyRecorded

    prom = tmp_path / "m.prom"
    exporter = Exporter(MetricsOptions(file=str(prom)), started=1000.0)
    for n in range(200):
        exporter.metrics(ReplyRecorded(API, "job", n, False, str(90000 + n), "no", "failed", "failed", 1, 0.01))
    exporter.finish(1)
    text = prom.read_text()
    found = samples(text)
    codes = {dict(labels).get("code") for name, labels in found if name == "dispatcher_requests_total"}
    assert len(codes) == 51
    assert value(found, "dispatcher_requests_total", api=API, code="90049") == 1
    assert value(found, "dispatcher_requests_total", api=API, code="90050") is None
    assert value(found, "dispatcher_requests_total", api=API, code="other") == 150
    assert value(found, "dispatcher_batches_total", status="failed") == 200
    # What node_exporter's textfile collector needs: every family has HELP and TYPE, no series twice.
    series = [line.split(" ")[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series))
    helps = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# HELP ")}
    types = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert helps == types and "dispatcher_requests_total" in types


def test_a_pushgateway_that_never_answers_holds_the_end_for_one_timeout_not_two(tmp_path: Path) -> None:
    """It accepts and never answers: the reading of the last success uses up the time, and the push
    is not tried after it (it was: twice the timeout at the end of every run)."""
    import socket

    accepted: list[socket.socket] = []
    with socket.socket() as gateway:
        gateway.bind(("127.0.0.1", 0))
        gateway.listen(8)
        gateway.settimeout(0.05)
        url = f"http://127.0.0.1:{gateway.getsockname()[1]}"
        exporter = Exporter(MetricsOptions(pushgateway=url, push_timeout=0.3), started=1000.0)
        finisher = threading.Thread(target=exporter.finish, args=(0,))
        finisher.start()
        while finisher.is_alive():
            try:
                accepted.append(gateway.accept()[0])
            except TimeoutError:
                pass
        finisher.join()
    for conn in accepted:
        conn.close()
    assert len(accepted) == 1  # the GET of the last success; no PUT


def test_a_failed_run_whose_reading_of_the_gateway_fails_keeps_the_last_success(
    tmp_path: Path, pushgateway: Pushgateway
) -> None:
    """The Pushgateway answers the reading of the group with HTTP 500 once (a proxy in front of it
    that lets pushes through): the failed run cannot carry the last success forward, and its push
    must not erase the one the gateway holds (then the 26-hour alert would never fire again)."""
    import http.server

    class FailingReads(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = urllib.request.Request(
                f"{pushgateway.url}{self.path}", data=body, method=self.command, headers={"Content-Type": "text/plain"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                status = response.status
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = forward

        def log_message(self, *args: object) -> None:
            pass

    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    flags = ("--pushgateway-job", "nightly")
    ok = run_cli(
        "send", str(jobs), "--sandbox", "--out", str(tmp_path / "first.jsonl"), "--pushgateway", pushgateway.url, *flags
    )
    assert ok.returncode == 0, ok.stderr
    success = value(samples(pushgateway.metrics(), job="nightly"), "dispatcher_last_success_timestamp_seconds")
    assert success is not None

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingReads)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        failed = run_cli("send", str(jobs), "--out", str(tmp_path / "second.jsonl"), "--pushgateway", url, *flags)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert failed.returncode == 2  # no credentials
    pushed = samples(pushgateway.metrics(), job="nightly")
    assert value(pushed, "dispatcher_exit_code") == 2
    assert value(pushed, "dispatcher_last_success_timestamp_seconds") == success


def test_a_run_refused_because_its_journal_is_in_use_leaves_the_live_runs_metrics_alone(
    tmp_path: Path, pushgateway: Pushgateway
) -> None:
    """Cron starts the next night's run while this one goes on: the refused run writes no textfile
    over the live run's and pushes nothing over its group."""
    import fcntl

    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    journal = tmp_path / "out.jsonl"
    textfile = tmp_path / "m.prom"
    with open(journal, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the live run holds it
        result = run_cli(
            "send", str(jobs), "--sandbox", "--out", str(journal), "--resume",
            "--metrics-file", str(textfile), "--pushgateway", pushgateway.url, "--pushgateway-job", "nightly",
        )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert f"{journal} is in use by another run (pid {os.getpid()})" in result.stderr
    assert not textfile.exists()
    assert samples(pushgateway.metrics(), job="nightly") == {}


def test_the_pushgateway_may_come_from_the_environment(tmp_path: Path, pushgateway: Pushgateway) -> None:
    """DISPATCHER_PUSHGATEWAY keeps a password in the URL out of `ps`, as DISPATCHER_RATE_STORE does."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#a", "Content": "hi"}])
    env = {**cli_env(), "DISPATCHER_PUSHGATEWAY": pushgateway.url}
    result = run_cli(
        "send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--pushgateway-job", "from-env", env=env
    )
    assert result.returncode == 0, result.stderr
    assert value(samples(pushgateway.metrics(), job="from-env"), "dispatcher_exit_code") == 0
