"""`dispatcher send --rate-store redis://...` as a fleet sees it: real processes, a real Redis, a
sandbox in its own process counting every arrival in a strict one-second window."""

from __future__ import annotations

import datetime
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import (
    DEMO_ENV,
    DISPATCHER,
    ROOT,
    PostgresServer,
    RedisServer,
    SandboxProcess,
    as_new,
    cli_env,
    cli_without,
    free_port,
    journal,
    max_in_any_window,
    wait_until,
    write_jobs,
)


@pytest.fixture
def sandbox_process() -> Iterator[SandboxProcess]:
    box = SandboxProcess("--rate", "50")
    yield box
    box.stop()


@pytest.fixture
def postgres_server(module_postgres: PostgresServer) -> PostgresServer:
    """One server for the module's tests, each finding it as a new one (`as_new`)."""
    return as_new(module_postgres)


def send(jobs: Path, out: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    args = ["send", str(jobs), "--out", str(out), "--endpoint", url, "--no-progress", "--rate", "50", *extra]
    return subprocess.Popen(
        DISPATCHER(*args),
        env=cli_env(**DEMO_ENV),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_recipient_jobs(path: Path, name: str, count: int) -> Path:
    return write_jobs(
        path,
        [
            {"job_id": f"{name}-{i}", "GroupId": "@TGS#fleet", "Content": "hi", "ToMembers_Account": [f"{name}{i}"]}
            for i in range(count)
        ],
    )


def starts(*journals: Path) -> list[float]:
    """When each request started, by the wall clock of this one machine: its line's time less its latency."""
    out = []
    for path in journals:
        for line in journal(path):
            at = datetime.datetime.fromisoformat(line["at"].replace("Z", "+00:00")).timestamp()
            out.append(at - line["latency_ms"] / 1000)
    return out


def test_three_processes_share_one_budget(
    tmp_path: Path, redis_server: RedisServer, sandbox_process: SandboxProcess
) -> None:
    """Each alone at --rate 50 would put 150 requests a second on the server; together they keep 50."""
    runs = []
    outs = []
    for name in ("announce", "export", "backfill"):
        jobs = one_recipient_jobs(tmp_path / f"{name}.jsonl", name, 60)
        outs.append(tmp_path / f"{name}.outcomes.jsonl")
        runs.append(send(jobs, outs[-1], sandbox_process.url, "--rate-store", redis_server.url))
    for proc in runs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    stats = sandbox_process.get("/sandbox/stats")
    assert stats.get("60007", 0) == 0
    assert stats["0"] == 180
    assert max_in_any_window(starts(*outs)) <= 50
    # The fleet report reads the three journals as one run.
    report = subprocess.run(
        DISPATCHER("report", *map(str, outs), "--json"), cwd=ROOT, env=cli_env(), capture_output=True, check=True
    )
    doc = orjson.loads(report.stdout)
    assert (doc["batches"], doc["ok"], doc["failed"], doc["pending"], doc["error_codes"]) == (
        180,
        180,
        0,
        0,
        {"0": 180},
    )


def test_without_a_shared_store_three_processes_overrun_the_cap(
    tmp_path: Path, sandbox_process: SandboxProcess
) -> None:
    """What the shared store prevents: each process paces itself alone, and the server answers 60007."""
    runs = []
    for name in ("announce", "export", "backfill"):
        jobs = one_recipient_jobs(tmp_path / f"{name}.jsonl", name, 40)
        runs.append(send(jobs, tmp_path / f"{name}.outcomes.jsonl", sandbox_process.url))

    # The first refusal is the point: the processes are stopped then, not waited for through their retries.
    def refused_or_over() -> bool:
        ended = all(proc.poll() is not None for proc in runs)
        return bool(sandbox_process.get("/sandbox/stats").get("60007", 0) > 0 or ended)

    wait_until(refused_or_over)
    for proc in runs:
        proc.terminate()
        proc.communicate(timeout=60)
    assert sandbox_process.get("/sandbox/stats").get("60007", 0) > 0


def test_redis_killed_mid_run_halts_resumably_and_resume_finishes(
    tmp_path: Path, redis_server: RedisServer, sandbox_process: SandboxProcess
) -> None:
    jobs = one_recipient_jobs(tmp_path / "jobs.jsonl", "user", 100)
    out = tmp_path / "jobs.outcomes.jsonl"
    proc = send(jobs, out, sandbox_process.url, "--rate-store", redis_server.url, "--rate", "40")
    deadline = time.monotonic() + 30
    while (not out.exists() or len(out.read_bytes().splitlines()) < 10) and time.monotonic() < deadline:
        time.sleep(0.05)
    redis_server.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"lost the rate store redis://127.0.0.1:{redis_server.port}/0" in err
    lines = journal(out)
    assert {line["status"] for line in lines} == {"ok"}  # nothing failed, nothing half-recorded
    assert 10 <= len(lines) < 100

    redis_server.start()  # back, empty: the budget starts afresh
    resumed = send(jobs, out, sandbox_process.url, "--rate-store", redis_server.url, "--rate", "40", "--resume")
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert len(journal(out)) == 100
    deliveries = sandbox_process.get("/sandbox/ledger")["deliveries"]
    assert sorted(d["user"] for d in deliveries) == sorted(f"user{i}" for i in range(100))
    assert {d["count"] for d in deliveries} == {1}  # every recipient exactly once


def test_postgres_killed_mid_run_halts_resumably_and_resume_finishes(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    """The same with the budget in PostgreSQL: lost mid-run, the run stops (exit 2, nothing failed);
    once the database is back, --resume finishes and every recipient got one message."""
    jobs = one_recipient_jobs(tmp_path / "jobs.jsonl", "user", 100)
    out = tmp_path / "jobs.outcomes.jsonl"
    proc = send(jobs, out, sandbox_process.url, "--rate-store", postgres_server.url, "--rate", "40")
    deadline = time.monotonic() + 30
    while (not out.exists() or len(out.read_bytes().splitlines()) < 10) and time.monotonic() < deadline:
        time.sleep(0.05)
    postgres_server.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"lost the rate store postgresql://127.0.0.1:{postgres_server.port}/postgres: " in err
    assert "pg-secret" not in err
    lines = journal(out)
    assert {line["status"] for line in lines} == {"ok"}
    assert 10 <= len(lines) < 100

    postgres_server.start()
    resumed = send(jobs, out, sandbox_process.url, "--rate-store", postgres_server.url, "--rate", "40", "--resume")
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert len(journal(out)) == 100
    deliveries = sandbox_process.get("/sandbox/ledger")["deliveries"]
    assert sorted(d["user"] for d in deliveries) == sorted(f"user{i}" for i in range(100))
    assert {d["count"] for d in deliveries} == {1}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        DISPATCHER(*args), env=cli_env(**DEMO_ENV, **env), cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_unreachable_store_at_start_is_one_line_without_the_password(tmp_path: Path) -> None:
    jobs = one_recipient_jobs(tmp_path / "jobs.jsonl", "user", 3)
    port = free_port()
    done = run_cli("send", str(jobs), "--sandbox", DISPATCHER_RATE_STORE=f"redis://:sekrit-pw@127.0.0.1:{port}/0")
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"dispatcher: error: cannot reach the rate store redis://127.0.0.1:{port}/0: "
        f"Error 111 connecting to 127.0.0.1:{port}."
    )
    assert done.stderr.count("\n") == 1
    assert "sekrit-pw" not in done.stderr + done.stdout
    assert not (tmp_path / "jobs.outcomes.jsonl").exists()  # nothing was sent, and no empty journal is left


def test_a_run_at_another_rate_than_the_budget_is_refused(tmp_path: Path, redis_server: RedisServer) -> None:
    jobs = one_recipient_jobs(tmp_path / "jobs.jsonl", "user", 3)
    first = run_cli("send", str(jobs), "--sandbox", "--rate", "200", "--rate-store", redis_server.url)
    assert first.returncode == 0, first.stderr
    second = run_cli(
        "send", str(jobs), "--sandbox", "--rate", "300", "--rate-store", redis_server.url, "--out", str(tmp_path / "b")
    )
    assert second.returncode == 2
    key = "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification"
    assert second.stderr == (
        f"dispatcher: error: the shared budget {key} in {redis_server.url} holds --rate 200, and this run asks for "
        f"--rate 300: run with --rate 200, or change the budget by deleting the key (redis-cli DEL '{key}') once "
        "no run uses it, or wait for it to expire (600 s after its last use)\n"
    )


def test_a_missing_redis_extra_names_it(tmp_path: Path) -> None:
    jobs = one_recipient_jobs(tmp_path / "jobs.jsonl", "user", 3)
    done = cli_without("redis", "send", str(jobs), "--sandbox", "--rate-store", "redis://127.0.0.1:6379/0")
    assert done.returncode == 2
    assert done.stderr == (
        "dispatcher: error: --rate-store redis://127.0.0.1:6379/0 needs the redis extra: "
        "pip install 'tim-dispatcher[redis]'\n"
    )


def test_a_bad_store_uri_is_one_line(tmp_path: Path) -> None:
    jobs = one_recipient_jobs(tmp_path / "jobs.jsonl", "user", 3)
    done = run_cli("send", str(jobs), "--sandbox", "--rate-store", "http://:pw@127.0.0.1")
    assert (done.returncode, done.stderr) == (
        2,
        "dispatcher: error: --rate-store http://127.0.0.1: use memory://, redis://, rediss://, unix:///path or postgresql://\n",
    )


def test_an_unreachable_postgres_store_at_start_is_one_line_without_the_password(tmp_path: Path) -> None:
    jobs = one_recipient_jobs(tmp_path / "jobs.jsonl", "user", 3)
    port = free_port()
    store = f"postgresql://app:sekrit-pw@127.0.0.1:{port}/jobs?journal=nightly"
    done = run_cli("send", str(jobs), "--sandbox", DISPATCHER_RATE_STORE=store)
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"dispatcher: error: cannot reach the rate store postgresql://127.0.0.1:{port}/jobs: connection failed: "
    )
    assert done.stderr.count("\n") == 1
    assert "sekrit-pw" not in done.stderr + done.stdout and "app" not in done.stderr
    assert not (tmp_path / "jobs.outcomes.jsonl").exists()


def test_a_run_at_another_rate_than_the_postgres_budget_is_refused(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    jobs = one_recipient_jobs(tmp_path / "jobs.jsonl", "user", 3)
    first = run_cli("send", str(jobs), "--sandbox", "--rate", "200", "--rate-store", postgres_server.url)
    assert first.returncode == 0, first.stderr
    second = run_cli(
        "send",
        str(jobs),
        "--sandbox",
        "--rate",
        "300",
        "--out",
        str(tmp_path / "b"),
        DISPATCHER_RATE_STORE=postgres_server.url,
    )
    assert second.returncode == 2
    key = "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification"
    assert second.stderr == (
        f"dispatcher: error: the shared budget {key} in postgresql://127.0.0.1:{postgres_server.port}/postgres "
        "holds --rate 200, and this run asks for --rate 300: run with --rate 200, or change the budget by deleting "
        f"its row (DELETE FROM dispatcher.budget WHERE key = '{key}') once no run uses it, or wait for it to "
        "expire (600 s after its last use)\n"
    )


def test_a_missing_postgres_extra_names_it(tmp_path: Path) -> None:
    jobs = one_recipient_jobs(tmp_path / "jobs.jsonl", "user", 3)
    store = "postgresql://app:pw@127.0.0.1:5432/jobs"
    done = cli_without("psycopg", "send", str(jobs), "--sandbox", "--rate-store", store)
    assert (done.returncode, done.stderr) == (
        2,
        "dispatcher: error: --rate-store postgresql://127.0.0.1:5432/jobs needs the postgres extra: "
        "pip install 'tim-dispatcher[postgres]'\n",
    )
