"""dispatcher.testing, as a library user's tests meet it: the fake clock, the sandbox served for a
block, and a run's config against it."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import orjson
import pytest

from dispatcher import Engine, Group, RetryPolicy, Sandbox
from dispatcher.testing import FakeClock, run_config, sandbox
from tests.conftest import ROOT

NOTICE = {"job_id": "notice", "GroupId": "@TGS#team", "Content": "hi", "ToMembers_Account": ["peter", "amara"]}


def jobs_file(tmp_path: Path, *jobs: dict[str, object]) -> Path:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"".join(orjson.dumps(job) + b"\n" for job in jobs or (NOTICE,)))
    return path


def journal(path: Path) -> list[dict[str, object]]:
    """The outcome lines, as the reference documents them: one JSON object a line."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def port_of(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    assert port is not None
    return port


async def test_the_fake_clock_moves_only_when_slept_or_set() -> None:
    clock = FakeClock()
    assert clock.time() == 1000.0
    await clock.sleep(2.5)
    await clock.sleep(-1.0)  # asked for, recorded, but time never runs backwards
    await clock.sleep(0.0)
    assert (clock.time(), clock.sleeps) == (1002.5, [2.5, -1.0, 0.0])
    clock.now += 10  # idle, without a sleep
    assert clock.time() == 1012.5
    assert FakeClock(start=0.0).time() == 0.0


async def test_a_fake_sleep_lets_the_other_tasks_run() -> None:
    clock = FakeClock()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.create_task(other())
    await clock.sleep(60)
    assert ran == ["other"]  # it ran during the sleep, not after the test's own next await
    await task


async def test_a_run_against_the_sandbox_delivers_to_everyone_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with sandbox() as box:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", box.url)
        summary = await Engine(run_config(box, jobs_file(tmp_path), out)).run()
    assert (summary.exit_code, summary.ok, summary.requests, summary.recipients) == (0, 1, 1, 2)
    assert box.ledger.recipients("@TGS#team", "hi") == {"peter": 1, "amara": 1}
    assert [(line["job_id"], line["status"]) for line in journal(out)] == [("notice", "ok")]


async def test_the_sandbox_is_stopped_when_the_block_ends_even_by_an_error() -> None:
    with pytest.raises(RuntimeError, match="the test failed"):
        async with sandbox() as box:
            port = port_of(box.url)
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # serving
            raise RuntimeError("the test failed")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


async def test_a_sandbox_of_ones_own_is_served_with_its_rules(tmp_path: Path) -> None:
    box = Sandbox(groups={"@TGS#other": Group("Public", frozenset({"peter"}))}, rate=50)
    out = tmp_path / "out.jsonl"
    async with sandbox(box) as served:
        assert served is box
        config = run_config(box, jobs_file(tmp_path), out)
        summary = await Engine(config).run()
    assert config.rate == 50  # the sandbox's rate, not the API's 200
    assert (summary.exit_code, summary.failed) == (1, 1)
    assert [(line["status"], line["error_code"]) for line in journal(out)] == [("failed", 10010)]
    assert box.ledger.total() == 0


async def test_the_config_retries_a_thousand_times_sooner_than_a_run(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with sandbox() as box:
        box.script(10002, 10002)  # the server's internal error, twice: retried
        config = run_config(box, jobs_file(tmp_path), out)
        summary = await Engine(config).run()
    assert (config.policy, config.rate) == (RetryPolicy(base=0.001, cap=0.01), 200)
    assert (summary.exit_code, summary.requests, summary.retries) == (0, 3, 2)
    assert [line["status"] for line in journal(out)] == ["retry", "retry", "ok"]


async def test_the_config_takes_any_field_and_several_jobs_files(tmp_path: Path) -> None:
    async with sandbox() as box:
        config = run_config(box, ["a.jsonl", tmp_path / "b.jsonl"], str(tmp_path / "out.jsonl"), resume=True, rate=20)
        single = run_config(box, tmp_path / "a.jsonl", tmp_path / "out.jsonl")
    assert config.jobs == ("a.jsonl", str(tmp_path / "b.jsonl"))
    assert (config.out, config.resume, config.rate) == (tmp_path / "out.jsonl", True, 20)
    assert single.jobs == (str(tmp_path / "a.jsonl"),)


def test_a_config_for_a_sandbox_that_is_not_serving_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as refused:
        run_config(Sandbox(), "jobs.jsonl", tmp_path / "out.jsonl")
    assert str(refused.value) == (
        "the sandbox is not serving: start it first (async with dispatcher.testing.sandbox() as box)"
    )


def test_it_needs_no_pytest() -> None:
    """A user's tests may run under another runner: importing it must not import pytest."""
    probe = "import sys, dispatcher.testing; print('pytest' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "False\n", "")
