"""A run in PostgreSQL when things go wrong around it, with real processes, a real PostgreSQL and a
sandbox in its own process counting every delivery: a worker paused past its lease, the journal's
lock lost, a database that stops answering, a lease too short for a request, and what the report
says of a run cut short. Each waits on what the processes do (their exits, rows in the database),
never on the clock."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import (
    ROOT,
    HoldingSandboxProcess,
    PostgresServer,
    RedisServer,
    SandboxProcess,
    _as_postgres,
    as_new,
    cli,
    deliveries,
    jobs_of,
    outcomes,
    plan_complete,
    postgres_bindir,
    report,
    start,
    summary_of,
    wait_until,
    write_jobs,
)

pytestmark = pytest.mark.usefixtures("postgres_template")


@pytest.fixture
def sandbox_process() -> Iterator[SandboxProcess]:
    box = SandboxProcess("--rate", "100")
    yield box
    box.stop()


@pytest.fixture
def postgres_server(module_postgres: PostgresServer) -> PostgresServer:
    """One server for the module's tests, each finding it as a new one (`as_new`)."""
    return as_new(module_postgres)


@contextlib.contextmanager
def killed_at_the_end(*procs: subprocess.Popen[str]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def server_pids(server: PostgresServer) -> list[int]:
    """The postmaster and every backend it started."""
    assert server.proc is not None
    found = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True, check=False)
    return [server.proc.pid, *(int(pid) for pid in found.stdout.split())]


@contextlib.contextmanager
def stalled(server: PostgresServer) -> Iterator[None]:
    """The database stops answering, as a host that froze or a network that drops every packet: its
    processes are stopped (the kernel still accepts connections and data), and continued at the end."""
    pids = server_pids(server)
    try:
        for pid in pids:
            # A backend may end between the listing and its signal (one another test's session ended): the
            # others, already stopped, must still be continued below, or the test hangs on them.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def claims_of(server: PostgresServer, proc: subprocess.Popen[str]) -> int:
    """Batches claimed now by the worker process `proc` (its claims name host:pid:token)."""
    text = server.psql(f"SELECT count(*) FROM dispatcher.journal_batches WHERE claimed_by LIKE '%:{proc.pid}:%'")
    return int(text)


def doubled_ok(server: PostgresServer) -> int:
    """Batches with more than one `ok` line."""
    return int(
        server.psql(
            "SELECT count(*) FROM (SELECT doc::json->>'job_id', doc::json->>'batch' FROM dispatcher.journal_outcomes "
            "WHERE doc::json->>'status' = 'ok' GROUP BY 1, 2 HAVING count(*) > 1) AS twice"
        )
    )


def test_a_worker_paused_past_its_lease_never_records_over_the_worker_that_took_its_batches(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Replies take a second, so the worker is stopped with requests in flight; the send takes over its
    batches once their leases run out and finishes the run. Woken, the worker's late replies are
    refused by the database, it sends nothing it no longer holds, and it ends."""
    box = SandboxProcess("--latency", "1")
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 80)
    common = ["--endpoint", box.url, "--no-progress", "--lease", "3", "--timeout", "1.5"]
    sender = start("send", str(jobs), "--out", uri, "--rate", "40", "--concurrency", "16", *common)
    wait_until(lambda: plan_complete(postgres_server), sender)  # a worker joins a run, never starts one
    worker = start("work", uri, *common, "--concurrency", "4", "--summary-json", str(tmp_path / "w.json"), cwd=tmp_path)
    try:
        with killed_at_the_end(sender, worker):
            wait_until(lambda: claims_of(postgres_server, worker) >= 3, sender, worker)
            worker.send_signal(signal.SIGSTOP)
            _, err = sender.communicate(timeout=120)
            assert sender.returncode == 0, err
            worker.send_signal(signal.SIGCONT)
            _, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err
        got = deliveries(box)
    finally:
        box.stop()
    assert sorted(got) == sorted(f"u{i}" for i in range(80))
    assert sum(got.values()) - 80 <= 4  # at most the worker's requests in flight at the pause
    assert doubled_ok(postgres_server) == 0
    assert summary_of(tmp_path / "w.json")["claims_lost"] >= 1  # type: ignore[operator]
    doc = report(uri)
    assert (doc["batches"], doc["ok"], doc["failed"], doc["pending"]) == (80, 80, 0, 0)
    assert postgres_server.psql("SELECT count(*) FROM dispatcher.journal_batches WHERE claimed_by IS NOT NULL") == "0\n"


def test_a_lease_too_short_for_a_request_is_refused(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path / "jobs.jsonl", 1)
    uri = "postgresql://me@127.0.0.1:5999/db?journal=run"
    send = cli("send", str(jobs), "--sandbox", "--out", uri, "--lease", "15")
    assert send.returncode == 2
    assert send.stderr == (
        "dispatcher: error: --lease 15 is too short for --timeout 10: a claim must hold for a whole request between "
        "its renewals; give --lease 20 or more, or a shorter --timeout\n"
    )
    work = cli("work", uri, "--lease", "3", "--timeout", "2")
    assert work.returncode == 2
    assert "--lease 3 is too short for --timeout 2" in work.stderr
    # A file journal has no claims: --lease means nothing there.
    in_a_file = cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "o.jsonl"), "--lease", "1")
    assert in_a_file.returncode == 0, in_a_file.stderr


def test_a_send_that_loses_the_journals_lock_stops_and_no_second_send_runs_beside_it(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 80)
    args = ["send", str(jobs), "--out", uri, "--endpoint", sandbox_process.url, "--no-progress", "--rate", "40"]
    args += ["--concurrency", "4"]
    first = start(*args)
    with killed_at_the_end(first):
        wait_until(lambda: outcomes(postgres_server) > 5, first)
        # The connection that holds the journal's lock is cut (a proxy restarted, an admin's kill) while
        # the send is held still, so that the second comes while the first still lives, whatever the speed.
        first.send_signal(signal.SIGSTOP)
        postgres_server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ExclusiveLock' "
            "AND granted"
        )
        second = cli(*args, "--resume")
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=60)
    assert second.returncode == 2, second.stderr
    shown = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres?journal=run"
    assert f"{shown} is in use by another run (pid {first.pid} on {socket.gethostname()}, seen " in second.stderr
    assert first.returncode == 2, err
    assert "this send lost the journal's lock" in err
    third = cli(*args, "--resume")
    assert third.returncode == 0, third.stderr
    got = deliveries(sandbox_process)
    assert sorted(got) == sorted(f"u{i}" for i in range(80))
    assert sum(got.values()) - 80 <= 4


def test_a_database_that_stops_answering_stops_the_run_resumably(
    tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer, sandbox_process: SandboxProcess
) -> None:
    """The budget is in Redis, so that only the journal stops answering: before, a commit waited for it for ever."""
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 120)
    args = ["send", str(jobs), "--out", uri, "--endpoint", sandbox_process.url, "--no-progress", "--rate", "40"]
    args += ["--lease", "2", "--timeout", "1", "--concurrency", "4", "--rate-store", redis_server.url]
    sender = start(*args)
    with killed_at_the_end(sender):
        wait_until(lambda: outcomes(postgres_server) > 20, sender)
        with stalled(postgres_server):
            _, err = sender.communicate(timeout=60)  # bounded by the statements' timeouts, not forever
    assert sender.returncode == 2, err
    assert "no answer within" in err
    # Each line of stderr is the run's own log (psycopg's warnings on a call given up are not news).
    assert [line for line in err.splitlines() if not line.startswith("20")] == []
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    got = deliveries(sandbox_process)
    assert sorted(got) == sorted(f"u{i}" for i in range(120))
    assert sum(got.values()) - 120 <= 4


def test_a_signal_ends_a_run_whose_database_stopped_answering_within_two_seconds(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 120)
    args = ["send", str(jobs), "--out", uri, "--endpoint", sandbox_process.url, "--no-progress", "--rate", "40"]
    sender = start(*args, "--concurrency", "4")
    with killed_at_the_end(sender):
        wait_until(lambda: outcomes(postgres_server) > 20, sender)
        with stalled(postgres_server):
            sender.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            _, err = sender.communicate(timeout=60)
            took = time.monotonic() - signalled
    assert sender.returncode == 130, err
    # Without the bound, the run waited for the database's statements (10 s) or for ever.
    assert took < 5, f"took {took:.1f} s"


def test_report_counts_planned_batches_never_sent_as_pending_and_lists_them(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 60)
    args = ["send", str(jobs), "--out", uri, "--endpoint", sandbox_process.url, "--no-progress", "--rate", "5"]
    sender = start(*args, "--concurrency", "1")
    with killed_at_the_end(sender):
        wait_until(lambda: plan_complete(postgres_server) and outcomes(postgres_server) >= 3, sender)
        sender.send_signal(signal.SIGTERM)
        sender.communicate(timeout=60)
    assert sender.returncode == 130
    ok = int(postgres_server.psql("SELECT count(*) FROM dispatcher.journal_batches WHERE status = 'ok'"))
    doc = report(uri)
    assert (doc["batches"], doc["ok"], doc["failed"], doc["pending"]) == (60, ok, 0, 60 - ok)
    assert 3 <= ok < 60
    pending = doc["not_notified"]
    assert isinstance(pending, list)
    assert len(pending) == 60 - ok
    last = {
        "job_id": "u-59",
        "group_id": "@TGS#pg",
        "batch": 0,
        "status": "pending",
        "recipients": ["u59"],
        "error_code": None,
        "meaning": "not sent yet",
    }
    assert last in pending
    text = cli("report", uri).stdout
    assert f"batches 60: ok {ok}, failed 0, pending {60 - ok}; jobs rejected 0" in text
    assert "  u-59 batch 0 (pending) group @TGS#pg: 1 recipients: u59 (not sent yet)" in text


def test_report_of_a_run_in_postgres_says_what_its_exports_left_out_as_a_file_does(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    (tmp_path / "audience.txt").write_text("".join(f"user{i % 40}\n" for i in range(55)))  # 15 repeats
    (tmp_path / "optout.txt").write_text("".join(f"user{i}\n" for i in range(22)))
    job = {"job_id": "promo", "GroupId": "@TGS#g", "Content": "hi", "recipients_file": "audience.txt"}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{**job, "exclude_file": "optout.txt"}])
    uri = postgres_server.journal()
    assert cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress").returncode == 0
    assert cli("send", str(jobs), "--sandbox", "--out", str(tmp_path / "o.jsonl"), "--no-progress").returncode == 0
    in_pg, in_file = report(uri), report(str(tmp_path / "o.jsonl"))
    assert (in_pg["duplicates"], in_pg["excluded"]) == (15, 22)
    assert in_pg["jobs"] == in_file["jobs"]
    text = cli("report", uri).stdout
    assert "recipients left out: 15 duplicates, 22 excluded" in text
    assert "    export: 1 file, 55 rows, 40 distinct, 15 duplicates, 22 excluded" in text


def test_report_refuses_a_journal_newer_than_it_knows(tmp_path: Path, postgres_server: PostgresServer) -> None:
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 2)
    assert cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress").returncode == 0
    postgres_server.psql("UPDATE dispatcher.meta SET version = 99 WHERE component = 'journal'")
    done = cli("report", uri)
    shown = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres?journal=run"
    assert done.returncode == 2
    assert done.stderr == (
        f"dispatcher: error: {shown}: its tables are of a newer version (99) than this dispatcher knows (2); "
        "upgrade dispatcher\n"
    )


def test_a_resume_that_finds_no_run_says_so(tmp_path: Path, postgres_server: PostgresServer) -> None:
    jobs = jobs_of(tmp_path / "jobs.jsonl", 2)
    uri = postgres_server.journal("fresh")
    done = cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress", "--resume", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    shown = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres?journal=fresh"
    warnings = [orjson.loads(line)["event"] for line in done.stderr.splitlines() if '"warning"' in line]
    assert f"--resume: {shown} holds no run to resume; this send starts a new one" in warnings
    in_a_file = cli(
        "send", str(jobs), "--sandbox", "--out", str(tmp_path / "new.jsonl"), "--no-progress", "--resume",
        "--log-format", "json",
    )  # fmt: skip
    assert in_a_file.returncode == 0, in_a_file.stderr
    warnings = [orjson.loads(line)["event"] for line in in_a_file.stderr.splitlines() if '"warning"' in line]
    assert f"--resume: {tmp_path / 'new.jsonl'} holds no run to resume; this send starts a new one" in warnings


def test_a_journal_half_run_by_the_first_release_is_upgraded_and_finished_from_another_directory(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    """tests/data/journal-v1 is what release faf448d left in its database (schema version 1): a send
    of 12 one-recipient jobs stopped by SIGTERM after 5 were delivered, dumped with pg_dump."""
    data = ROOT / "tests" / "data" / "journal-v1"
    load = [str(postgres_bindir() / "psql"), "-h", str(postgres_server.data), "-p", str(postgres_server.port)]
    load += ["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(data / "journal.sql")]
    subprocess.run(load, check=True, capture_output=True, **_as_postgres())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(data / "jobs.jsonl", elsewhere / "jobs.jsonl")
    uri = postgres_server.journal()
    before = report(uri)  # the report reads a journal of version 1 as it is
    assert (before["batches"], before["ok"], before["pending"]) == (12, 5, 7)
    args = ["send", "jobs.jsonl", "--out", uri, "--endpoint", sandbox_process.url, "--no-progress", "--rate", "2"]
    done = cli(*args, "--resume", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert postgres_server.psql("SELECT version FROM dispatcher.meta WHERE component = 'journal'") == "2\n"
    assert sorted(deliveries(sandbox_process)) == [f"u{i}" for i in (10, 11, 5, 6, 7, 8, 9)]
    after = report(uri)
    assert (after["batches"], after["ok"], after["pending"]) == (12, 12, 0)


BUDGET_KEY = "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification"


def test_a_journal_and_budget_half_run_by_the_release_before_the_sql_files_are_opened_and_finished(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    """tests/data/journal-v2 is what release 1ed037c left in its database (journal and budget at version
    2): a send of 12 one-recipient jobs, pacing in the journal's database, stopped by SIGTERM after 5 were
    delivered, dumped with pg_dump."""
    data = ROOT / "tests" / "data" / "journal-v2"
    load = [str(postgres_bindir() / "psql"), "-h", str(postgres_server.data), "-p", str(postgres_server.port)]
    load += ["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(data / "journal.sql")]
    subprocess.run(load, check=True, capture_output=True, **_as_postgres())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(data / "jobs.jsonl", elsewhere / "jobs.jsonl")
    uri = postgres_server.journal()
    before = report(uri)
    assert (before["batches"], before["ok"], before["pending"]) == (12, 5, 7)
    args = ["send", "jobs.jsonl", "--out", uri, "--endpoint", sandbox_process.url, "--no-progress", "--rate", "2"]
    done = cli(*args, "--resume", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    meta = postgres_server.psql("SELECT component, version FROM dispatcher.meta ORDER BY component")
    assert meta == "budget|2\njournal|2\n"
    assert sorted(deliveries(sandbox_process)) == [f"v{i}" for i in (10, 11, 5, 6, 7, 8, 9)]
    after = report(uri)
    assert (after["batches"], after["ok"], after["pending"]) == (12, 12, 0)
    # The same budget, used in place: one row, at the run's rate (its count of slots restarts once it
    # has been unused for 10 minutes, as the dump's has).
    assert postgres_server.psql("SELECT key, rate FROM dispatcher.budget") == f"{BUDGET_KEY}|2\n"


def test_a_database_of_the_first_release_has_its_budget_migrated_with_its_journal(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """tests/data/journal-v1 holds faf448d's budget too (version 1): the first open of the journal,
    by a `work` that finds nothing to send, migrates both under one lock (what the budget of version
    2 added: its columns, and TAKE and STEP_DOWN with more arguments)."""
    data = ROOT / "tests" / "data" / "journal-v1"
    load = [str(postgres_bindir() / "psql"), "-h", str(postgres_server.data), "-p", str(postgres_server.port)]
    load += ["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(data / "journal.sql")]
    subprocess.run(load, check=True, capture_output=True, **_as_postgres())
    postgres_server.psql("UPDATE dispatcher.journal_runs SET rate_store = 'memory://'")  # refused before pacing
    done = cli("work", postgres_server.journal(), "--endpoint", "http://127.0.0.1:9", "--no-progress")
    assert done.returncode == 2, done.stderr
    meta = postgres_server.psql("SELECT component, version FROM dispatcher.meta ORDER BY component")
    assert meta == "budget|2\njournal|2\n"
    columns = "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns "
    columns += "WHERE table_schema = 'dispatcher' AND table_name = 'budget' AND column_name IN ('slots', 'taken')"
    assert postgres_server.psql(columns) == "slots,taken\n"
    take = "SELECT count(*) FROM pg_proc WHERE proname = 'budget_take' AND pronargs = 17"
    assert postgres_server.psql(take) == "1\n"


COLUMNS = (
    "SELECT string_agg(table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable, ', ' "
    "ORDER BY table_name, column_name) FROM information_schema.columns WHERE table_schema = 'dispatcher'"
)


def test_a_database_migrated_from_the_first_release_has_the_tables_of_a_new_one(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """schema.sql (a new database) and the migrations (an old one) end at the same tables and columns."""
    data = ROOT / "tests" / "data" / "journal-v1"
    load = [str(postgres_bindir() / "psql"), "-h", str(postgres_server.data), "-p", str(postgres_server.port)]
    load += ["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(data / "journal.sql")]
    subprocess.run(load, check=True, capture_output=True, **_as_postgres())
    jobs = jobs_of(tmp_path / "jobs.jsonl", 1)
    assert cli("send", str(jobs), "--sandbox", "--out", postgres_server.journal("new"), "--no-progress").returncode == 0
    migrated = postgres_server.psql(COLUMNS)
    postgres_server.psql("DROP SCHEMA dispatcher CASCADE")
    assert cli("send", str(jobs), "--sandbox", "--out", postgres_server.journal("new"), "--no-progress").returncode == 0
    assert postgres_server.psql(COLUMNS) == migrated
    assert "journal_batches.claim bigint NO" in migrated and "budget.taken bigint YES" in migrated


@pytest.mark.parametrize("finisher", ["work", "send"])
def test_a_worker_re_drives_the_failed_batches_a_retry_failed_send_re_opened(
    tmp_path: Path, postgres_server: PostgresServer, finisher: str
) -> None:
    """batchsendmsg to accounts the app lacked (70107): every batch failed for its second recipient. A
    `send --resume --retry-failed` re-opens them and dies; a worker, or a `send --resume` without
    --retry-failed, finishes the run. Before, the worker sent each batch with no recipient at all
    (90003), and the accounts were never retried; the send counted each batch twice, once skipped as
    failed, and exited 1 though every batch ended ok."""
    (tmp_path / "before.txt").write_text("".join(f"a{i}\n" for i in range(12)))
    (tmp_path / "after.txt").write_text("".join(f"a{i}\nx{i}\n" for i in range(12)))
    docs = [
        {"job_id": f"dm-{i}", "api": "batchsendmsg", "Text": "hi", "To_Account": [f"a{i}", f"x{i}"]} for i in range(12)
    ]
    jobs = write_jobs(tmp_path / "jobs.jsonl", docs)
    uri = postgres_server.journal()
    box = SandboxProcess("--accounts", str(tmp_path / "before.txt"))
    try:
        first = cli("send", str(jobs), "--out", uri, "--endpoint", box.url, "--no-progress", "--rate", "20")
    finally:
        box.stop()
    assert first.returncode == 1, first.stderr
    box = SandboxProcess("--accounts", str(tmp_path / "after.txt"))
    # The send re-opening them reaches a server that never answers: it delivers none of them.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        try:
            args = ["--no-progress", "--rate", "20", "--lease", "3", "--timeout", "1.5"]
            nowhere = f"http://127.0.0.1:{silent.getsockname()[1]}"
            again = start("send", str(jobs), "--out", uri, "--resume", "--retry-failed", "--endpoint", nowhere, *args)
            with killed_at_the_end(again):
                wait_until(
                    lambda: (
                        postgres_server.psql("SELECT count(*) FROM dispatcher.journal_batches WHERE final") == "0\n"
                    ),
                    again,
                )
                again.kill()  # it re-opened the failed batches and is gone: a worker finishes the run
                again.communicate()
            summary = tmp_path / "summary.json"
            if finisher == "work":
                done = cli("work", uri, "--endpoint", box.url, *args, "--summary-json", str(summary))
            else:
                done = cli(
                    "send",
                    str(jobs),
                    "--out",
                    uri,
                    "--resume",
                    "--endpoint",
                    box.url,
                    *args,
                    "--summary-json",
                    str(summary),
                )
            assert done.returncode == 0, done.stderr
            got = deliveries(box)
        finally:
            box.stop()
    assert got == {f"x{i}": 1 for i in range(12)}  # the accounts delivered to before are never sent again
    counted = summary_of(summary)
    assert (counted["batches"], counted["ok"], counted["failed"], counted["skipped"]) == (12, 12, 0, 0)
    doc = report(uri)
    assert (doc["batches"], doc["ok"], doc["failed"]) == (12, 12, 0)
    assert "90003" not in doc["error_codes"]  # type: ignore[operator]


# A sandbox in a process of its own whose replies to its first COUNT requests are held (delivered, not yet
# answered) until a line comes on its stdin; every later request is answered at once. It prints its URL,
# then "held" once the COUNT are.
def test_a_send_that_lost_its_lock_refuses_a_second_send_for_as_long_as_its_requests_take(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """The first send's replies are held until the second send has been tried: the first, its lock's
    connection cut, lives on for its requests in flight, longer than a heartbeat counts as fresh (5 s).
    Before, its heartbeat stopped with the connection, and a second send started beside it once the
    heartbeat was 5 s old. (The replies are held, not slow: the third send is answered at once.)"""
    box = HoldingSandboxProcess(after=0, count=4, only=True)  # the first 4 replies held
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 8)
    args = ["send", str(jobs), "--out", uri, "--endpoint", box.url, "--no-progress", "--rate", "20"]
    args += ["--concurrency", "4", "--timeout", "15"]  # the replies come well within their timeout
    first = start(*args)
    try:
        with killed_at_the_end(first):
            box.wait_held(first)  # 4 requests in flight, until the release below
            cut = postgres_server.psql(
                "SELECT clock_timestamp(), pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND mode = 'ExclusiveLock' AND granted"
            ).split("|")[0]
            # Either it beat since the cut, or its heartbeat is older than counts as fresh.
            wait_until(
                lambda: (
                    postgres_server.psql(
                        f"SELECT beat_at > '{cut}' OR clock_timestamp() - beat_at > interval '5.5 s' "
                        "FROM dispatcher.journal_runs"
                    )
                    == "t\n"
                ),
                first,
            )
            alive = first.poll() is None  # its requests in flight go on
            second = cli(*args, "--resume")
            box.release()
            _, err = first.communicate(timeout=60)
        third = cli(*args, "--resume")
        got = deliveries(box)
    finally:
        box.stop()
    assert alive
    assert second.returncode == 2, second.stderr
    assert f"is in use by another run (pid {first.pid} on {socket.gethostname()}, seen " in second.stderr
    assert first.returncode == 2, err
    assert "this send lost the journal's lock" in err
    assert third.returncode == 0, third.stderr
    assert got == {f"u{i}": 1 for i in range(8)}


def sockets_of(proc: subprocess.Popen[str], port: int) -> list[list[str]]:
    """The rows of /proc/net/tcp of the connections of `proc` to the server on `port`."""
    inodes = set()
    for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return [row for row in rows if row[9] in inodes and int(row[2].rsplit(":", 1)[1], 16) == port]


def backends_of(server: PostgresServer, proc: subprocess.Popen[str]) -> str:
    """The server's processes that serve `proc`, as a list for SQL's IN."""
    ports = [str(int(row[1].rsplit(":", 1)[1], 16)) for row in sockets_of(proc, server.port)]
    found = server.psql(f"SELECT pid FROM pg_stat_activity WHERE client_port IN ({', '.join(ports) or '0'})")
    return ", ".join(found.split()) or "0"


def unread(proc: subprocess.Popen[str], port: int) -> tuple[int, int]:
    """Bytes unread in the TCP connections of `proc` to the server on `port`: in the server's sockets (a
    call the server has not read yet), and in the process's own (an answer it has not read yet)."""
    ours = sockets_of(proc, port)
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    mine = {row[1] for row in ours}
    server = sum(int(row[4].split(":")[1], 16) for row in rows if row[2] in mine)
    return server, sum(int(row[4].split(":")[1], 16) for row in ours)


def test_a_worker_stopped_while_the_database_answered_it_goes_on_once_continued(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    """Ctrl-Z, then fg, 11 s later: the database's answer came while the worker was stopped. Before,
    the bound on that call (2 s for the budget, 10 s for the journal) counted the stopped time, and the
    worker stopped the run for a database that had answered: exit 2."""
    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 400)
    common = ["--endpoint", sandbox_process.url, "--no-progress", "--concurrency", "4"]
    sender = start("send", str(jobs), "--out", uri, "--rate", "40", *common)
    wait_until(lambda: plan_complete(postgres_server), sender)
    worker = start("work", uri, *common)
    with killed_at_the_end(sender, worker):
        wait_until(lambda: claims_of(postgres_server, worker) > 0, sender, worker)
        with stalled(postgres_server):  # a call of the worker's is waiting on the database
            wait_until(lambda: unread(worker, postgres_server.port)[0] > 0, sender, worker)
            worker.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
        # The answer waits in the worker's socket while it is stopped, longer than any bound on a call.
        wait_until(lambda: unread(worker, postgres_server.port)[1] > 0, sender, worker)
        time.sleep(max(0.0, stopped_at + 11.01 - time.monotonic()))  # the scenario: 11 s stopped, in real time
        worker.send_signal(signal.SIGCONT)
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err
    assert sorted(deliveries(sandbox_process)) == sorted(f"u{i}" for i in range(400))
    assert doubled_ok(postgres_server) == 0


def lock_waiters(server: PostgresServer) -> int:
    """Sessions waiting for a lock on the outcome lines' table."""
    return int(
        server.psql(
            "SELECT count(*) FROM pg_locks WHERE relation = 'dispatcher.journal_outcomes'::regclass AND NOT granted"
        )
    )


def test_report_reads_a_run_as_one_moment_saw_it_while_workers_commit(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Workers commit lines while the report reads (its plan, its lines twice, the batches not sent);
    a worker's line may be committed after a later one (its number taken first). Locks hold the report
    between its reads while such a line is committed. Before, each read saw another moment: the lines
    moved by one between the two passes, and each failed batch was listed with another's recipients."""
    import threading

    import psycopg

    (tmp_path / "accounts.txt").write_text("".join(f"a{i}\n" for i in range(4)))
    docs = [
        {"job_id": f"dm-{i}", "api": "batchsendmsg", "Text": "hi", "To_Account": [f"a{i}", f"x{i}"]} for i in range(4)
    ]
    jobs = write_jobs(tmp_path / "jobs.jsonl", docs)
    uri = postgres_server.journal()
    box = SandboxProcess("--accounts", str(tmp_path / "accounts.txt"))
    try:
        sent = cli("send", str(jobs), "--out", uri, "--endpoint", box.url, "--no-progress", "--concurrency", "1")
    finally:
        box.stop()
    assert sent.returncode == 1, sent.stderr
    late = orjson.dumps({"job_id": "late", "batch": None, "status": "rejected", "final": True, "recipients": ["zed"]})
    held = threading.Event()
    with psycopg.connect(postgres_server.url) as first, psycopg.connect(postgres_server.url) as second:
        first.execute("LOCK TABLE dispatcher.journal_outcomes IN ACCESS EXCLUSIVE MODE")
        reader = start("report", uri, "--json")
        with killed_at_the_end(reader):
            wait_until(lambda: lock_waiters(postgres_server) == 1, reader)  # its first read of the lines waits

            def hold_between_reads() -> None:
                second.execute("LOCK TABLE dispatcher.journal_outcomes IN ACCESS EXCLUSIVE MODE")
                held.set()

            holder = threading.Thread(target=hold_between_reads)
            holder.start()
            wait_until(lambda: lock_waiters(postgres_server) == 2, reader)  # the second lock waits behind it
            first.commit()  # the report reads its lines, then waits for the second lock, or ends
            wait_until(held.is_set, reader)
            # A line numbered before every other, committed between the report's reads.
            second.execute(
                "INSERT INTO dispatcher.journal_outcomes (journal, seq, doc) OVERRIDING SYSTEM VALUE "
                "VALUES ('run', -1, %s)",
                (late.decode(),),
            )
            second.commit()
            holder.join()
            out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    doc = orjson.loads(out)
    missed = [(entry["job_id"], entry["recipients"]) for entry in doc["not_notified"]]
    assert sorted(missed) == [("dm-0", ["x0"]), ("dm-1", ["x1"]), ("dm-2", ["x2"]), ("dm-3", ["x3"])]


@pytest.mark.parametrize("signalled", [False, True])
def test_report_of_a_database_that_stops_answering_ends_within_its_bound_and_at_once_on_a_signal(
    tmp_path: Path, postgres_server: PostgresServer, signalled: bool
) -> None:
    """The report waits on the database (a lock holds its read of the lines) when the database's
    processes stop: the kernel still acknowledges, so no keepalive nor tcp_user_timeout tells. Before,
    the report waited for ever, and a signal took 10 s (psycopg's cancel and its wait)."""
    import psycopg

    jobs = jobs_of(tmp_path / "jobs.jsonl", 3)
    uri = postgres_server.journal()
    assert cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress").returncode == 0
    with psycopg.connect(postgres_server.url) as holder:
        holder.execute("LOCK TABLE dispatcher.journal_outcomes IN ACCESS EXCLUSIVE MODE")
        reader = start("report", uri)
        with killed_at_the_end(reader):
            wait_until(lambda: lock_waiters(postgres_server) == 1, reader)
            with stalled(postgres_server):
                if signalled:
                    reader.send_signal(signal.SIGTERM)
                began = time.monotonic()
                _, err = reader.communicate(timeout=60)
                took = time.monotonic() - began
    if signalled:
        assert reader.returncode == 130, err
        assert took < 2, f"took {took:.1f} s"
    else:
        assert reader.returncode == 2, err
        shown = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres?journal=run"
        assert err == f"dispatcher: error: {shown}: no answer within 10 s\n"


def test_a_send_stopped_while_it_stores_its_plan_stores_it_once_continued(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    """A part of the plan may take long to store (up to 20,000 batches, over a slow link; here the send
    is stopped for 11 s in the middle of its COPY, which a lock held first). Before, the database
    cancelled the COPY after 10 s, the session's bound on a statement, and the run stopped: exit 2,
    and a resume would have tried the same part in the same time."""
    import psycopg

    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 40)
    args = ["send", str(jobs), "--out", uri, "--endpoint", sandbox_process.url, "--no-progress", "--rate", "40"]
    copying = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dispatcher' AND query LIKE 'COPY%' "
        "AND wait_event_type = 'Lock'"
    )
    # The tables exist before the send (a first run made them), so that the lock can be taken.
    one = jobs_of(tmp_path / "one.jsonl", 1)
    first = cli("send", str(one), "--out", postgres_server.journal("first"), "--sandbox", "--rate", "40")
    assert first.returncode == 0, first.stderr
    with psycopg.connect(postgres_server.url) as holder:
        holder.execute("LOCK TABLE dispatcher.journal_jobs IN SHARE MODE")
        sender = start(*args)
        with killed_at_the_end(sender):
            wait_until(lambda: postgres_server.psql(copying) == "1\n", sender)
            sender.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            holder.commit()
            time.sleep(max(0.0, stopped_at + 11.01 - time.monotonic()))  # the scenario: 11 s stopped, in real time
            sender.send_signal(signal.SIGCONT)
            _, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err
    assert sorted(deliveries(sandbox_process)) == sorted(f"u{i}" for i in range(40))


def test_a_worker_sends_nothing_more_of_a_job_withdrawn_while_it_holds_its_batches(
    tmp_path: Path, postgres_server: PostgresServer, sandbox_process: SandboxProcess
) -> None:
    """A worker paced slowly holds a dozen batches of a job (4 waiting for a slot, 8 queued) when a
    resume finds the job changed and withdraws it. Before, the worker sent every batch it held,
    the old version, until its next renewal (a third of the lease); their lines were refused, so the
    deliveries were on no record. Now it asks the database before each request: at most the 4 that
    were already waiting for their slot go out."""
    uri = postgres_server.journal()
    old = {"job_id": "J", "GroupId": "@TGS#pg", "Content": "old", "ToMembers_Account": [f"j{i}" for i in range(40)]}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [old])
    common = ["--endpoint", sandbox_process.url, "--no-progress", "--rate", "2", "--lease", "60"]
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the send that plans it delivers nothing
        nowhere = ["--endpoint", f"http://127.0.0.1:{silent.getsockname()[1]}"]
        planned = start("send", str(jobs), "--out", uri, "--batch-size", "1", "--concurrency", "1", *common, *nowhere)
        with killed_at_the_end(planned):
            wait_until(lambda: plan_complete(postgres_server))
            planned.kill()  # the plan is stored; its send is gone (its claims run out in 60 s)
            planned.communicate()
    worker = start("work", uri, *common, "--concurrency", "4")
    with killed_at_the_end(worker):
        wait_until(lambda: claims_of(postgres_server, worker) >= 12)
        write_jobs(tmp_path / "jobs.jsonl", [{**old, "Content": "new"}])
        resumed = cli("send", str(jobs), "--out", uri, "--resume", "--batch-size", "1", "--concurrency", "1", *common)
        assert resumed.returncode == 1, resumed.stderr  # J is rejected: changed since the plan was stored
        _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    recorded = int(
        postgres_server.psql(
            "SELECT count(*) FROM dispatcher.journal_outcomes WHERE doc::json->>'job_id' = 'J' "
            "AND doc::json->>'status' = 'ok'"
        )
    )
    delivered = sum(deliveries(sandbox_process).values())
    assert delivered - recorded <= 4  # sent after the withdrawal: on no record


def test_a_uri_s_libpq_parameters_reach_it_as_written(tmp_path: Path, postgres_server: PostgresServer) -> None:
    """`options` with a space (percent-encoded, as libpq's URIs want it). Before, the space reached libpq
    as '+', and the database refused the connection: unrecognized configuration parameter "+lock_timeout"."""
    jobs = jobs_of(tmp_path / "jobs.jsonl", 2)
    uri = postgres_server.journal() + "&options=-c%20lock_timeout%3D4000"
    # Paced in memory: the budget's store, in the journal's database by default, reads the URI on its own.
    done = cli("send", str(jobs), "--sandbox", "--out", uri, "--no-progress", "--rate-store", "memory://")
    assert done.returncode == 0, done.stderr
    assert report(uri)["ok"] == 2


def test_a_worker_stopped_in_the_middle_of_a_commit_goes_on_once_continued(
    tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer, sandbox_process: SandboxProcess
) -> None:
    """The worker is stopped while its commit waits on the database (a lock holds the outcome lines'
    table), longer than the database keeps a session idle in a transaction (1 s here, through the
    URI's options; 30 s by default). Before, a commit was a transaction of several statements: the
    database ended the session of the stopped worker between two, and, continued, it stopped its
    run for a lost database (exit 2). A commit is now one statement. (The budget is in Redis: the
    budget's store reads a URI's options on its own.)"""
    import psycopg

    uri = postgres_server.journal()
    jobs = jobs_of(tmp_path / "jobs.jsonl", 120)  # at --rate 20: 6 s, long enough for the worker to join and commit
    common = [
        "--endpoint",
        sandbox_process.url,
        "--no-progress",
        "--concurrency",
        "4",
        "--rate-store",
        redis_server.url,
    ]
    sender = start("send", str(jobs), "--out", uri, "--rate", "20", *common)
    wait_until(lambda: plan_complete(postgres_server))
    quick = f"{uri}&options=-c%20idle_in_transaction_session_timeout%3D1000"
    worker = start("work", quick, *common)
    with killed_at_the_end(sender, worker):
        wait_until(lambda: claims_of(postgres_server, worker) > 0)
        waiting = f"SELECT pid FROM pg_stat_activity WHERE pid IN ({backends_of(postgres_server, worker)}) AND "
        waiting += "wait_event_type = 'Lock'"
        with psycopg.connect(postgres_server.url) as holder:
            holder.execute("LOCK TABLE dispatcher.journal_outcomes IN SHARE MODE")
            wait_until(lambda: postgres_server.psql(waiting) != "")  # its commit waits on the lock
            committing = postgres_server.psql(waiting).strip()
            worker.send_signal(signal.SIGSTOP)
        # Its commit goes on in the database; then the session waits on the stopped worker, or is gone.
        state = f"SELECT coalesce(max(state), 'gone') FROM pg_stat_activity WHERE pid = {committing}"
        wait_until(lambda: postgres_server.psql(state) in ("idle\n", "gone\n"))
        released = time.monotonic()
        wait_until(lambda: time.monotonic() - released > 2)
        worker.send_signal(signal.SIGCONT)
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err
    assert doubled_ok(postgres_server) == 0
