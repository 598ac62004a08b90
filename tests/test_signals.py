"""Signals at the edges of a run, sent to real `dispatcher send` processes: while the rate store
does not answer, in the first moments of the process, and just after the summary was written."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from dispatcher.sandbox import Sandbox
from tests.conftest import DEMO_ENV, DISPATCHER, ROOT, SilentStore, cli_env, write_jobs


def some_jobs(path: Path, count: int = 5) -> Path:
    return write_jobs(path, [{"job_id": f"j{i}", "GroupId": "@TGS#a", "Content": "x"} for i in range(count)])


async def test_a_signal_while_the_rate_store_never_answers_stops_at_once_with_nothing_sent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The opening of the budgets is cancelled by the signal: it was held until the store was
    given up (about 9.5 s, then exit 2, "cannot reach the rate store ... Timeout")."""
    silent_store = SilentStore()
    out = tmp_path / "out.jsonl"
    args = ["send", str(some_jobs(tmp_path / "j.jsonl")), "--endpoint", sandbox.url, "--out", str(out)]
    proc = await asyncio.create_subprocess_exec(
        *DISPATCHER(*args, "--rate-store", silent_store.url),
        env=cli_env(**DEMO_ENV),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert await asyncio.to_thread(silent_store.accepted.acquire, True, 30)  # the run is opening its budget
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert sandbox.stats["requests"] == 0
    assert not out.exists()  # made by the run, which wrote nothing into it
    silent_store.close()


# The process sends itself SIGTERM at a named moment of its run, seen by an audit hook (PEP 578):
# the first import of a module, or the first open or rename of a file. The moment is exact, and no
# test waits for it: how fast the machine is changes nothing.
AT_A_MOMENT = """
import os, runpy, signal, sys

event, target = sys.argv[1], sys.argv[2]
sys.argv = ["dispatcher", *sys.argv[3:]]
fired = False


def hook(name, args):
    global fired
    if fired or name != event:
        return
    subject = args[1] if name == "os.rename" else args[0]  # os.replace: (src, dst, ...)
    if str(subject) == target:
        fired = True
        os.kill(os.getpid(), signal.SIGTERM)


sys.addaudithook(hook)
runpy.run_module("dispatcher", run_name="__main__", alter_sys=True)
"""


async def sigterm_at(event: str, target: str, *args: str) -> tuple[int, str]:
    """`dispatcher ARGS`, which sends itself SIGTERM at the first `event` on `target`: the exit
    status, and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AT_A_MOMENT,
        event,
        target,
        *args,
        env=cli_env(**DEMO_ENV),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.parametrize(
    ("event", "target"),
    [
        ("import", "argparse"),  # the command line's module is being imported
        ("import", "orjson"),  # the first heavy import: the arguments are being parsed
        ("import", "httptools"),  # the engine is being imported: the options are being checked
        ("open", "JOURNAL"),  # the journal is being opened
    ],
)
async def test_a_sigterm_in_the_first_moments_is_exit_130_with_nothing_sent(
    sandbox: Sandbox, tmp_path: Path, event: str, target: str
) -> None:
    """Before the handler was installed, the default action killed the run: status -15, no summary."""
    out = tmp_path / "out.jsonl"
    target = str(out) if target == "JOURNAL" else target
    args = ["send", str(some_jobs(tmp_path / "j.jsonl")), "--endpoint", sandbox.url, "--out", str(out)]
    code, err = await sigterm_at(event, target, *args, "--summary-json", str(tmp_path / "s.json"))
    assert code == 130, err
    assert "Traceback" not in err
    assert sandbox.stats["requests"] == 0
    assert not out.exists()


async def test_a_sigterm_just_after_the_summary_was_written_leaves_the_exit_status_it_reports(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """It exited 143 while the summary and the metrics said 0: a supervisor saw "killed", a
    dashboard "success"."""
    summary, metrics = tmp_path / "s.json", tmp_path / "m.prom"
    args = ["send", str(some_jobs(tmp_path / "j.jsonl")), "--endpoint", sandbox.url, "--out", str(tmp_path / "o")]
    args += ["--summary-json", str(summary), "--metrics-file", str(metrics)]
    code, err = await sigterm_at("os.rename", str(summary), *args)
    assert code == 0, err
    assert orjson.loads(summary.read_bytes())["exit_code"] == 0
    assert "\ndispatcher_exit_code 0.0\n" in metrics.read_text()
    assert sandbox.stats["requests"] == 5


def test_a_signal_while_the_interpreter_exits_leaves_the_exit_status_the_summary_gave(tmp_path: Path) -> None:
    """After `main` returns the interpreter puts back the default action of every signal it
    handled, then tears its modules down: a SIGTERM then killed the process (-15, 143 in a shell)
    after a summary that said 0. Here it lands in that teardown, from an object freed in it."""
    jobs = some_jobs(tmp_path / "j.jsonl", count=1)
    code = (
        "import os, signal, sys, time\n"
        "from dispatcher.cli import main\n"
        "class Late:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(0.2)\n"
        "late = Late()\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    args = ["send", str(jobs), "--sandbox", "--out", str(out), "--no-progress", "--summary-json", str(summary)]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=cli_env(**DEMO_ENV), cwd=ROOT, capture_output=True, timeout=60
    )
    assert orjson.loads(summary.read_bytes())["exit_code"] == 0
    assert proc.returncode == 0


def test_a_signal_between_the_import_and_the_programs_own_handlers_is_exit_130() -> None:
    # `main` stands in for the moment before its first line installs its handlers: only the entry
    # point's own handler is there. Before, the KeyboardInterrupt escaped it: killed by SIGINT (-2).
    code = (
        "import os, runpy, signal, dispatcher.cli as cli\n"
        "cli.main = lambda: os.kill(os.getpid(), signal.SIGTERM) or 0\n"
        "runpy.run_module('dispatcher', run_name='__main__', alter_sys=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
