"""A journal in PostgreSQL (`--out postgresql://...`, `dispatcher work`): real processes, a real
PostgreSQL of the test's own, and a sandbox in its own process counting every arrival."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import (
    DEMO_ENV,
    DISPATCHER,
    PG_PASSWORD,
    ROOT,
    PostgresServer,
    SandboxProcess,
    cli_env,
    free_port,
    write_jobs,
)


@pytest.fixture
def sandbox_process() -> Iterator[SandboxProcess]:
    box = SandboxProcess("--rate", "100")
    yield box
    box.stop()


def jobs_of(path: Path, count: int, name: str = "u") -> Path:
    """`count` jobs of one recipient each: one batch a job."""
    return write_jobs(
        path,
        [
            {"job_id": f"{name}-{i}", "GroupId": "@TGS#pg", "Content": "hi", "ToMembers_Account": [f"{name}{i}"]}
            for i in range(count)
        ],
    )


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        DISPATCHER(*args), env=cli_env(**DEMO_ENV), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def start(*args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen(
        DISPATCHER(*args), env=cli_env(**DEMO_ENV), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def report(uri: str) -> dict[str, object]:
    done = cli("report", uri, "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = orjson.loads(done.stdout)
    return doc


def deliveries(box: SandboxProcess) -> dict[str, int]:
    return {entry["user"]: entry["count"] for entry in box.get("/sandbox/ledger")["deliveries"]}


def test_send_stores_the_plan_and_report_reads_the_run(tmp_path: Path, postgres_server: PostgresServer) -> None:
    uri = postgres_server.journal("nightly")
    jobs = jobs_of(tmp_path / "jobs.jsonl", 30)
    done = cli(
        "send", str(jobs), "--sandbox", "--out", uri, "--no-progress", "--summary-json", str(tmp_path / "s.json")
    )
    assert done.returncode == 0, done.stderr
    shown = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres?journal=nightly"
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert (summary["out"], summary["batches"], summary["ok"]) == (shown, 30, 30)
    assert postgres_server.psql("SELECT component, version FROM dispatcher.meta") == "journal|1\n"
    assert (
        postgres_server.psql(
            "SELECT count(*), count(*) FILTER (WHERE final AND status = 'ok') FROM dispatcher.journal_batches"
        )
        == "30|30\n"
    )
    assert postgres_server.psql("SELECT plan_complete FROM dispatcher.journal_runs WHERE journal = 'nightly'") == "t\n"
    doc = report(uri)
    assert (doc["batches"], doc["ok"], doc["failed"], doc["pending"], doc["error_codes"]) == (30, 30, 0, 0, {"0": 30})
    # The same keys as the report of a file journal.
    file_run = cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "o.jsonl"), "--no-progress")
    assert file_run.returncode == 0, file_run.stderr
    file_doc = orjson.loads(cli("report", str(tmp_path / "o.jsonl"), "--json").stdout)
    assert list(doc) == list(file_doc)
    text = cli("report", uri)
    assert text.stdout.startswith(f"journal {shown}\n")
    for output in (done.stdout, done.stderr, text.stdout, (tmp_path / "s.json").read_text()):
        assert PG_PASSWORD not in output


def wait_until(check: object, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def outcomes(server: PostgresServer, journal: str = "run") -> int:
    """The run's outcome lines so far (0 before its tables exist)."""
    try:
        return int(server.psql(f"SELECT count(*) FROM dispatcher.journal_outcomes WHERE journal = '{journal}'"))
    except subprocess.CalledProcessError:
        return 0


def test_a_resume_sends_nothing_again_and_a_new_send_on_a_used_journal_is_refused(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 12)
    assert cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress").returncode == 0
    again = cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress")
    assert again.returncode == 2
    shown = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres?journal=run"
    assert again.stderr.strip().splitlines() == [
        f"dispatcher: error: {shown} exists and is not empty; pass --resume to continue it, or choose another --out"
    ]
    resumed = cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert outcomes(postgres_server) == 12  # nothing sent twice


def test_a_second_send_on_a_journal_in_use_is_refused_naming_it_and_its_holder(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 200)
    first = start("send", str(jobs), "--endpoint", sandbox_process.url, "--out", uri, "--no-progress", "--rate", "5")
    try:
        wait_until(lambda: outcomes(postgres_server) > 0)
        second = cli("send", str(jobs), "--endpoint", sandbox_process.url, "--out", uri, "--no-progress", "--resume")
        assert second.returncode == 2
        shown = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres?journal=run"
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"dispatcher: error: {shown} is in use by another run (pid {first.pid} on ")
        assert PG_PASSWORD not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 130


def test_an_unreachable_database_is_one_line_and_nothing_is_sent(
    tmp_path: Path, sandbox_process: SandboxProcess
) -> None:
    port = free_port()
    uri = f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{port}/postgres?journal=run"
    jobs = jobs_of(tmp_path / "jobs.jsonl", 3)
    done = cli("send", str(jobs), "--endpoint", sandbox_process.url, "--out", uri, "--no-progress")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"dispatcher: error: postgresql://postgres@127.0.0.1:{port}/postgres?journal=run: cannot reach the database: "
    )
    assert PG_PASSWORD not in done.stderr + done.stdout
    assert sandbox_process.get("/sandbox/stats").get("0", 0) == 0
    worker = cli("work", uri, "--endpoint", sandbox_process.url)
    assert worker.returncode == 2
    assert len(worker.stderr.strip().splitlines()) == 1
    assert PG_PASSWORD not in worker.stderr
