"""Exports in a run: what is sent, what the journal, the summary, the dry run, the report and the metrics
say of them, resuming a sharded export, and the lines a run ends with when it cannot read one."""

from __future__ import annotations

import collections
import gzip
import resource
import subprocess
from pathlib import Path

import orjson
import pytest

from dispatcher.observe.events import JobAccepted
from dispatcher.observe.metrics import RunMetrics
from dispatcher.observe.report import render_text, summarise
from dispatcher.sandbox import Sandbox
from tests.conftest import DEMO_ENV, DISPATCHER, ROOT, cli_env, cli_without, journal, run_engine, write_jobs

GROUP = "@TGS#exports"
JOB = {
    "job_id": "reactivation",
    "GroupId": GROUP,
    "Content": "We miss you",
    "recipients_file": "out/export-*.csv.gz",
    "recipients_column": "user_id",
    "exclude_file": "unsubscribed.csv",
    "exclude_column": "user_id",
}


def shards(tmp_path: Path) -> Path:
    """A BigQuery-like export of two gzipped CSV shards with a header, and a suppression list."""
    (tmp_path / "out").mkdir()
    first = b"user_id,country\r\n" + b"".join(b"m%03d,SG\r\n" % i for i in range(6))
    second = b"user_id,country\r\n" + b"".join(b"m%03d,JP\r\n" % i for i in (4, 5, 6, 7))
    (tmp_path / "out" / "export-000000000000.csv.gz").write_bytes(gzip.compress(first))
    (tmp_path / "out" / "export-000000000001.csv.gz").write_bytes(gzip.compress(second))
    (tmp_path / "unsubscribed.csv").write_text("user_id,at\nm001,2026-11-01\nm006,2026-11-02\nm999,2026-11-03\n")
    return write_jobs(tmp_path / "jobs.jsonl", [JOB])


EXPORT = {"files": 2, "rows": 10, "distinct": 8, "duplicates": 2, "excluded": 2, "exclude_files": 1, "exclude_rows": 3}


async def test_a_sharded_export_is_sent_without_its_duplicates_and_excluded(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs = shards(tmp_path)
    out = tmp_path / "out.jsonl"
    summary = await run_engine(sandbox, jobs, out, batch_size=4)
    assert (summary.exit_code, summary.batches, summary.recipients) == (0, 2, 6)
    assert (summary.duplicates, summary.excluded) == (2, 2)
    assert sandbox.ledger.recipients(GROUP, "We miss you") == collections.Counter(
        {"m000": 1, "m002": 1, "m003": 1, "m004": 1, "m005": 1, "m007": 1}
    )
    lines = journal(out)
    assert [line["recipients"] for line in sorted(lines, key=lambda d: d["batch"])] == [
        ["m000", "m002", "m003", "m004"],
        ["m005", "m007"],
    ]
    # The first line of the job in the run says what was read; the others keep the keys they had.
    assert [line.get("export") for line in lines] == [EXPORT, None]
    report = summarise(out)
    assert (report["duplicates"], report["excluded"]) == (2, 2)
    assert report["jobs"][0]["export"] == EXPORT
    assert "    export: 2 files, 10 rows, 8 distinct, 2 duplicates, 2 excluded (exclude_file: 1 file, 3 rows)" in (
        render_text(report, str(out)).splitlines()
    )


async def test_a_resumed_sharded_export_sends_the_rest_and_a_shard_added_since_is_a_changed_job(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    jobs = shards(tmp_path)
    out = tmp_path / "out.jsonl"
    await run_engine(sandbox, jobs, out, batch_size=4)
    first, second = sorted(journal(out), key=lambda d: d["batch"])
    out.write_bytes(orjson.dumps(first) + b"\n")  # the run was killed after batch 0
    summary = await run_engine(sandbox, jobs, out, batch_size=4, resume=True)
    assert (summary.skipped, summary.requests, summary.recipients) == (1, 1, 2)
    assert journal(out)[1]["recipients"] == second["recipients"] == ["m005", "m007"]
    (tmp_path / "out" / "export-000000000002.csv.gz").write_bytes(gzip.compress(b"user_id\nm100\n"))
    summary = await run_engine(sandbox, jobs, out, batch_size=4, resume=True, retry_failed=True)
    assert (summary.rejected, summary.requests) == (1, 0)
    assert journal(out)[-1]["error_info"] == (
        f"{jobs}:1: job changed since the outcome journal was written (content, recipients or --batch-size); "
        "nothing of it was sent"
    )


def test_the_dry_run_shows_each_exports_files_rows_distinct_duplicates_and_excluded(tmp_path: Path) -> None:
    jobs = shards(tmp_path)
    summary = tmp_path / "plan.json"
    result = subprocess.run(
        DISPATCHER("send", str(jobs), "--dry-run", "--batch-size", "4", "--summary-json", str(summary)),
        env=cli_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[3:] == [
        "recipients  6 named",
        "least time  0.0 s at 200 requests/s",
        "export      reactivation: 2 files (out/export-000000000000.csv.gz, out/export-000000000001.csv.gz), "
        "column user_id, 10 rows, 8 distinct, 2 duplicates, 2 excluded "
        "(exclude_file: 1 file (unsubscribed.csv), 3 rows)",
        "endpoint    https://console.tim.qq.com (region china)",
        "sdkappid    not set (TIM_SDKAPPID; a send needs it)",
        "admin       not set (TIM_IDENTIFIER; a send needs it)",
    ]
    plan = orjson.loads(summary.read_bytes())
    assert (plan["recipients"], plan["duplicates"], plan["excluded"]) == (6, 2, 2)
    assert plan["exports"] == [
        {
            "job_id": "reactivation",
            "files": ["out/export-000000000000.csv.gz", "out/export-000000000001.csv.gz"],
            "columns": ["user_id", "user_id"],
            "rows": 10,
            "distinct": 8,
            "duplicates": 2,
            "excluded": 2,
            "exclude_files": ["unsubscribed.csv"],
            "exclude_rows": 3,
        }
    ]


def test_the_metrics_count_duplicates_and_excluded() -> None:
    metrics = RunMetrics(started=0.0)
    metrics(JobAccepted("a", 2, duplicates=3, excluded=2))
    metrics(JobAccepted("b", 1))
    registry = metrics.registry
    assert registry.get_sample_value("dispatcher_recipients_duplicate_total") == 3.0
    assert registry.get_sample_value("dispatcher_recipients_excluded_total") == 2.0


def test_an_output_may_not_replace_a_shard_or_the_exclude_file(tmp_path: Path) -> None:
    jobs = shards(tmp_path)
    for target, field in (
        (tmp_path / "out" / "export-000000000001.csv.gz", "recipients_file"),
        (tmp_path / "unsubscribed.csv", "exclude_file"),
    ):
        before = target.read_bytes()
        result = subprocess.run(
            DISPATCHER("send", str(jobs), "--sandbox", "--summary-json", str(target)),
            env=cli_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"dispatcher: error: --summary-json {target}: is the {field} of {jobs}:1, which the run reads; "
            "choose another file"
        ]
        assert target.read_bytes() == before


def small_disk() -> None:  # in the child: files may grow to 64 KB, then write(2) fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))


def test_a_full_disk_while_an_export_is_read_stops_the_run_with_one_line_and_sends_nothing_of_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "r.txt").write_text("".join(f"member{i:08d}\n" for i in range(20_000)))  # 300 KB to copy
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"job_id": "big", "GroupId": GROUP, "Content": "hi", "recipients_file": "r.txt"}],
    )
    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        DISPATCHER("send", str(jobs), "--sandbox", "--out", str(out), "--no-progress", "--log-format", "json"),
        env={**cli_env(), "TMPDIR": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        preexec_fn=small_disk,
    )
    assert result.returncode == 2
    assert [orjson.loads(line) for line in result.stderr.splitlines()] == [
        {
            "event": "error",
            "level": "error",
            "error": f"{jobs}:1: r.txt: cannot write a temporary file under {tmp_path} (TMPDIR): File too large",
            "exit_code": 2,
        }
    ]
    assert journal(out) == []


def test_a_table_export_without_pyarrow_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("uid\nann\n")
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "recipients_file": "r.csv"}])
    result = cli_without("pyarrow", "send", str(jobs), "--dry-run")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"dispatcher: error: {jobs}:1: r.csv: a csv export needs pyarrow, the exports extra: "
        "pip install 'tim-dispatcher[exports]'"
    ]


@pytest.mark.parametrize("content", [b"ann\nbob\n", gzip.compress(b"ann\nbob\n")], ids=["plain", "gzip"])
def test_a_text_export_needs_no_extra(tmp_path: Path, content: bytes) -> None:
    name = "r.txt" if content.startswith(b"ann") else "r.txt.gz"
    (tmp_path / name).write_bytes(content)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "recipients_file": name}])
    result = cli_without("pyarrow", "send", str(jobs), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "recipients  2 named" in result.stdout


async def test_a_full_disk_while_the_engine_reads_an_export_halts_the_run_before_its_first_request(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    def full() -> object:
        return open("/dev/full", "w+b")  # every write fails with ENOSPC, as a full file system's would

    jobs = shards(tmp_path)
    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    summary = await run_engine(sandbox, jobs, out, batch_size=4)
    assert summary.stopped == (
        f"cannot read the jobs: {jobs}:1: out/export-*.csv.gz: cannot write a temporary file under "
        f"{tempfile.gettempdir()} (TMPDIR): No space left on device"
    )
    assert (summary.exit_code, summary.requests, sandbox.stats["requests"]) == (2, 0, 0)
    assert journal(out) == []


def spreadsheet_exports(tmp_path: Path) -> Path:
    """Exports as spreadsheets and hand-made scripts save them (issue 24), each the export of one job, and a
    plain one: what is read is sent, what cannot be is that job's rejection, and the other jobs go."""
    (tmp_path / "unicode.csv").write_bytes("user_id,name\r\nann,Ann\r\nbob,Bj\u00f6rn\r\ncat,Cat\r\n".encode("utf-16"))
    (tmp_path / "unsubscribed.csv").write_bytes("user_id\r\nbob\r\n".encode("utf-16"))
    (tmp_path / "latin1.csv").write_bytes("n\u00e4me;user_id\r\nx;ann\r\n".encode("cp1252"))
    (tmp_path / "semicolons.csv").write_bytes(b"name;email\r\nal;a@x\r\nbo;b@x\r\n")
    (tmp_path / "twice.csv").write_bytes(b"user_id,user_id\nann,bob\n")
    (tmp_path / "utf32.csv").write_bytes("user_id\nann\n".encode("utf-32"))
    (tmp_path / "mixed.jsonl").write_bytes(b'{"uid": "a1"}\n{"uid": 7}\n')
    # Nested 100,000 deep beside the ID: pyarrow's type inference ran out of stack on it (a segfault).
    (tmp_path / "deep.jsonl").write_bytes(b'{"uid": "d1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    (tmp_path / "good.txt").write_bytes(b"zed\n")
    job = {"GroupId": GROUP, "Content": "hi"}
    return write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {**job, "job_id": "unicode", "recipients_file": "unicode.csv", "recipients_column": "user_id",
             "exclude_file": "unsubscribed.csv"},
            {**job, "job_id": "latin1", "recipients_file": "latin1.csv", "recipients_column": "user_id"},
            {**job, "job_id": "semicolons", "recipients_file": "semicolons.csv"},
            {**job, "job_id": "twice", "recipients_file": "twice.csv", "recipients_column": "user_id"},
            {**job, "job_id": "utf32", "recipients_file": "utf32.csv"},
            {**job, "job_id": "mixed", "recipients_file": "mixed.jsonl"},
            {**job, "job_id": "deep", "recipients_file": "deep.jsonl", "recipients_column": "uid"},
            {**job, "job_id": "good", "recipients_file": "good.txt"},
        ],
    )  # fmt: skip


SPREADSHEET_REJECTIONS = {
    "latin1": (
        "recipients_file",
        "latin1.csv: its column names are not UTF-8 (byte 0xe4); save it as UTF-8 (Excel: CSV UTF-8)",
    ),
    "semicolons": (
        "recipients_column",
        "is required: semicolons.csv has one column, 'name;email', and its name holds ';': is the file "
        "separated by ';', as Excel writes CSV in many locales? Save it separated by commas, or name the column "
        "to read it as it is",
    ),
    "twice": (
        "recipients_column",
        "twice.csv has 2 columns named 'user_id'; which one holds the UserIDs is ambiguous: rename the others",
    ),
    "utf32": (
        "recipients_file",
        "utf32.csv: the file is UTF-32 (it starts with a UTF-32 byte-order mark); save it as UTF-8",
    ),
}
SPREADSHEET_LINES = {"latin1": 2, "semicolons": 3, "twice": 4, "utf32": 5}


def test_a_run_rejects_only_the_jobs_whose_exports_cannot_be_read_and_sends_the_others(tmp_path: Path) -> None:
    jobs = spreadsheet_exports(tmp_path)
    out = tmp_path / "out.jsonl"
    result = subprocess.run(
        DISPATCHER("send", str(jobs), "--sandbox", "--out", str(out), "--no-progress"),
        env=cli_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = journal(out)
    assert {line["job_id"]: (line["field"], line["error_info"]) for line in lines if line["status"] == "rejected"} == {
        job_id: (field, f"{jobs}:{SPREADSHEET_LINES[job_id]}: field {field}: {reason}")
        for job_id, (field, reason) in SPREADSHEET_REJECTIONS.items()
    }
    assert {line["job_id"]: line["recipients"] for line in lines if line["status"] == "ok"} == {
        "unicode": ["ann", "cat"],
        "mixed": ["a1", "7"],
        "deep": ["d1"],
        "good": ["zed"],
    }


def test_a_dry_run_shows_the_same_rejections_and_plans_the_other_jobs(tmp_path: Path) -> None:
    jobs = spreadsheet_exports(tmp_path)
    result = subprocess.run(
        DISPATCHER("send", str(jobs), "--dry-run"),
        env={**cli_env(), **DEMO_ENV},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    shown = result.stdout.splitlines()
    assert "jobs        8 (4 valid, 4 rejected)" in shown
    assert "recipients  6 named" in shown
    for job_id, (field, reason) in SPREADSHEET_REJECTIONS.items():
        assert f"rejected    {job_id}: {jobs}:{SPREADSHEET_LINES[job_id]}: field {field}: {reason}" in shown
    assert (
        "export      unicode: 1 file (unicode.csv), column user_id, 3 rows, 3 distinct, 0 duplicates, 1 excluded "
        "(exclude_file: 1 file (unsubscribed.csv), 1 rows)"
    ) in shown
