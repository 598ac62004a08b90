"""A query as the audience (`recipients_query`, `exclude_query`): run on a real PostgreSQL of the module's
own through ADBC, sent to the sandbox, its rows kept as the run's copy so that a resume sends to the same
audience; a query that fails, lacks its column or returns nothing is one line, exit 2, and no password is
ever shown."""

from __future__ import annotations

import collections
import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.jobs.exports import ExportError
from dispatcher.jobs.files import Kept
from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.sandbox import Sandbox
from tests.conftest import (
    DEMO_ENV,
    DISPATCHER,
    PG_PASSWORD,
    ROOT,
    PostgresServer,
    cli_env,
    cli_without,
    journal,
    make_config,
    run_engine,
    write_jobs,
)

pytest.importorskip("adbc_driver_postgresql", reason="the query extra")

GROUP = "@TGS#query"


@pytest.fixture(scope="module")
def database(module_postgres: PostgresServer) -> PostgresServer:
    """One server for the module: each test makes tables of its own names."""
    return module_postgres


def table(db: PostgresServer, name: str, ids: list[str]) -> None:
    rows = ", ".join(f"('{uid}', {i})" for i, uid in enumerate(ids))
    db.psql(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (user_id text, n int); INSERT INTO {name} VALUES {rows}")


def job(db: PostgresServer, query: str, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": "winback",
        "GroupId": GROUP,
        "Content": "We miss you",
        "recipients_query": query,
        "recipients_database": db.url,
        **extra,
    }


def read_one(jobs: Path, kept: Kept | None = None) -> Any:
    (item,) = list(read_jobs([str(jobs)], 500, kept=kept))
    return item


async def test_a_query_is_sent_to_each_of_its_rows_once_and_kept_beside_the_journal(
    sandbox: Sandbox, database: PostgresServer, tmp_path: Path
) -> None:
    table(database, "members_a", ["m1", "m2", " m3 ", "m2", "m4"])
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(database, "SELECT user_id FROM members_a ORDER BY n")])
    out = tmp_path / "out.jsonl"
    summary = await run_engine(sandbox, jobs, out, batch_size=2)
    assert (summary.exit_code, summary.batches, summary.recipients, summary.duplicates) == (0, 2, 4, 1)
    assert sandbox.ledger.recipients(GROUP, "We miss you") == collections.Counter({"m1": 1, "m2": 1, "m3": 1, "m4": 1})
    lines = sorted(journal(out), key=lambda d: d["batch"])
    assert [line["recipients"] for line in lines] == [["m1", "m2"], ["m3", "m4"]]
    assert lines[0]["export"] == {"files": 1, "rows": 5, "distinct": 4, "duplicates": 1, "excluded": 0}
    (copy,) = (tmp_path / "out.jsonl.queries").iterdir()
    assert copy.name.endswith(".ids.zst")


async def test_a_resume_sends_to_the_audience_the_run_read_though_the_table_changed(
    sandbox: Sandbox, database: PostgresServer, tmp_path: Path
) -> None:
    table(database, "members_b", ["r1", "r2", "r3", "r4", "r5"])
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(database, "SELECT user_id FROM members_b ORDER BY n")])
    out = tmp_path / "out.jsonl"
    await run_engine(sandbox, jobs, out, batch_size=2)
    first = sorted(journal(out), key=lambda d: d["batch"])[0]
    out.write_bytes(orjson.dumps(first) + b"\n")  # the run was killed after batch 0
    before = collections.Counter(sandbox.ledger.recipients(GROUP, "We miss you"))
    database.psql("DELETE FROM members_b WHERE user_id IN ('r3', 'r4'); INSERT INTO members_b VALUES ('r9', 9)")
    summary = await run_engine(sandbox, jobs, out, batch_size=2, resume=True)
    assert (summary.exit_code, summary.rejected, summary.skipped) == (0, 0, 1)
    # Batch 1 (r3, r4) again, as the run read it, and batch 2 (r5): r9 was not in the run's audience.
    assert sandbox.ledger.recipients(GROUP, "We miss you") - before == collections.Counter({"r3": 1, "r4": 1, "r5": 1})
    # A new run (another journal) runs the query again and sends to the table as it is now.
    fresh = await run_engine(sandbox, jobs, tmp_path / "new.jsonl", batch_size=2)
    assert fresh.recipients == 4


async def test_a_new_run_on_a_used_journals_name_never_reads_an_earlier_runs_copy(
    sandbox: Sandbox, database: PostgresServer, tmp_path: Path
) -> None:
    table(database, "members_c", ["c1", "c2"])
    query = job(database, "SELECT user_id FROM members_c")
    out = tmp_path / "out.jsonl"
    await run_engine(sandbox, write_jobs(tmp_path / "jobs.jsonl", [query]), out)
    out.unlink()  # the journal removed by hand; its copies stay
    database.psql("INSERT INTO members_c VALUES ('c3', 3)")
    # A new run on the same name sends another job, and stops before it reads the query's ...
    other = {"job_id": "first", "GroupId": GROUP, "Content": "Hello", "ToMembers_Account": ["c1"]}
    await run_engine(sandbox, write_jobs(tmp_path / "jobs.jsonl", [other]), out)
    # ... and its resume reads the query for the first time in this run: the table as it is now.
    summary = await run_engine(sandbox, write_jobs(tmp_path / "jobs.jsonl", [other, query]), out, resume=True)
    assert (summary.rejected, summary.skipped, summary.recipients) == (0, 1, 3)
    assert sandbox.ledger.recipients(GROUP, "We miss you")["c3"] == 1


async def test_an_exclude_query_leaves_its_rows_out(sandbox: Sandbox, database: PostgresServer, tmp_path: Path) -> None:
    table(database, "members_d", ["d1", "d2", "d3", "d4"])
    table(database, "optouts_d", ["d2", "d4", "d9"])
    doc = job(database, "SELECT user_id FROM members_d", exclude_query="SELECT user_id FROM optouts_d")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [doc])
    summary = await run_engine(sandbox, jobs, tmp_path / "out.jsonl")
    assert (summary.recipients, summary.excluded) == (2, 2)
    assert sandbox.ledger.recipients(GROUP, "We miss you") == collections.Counter({"d1": 1, "d3": 1})


def test_the_job_hash_covers_the_query_and_its_rows(database: PostgresServer, tmp_path: Path) -> None:
    table(database, "members_e", ["e1", "e2"])
    query = "SELECT user_id FROM members_e"
    hashes = []
    for text in (query, query + " ", query):
        hashes.append(read_one(write_jobs(tmp_path / "jobs.jsonl", [job(database, text)])).job_hash)
    database.psql("INSERT INTO members_e VALUES ('e3', 3)")
    hashes.append(read_one(write_jobs(tmp_path / "jobs.jsonl", [job(database, query)])).job_hash)
    assert hashes[0] == hashes[2]  # the same query on the same rows
    assert len({hashes[0], hashes[1], hashes[3]}) == 3  # another text; other rows


def test_the_column_is_the_named_one_or_the_only_one(database: PostgresServer, tmp_path: Path) -> None:
    table(database, "members_f", ["f1", "f2"])
    named = job(database, "SELECT n, user_id FROM members_f", recipients_column="user_id")
    item = read_one(write_jobs(tmp_path / "jobs.jsonl", [named]))
    assert (item.recipient_count, item.export.columns) == (2, ("user_id",))


def test_integers_are_their_decimal_text_and_a_bad_value_rejects_the_job_naming_its_row(
    database: PostgresServer, tmp_path: Path
) -> None:
    numbers = read_one(write_jobs(tmp_path / "jobs.jsonl", [job(database, "SELECT 10023 UNION ALL SELECT 7")]))
    assert numbers.recipient_count == 2
    assert list(numbers.recipients) == ["10023", "7"]
    bad = job(database, "SELECT * FROM (VALUES ('k1'), ('k2'), ('')) AS t(uid)")
    item = read_one(write_jobs(tmp_path / "jobs.jsonl", [bad]))
    assert isinstance(item, Rejection)
    shown = f"postgresql://127.0.0.1:{database.port}/postgres"
    assert (item.field, item.reason) == ("recipients_query", f"{shown} row 3: UserID must not be empty")


@pytest.mark.parametrize(
    ("query", "extra", "said"),
    [
        (
            "SELECT user_id FROM no_such_table",
            {},
            ' failed: NOT_FOUND: Failed to prepare query: ERROR:  relation "no_such_table" does not exist',
        ),
        (
            "SELECT user_id, n FROM members_g",
            {},
            ": its result has 2 columns ('user_id', 'n'); name the one with the UserIDs",
        ),
        (
            "SELECT user_id FROM members_g",
            {"recipients_column": "uid"},
            ": its result has no column 'uid'; its columns: 'user_id'",
        ),
        ("SELECT user_id FROM members_g WHERE false", {}, " returned no rows; an empty result never means all members"),
    ],
    ids=["fails", "two-columns", "no-such-column", "empty"],
)
def test_a_query_that_cannot_give_the_audience_is_one_line(
    database: PostgresServer, tmp_path: Path, query: str, extra: dict[str, str], said: str
) -> None:
    table(database, "members_g", ["g1"])
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(database, query, **extra)])
    shown = f"postgresql://127.0.0.1:{database.port}/postgres"
    with pytest.raises(ExportError) as raised:
        read_one(jobs)
    assert str(raised.value) == f"{jobs}:1: the recipients_query on {shown}{said}"


def test_a_connection_lost_while_the_rows_arrive_is_one_line(database: PostgresServer, tmp_path: Path) -> None:
    table(database, "members_k", ["k1", "k2"])
    # The query ends its own connection once its rows are under way, as a server restarted mid-read would.
    lost = "SELECT user_id FROM members_k UNION ALL SELECT pg_terminate_backend(pg_backend_pid())::text"
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(database, lost)])
    with pytest.raises(ExportError) as raised:
        read_one(jobs)
    shown = f"postgresql://127.0.0.1:{database.port}/postgres"
    assert str(raised.value).startswith(f"{jobs}:1: the recipients_query on {shown} failed while it was read: ")
    assert "terminating connection due to administrator command" in str(raised.value)


def test_a_query_that_changes_rows_leaves_them_unchanged(database: PostgresServer, tmp_path: Path) -> None:
    # Run in a transaction never committed, as the DB-API module ran it: reading the audience (a dry run,
    # a check) never deletes the rows it returns.
    table(database, "members_t", ["t1", "t2"])
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(database, "DELETE FROM members_t RETURNING user_id")])
    assert read_one(jobs).recipient_count == 2
    assert database.psql("SELECT count(*) FROM members_t").strip() == "2"


def test_a_full_disk_as_the_copy_is_closed_is_one_line(
    database: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    # The compressed copy holds its few rows until it is closed: the full disk is found there.
    opened = pa.output_stream
    monkeypatch.setattr(pa, "output_stream", lambda _path, compression: opened("/dev/full", compression=compression))
    table(database, "members_f", ["f1"])
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(database, "SELECT user_id FROM members_f")])
    with pytest.raises(ExportError) as raised:
        read_one(jobs, Kept(directory=tmp_path / "out.jsonl.queries"))
    assert str(raised.value) == (
        f"{jobs}:1: cannot keep the query's copy in {tmp_path / 'out.jsonl.queries'}: "
        "Error writing bytes to file. Detail: [errno 28] No space left on device"
    )


def test_an_empty_exclude_query_is_refused_too(database: PostgresServer, tmp_path: Path) -> None:
    table(database, "members_h", ["h1"])
    doc = job(database, "SELECT user_id FROM members_h", exclude_query="SELECT user_id FROM members_h WHERE false")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [doc])
    with pytest.raises(ExportError) as raised:
        read_one(jobs)
    shown = f"postgresql://127.0.0.1:{database.port}/postgres"
    assert str(raised.value) == (
        f"{jobs}:1: the exclude_query on {shown} returned no rows; an empty result never means all members"
    )


def test_a_failed_query_stops_the_send_with_one_line_exit_2_and_sends_nothing(
    database: PostgresServer, tmp_path: Path
) -> None:
    doc = job(database, "SELECT user_id FROM missing_table")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [doc])
    out = tmp_path / "out.jsonl"
    args = DISPATCHER("send", str(jobs), "--sandbox", "--out", str(out), "--no-progress", "--log-format", "json")
    done = subprocess.run(args, env=cli_env(**DEMO_ENV), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    # The run reads the query (a pre-scan leaves it alone), so it stops as for a stream's export: its reason.
    errors = [doc for doc in map(orjson.loads, done.stderr.splitlines()) if doc["level"] == "error"]
    assert [doc["reason"] for doc in errors] == 2 * [
        f"cannot read the jobs: {jobs}:1: the recipients_query on postgresql://127.0.0.1:{database.port}/postgres "
        'failed: NOT_FOUND: Failed to prepare query: ERROR:  relation "missing_table" does not exist'
    ]
    assert journal(out) == []
    assert PG_PASSWORD not in done.stdout + done.stderr


def test_a_password_comes_from_pgpassword_and_a_wrong_one_is_never_shown(
    database: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table(database, "members_i", ["i1"])
    bare = f"postgresql://postgres@127.0.0.1:{database.port}/postgres"
    doc = {**job(database, "SELECT user_id FROM members_i"), "recipients_database": bare}
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    assert read_one(write_jobs(tmp_path / "jobs.jsonl", [doc])).recipient_count == 1
    monkeypatch.delenv("PGPASSWORD")
    wrong = {**doc, "recipients_database": f"postgresql://postgres:Wr0ng-s3cret@127.0.0.1:{database.port}/postgres"}
    with pytest.raises(ExportError) as raised:
        read_one(write_jobs(tmp_path / "jobs.jsonl", [wrong]))
    assert "password authentication failed" in str(raised.value)
    assert "Wr0ng-s3cret" not in str(raised.value)


def test_a_driver_not_installed_is_named_and_an_unknown_scheme_refused(tmp_path: Path) -> None:
    doc = {"GroupId": GROUP, "Content": "hi", "recipients_query": "SELECT 1"}
    snowflake = {**doc, "recipients_database": "snowflake://ops:s3cret@acme-xy123/crm/public?warehouse=wh"}
    with pytest.raises(ExportError) as raised:
        read_one(write_jobs(tmp_path / "jobs.jsonl", [snowflake]))
    assert str(raised.value) == (
        f"{tmp_path / 'jobs.jsonl'}:1: the recipients_query on snowflake:// needs its ADBC driver: pip install "
        "adbc-driver-snowflake (PostgreSQL's comes with the query extra: pip install 'tim-dispatcher[query]')"
    )
    mysql = {**doc, "recipients_database": "mysql://ops:s3cret@db/crm"}
    item = read_one(write_jobs(tmp_path / "jobs.jsonl", [mysql]))
    assert isinstance(item, Rejection)
    assert item.field == "recipients_database"
    assert item.reason.startswith("mysql://db/crm: the scheme names the ADBC driver; known: postgresql://")


def test_a_missing_query_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    doc = {
        "GroupId": GROUP,
        "Content": "hi",
        "recipients_query": "SELECT 1",
        "recipients_database": "postgresql://db/x",
    }
    jobs = write_jobs(tmp_path / "jobs.jsonl", [doc])
    done = cli_without("adbc_driver_manager", "send", str(jobs), "--dry-run")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"dispatcher: error: {jobs}:1: the recipients_query needs ADBC and pyarrow, the query extra: "
        "pip install 'tim-dispatcher[query]'"
    ]


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"recipients_file": "r.txt"}, "recipients_query", "cannot be given together with recipients_file"),
        (
            {"recipients_database": None},
            "recipients_query",
            "needs recipients_database, the URI of the database it runs on",
        ),
        (
            {"recipients_format": "csv"},
            "recipients_format",
            "applies to a recipients_file; a query's result has none",
        ),
        (
            {"exclude_database": "postgresql://db/x"},
            "exclude_database",
            "applies to an exclude_query; the job has none",
        ),
    ],
    ids=["with-a-file", "no-database", "format", "exclude-database-alone"],
)
def test_a_query_job_in_the_wrong_shape_is_rejected_naming_the_field(
    tmp_path: Path, extra: dict[str, Any], field: str, reason: str
) -> None:
    doc: dict[str, Any] = {
        "GroupId": GROUP,
        "Content": "hi",
        "recipients_query": "SELECT user_id FROM t",
        "recipients_database": "postgresql://db/crm",
        **extra,
    }
    item = read_one(write_jobs(tmp_path / "jobs.jsonl", [{k: v for k, v in doc.items() if v is not None}]))
    assert isinstance(item, Rejection)
    assert (item.field, item.reason) == (field, reason)


def test_a_pre_scan_leaves_the_query_to_the_run(database: PostgresServer, tmp_path: Path) -> None:
    from dispatcher.jobs.sources import StreamedExport

    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(database, "SELECT user_id FROM never_run")])
    with pytest.raises(StreamedExport):
        list(read_jobs([str(jobs)], 500, streams=False))


async def test_a_postgresql_journal_keeps_the_copy_in_its_database_for_the_resume(
    sandbox: Sandbox, database: PostgresServer, tmp_path: Path
) -> None:
    from dispatcher import Runner
    from dispatcher.journal.uri import parse_journal_uri

    table(database, "members_j", ["j1", "j2", "j3"])
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job(database, "SELECT user_id FROM members_j ORDER BY n")])
    uri = parse_journal_uri(database.journal("query"))
    config = dataclasses.replace(make_config(sandbox, jobs, tmp_path / "unused.jsonl", batch_size=2), out=uri)
    first = await Runner(config, handle_signals=False).run()
    assert (first.exit_code, first.recipients) == (0, 3)
    assert database.psql("SELECT count(*) FROM dispatcher.query_copies WHERE journal = 'query'") == "1\n"
    database.psql("INSERT INTO members_j VALUES ('j9', 9)")
    again = await Runner(dataclasses.replace(config, resume=True), handle_signals=False).run()
    assert (again.exit_code, again.rejected, again.skipped) == (0, 0, 2)  # the same audience: not a changed job
    assert sandbox.ledger.recipients(GROUP, "We miss you") == collections.Counter({"j1": 1, "j2": 1, "j3": 1})


def test_a_password_the_driver_quotes_as_written_is_never_shown(database: PostgresServer, tmp_path: Path) -> None:
    # libpq quotes a malformed password as written, its valid %-escapes not decoded: "s3c%41ret%zz".
    port = database.port
    for database_uri in (
        f"postgresql://postgres:s3c%41ret%zz@127.0.0.1:{port}/postgres",
        f"postgresql://127.0.0.1:{port}/postgres?user=postgres&password=s3c%41ret%zz",
    ):
        doc = {**job(database, "SELECT 'p1' AS user_id"), "recipients_database": database_uri}
        jobs = write_jobs(tmp_path / "jobs.jsonl", [doc])
        with pytest.raises(ExportError) as raised:
            read_one(jobs)
        assert str(raised.value).startswith(
            f"{jobs}:1: the recipients_query on postgresql://127.0.0.1:{port}/postgres failed: "
        )
        assert str(raised.value).endswith(' invalid percent-encoded token: "[redacted]"')
        assert "s3c" not in str(raised.value)


# -- report --recipients --jobs reads the run's copy ----------------------------------------------------


def recipients_report(journals: list[str], jobs: Path, table_path: Path) -> list[tuple[str, str]]:
    """`report JOURNAL... --recipients table.csv --jobs jobs.jsonl --batch-size 2`, in this process: each
    row's (user_id, status). Raises the report's one-line error."""
    import csv

    from dispatcher.cli import report
    from dispatcher.cli.parser import build_parser

    words = ["report", *journals, "--recipients", str(table_path), "--jobs", str(jobs), "--batch-size", "2"]
    assert report.run(build_parser().parse_args(words)) == 0
    with table_path.open(newline="") as handle:
        return [(row["user_id"], row["status"]) for row in csv.DictReader(handle)]


def audience(db: PostgresServer, suffix: str) -> dict[str, Any]:
    """A job of a query and an exclude_query, sent in batches of 2: l1 l2 | l3 l5 (l1 repeated, l4 left out)."""
    table(db, f"members_{suffix}", ["l1", "l2", "l3", "l1", "l4", "l5"])
    table(db, f"optouts_{suffix}", ["l4"])
    query = f"SELECT user_id FROM members_{suffix} ORDER BY n"
    return job(db, query, exclude_query=f"SELECT user_id FROM optouts_{suffix}")


def change(db: PostgresServer, suffix: str) -> None:
    """The tables as they are after the run: l3 gone, l9 added, l4 no longer left out, l2 now is."""
    db.psql(
        f"DELETE FROM members_{suffix} WHERE user_id = 'l3'; INSERT INTO members_{suffix} VALUES ('l9', 9); "
        f"DELETE FROM optouts_{suffix}; INSERT INTO optouts_{suffix} VALUES ('l2', 0)"
    )


def files_in(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


async def test_report_with_the_jobs_reads_the_audience_from_the_copy_beside_the_file_journal(
    sandbox: Sandbox, database: PostgresServer, tmp_path: Path
) -> None:
    from dispatcher.errors import InputError

    jobs = write_jobs(tmp_path / "jobs.jsonl", [audience(database, "l")])
    out = tmp_path / "out.jsonl"
    await run_engine(sandbox, jobs, out, batch_size=2)
    first = sorted(journal(out), key=lambda d: d["batch"])[0]
    out.write_bytes(orjson.dumps(first) + b"\n")  # the run was killed after batch 0
    copies = tmp_path / "out.jsonl.queries"
    before = files_in(copies)
    assert len(before) == 2  # the recipients_query's and the exclude_query's
    change(database, "l")
    rows = [("l1", "delivered"), ("l2", "delivered"), ("l1", "duplicate"), ("l4", "excluded")]
    rows += [("l3", "pending"), ("l5", "pending")]
    assert recipients_report([str(out)], jobs, tmp_path / "fates.csv") == rows
    # Given with another journal (a run split over two processes), the copy is found beside its own.
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"")
    assert recipients_report([str(out), str(other)], jobs, tmp_path / "fates.csv") == rows
    assert files_in(copies) == before  # read, never written, replaced or removed
    assert not (tmp_path / "other.jsonl.queries").exists()
    # Without the copy the query runs again, keeping nothing: the changed table is not the job the run sent.
    shutil.rmtree(copies)
    with pytest.raises(InputError, match=r"job 'winback' is not the job the journal holds \(its job hash differs\)"):
        recipients_report([str(out)], jobs, tmp_path / "fates.csv")
    assert not copies.exists()


async def test_report_with_the_jobs_reads_the_audience_from_the_copy_in_a_postgresql_journal(
    sandbox: Sandbox, database: PostgresServer, tmp_path: Path
) -> None:
    from dispatcher import Runner
    from dispatcher.errors import InputError
    from dispatcher.journal.uri import parse_journal_uri

    jobs = write_jobs(tmp_path / "jobs.jsonl", [audience(database, "m")])
    uri = database.journal("reported")
    config = make_config(sandbox, jobs, tmp_path / "unused.jsonl", batch_size=2)
    config = dataclasses.replace(config, out=parse_journal_uri(uri))
    assert (await Runner(config, handle_signals=False).run()).exit_code == 0
    kept = "SELECT key, part, md5(data) FROM dispatcher.query_copies WHERE journal = 'reported' ORDER BY 1, 2"
    before = database.psql(kept)
    assert len(before.splitlines()) == 2
    change(database, "m")
    rows = recipients_report([uri], jobs, tmp_path / "fates.csv")
    assert sorted(rows) == [
        ("l1", "delivered"),
        ("l1", "duplicate"),
        ("l2", "delivered"),
        ("l3", "delivered"),
        ("l4", "excluded"),
        ("l5", "delivered"),
    ]
    assert database.psql(kept) == before
    # Without the copy the query runs again, keeping nothing: the changed table is not the job the run sent.
    database.psql("DELETE FROM dispatcher.query_copies WHERE journal = 'reported'")
    with pytest.raises(InputError, match=r"job 'winback' is not the job the journal holds \(its job hash differs\)"):
        recipients_report([uri], jobs, tmp_path / "fates.csv")
    assert database.psql(kept) == ""
