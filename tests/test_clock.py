"""A clock that is off: every UserSig made on this host is refused as expired (70001), also right
after renewing it. That is the host's configuration, not the batches' fault: the run stops early,
resumable, and says by how much the clocks differ."""

from __future__ import annotations

import asyncio
import collections
import email.utils
from pathlib import Path

from aiohttp import web

from dispatcher.core.status import RETRY
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Sandbox
from dispatcher.sandbox.apis.base import Emulator
from dispatcher.testing import FakeClock
from dispatcher.tim.config import DEMO_CREDENTIALS
from dispatcher.tim.usersig import Signer
from tests.conftest import journal, make_config, write_jobs

NOW = 1_780_000_000.0  # the time by this host's clock
DAYS_3 = 3 * 86_400


def twenty_jobs(path: Path) -> Path:
    return write_jobs(path, [{"job_id": f"j{i}", "GroupId": "@TGS#a", "Content": "x"} for i in range(20)])


def signer_at(now: float) -> Signer:
    creds = DEMO_CREDENTIALS
    return Signer(creds.sdkappid, creds.identifier, creds.secret_key, clock=lambda: now)


async def test_a_clock_3_days_behind_stops_the_run_resumably_and_says_by_how_much(tmp_path: Path) -> None:
    """It marked all 200 batches failed after 1,000 requests, exit 1."""
    jobs, out = twenty_jobs(tmp_path / "j.jsonl"), tmp_path / "o.jsonl"
    async with Sandbox(wall_clock=lambda: NOW + DAYS_3) as server:
        config = make_config(server, jobs, out, concurrency=4)
        summary = await Engine(config, signer=signer_at(NOW)).run()
    date = email.utils.formatdate(NOW + DAYS_3, usegmt=True)
    assert summary.stopped == (
        f"this host's clock is 3 days (259,200 s) behind the server's (its Date: {date}): every UserSig made here "
        "is refused as expired (70001), also right after renewing it; set the clock right (NTP)"
    )
    assert (summary.exit_code, summary.failed, summary.ok) == (2, 0, 0)
    assert 2 <= summary.requests <= 8  # the first requests of four workers, and their retries at once
    lines = journal(out)
    assert len(lines) == summary.requests
    assert {(line["status"], line["final"], line["error_code"]) for line in lines} == {(RETRY, False, 70001)}
    async with Sandbox() as server:  # the clock set right: a plain resume finishes
        resumed = await Engine(make_config(server, jobs, out, resume=True)).run()
    assert (resumed.exit_code, resumed.ok, resumed.skipped) == (0, 20, 0)


async def test_a_fresh_signature_refused_while_the_clocks_agree_says_it_was_refused_right_after_renewal(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.script(70001, 70001)
    jobs, out = twenty_jobs(tmp_path / "j.jsonl"), tmp_path / "o.jsonl"
    summary = await Engine(make_config(sandbox, jobs, out, concurrency=1)).run()
    assert summary.stopped == (
        "the server refused a UserSig made just now (70001: scripted reply), right after renewing one it had "
        "refused; its Date agrees with this host's clock (within 5 s): check the credentials and the time "
        "where they are checked"
    )
    assert (summary.exit_code, summary.requests, summary.failed) == (2, 2, 0)


class GatedSandbox(Sandbox):
    """Answers nothing until `count` requests have arrived: they were all sent before any reply."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.arrived = 0
        self.gate = asyncio.Event()

    async def _send(self, emulator: Emulator, request: web.Request) -> web.StreamResponse:
        self.arrived += 1
        if self.arrived >= self.count:
            self.gate.set()
        await self.gate.wait()
        return await super()._send(emulator, request)


async def test_the_refusals_of_requests_signed_before_the_renewal_do_not_stop_the_run(tmp_path: Path) -> None:
    """An expired UserSig is renewed at once and the run goes on, as ever. Four requests in flight
    with it are refused: one renewal answers them all, and their retries go with the new one."""
    jobs, out = twenty_jobs(tmp_path / "j.jsonl"), tmp_path / "o.jsonl"
    async with GatedSandbox(4) as server:
        server.script(70001, 70001, 70001, 70001)
        engine = Engine(make_config(server, jobs, out, concurrency=4))
        summary = await engine.run()
    assert (summary.exit_code, summary.ok, summary.requests, summary.stopped) == (0, 20, 24, None)
    assert engine.signer.generation == 2  # the first signature and one renewal


class SlowWay(Sandbox):
    """A sandbox whose requests take `trips` seconds each on the way there, by its time of day (a
    clock the test holds): a request signed just before its UserSig's half-life can arrive expired."""

    def __init__(self, wall: FakeClock, *trips: float) -> None:
        super().__init__(wall_clock=wall.time)
        self.wall = wall
        self.trips = collections.deque(trips)

    async def _send(self, emulator: Emulator, request: web.Request) -> web.StreamResponse:
        self.wall.now += self.trips.popleft() if self.trips else 1.0
        return await super()._send(emulator, request)


def short_lived(clock: FakeClock) -> Signer:
    """UserSigs of 10 s, signed by the clock the sandbox also reads: the two clocks agree."""
    creds = DEMO_CREDENTIALS
    return Signer(creds.sdkappid, creds.identifier, creds.secret_key, expire=10, clock=clock.time)


async def test_a_renewed_signature_the_server_accepted_is_renewed_again_each_time_it_expires(tmp_path: Path) -> None:
    """It stopped the run, exit 2, as if the clock were off, at the second expiry."""
    jobs = write_jobs(
        tmp_path / "j.jsonl", [{"job_id": f"j{i}", "GroupId": "@TGS#a", "Content": "x"} for i in range(5)]
    )
    out = tmp_path / "o.jsonl"
    wall = FakeClock(NOW)
    # j0 arrives in 1 s; j1, j2 and j3 each go out with a UserSig made 1 s before, are 12 s on the
    # way, and arrive expired: each retry, with a UserSig made on arrival, takes 1 s and is accepted.
    async with SlowWay(wall, 1, 12, 1, 12, 1, 12, 1, 1) as server:
        signer = short_lived(wall)
        summary = await Engine(make_config(server, jobs, out, concurrency=1), signer=signer).run()
    assert (summary.exit_code, summary.ok, summary.failed, summary.requests, summary.stopped) == (0, 5, 0, 8, None)
    assert signer.generation == 4  # the first UserSig and three renewals, two of them of a renewed one
    assert [(line["job_id"], line["error_code"]) for line in journal(out)] == [
        ("j0", 0),
        ("j1", 70001),
        ("j1", 0),
        ("j2", 70001),
        ("j2", 0),
        ("j3", 70001),
        ("j3", 0),
        ("j4", 0),
    ]


async def test_a_renewed_signature_refused_before_the_server_accepted_it_still_stops_the_run(tmp_path: Path) -> None:
    """A UserSig the server took before does not vouch for the one made after it was refused."""
    jobs, out = twenty_jobs(tmp_path / "j.jsonl"), tmp_path / "o.jsonl"
    wall = FakeClock(NOW)
    async with SlowWay(wall, 1, 12, 12) as server:  # the renewed UserSig is 12 s on the way too
        summary = await Engine(make_config(server, jobs, out, concurrency=1), signer=short_lived(wall)).run()
    assert summary.stopped == (
        "the server refused a UserSig made just now (70001: UserSig expired), right after renewing one it had "
        "refused; its Date agrees with this host's clock (within 5 s): check the credentials and the time "
        "where they are checked"
    )
    assert (summary.exit_code, summary.ok, summary.failed, summary.requests) == (2, 1, 0, 3)
