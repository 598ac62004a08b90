"""Signals at the edges of a run, sent to real `dispatcher send` processes: while the rate store
does not answer, in the first moments of the process, and just after the summary was written."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from dispatcher.sandbox import Sandbox
from tests.conftest import DEMO_ENV, DISPATCHER, ROOT, cli_env, write_jobs
from tests.test_run_edges import SilentStore


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
