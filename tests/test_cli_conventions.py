"""What a person at a terminal meets: a summary to read, --quiet and --verbose, a sandbox that says how
to use it, shell completion, and --help with examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import DISPATCHER, ROOT, cli_env, run_in_pty, write_jobs

GROUP = "@TGS#2C5SZEAEF"


def mixed_jobs(tmp_path: Path) -> Path:
    """1,200 named recipients in three batches, and one job to all members of its group."""
    return write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "named", "GroupId": GROUP, "Content": "hi", "ToMembers_Account": [f"u{i}" for i in range(1200)]},
            {"job_id": "everyone", "GroupId": GROUP, "Content": "hi all"},
        ],
    )


def test_a_terminal_gets_one_summary_with_labels_separators_and_all_members_shown(tmp_path: Path) -> None:
    jobs = mixed_jobs(tmp_path)
    shown = run_in_pty(
        DISPATCHER("send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl")), tmp_path, NO_COLOR="1"
    )
    assert "dispatcher summary" in shown
    assert "1,200 named, and all members of the group in 1 batch" in shown
    assert "4: 4 ok, 0 failed, 0 skipped (already final), 0 pending" in shown
    assert "0 delivered: 4" in shown
    assert "0 (every batch delivered)" in shown
    assert "finished" not in shown  # the log line of the summary: the table stands for it on a terminal
    assert "recipients=" not in shown


def test_a_pipe_keeps_the_key_value_lines_and_the_finished_log_line(tmp_path: Path) -> None:
    jobs = mixed_jobs(tmp_path)
    summary = tmp_path / "summary.json"
    args = DISPATCHER(
        "send", str(jobs), "--sandbox", "--out", str(tmp_path / "out.jsonl"), "--summary-json", str(summary)
    )
    ran = subprocess.run(args, env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0
    assert "recipients  1200\n" in ran.stdout and "all_members_batches 1\n" in ran.stdout
    assert "finished" in ran.stderr
    assert orjson.loads(summary.read_bytes())["all_members_batches"] == 1


def test_quiet_prints_no_summary_and_keeps_the_exit_status_and_the_summary_file(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "x"}, {"GroupId": GROUP}])
    summary = tmp_path / "summary.json"
    args = DISPATCHER("send", str(jobs), "--sandbox", "-q", "--out", str(tmp_path / "out.jsonl"))
    ran = subprocess.run(
        [*args, "--summary-json", str(summary)], env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 1  # a job was rejected
    assert ran.stdout == ""
    assert "sending" not in ran.stderr and "finished" not in ran.stderr  # info lines are gone
    assert "rejected" in ran.stderr  # the warning about the bad job stays
    assert orjson.loads(summary.read_bytes())["rejected"] == 1


def test_quiet_and_verbose_together_are_one_usage_error(tmp_path: Path) -> None:
    ran = subprocess.run(
        DISPATCHER("send", "jobs.jsonl", "-q", "-v"), env=cli_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert ran.returncode == 2
    assert ran.stderr.count("\n") == 1 and "not allowed with argument" in ran.stderr


def test_the_sandbox_prints_its_url_alone_on_stdout_and_how_to_use_it_on_stderr(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        DISPATCHER("sandbox", "--port", "0"),
        env=cli_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        told = [proc.stderr.readline() for _ in range(4)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert told == [
        "sandbox: send to it with\n",
        f"  export TIM_SDKAPPID=1400000000 TIM_IDENTIFIER=administrator TIM_SECRET_KEY=dispatcher-sandbox-demo-key "
        f"TIM_ENDPOINT={url}\n",
        f"sandbox: what it got: {url}/sandbox/stats and {url}/sandbox/ledger\n",
        "sandbox: Ctrl-C to stop\n",
    ]


def test_a_sandbox_given_real_credentials_never_shows_them(tmp_path: Path) -> None:
    env = cli_env(TIM_SDKAPPID="1400123456", TIM_IDENTIFIER="ops", TIM_SECRET_KEY="s3cr3t-key-of-the-app")
    proc = subprocess.Popen(
        DISPATCHER("sandbox", "--port", "0"),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        told = "".join(proc.stderr.readline() for _ in range(4))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "s3cr3t" not in told and "it accepts the TIM_* credentials of this environment" in told


def test_bash_completion_completes_commands_and_flags() -> None:
    command = Path(sys.executable).parent / "dispatcher"
    script = (
        f"source <({command} completion bash)\n"
        'COMP_WORDS=(dispatcher se); COMP_CWORD=1; _shtab_dispatcher; echo "${COMPREPLY[@]}"\n'
        'COMP_WORDS=(dispatcher report --und); COMP_CWORD=2; _shtab_dispatcher; echo "${COMPREPLY[@]}"\n'
    )
    ran = subprocess.run(["bash", "-c", script], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert ran.stdout.splitlines() == ["send", "--undelivered"], ran.stderr


def test_zsh_completion_is_a_compdef_script() -> None:
    ran = subprocess.run(DISPATCHER("completion", "zsh"), env=cli_env(), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.startswith("#compdef dispatcher")


def test_help_shows_examples_and_where_the_docs_are() -> None:
    ran = subprocess.run(DISPATCHER("--help"), env=cli_env(), capture_output=True, text=True, timeout=60)
    assert "  dispatcher send jobs.jsonl --sandbox           try it on the built-in emulator, offline" in ran.stdout
    assert "docs: the Quickstart (docs/guide/quickstart.md)" in ran.stdout
    send = subprocess.run(DISPATCHER("send", "--help"), env=cli_env(), capture_output=True, text=True, timeout=60)
    assert "dispatcher send jobs.jsonl --resume" in send.stdout and "docs:" in send.stdout
