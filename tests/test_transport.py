"""An endpoint that cannot be reached, one that stops answering, HTTP 429 with Retry-After, HTTP 413."""

from __future__ import annotations

import asyncio
import collections
import socket
from pathlib import Path

import pytest

from dispatcher.pacing.memory import RateLimiter
from dispatcher.run.client import parse_retry_after
from dispatcher.run.engine import Engine
from dispatcher.run.retry import RetryPolicy
from dispatcher.sandbox import Faults, Sandbox
from dispatcher.tim import rules
from tests.conftest import FakeClock, journal, make_config, run_engine, users, write_jobs

GROUP = "@TGS#transport"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def many_batches(tmp_path: Path, count: int = 40) -> tuple[Path, list[str]]:
    ids = users(count)
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"job_id": "j", "GroupId": GROUP, "Content": "hi", "ToMembers_Account": ids}]
    )
    return jobs, ids


@pytest.mark.parametrize("scheme", ["refused", "tls"])
async def test_unreachable_endpoint_stops_early_and_a_plain_resume_finishes(
    sandbox: Sandbox, tmp_path: Path, scheme: str
) -> None:
    jobs, ids = many_batches(tmp_path)
    out = tmp_path / "out.jsonl"
    # Refused: nothing listens. TLS: https to a plain-HTTP server, so the handshake fails.
    endpoint = f"http://127.0.0.1:{closed_port()}" if scheme == "refused" else sandbox.url.replace("http", "https")
    summary = await run_engine(sandbox, jobs, out, endpoint=endpoint, batch_size=1, concurrency=4)
    assert summary.exit_code == 2
    assert summary.stopped is not None and summary.stopped.startswith(f"cannot reach {endpoint}: ")
    assert (summary.failed, summary.ok) == (0, 0)
    assert summary.requests <= 4 + 2  # a few connection attempts, not 40 batches x 5 attempts
    lines = journal(out)
    assert lines and {(d["status"], d["final"]) for d in lines} == {("retry", False)}

    summary = await run_engine(sandbox, jobs, out, resume=True, batch_size=1)
    assert (summary.exit_code, summary.ok, summary.skipped) == (0, 40, 0)
    assert sandbox.ledger.recipients(GROUP, "hi") == collections.Counter(dict.fromkeys(ids, 1))


async def test_a_server_that_drops_everything_halts_without_failing_batches(sandbox: Sandbox, tmp_path: Path) -> None:
    jobs, _ids = many_batches(tmp_path)
    out = tmp_path / "out.jsonl"
    sandbox.faults = Faults(drop_rate=1.0)  # connections are made, then closed unanswered
    summary = await run_engine(sandbox, jobs, out, batch_size=1, concurrency=1)
    assert summary.exit_code == 2
    assert summary.stopped is not None and "the endpoint is not answering" in summary.stopped
    assert summary.failed == 0
    assert summary.requests == 5  # one batch's attempts, then the run halted
    assert all(not d["final"] for d in journal(out))


async def test_mid_run_outage_halts_resumable_and_resume_sends_each_once(tmp_path: Path) -> None:
    jobs, ids = many_batches(tmp_path, 300)
    out = tmp_path / "out.jsonl"
    async with Sandbox(rate=100_000, faults=Faults(latency=0.005)) as sandbox:
        config = make_config(sandbox, jobs, out, batch_size=1, concurrency=8, rate=2000)
        run = asyncio.create_task(Engine(config).run())
        for _ in range(6000):  # until 30 are delivered (polling the ledger; at most 30 s)
            if sandbox.ledger.total() >= 30:
                break
            await asyncio.sleep(0.005)
        sandbox.faults = Faults(drop_rate=1.0)  # the endpoint goes down
        summary = await asyncio.wait_for(run, timeout=30)
        assert summary.exit_code == 2
        assert summary.stopped is not None and "the endpoint is not answering" in summary.stopped
        assert summary.failed == 0 and summary.ok >= 30
        assert not [d for d in journal(out) if d["status"] == "failed"]

        sandbox.faults = Faults()  # it is back
        summary = await run_engine(sandbox, jobs, out, resume=True, batch_size=1)
        assert summary.exit_code == 0
        # The drops came before delivery, so nobody got it twice.
        assert sandbox.ledger.recipients(GROUP, "hi") == collections.Counter(dict.fromkeys(ids, 1))


async def test_transport_faults_of_one_batch_still_fail_it_while_others_are_answered(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"job_id": f"j{i}", "GroupId": GROUP, "Content": "hi", "ToMembers_Account": [f"u{i}"]} for i in range(2)],
    )
    # At 20 requests/s the starts are 50 ms apart: j0, then j1, then j0's retry. j0 meets a 502 twice;
    # j1, started after j0's first attempt, is answered in between: the endpoint is up, j0 failed.
    sandbox.script("502", 0, "502")
    out = tmp_path / "out.jsonl"
    summary = await run_engine(
        sandbox, jobs, out, concurrency=2, rate=20, policy=RetryPolicy(max_attempts=2, base=0.001, cap=0.001)
    )
    assert (summary.ok, summary.failed, summary.stopped, summary.exit_code) == (1, 1, None, 1)
    fates = {d["job_id"]: d["status"] for d in journal(out) if d["final"]}
    assert fates == {"j0": "failed", "j1": "ok"}


async def test_retry_after_paces_every_worker(sandbox: Sandbox, tmp_path: Path, clock: FakeClock) -> None:
    jobs, ids = many_batches(tmp_path, 6)
    out = tmp_path / "out.jsonl"
    sandbox.script("429:7")
    config = make_config(sandbox, jobs, out, batch_size=1, concurrency=3, rate=1000)
    limiter = RateLimiter(config.rate, clock=clock.time, sleep=clock.sleep)
    started = clock.now
    summary = await Engine(config, limiter=limiter, sleep=clock.sleep).run()
    assert (summary.exit_code, summary.ok, summary.requests) == (0, 6, 7)
    first = journal(out)[0]
    assert (first["status"], first["http_status"], first["error_code"]) == ("retry", 429, None)
    # Every start after the 429 waited for the 7 seconds the server asked for, in the one limiter ...
    assert clock.now - started >= 7.0
    assert sum(s for s in clock.sleeps if s > 1) == pytest.approx(7.0, abs=0.01)
    # ... and no backoff of its own was drawn on top (the policy's backoffs are at most 0.01 s).
    assert max(clock.sleeps) <= 7.0
    assert sandbox.ledger.recipients(GROUP, "hi") == collections.Counter(dict.fromkeys(ids, 1))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("Wed, 21 Oct 2015 07:28:07 GMT", 7.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: at once
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now=now) == seconds


def test_http_413_is_permanent_and_other_4xx_stop_the_run() -> None:
    assert rules.classify(None, 413) is rules.Verdict.PERMANENT
    assert rules.classify(None, 404) is rules.Verdict.CONFIG
    assert rules.classify(None, 429) is rules.Verdict.RETRY


async def test_http_413_fails_that_batch_with_its_own_message_and_the_run_goes_on(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    jobs, _ids = many_batches(tmp_path, 3)
    out = tmp_path / "out.jsonl"
    sandbox.script("413")
    summary = await run_engine(sandbox, jobs, out, batch_size=1, concurrency=1)
    assert (summary.ok, summary.failed, summary.stopped, summary.exit_code) == (2, 1, None, 1)
    (failed,) = [d for d in journal(out) if d["status"] == "failed"]
    assert failed["http_status"] == 413
    assert failed["error_info"].startswith("HTTP 413: the server refused a request of ")
    assert "credentials" not in failed["error_info"]
