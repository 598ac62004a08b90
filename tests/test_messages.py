"""Messages that point at the mistake: the flag or file that is wrong, with a hint where one helps, and
exit 2 for a file in the wrong shape, before anything is read or sent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from tests.conftest import DISPATCHER, cli_env

JOB = b'{"GroupId": "@TGS#2C5SZEAEF", "Content": "hi"}\n'


def run(cwd: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(DISPATCHER(*args), cwd=cwd, env=cli_env(), input=stdin, capture_output=True, timeout=120)


def error_line(ran: subprocess.CompletedProcess[bytes]) -> str:
    lines = ran.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_out_naming_the_jobs_file_points_at_out(tmp_path: Path) -> None:
    (tmp_path / "notice.jsonl").write_bytes(JOB)
    ran = run(tmp_path, "send", "notice.jsonl", "--out", "notice.jsonl", "--sandbox")
    assert ran.returncode == 2
    assert error_line(ran) == (
        "dispatcher: error: --out notice.jsonl names a jobs file of this run: the journal would be written into "
        "it; give --out another name, or leave it out (then: notice.outcomes.jsonl)"
    )
    assert (tmp_path / "notice.jsonl").read_bytes() == JOB


def test_report_given_a_jobs_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "notice.jsonl").write_bytes(JOB)
    ran = run(tmp_path, "report", "notice.jsonl")
    assert ran.returncode == 2
    assert error_line(ran) == (
        "dispatcher: error: notice.jsonl is a jobs file, not an outcome journal: give the journal its send wrote "
        "(by default notice.outcomes.jsonl beside it)"
    )


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        (
            "jobs.csv",
            b"GroupId,Content\n@TGS#1,hi\n",
            "jobs.csv looks like a table (CSV or TSV), not jobs: a jobs file holds one JSON object a line; "
            "a table of recipients goes in a job's recipients_file",
        ),
        (
            "array.jsonl",
            b'[{"GroupId": "@TGS#1", "Content": "hi"}]\n',
            "array.jsonl holds a JSON array: write one JSON object a line (JSON Lines), e.g. "
            "`jq -c '.[]' array.jsonl > jobs.jsonl`",
        ),
        (
            "pretty.jsonl",
            b'{\n  "GroupId": "@TGS#1",\n  "Content": "hi"\n}\n',
            "pretty.jsonl holds a JSON object over several lines: write each job on one line (JSON Lines), e.g. "
            "`jq -c . pretty.jsonl > jobs.jsonl`",
        ),
        (
            "utf16.jsonl",
            JOB.decode().encode("utf-16"),
            "utf16.jsonl is saved as UTF-16: save it as UTF-8 (jobs files are UTF-8 JSON Lines)",
        ),
    ],
    ids=["csv", "array", "pretty", "utf16"],
)
def test_a_jobs_file_in_the_wrong_shape_is_one_line_and_exit_2(
    tmp_path: Path, name: str, content: bytes, said: str
) -> None:
    (tmp_path / name).write_bytes(content)
    for command in (("send", name, "--sandbox"), ("send", name, "--dry-run")):
        ran = run(tmp_path, *command)
        assert ran.returncode == 2
        assert error_line(ran) == f"dispatcher: error: {said}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written, nothing sent


def test_a_bad_line_is_named_once_by_its_place(tmp_path: Path) -> None:
    (tmp_path / "jobs.jsonl").write_bytes(JOB + b"{not json\n")
    ran = run(tmp_path, "send", "jobs.jsonl", "--dry-run")
    assert ran.returncode == 1
    rejected = [line for line in ran.stdout.decode().splitlines() if line.startswith("rejected")]
    assert rejected == [
        "rejected    jobs.jsonl:2: line is not valid JSON (unexpected character, expected a string key)"
    ]


def test_a_workbook_given_as_an_export_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "members.xlsx").write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 100)
    job = b'{"GroupId": "@TGS#1", "Content": "hi", "recipients_file": "members.xlsx"}\n'
    (tmp_path / "jobs.jsonl").write_bytes(job)
    ran = run(tmp_path, "send", "jobs.jsonl", "--dry-run")
    assert ran.returncode == 1
    assert (
        "rejected    jobs.jsonl:1: field recipients_file: members.xlsx: a workbook or zip archive, not an export: "
        "save it as CSV or text" in ran.stdout.decode()
    )


def test_summary_json_dash_writes_the_summary_to_stdout(tmp_path: Path) -> None:
    (tmp_path / "notice.jsonl").write_bytes(JOB)
    ran = run(tmp_path, "send", "notice.jsonl", "--sandbox", "--summary-json", "-")
    assert ran.returncode == 0
    summary = orjson.loads(ran.stdout)
    assert (summary["ok"], summary["exit_code"]) == (1, 0)
    assert not (tmp_path / "-").exists()


def test_a_dry_run_of_standard_input_needs_no_out(tmp_path: Path) -> None:
    ran = run(tmp_path, "send", "-", "--dry-run", stdin=JOB)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.decode().startswith("jobs        1 (1 valid, 0 rejected)\n")


def test_one_bad_first_line_is_rejected_alone_and_the_good_jobs_go(tmp_path: Path) -> None:
    (tmp_path / "jobs.jsonl").write_bytes(b'"GroupId": "@TGS#2C5SZEAEF", "Content": "lost its brace"}\n' + JOB)
    ran = run(tmp_path, "send", "jobs.jsonl", "--dry-run")
    assert ran.returncode == 1
    assert ran.stdout.decode().startswith("jobs        2 (1 valid, 1 rejected)\n")


def test_a_dry_run_with_summary_json_dash_prints_the_json_alone(tmp_path: Path) -> None:
    (tmp_path / "notice.jsonl").write_bytes(JOB)
    ran = run(tmp_path, "send", "notice.jsonl", "--dry-run", "--summary-json", "-")
    assert ran.returncode == 0
    assert orjson.loads(ran.stdout)["requests"] == 1
