"""`report --recipients FILE`: every recipient's fate as a table a warehouse loads, and the report's
reconciliation (rows read = delivered + failed + pending + excluded + duplicates + invalid)."""

from __future__ import annotations

import csv
import gzip
import io
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from dispatcher.observe.recipients import write_recipients
from dispatcher.observe.report import render_text, summarise
from dispatcher.observe.tables import open_table
from tests.conftest import PostgresServer, SandboxProcess, cli, deliveries, outcomes, plan_complete, start, wait_until

AT0, AT1, AT2 = "2026-11-21T08:00:00.123Z", "2026-11-21T08:00:01.000Z", "2026-11-21T08:00:02.500Z"
TRANSPORT = "no reply: connection error, timeout, HTTP 5xx or 429, or a body that is not JSON"
EXPORT = {"files": 1, "rows": 7, "distinct": 6, "duplicates": 1, "excluded": 1}


def line(job: str, batch: int, batches: int, status: str, recipients: list[str] | None, **extra: Any) -> dict[str, Any]:
    doc = {
        "job_id": job,
        "batch": batch,
        "batches": batches,
        "attempt": 1,
        "status": status,
        "final": status != "retry",
        "group_id": "@TGS#1",
        "recipients": recipients,
        "error_code": 0,
        "error_info": "",
        "http_status": 200,
        "latency_ms": 3.0,
        "at": AT0,
        "job_hash": f"hash-{job}",
    }
    doc.update(extra)
    return doc


def write_journal(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in lines))
    return path


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """A run of every fate: an export's job (delivered, a timeout, a batch never sent), a batchsendmsg
    batch cut up by a partial reply and retried, a group that does not exist, a batch to all members."""
    return write_journal(
        tmp_path / "o.jsonl",
        [
            line("a", 0, 3, "ok", ["a1", "a2"], export=EXPORT),
            line("a", 1, 3, "retry", ["a3", "a4"], error_code=None, error_info="timeout", http_status=None, at=AT1),
            # batch 2 of "a" was never sent: a file journal holds no line of it
            line(
                "c",
                0,
                1,
                "retry",
                ["m1", "m2", "m3", "m4"],
                api="batchsendmsg",
                group_id=None,
                recipient_errors={"m2": 70107, "m3": 10002},
                resend=["m3"],
            ),
            line(
                "c",
                0,
                1,
                "failed",
                ["m3"],
                api="batchsendmsg",
                group_id=None,
                attempt=2,
                at=AT2,
                recipient_errors={"m2": 70107, "m3": 10002},
            ),
            line(
                "g",
                0,
                1,
                "failed",
                ["x1"],
                group_id="@TGS#gone",
                error_code=10010,
                error_info="group @TGS#gone does not exist",
            ),
            line("w", 0, 1, "ok", None),
        ],
    )


EXPECTED_ROWS = [
    ["a", "hash-a", "a1", "delivered", "0", "", "delivered", "1", AT0],
    ["a", "hash-a", "a2", "delivered", "0", "", "delivered", "1", AT0],
    ["a", "hash-a", "a3", "pending", "", "timeout", TRANSPORT, "1", AT1],
    ["a", "hash-a", "a4", "pending", "", "timeout", TRANSPORT, "1", AT1],
    # The whole batch is its first line's: those its last reply does not name were delivered.
    ["c", "hash-c", "m1", "delivered", "0", "", "delivered", "2", AT2],
    ["c", "hash-c", "m4", "delivered", "0", "", "delivered", "2", AT2],
    ["c", "hash-c", "m2", "failed", "70107", "", "the account does not exist, never imported", "2", AT2],
    ["c", "hash-c", "m3", "failed", "10002", "", "internal server error, retried", "2", AT2],
    [
        "g",
        "hash-g",
        "x1",
        "failed",
        "10010",
        "group @TGS#gone does not exist",
        "the group does not exist, or was disbanded",
        "1",
        AT0,
    ],
]
HEADER = ["job_id", "job_hash", "user_id", "status", "error_code", "error_info", "meaning", "attempts", "last_at"]


def test_the_table_has_a_row_per_named_recipient_with_its_fate_and_why(journal: Path, tmp_path: Path) -> None:
    done = cli("report", str(journal), "--recipients", str(tmp_path / "t.csv"))
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert rows == [HEADER, *EXPECTED_ROWS]


def test_every_format_holds_the_same_rows_with_types_a_warehouse_loads(journal: Path, tmp_path: Path) -> None:
    for name in ("t.parquet", "t.csv.gz", "t.jsonl"):
        with (tmp_path / name).open("wb") as handle:
            sink = open_table(name, handle)
            assert write_recipients(sink, journal) == {"delivered": 4, "failed": 3, "pending": 2}
            sink.close()
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.schema.names == HEADER
    assert [str(table.schema.field(n).type) for n in HEADER] == [
        "string", "string", "string", "string", "int64", "string", "string", "int32", "timestamp[ms, tz=UTC]"
    ]  # fmt: skip
    first = table.slice(0, 1).to_pylist()[0]
    assert first["last_at"].isoformat() == "2026-11-21T08:00:00.123000+00:00"
    assert table.column("user_id").to_pylist() == [row[2] for row in EXPECTED_ROWS]
    assert table.column("error_code").to_pylist() == [0, 0, None, None, 0, 0, 70107, 10002, 10010]
    unzipped = gzip.decompress((tmp_path / "t.csv.gz").read_bytes()).decode()
    assert list(csv.reader(io.StringIO(unzipped))) == [HEADER, *EXPECTED_ROWS]
    jsonl = [orjson.loads(raw) for raw in (tmp_path / "t.jsonl").read_bytes().splitlines()]
    assert jsonl[2] == {
        "job_id": "a",
        "job_hash": "hash-a",
        "user_id": "a3",
        "status": "pending",
        "error_code": None,
        "error_info": "timeout",
        "meaning": TRANSPORT,
        "attempts": 1,
        "last_at": AT1,
    }
    assert [row["user_id"] for row in jsonl] == [row[2] for row in EXPECTED_ROWS]


def test_the_report_shows_that_every_recipient_read_is_accounted_for(journal: Path) -> None:
    doc = summarise(journal)
    by_job = {job["job_id"]: job for job in doc["reconciliation"]["jobs"]}
    # 7 rows read: 2 delivered, 2 timed out and 1 in the batch never sent (pending), 1 excluded, 1 duplicate.
    assert by_job["a"] == {
        "job_id": "a",
        "rows_read": 7,
        "delivered": 2,
        "failed": 0,
        "pending": 3,
        "excluded": 1,
        "duplicates": 1,
        "invalid": 0,
        "pending_unnamed": 1,
        "all_members_batches": 0,
        "balanced": True,
    }
    assert (by_job["c"]["rows_read"], by_job["c"]["delivered"], by_job["c"]["failed"]) == (4, 2, 2)
    assert (by_job["w"]["rows_read"], by_job["w"]["all_members_batches"]) == (0, 1)
    run = doc["reconciliation"]["run"]
    assert (run["rows_read"], run["delivered"], run["failed"], run["pending"], run["balanced"]) == (12, 4, 3, 3, True)
    text = render_text(doc, str(journal))
    assert (
        "recipients: 12 read = 4 delivered + 3 failed + 3 pending + 1 excluded + 1 duplicates + 0 invalid "
        "(1 pending in batches never sent, not named in the journal); and 1 batch to all members: "
        "every recipient accounted for"
    ) in text
    assert (
        "    recipients: 4 read = 2 delivered + 2 failed + 0 pending + 0 excluded + 0 duplicates + 0 invalid: "
        "every recipient accounted for"
    ) in text


def test_counts_that_do_not_add_up_are_said_to(tmp_path: Path) -> None:
    # The export read 3 rows, yet its one batch named 4: somebody came from nowhere.
    export = {"files": 1, "rows": 3, "distinct": 3, "duplicates": 0, "excluded": 0}
    journal = write_journal(tmp_path / "o.jsonl", [line("a", 0, 1, "ok", ["a1", "a2", "a3", "a4"], export=export)])
    doc = summarise(journal)
    assert (doc["reconciliation"]["run"]["balanced"], doc["reconciliation"]["jobs"][0]["balanced"]) == (False, False)
    assert "DOES NOT ADD UP (-1)" in render_text(doc, str(journal))


def test_a_table_name_of_no_known_format_is_one_line_and_exit_2(journal: Path, tmp_path: Path) -> None:
    done = cli("report", str(journal), "--recipients", str(tmp_path / "t.xlsx"))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"--recipients {tmp_path / 't.xlsx'}: the format comes from the name; "
            "end it with one of .parquet, .csv.gz, .csv, .jsonl"
        )
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "t.xlsx").exists()


def test_a_run_in_postgres_loaded_back_matches_what_the_server_received(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    # 20 rows: u0..u17, two of them twice, u5 excluded: 17 recipients in batches of 2 (9 batches).
    (tmp_path / "r.txt").write_text("".join(f"u{i}\n" for i in [*range(18), 3, 4]))
    (tmp_path / "x.txt").write_text("u5\n")
    job = {
        "job_id": "spring",
        "GroupId": "@TGS#pg",
        "Content": "hi",
        "recipients_file": "r.txt",
        "exclude_file": "x.txt",
    }
    (tmp_path / "jobs.jsonl").write_bytes(orjson.dumps(job) + b"\n")
    uri = postgres_server.journal()
    box = SandboxProcess("--rate", "100")
    try:
        args = ["send", str(tmp_path / "jobs.jsonl"), "--out", uri, "--endpoint", box.url, "--no-progress"]
        args += ["--batch-size", "2", "--concurrency", "1"]
        sender = start(*args, "--rate", "5")
        try:
            wait_until(lambda: plan_complete(postgres_server) and outcomes(postgres_server) >= 2, sender)
            sender.send_signal(signal.SIGTERM)
            sender.communicate(timeout=60)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.communicate()
        assert sender.returncode == 130
        # Stopped part way: the planned batches never sent are pending, each recipient named.
        stopped = cli("report", uri, "--json", "--recipients", str(tmp_path / "stopped.csv"))
        assert stopped.returncode == 0, stopped.stderr
        run = orjson.loads(stopped.stdout)["reconciliation"]["run"]
        assert (run["rows_read"], run["excluded"], run["duplicates"], run["pending_unnamed"]) == (20, 1, 2, 0)
        assert run["delivered"] + run["failed"] + run["pending"] == 17
        assert run["pending"] > 0
        assert run["balanced"] is True
        rows = list(csv.DictReader(io.StringIO((tmp_path / "stopped.csv").read_text())))
        assert sorted(int(row["user_id"][1:]) for row in rows) == [i for i in range(18) if i != 5]
        assert sum(row["status"] == "pending" for row in rows) == run["pending"]
        resumed = cli(*args, "--rate", "5", "--resume")
        assert resumed.returncode == 0, resumed.stderr
        done = cli("report", uri, "--recipients", str(tmp_path / "fates.csv"))
        assert done.returncode == 0, done.stderr
        received = deliveries(box)
    finally:
        box.stop()
    # Loaded back as the guide shows it, typed, and compared with what the server received.
    table = "CREATE TABLE fates (job_id text, job_hash text, user_id text, status text, error_code bigint, "
    table += "error_info text, meaning text, attempts integer, last_at timestamptz)"
    postgres_server.psql(table)
    # psql runs as the server's own user: the file goes where that user may read it.
    with tempfile.TemporaryDirectory() as shared:
        os.chmod(shared, 0o755)
        readable = shutil.copy(tmp_path / "fates.csv", shared)
        os.chmod(readable, 0o644)
        postgres_server.psql(f"\\copy fates FROM '{readable}' (FORMAT csv, HEADER true)")
    loaded = postgres_server.psql(
        "SELECT user_id, status, error_code, last_at IS NOT NULL FROM fates ORDER BY substr(user_id, 2)::int"
    )
    assert loaded == "".join(f"u{i}|delivered|0|t\n" for i in range(18) if i != 5)
    assert received == {f"u{i}": 1 for i in range(18) if i != 5}
    assert postgres_server.psql("SELECT count(DISTINCT job_hash), min(job_id) FROM fates") == "1|spring\n"


def test_the_load_back_statements_of_the_guide_match_the_table() -> None:
    guide = (Path(__file__).parent.parent / "docs/guide/recipients.md").read_text()
    for column in HEADER:
        assert column in guide
    assert "bq load --source_format=PARQUET" in guide
    assert "\\copy fates FROM 'fates.csv' (FORMAT csv, HEADER true)" in guide


def test_an_unreadable_journal_writes_no_table(tmp_path: Path) -> None:
    done = cli("report", str(tmp_path / "none.jsonl"), "--recipients", str(tmp_path / "t.csv"))
    assert done.returncode == 2
    assert not (tmp_path / "t.csv").exists()


def test_a_user_id_with_a_quote_or_a_comma_reads_back_as_it_is(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "o.jsonl", [line("a,1", 0, 1, "ok", ['say"hi', "x,y", "plain"])])
    with (tmp_path / "t.csv").open("wb") as handle:
        sink = open_table("t.csv", handle)
        write_recipients(sink, journal)
        sink.close()
    rows = list(csv.reader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert [(row[0], row[2]) for row in rows[1:]] == [("a,1", 'say"hi'), ("a,1", "x,y"), ("a,1", "plain")]


def test_with_the_jobs_the_table_names_everyone_read_duplicates_excluded_and_batches_never_sent(
    tmp_path: Path,
) -> None:
    # 1,205 rows: u1..u1200, then u1..u5 again; u7 and u8 excluded: 1,198 sent in batches of 500.
    (tmp_path / "r.txt").write_text("".join(f"u{i}\n" for i in [*range(1, 1201), *range(1, 6)]))
    (tmp_path / "x.txt").write_text("u7\nu8\n")
    job = {"job_id": "a", "GroupId": "@TGS#1", "Content": "hi", "recipients_file": "r.txt", "exclude_file": "x.txt"}
    (tmp_path / "jobs.jsonl").write_bytes(orjson.dumps(job) + b"\n")
    full = tmp_path / "full.jsonl"
    sent = cli("send", str(tmp_path / "jobs.jsonl"), "--sandbox", "--out", str(full), "--no-progress")
    assert sent.returncode == 0, sent.stderr
    # The run stopped after its first batch: the journal holds that line alone, as a kill leaves it.
    first = [doc for doc in map(orjson.loads, full.read_bytes().splitlines()) if doc["batch"] == 0]
    journal = write_journal(tmp_path / "o.jsonl", first)
    table = tmp_path / "t.csv"
    done = cli("report", str(journal), "--json", "--recipients", str(table), "--jobs", str(tmp_path / "jobs.jsonl"))
    assert done.returncode == 0, done.stderr
    run = orjson.loads(done.stdout)["reconciliation"]["run"]
    assert (run["rows_read"], run["delivered"], run["pending"], run["pending_unnamed"]) == (1205, 500, 698, 698)
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    by_status: dict[str, list[str]] = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row["user_id"])
    assert {status: len(users) for status, users in by_status.items()} == {
        "delivered": 500,
        "pending": 698,
        "excluded": 2,
        "duplicate": 5,
    }
    assert by_status["pending"] == [f"u{i}" for i in range(503, 1201)]  # batches 1 and 2, in order
    assert by_status["excluded"] == ["u7", "u8"]
    assert by_status["duplicate"] == ["u1", "u2", "u3", "u4", "u5"]
    assert len(rows) == run["rows_read"]
    # An export changed since the run is not the job the journal holds (nor is another --batch-size).
    with (tmp_path / "r.txt").open("a") as export:
        export.write("u9999\n")
    changed = cli("report", str(journal), "--recipients", str(table), "--jobs", str(tmp_path / "jobs.jsonl"))
    assert changed.returncode == 2
    assert (
        changed.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "jobs.jsonl:1: job 'a' is not the job the journal holds (its job hash differs): its export changed "
            "since the run, or the run had another --batch-size than 500"
        )
    )
    assert len(list(csv.DictReader(io.StringIO(table.read_text())))) == 1205  # the table before, kept whole
    (tmp_path / "r.txt").unlink()  # an export gone since the run: its rows cannot be listed
    gone = cli("report", str(journal), "--recipients", str(table), "--jobs", str(tmp_path / "jobs.jsonl"))
    assert gone.returncode == 2
    assert "job 'a' of the journal cannot be read again: " in gone.stderr
    assert "field recipients_file" in gone.stderr


def test_the_table_never_takes_the_place_of_the_journal_it_reads(journal: Path) -> None:
    # A journal ends in .jsonl, a format of the table too: written there, the run's journal would be gone.
    kept = journal.read_bytes()
    done = cli("report", str(journal), "--recipients", str(journal))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith(
        f"--recipients {journal} is {journal}, which this report reads; name a new file for what it writes"
    )
    assert journal.read_bytes() == kept


@pytest.mark.parametrize("option", ["--undelivered", "--html"])
def test_no_file_report_writes_takes_the_place_of_the_journal_it_reads(journal: Path, option: str) -> None:
    kept = journal.read_bytes()
    done = cli("report", str(journal), option, str(journal))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith(
        f"{option} {journal} is {journal}, which this report reads; name a new file for what it writes"
    )
    assert journal.read_bytes() == kept


def test_a_job_to_all_members_has_no_line_of_recipients_to_reconcile(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        {"job_id": "everyone", "GroupId": "@TGS#1EVERYONE", "Content": "hi"},
        {"job_id": "named", "GroupId": "@TGS#1EVERYONE", "Content": "hi", "ToMembers_Account": ["a", "b"]},
    ]
    jobs.write_text("".join(orjson.dumps(line).decode() + "\n" for line in lines))
    assert cli("send", str(jobs), "--sandbox", "--no-progress").returncode == 0
    text = cli("report", str(tmp_path / "jobs.outcomes.jsonl")).stdout
    under: dict[str, str] = {}
    for line in text[text.index("jobs:\n") :].splitlines()[1:]:
        if not line.startswith("    "):
            job = line.split()[0]
        under[job] = under.get(job, "") + line + "\n"
    assert "recipients:" not in under["everyone"]
    assert "recipients: 2 read = 2 delivered" in under["named"]


@pytest.mark.parametrize("option", ["--undelivered", "--html"])
def test_a_file_report_writes_in_object_storage_is_refused_in_one_line_without_its_secret(
    journal: Path, option: str
) -> None:
    # report writes local files: a URI was read as a path ("No such file or directory"), its password shown.
    done = cli("report", str(journal), option, "s3://AKIAEXAMPLE:TopS3cret@bucket/fates.csv")
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"dispatcher: error: {option} s3://bucket/fates.csv: report writes local files; write one here, then copy "
        "it to the store (aws s3 cp, gcloud storage cp)\n",
    )
