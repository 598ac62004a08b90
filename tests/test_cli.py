"""The command line as users and cron jobs see it: exit codes, dry run, summary JSON, report, progress."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.cli.parser import build_parser
from dispatcher.run.config import RunConfig
from dispatcher.sandbox import Sandbox
from dispatcher.tim.config import DEMO_CREDENTIALS
from tests.conftest import DEMO_ENV, DISPATCHER, ROOT, cli_env, run_in_pty, users, wait_until, write_jobs

SUMMARY_KEYS = {
    "jobs",
    "rejected",
    "batches",
    "ok",
    "failed",
    "skipped",
    "pending",
    "requests",
    "retries",
    "recipients",
    "duplicates",
    "excluded",
    "error_codes",
    "elapsed_s",
    "rate",
    "out",
    "exit_code",
    "interrupted",
}


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        DISPATCHER(*args),
        env=env or cli_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        input=None if stdin is None else stdin.decode(),
        timeout=120,
    )


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    (tmp_path / "export.txt").write_text("\n".join(users(1200)) + "\n")
    return write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "inline", "GroupId": "@TGS#a", "Content": "hi", "ToMembers_Account": ["peter", "leckie"]},
            {"job_id": "export", "GroupId": "@TGS#b", "Content": "digest", "recipients_file": "export.txt"},
            {"job_id": "all", "GroupId": "@TGS#c", "Content": "everyone"},
        ],
    )


def load(path: Path) -> dict[str, Any]:
    return dict(orjson.loads(path.read_bytes()))


def test_send_sandbox_summary_json(jobs: Path, tmp_path: Path) -> None:
    result = run("send", str(jobs), "--sandbox", "--summary-json", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    summary = load(tmp_path / "s.json")
    assert set(summary) >= SUMMARY_KEYS
    assert (summary["jobs"], summary["batches"], summary["ok"], summary["recipients"]) == (3, 5, 5, 1202)
    assert summary["out"] == str(tmp_path / "jobs.outcomes.jsonl")  # the default --out
    assert summary["error_codes"] == {"0": 5}
    assert "ok          5" in result.stdout


def test_a_summary_written_at_once_by_two_runs_leaves_the_other_runs_temporary_file_alone(
    jobs: Path, tmp_path: Path
) -> None:
    """The temporary file had a fixed name, PATH.tmp: a run truncated another's half-written summary
    and renamed it as its own, and the other run then failed (exit 2, no summary)."""
    where = tmp_path / "summaries"
    where.mkdir()
    others = where / "s.json.tmp"
    others.write_bytes(b'{"jobs": 7, "ba')  # another run's summary, half written
    result = run("send", str(jobs), "--sandbox", "--summary-json", str(where / "s.json"))
    assert result.returncode == 0, result.stderr
    assert load(where / "s.json")["jobs"] == 3
    assert others.read_bytes() == b'{"jobs": 7, "ba'
    assert sorted(p.name for p in where.iterdir()) == ["s.json", "s.json.tmp"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((where / "s.json").stat().st_mode) == 0o666 & ~umask  # as a file the run creates


def test_a_summary_that_cannot_be_written_says_so_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher.cli.output import write_json
    from dispatcher.errors import OutputError

    def no_space(source: str, target: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OutputError) as info:
        write_json(str(tmp_path / "s.json"), {"ok": 1})
    assert str(info.value) == f"{tmp_path / 's.json'}: cannot write the summary: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_exit_1_when_a_job_is_rejected(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "j.jsonl", [{"GroupId": "@TGS#a", "Content": "x"}, {"GroupId": "@TGS#a"}])
    result = run("send", str(jobs), "--sandbox")
    assert result.returncode == 1
    assert "j.jsonl:2: field Content: is required" in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--retry-failed"], "--retry-failed needs --resume"),
        (["--batch-size", "501"], "--batch-size"),
        (["--rate", "0"], "--rate"),
        (["--region", "mars"], "unknown region"),
        (["--sandbox", "--endpoint", "http://127.0.0.1:1"], "--sandbox"),
    ],
)
def test_usage_errors_exit_2(jobs: Path, args: list[str], words: str) -> None:
    result = run("send", str(jobs), *args, env=cli_env(**DEMO_ENV))
    assert result.returncode == 2
    assert words in result.stderr


def test_missing_credentials_exit_2(jobs: Path) -> None:
    result = run("send", str(jobs))
    assert result.returncode == 2
    assert "TIM_SDKAPPID" in result.stderr and "TIM_SECRET_KEY" in result.stderr


def test_unreadable_jobs_file_exit_2(tmp_path: Path) -> None:
    result = run("send", str(tmp_path / "nope.jsonl"), "--sandbox")
    assert result.returncode == 2
    assert "nope.jsonl: cannot read" in result.stderr


def test_existing_out_refused_without_resume(jobs: Path, tmp_path: Path) -> None:
    assert run("send", str(jobs), "--sandbox").returncode == 0
    result = run("send", str(jobs), "--sandbox")
    assert result.returncode == 2
    assert "--resume" in result.stderr
    assert run("send", str(jobs), "--sandbox", "--resume").returncode == 0


def test_dry_run_prints_the_plan_and_sends_nothing(jobs: Path, tmp_path: Path) -> None:
    result = run("send", str(jobs), "--dry-run", "--rate", "2", "--summary-json", str(tmp_path / "plan.json"))
    assert result.returncode == 0, result.stderr
    assert "jobs        3 (3 valid, 0 rejected)" in result.stdout
    assert "requests    5" in result.stdout
    assert "recipients  1202 named" in result.stdout
    assert "least time  2.0 s at 2 requests/s" in result.stdout
    plan = load(tmp_path / "plan.json")
    assert (plan["batches"], plan["requests"], plan["ok"], plan["least_seconds"]) == (5, 5, 0, 2.01)
    assert not (tmp_path / "jobs.outcomes.jsonl").exists()


def test_dry_run_lists_rejections_and_exits_1(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "j.jsonl", [{"GroupId": "@TGS#a", "Content": "x", "ToMember_Account": ["p"]}])
    result = run("send", str(jobs), "--dry-run")
    assert result.returncode == 1
    assert "did you mean ToMembers_Account" in result.stdout


def test_dry_run_with_resume_counts_what_is_left(jobs: Path, tmp_path: Path) -> None:
    assert run("send", str(jobs), "--sandbox").returncode == 0
    result = run("send", str(jobs), "--dry-run", "--resume")
    assert "batches     5 (5 already final in the journal)" in result.stdout
    assert "requests    0" in result.stdout


def test_json_logs_are_one_object_per_line(jobs: Path) -> None:
    result = run("send", str(jobs), "--sandbox", "--log-format", "json")
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert lines and all(isinstance(orjson.loads(line), dict) for line in lines)
    assert orjson.loads(lines[-1])["event"] == "finished"


def test_report_text_and_json(tmp_path: Path) -> None:
    jobs = write_jobs(
        tmp_path / "j.jsonl",
        [
            {"job_id": "ok", "GroupId": "@TGS#a", "Content": "x", "ToMembers_Account": ["p"]},
            {"job_id": "bad", "GroupId": "@TGS#a", "Content": "x", "ToMembers_Account": []},
        ],
    )
    out = tmp_path / "out.jsonl"
    run("send", str(jobs), "--sandbox", "--out", str(out))
    # Add a failed batch and a batch cut off mid-retry, as a real run could leave them.
    with out.open("ab") as handle:
        for doc in (
            {
                "job_id": "lost",
                "batch": 0,
                "batches": 2,
                "attempt": 1,
                "status": "failed",
                "final": True,
                "group_id": "@TGS#b",
                "recipients": ["q", "r"],
                "error_code": 10010,
                "error_info": "gone",
            },
            {
                "job_id": "lost",
                "batch": 1,
                "batches": 2,
                "attempt": 1,
                "status": "retry",
                "final": False,
                "group_id": "@TGS#b",
                "recipients": ["s"],
                "error_code": None,
                "error_info": "timeout",
            },
        ):
            handle.write(orjson.dumps(doc) + b"\n")
    result = run("report", str(out), "--json")
    assert result.returncode == 0
    report = orjson.loads(result.stdout)
    assert {k: report[k] for k in ("batches", "ok", "failed", "rejected", "pending")} == {
        "batches": 3,
        "ok": 1,
        "failed": 1,
        "rejected": 1,
        "pending": 1,
    }
    assert report["error_codes"] == {"0": 1, "10010": 1, "transport": 1}
    fates = {j["job_id"]: j["fate"] for j in report["jobs"]}
    assert fates == {"ok": "ok", "bad": "rejected", "lost": "failed"}
    missing = {(m["job_id"], m["batch"]): m["recipients"] for m in report["not_notified"]}
    assert missing == {("lost", 0): ["q", "r"], ("lost", 1): ["s"]}
    assert report["recipients_not_notified"] == 3
    assert report["not_notified_by_reason"] == [
        {
            "error_code": "10010",
            "meaning": "the group does not exist, or was disbanded",
            "recipients": 2,
            "batches": 1,
            "all_members_batches": 0,
        },
        {
            "error_code": "transport",
            "meaning": "no reply: connection error, timeout, HTTP 5xx or 429, or a body that is not JSON",
            "recipients": 1,
            "batches": 1,
            "all_members_batches": 0,
        },
    ]
    text = run("report", str(out)).stdout
    assert "not notified: 3 named recipients, by reason:" in text
    assert "  10010 (the group does not exist, or was disbanded): 2 recipients in 1 batch" in text
    assert (
        "  lost batch 0 (failed) group @TGS#b: 2 recipients: q, r (10010: the group does not exist, or was disbanded)"
        in text
    )


def test_report_reads_several_journals_as_one_run(tmp_path: Path) -> None:
    """A job set split over two machines, each its own jobs and journal: one report, summed."""
    first = write_jobs(
        tmp_path / "a.jsonl",
        [
            {"job_id": f"a{i}", "GroupId": "@TGS#a", "Content": "x", "ToMembers_Account": ["p", "q", "r"]}
            for i in range(3)
        ],
    )
    second = write_jobs(
        tmp_path / "b.jsonl",
        [
            {"job_id": "b0", "GroupId": "@TGS#b", "Content": "x", "ToMembers_Account": ["s"]},
            {"job_id": "b1", "GroupId": "@TGS#b", "Content": "x", "ToMembers_Account": []},
        ],
    )
    run("send", str(first), "--sandbox", "--batch-size", "2")
    run("send", str(second), "--sandbox")
    with (tmp_path / "b.outcomes.jsonl").open("ab") as handle:  # a batch that failed on the second machine
        handle.write(
            orjson.dumps(
                {
                    "job_id": "b2",
                    "batch": 0,
                    "batches": 1,
                    "attempt": 1,
                    "status": "failed",
                    "final": True,
                    "group_id": "@TGS#b",
                    "recipients": ["t"],
                    "error_code": 10010,
                    "error_info": "gone",
                }
            )
            + b"\n"
        )
    journals = [str(tmp_path / "a.outcomes.jsonl"), str(tmp_path / "b.outcomes.jsonl")]
    report = orjson.loads(run("report", *journals, "--json").stdout)
    assert {k: report[k] for k in ("batches", "ok", "failed", "rejected", "pending", "error_codes")} == {
        "batches": 8,
        "ok": 7,
        "failed": 1,
        "rejected": 1,
        "pending": 0,
        "error_codes": {"0": 7, "10010": 1},
    }
    assert [j["job_id"] for j in report["jobs"]] == ["a0", "a1", "a2", "b1", "b0", "b2"]  # in journal order
    assert report["not_notified"] == [
        {
            "job_id": "b2",
            "group_id": "@TGS#b",
            "batch": 0,
            "status": "failed",
            "recipients": ["t"],
            "error_code": "10010",
            "meaning": "the group does not exist, or was disbanded",
        }
    ]
    text = run("report", *journals).stdout
    assert text.startswith(f"journals {journals[0]}, {journals[1]} (as one run)\nbatches 8: ok 7, failed 1, pending 0")
    missing = run("report", journals[0], str(tmp_path / "nope.jsonl"))
    expected = f"dispatcher: error: {tmp_path / 'nope.jsonl'}: cannot read: No such file or directory\n"
    assert (missing.returncode, missing.stderr) == (2, expected)


def test_report_of_a_missing_journal() -> None:
    result = run("report", "/nonexistent/out.jsonl")
    assert result.returncode == 2


def test_no_progress_when_not_a_terminal(jobs: Path) -> None:
    result = run("send", str(jobs), "--sandbox")
    assert "req/s" not in result.stderr and "ETA" not in result.stderr


def test_progress_on_a_terminal_and_not_with_no_progress(jobs: Path, tmp_path: Path) -> None:
    shown = run_in_pty(DISPATCHER("send", str(jobs), "--sandbox", "--out", str(tmp_path / "a.jsonl")), tmp_path)
    assert "batches" in shown and "req/s" in shown and "5/5" in shown
    hidden = run_in_pty(
        DISPATCHER("send", str(jobs), "--sandbox", "--out", str(tmp_path / "b.jsonl"), "--no-progress"), tmp_path
    )
    assert "req/s" not in hidden
    assert "dispatcher summary" in hidden  # the table, since stdout is a terminal


def test_version_and_help() -> None:
    assert re.fullmatch(r"dispatcher \d+\.\d+\.\d+ \(tim-dispatcher\)\n", run("--version").stdout)
    result = run("--help")
    assert result.returncode == 0 and "send" in result.stdout


def test_help_states_the_defaults_a_run_uses() -> None:
    """The help's defaults and the run's are one: both are pinned here to the documented values."""
    wide = cli_env(COLUMNS="200")
    send = run("send", "--help", env=wide).stdout
    for phrase in (
        "retries included (default 200)",
        "recipients per request, 1-500 (default 500)",
        "attempts of one batch (default 5)",
        "at most half of them to connect (default 10.0)",
    ):
        assert phrase in send
    assert "(default 8080; 0 picks a free one)" in run("sandbox", "--help", env=wide).stdout
    assert "before 60007 (default 200)" in run("sandbox", "--help", env=wide).stdout
    assert "lifetime in seconds (default 86400)" in run("usersig", "--help", env=wide).stdout
    args = build_parser().parse_args(["send", "jobs.jsonl"])
    assert (args.rate, args.batch_size, args.max_attempts, args.timeout) == (200, 500, 5, 10.0)
    library = RunConfig(jobs=("jobs.jsonl",), out=Path("out.jsonl"), endpoint="", credentials=DEMO_CREDENTIALS)
    assert (library.rate, library.batch_size, library.policy.max_attempts, library.timeout) == (200, 500, 5, 10.0)


def test_an_outcome_journal_is_not_read_as_jobs(jobs: Path, tmp_path: Path) -> None:
    assert run("send", str(jobs), "--sandbox").returncode == 0
    journal_path = tmp_path / "jobs.outcomes.jsonl"
    result = run("send", str(jobs), str(journal_path), "--sandbox", "--out", str(tmp_path / "other.jsonl"))
    assert result.returncode == 2
    assert "is an outcome journal" in result.stderr


def test_json_logs_hold_for_errors_too(jobs: Path) -> None:
    result = run("send", str(jobs), "--log-format", "json")  # no credentials
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "TIM_SDKAPPID" in orjson.loads(line)["error"]


# Odd arguments and environments: each is one line on stderr naming what is wrong, exit 2, no traceback.
ODD: list[tuple[list[str], dict[str, str | None], str]] = [
    (["--rate", "nan"], {}, "--rate"),
    (["--rate", "inf"], {}, "--rate"),
    (["--rate", "1e400"], {}, "--rate"),
    (["--rate", "-inf"], {}, "--rate"),
    (["--timeout", "nan"], {}, "--timeout"),
    (["--timeout", "inf"], {}, "--timeout"),
    (["--timeout", "0"], {}, "--timeout"),
    (["--concurrency", "100000000"], {}, "--concurrency"),
    (["--max-attempts", "0"], {}, "--max-attempts"),
    (["--batch-size", "x"], {}, "--batch-size"),
    (["--endpoint", "http://127.0.0.1:99999"], {}, "http://127.0.0.1:99999"),
    (["--endpoint", "http://"], {}, "has no host"),
    (["--endpoint", "http://[::1"], {}, "http://[::1"),
    (["--endpoint", "http://a b"], {}, "http://a b"),
    (["--endpoint", "ftp://127.0.0.1"], {}, "ftp://127.0.0.1"),
    (["--endpoint", "http://127.0.0.1:0"], {}, "port"),
    (["--summary-json", "/nonexistent/dir/s.json"], {}, "--summary-json"),
    (["--summary-json", "/tmp"], {}, "--summary-json"),
    (["--out", "/nonexistent/dir/o.jsonl"], {}, "/nonexistent/dir/o.jsonl"),
    (["--bogus"], {}, "--bogus"),
    ([], {"TIM_SDKAPPID": "99999999999999999999999"}, "TIM_SDKAPPID"),
    ([], {"TIM_SDKAPPID": "-5"}, "TIM_SDKAPPID"),
    ([], {"TIM_SDKAPPID": "1_400"}, "TIM_SDKAPPID"),
    ([], {"TIM_SDKAPPID": "abc"}, "TIM_SDKAPPID"),
    ([], {"TIM_ENDPOINT": "http://127.0.0.1:99999"}, "http://127.0.0.1:99999"),
    ([], {"TIM_REGION": "mars", "TIM_ENDPOINT": None}, "mars"),
    ([], {"TIM_ENDPOINT": ""}, "TIM_ENDPOINT is set but empty"),
    ([], {"TIM_REGION": " ", "TIM_ENDPOINT": None}, "TIM_REGION is set but empty"),
]


@pytest.mark.parametrize(("args", "env", "words"), ODD, ids=[" ".join(a) or str(e) for a, e, _ in ODD])
def test_odd_send_arguments_are_one_line_and_exit_2(
    jobs: Path, args: list[str], env: dict[str, str | None], words: str
) -> None:
    # Every run that got past the checks would send to a closed port on 127.0.0.1, never anywhere else.
    merged = {**DEMO_ENV, "TIM_ENDPOINT": "http://127.0.0.1:9", **env}
    result = run("send", str(jobs), *args, env=cli_env(**{k: v for k, v in merged.items() if v is not None}))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert words in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["sandbox", "--port", "99999"], "--port"),
        (["sandbox", "--port", "-1"], "--port"),
        (["sandbox", "--latency", "nan"], "--latency"),
        (["sandbox", "--jitter", "-1"], "--jitter"),
        (["sandbox", "--arrival-jitter", "inf"], "--arrival-jitter"),
        (["sandbox", "--fail-rate", "2"], "--fail-rate"),
        (["sandbox", "--rate", "0"], "--rate"),
        (["usersig", "--expire", "100000000000000000000000000"], "--expire"),
        (["usersig", "--expire", "0"], "--expire"),
        (["report", "/nonexistent/out.jsonl"], "/nonexistent/out.jsonl"),
        (["report"], "OUTCOMES.jsonl"),
    ],
)
def test_odd_other_arguments_are_one_line_and_exit_2(args: list[str], words: str) -> None:
    result = run(*args, env=cli_env(**DEMO_ENV))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert words in line


def test_report_into_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with out.open("wb") as handle:  # a journal whose report is far longer than a pipe's buffer
        for i in range(3000):
            line = {"job_id": f"job-{i}", "batch": 0, "batches": 1, "attempt": 1, "status": "ok", "final": True}
            handle.write(orjson.dumps({**line, "group_id": "@TGS#a", "recipients": ["p"], "error_code": 0}) + b"\n")
    proc = subprocess.Popen(
        DISPATCHER("report", str(out)), cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"journal ")  # like `| head -n 1`
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""


def test_jobs_from_a_fifo_are_read_once_and_the_writer_is_not_killed(tmp_path: Path) -> None:
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo)
    lines = b"".join(orjson.dumps({"GroupId": "@TGS#f", "Content": f"n{i}"}) + b"\n" for i in range(3))
    written: list[int] = []

    def writer() -> None:  # a data team's hand-off: write the jobs into the pipe, then close it
        with open(fifo, "wb") as handle:
            written.append(handle.write(lines))

    thread = threading.Thread(target=writer)
    thread.start()
    result = run(
        "send", str(fifo), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--summary-json", str(tmp_path / "s.json")
    )
    thread.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert written == [len(lines)]  # the writer was not cut off by SIGPIPE
    assert load(tmp_path / "s.json")["ok"] == 3


def opens_a_fifo(proc: subprocess.Popen[bytes]) -> bool:
    """Whether a thread of `proc` sleeps in open(2) on a FIFO that has no writer: in the kernel's
    wait_for_partner, as Linux names it in /proc/PID/task/TID/wchan. Nothing tells of it but
    that file, so the test looks at it until then, or until the run ends (a failure)."""
    for wchan in Path(f"/proc/{proc.pid}/task").glob("*/wchan"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            if wchan.read_text() == "wait_for_partner":
                return True
    return False


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_stops_a_run_waiting_for_a_fifo_writer(tmp_path: Path, signame: str) -> None:
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo)  # nobody ever writes to it: open(2) blocks
    proc = subprocess.Popen(
        DISPATCHER("send", str(fifo), "--sandbox", "--out", str(tmp_path / "out.jsonl")),
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: opens_a_fifo(proc), proc)  # the run is past its start, its reader stuck in open(2)
    proc.send_signal(getattr(signal, signame))
    assert proc.wait(timeout=10) == 130
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


def test_an_export_from_a_fifo_is_left_to_the_run_by_the_pre_scan(tmp_path: Path) -> None:
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    job = {"GroupId": "@TGS#f", "Content": "x", "recipients_file": "export.fifo"}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [job])
    ids = users(1200)
    written: list[int] = []

    def writer() -> None:
        with open(fifo, "wb") as handle:
            written.append(handle.write("\n".join(ids).encode() + b"\n"))

    thread = threading.Thread(target=writer)
    thread.start()
    summary = tmp_path / "s.json"
    # --sandbox pre-scans the jobs for their groups; it must not use up the export.
    result = run("send", str(jobs), "--sandbox", "--summary-json", str(summary))
    thread.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert written and load(summary)["recipients"] == 1200


def test_summary_json_may_not_replace_the_journal_or_a_jobs_file(jobs: Path, tmp_path: Path) -> None:
    out = tmp_path / "jobs.outcomes.jsonl"
    assert run("send", str(jobs), "--sandbox").returncode == 0
    before = out.read_bytes()
    for target in (out, jobs):
        result = run("send", str(jobs), "--sandbox", "--resume", "--summary-json", str(target))
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert f"--summary-json {target}: is " in line and "which the run reads" in line
    assert out.read_bytes() == before


def test_summary_json_may_not_replace_another_runs_journal(jobs: Path, tmp_path: Path) -> None:
    from dispatcher.journal.outcomes import Journal

    other = Journal(tmp_path / "other.jsonl")  # a run in progress holds it
    try:
        result = run("send", str(jobs), "--sandbox", "--summary-json", str(tmp_path / "other.jsonl"))
    finally:
        other.close()
    assert result.returncode == 2
    assert f"is the outcome journal of a run in progress (pid {os.getpid()})" in result.stderr


def test_the_journal_is_never_read_as_jobs_under_another_name(jobs: Path, tmp_path: Path) -> None:
    out = tmp_path / "jobs.outcomes.jsonl"
    assert run("send", str(jobs), "--sandbox").returncode == 0
    os.link(out, tmp_path / "linked.jsonl")
    for args in (["-", "--out", str(out)], [str(tmp_path / "linked.jsonl"), "--out", str(out)]):
        with out.open("rb") as journal_file:  # send - --out J --resume < J; send LINK --out J --resume
            result = subprocess.run(
                DISPATCHER("send", *args, "--sandbox", "--resume"),
                stdin=journal_file,
                cwd=ROOT,
                env=cli_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert f"is the outcome journal {out}, not a jobs file" in line


@pytest.mark.parametrize("target", ["/dev/null", "fifo"])
def test_a_journal_must_be_a_regular_file(jobs: Path, tmp_path: Path, target: str) -> None:
    if target == "fifo":
        target = str(tmp_path / "out.fifo")
        os.mkfifo(target)
    result = run("send", str(jobs), "--sandbox", "--out", target)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert f"{target} is not a regular file; the outcome journal must be a file" in line


def test_report_refuses_a_pipe_instead_of_listing_nobody(jobs: Path, tmp_path: Path) -> None:
    result = run("report", "/dev/stdin", stdin=b'{"job_id": "a", "batch": 0, "status": "failed", "final": true}\n')
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "/dev/stdin: not a regular file" in line


def test_report_of_a_damaged_field_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"job_id": "a", "batch": "first", "status": "ok", "final": true}\n{"job_id": "b"}\n')
    result = run("report", str(out))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert f"{out}:1: not an outcome line; the journal is damaged" in line


def test_a_dry_run_does_not_repair_the_journal(jobs: Path, tmp_path: Path) -> None:
    out = tmp_path / "jobs.outcomes.jsonl"
    assert run("send", str(jobs), "--sandbox").returncode == 0
    with out.open("ab") as handle:
        handle.write(b'{"job_id": "torn", "ba')  # a run in progress may be writing this very line
    before = out.read_bytes()
    assert run("send", str(jobs), "--dry-run", "--resume").returncode == 0
    assert out.read_bytes() == before


def test_a_run_started_with_stdout_closed_keeps_its_journal_whole(jobs: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    command = " ".join(DISPATCHER("send", str(jobs), "--sandbox", "--out", str(out)))
    result = subprocess.run(["sh", "-c", f"exec {command} >&-"], cwd=ROOT, env=cli_env(), capture_output=True)
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(raw) for raw in out.read_bytes().splitlines()]  # the summary is not in it
    assert len(lines) == 5 and all(d["status"] == "ok" for d in lines)


def test_more_concurrency_than_open_files_is_refused(jobs: Path, tmp_path: Path) -> None:
    import resource

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    result = subprocess.run(
        DISPATCHER("send", str(jobs), "--sandbox", "--concurrency", "2000"),
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        preexec_fn=few_files,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "--concurrency needs about 4064 open files and this process may open 256 (ulimit -n)" in line


def test_sandbox_on_a_port_in_use_is_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("sandbox", "--port", str(port))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert f"--port {port}: cannot listen on 127.0.0.1" in line


def test_argument_errors_are_json_with_json_logs(jobs: Path) -> None:
    result = run("send", str(jobs), "--rate", "abc", "--log-format", "json")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    doc = orjson.loads(line)
    assert doc["exit_code"] == 2 and "argument --rate: invalid float value: 'abc'" in doc["error"]


def test_credentials_that_are_not_utf8_are_one_line_without_the_value() -> None:
    from dispatcher.errors import ConfigError
    from dispatcher.tim.config import credentials_from_env

    env = {"TIM_SDKAPPID": "1400000000", "TIM_IDENTIFIER": "admin", "TIM_SECRET_KEY": os.fsdecode(b"k\xffey")}
    with pytest.raises(ConfigError, match=r"^TIM_SECRET_KEY is not valid UTF-8$"):
        credentials_from_env(env)


async def test_a_signal_before_the_engine_exists_keeps_the_run_from_starting(tmp_path: Path) -> None:
    """A signal while the rate store connects or the sandbox starts (after the pre-scan, before the
    engine) is remembered and answered as soon as the engine exists: the run does not start."""
    from dispatcher.run.engine import Engine
    from dispatcher.run.runner import Runner, _Stopper
    from tests.conftest import make_config

    async with Sandbox() as box:
        engine = Engine(
            make_config(
                box, write_jobs(tmp_path / "j.jsonl", [{"GroupId": "@TGS#a", "Content": "x"}]), tmp_path / "o.jsonl"
            )
        )
        stopper = _Stopper(None)
        stopper()  # SIGTERM, with no engine yet
        assert stopper.attach(engine) is False
        assert box.stats["requests"] == 0
        quiet = _Stopper(None)
        assert quiet.attach(engine) is True
        quiet()  # from now on a signal is the engine's graceful stop
        assert engine.summary.interrupted is True
        # The same through the library's runner: stopped before it starts, it sends nothing.
        runner = Runner(make_config(box, tmp_path / "j.jsonl", tmp_path / "o2.jsonl"), handle_signals=False)
        runner.stop()
        summary = await runner.run()
        assert (summary.interrupted, summary.requests, summary.exit_code) == (True, 0, 130)
        assert box.stats["requests"] == 0


def test_summary_json_may_not_replace_the_journal_the_run_will_create(jobs: Path, tmp_path: Path) -> None:
    """Not there yet at the check, the journal was written by the run, then replaced by the summary."""
    out = tmp_path / "new.outcomes.jsonl"
    result = run("send", str(jobs), "--sandbox", "--out", str(out), "--summary-json", str(out))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"dispatcher: error: --summary-json {out}: is {out}, which the run reads; choose another file"
    ]
    assert not out.exists()


@pytest.mark.parametrize("option", ["--summary-json", "--metrics-file"])
def test_an_output_may_not_replace_a_recipients_file(jobs: Path, tmp_path: Path, option: str) -> None:
    """The export is the user's data: written over at the end (or every few seconds), it was gone."""
    export = tmp_path / "export.txt"
    before = export.read_bytes()
    result = run("send", str(jobs), "--sandbox", option, str(export))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"dispatcher: error: {option} {export}: is the recipients_file of {jobs}:2, which the run reads; "
        "choose another file"
    ]
    assert export.read_bytes() == before
    assert not (tmp_path / "jobs.outcomes.jsonl").exists()
