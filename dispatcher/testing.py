"""Helpers for the tests of code that drives dispatcher: virtual time, and the sandbox served locally.

What dispatcher's own tests use, for tests of your own integration (a job writer, a wrapper around
`Engine`, a check of who received what), whatever runner you use: nothing here imports pytest.

    from dispatcher import Engine
    from dispatcher.testing import run_config, sandbox

    async def test_the_team_gets_the_notice(tmp_path):
        jobs = tmp_path / "jobs.jsonl"
        jobs.write_text('{"GroupId": "@TGS#team", "Content": "hi", "ToMembers_Account": ["peter", "amara"]}\\n')
        async with sandbox() as box:
            summary = await Engine(run_config(box, jobs, tmp_path / "out.jsonl")).run()
        assert summary.exit_code == 0
        assert box.ledger.recipients("@TGS#team", "hi") == {"peter": 1, "amara": 1}

As a pytest fixture (with pytest-asyncio), in your own conftest.py:

    @pytest.fixture
    async def box():
        async with sandbox() as served:
            yield served

`FakeClock` gives the library's injected clocks and sleeps virtual time (`RateLimiter(200,
clock=clock.time, sleep=clock.sleep)`, `Signer(..., clock=clock.time)`), so that a test of an hour's
pacing or of a signature's renewal takes no time and never depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from dispatcher.run.config import RunConfig
from dispatcher.run.retry import RetryPolicy
from dispatcher.sandbox.server import Sandbox

__all__ = ["QUICK_RETRIES", "FakeClock", "run_config", "sandbox"]

# A run's retries a thousand times sooner than a real run's (from 1 ms, at most 10 ms, instead of 0.5 s
# and 30 s), as many of them: a test of retries takes milliseconds and tries as often.
QUICK_RETRIES = RetryPolicy(base=0.001, cap=0.01)

PathArg = str | os.PathLike[str]


class FakeClock:
    """Virtual time: `sleep` advances the clock instead of waiting, so tests never depend on speed.

    `now` is the time `time()` reads (start: 1000.0 seconds); set it or add to it to let time pass
    without a sleep (`clock.now += 10`: ten seconds idle). `sleeps` lists every sleep asked for, in
    seconds, in order. A sleep of zero or less leaves the clock where it is. Each sleep still
    yields to the event loop once, so other tasks run while one sleeps, as they would.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        """The virtual time, in seconds: a clock to inject where the library takes one."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Move the clock on by `seconds` at once: a sleep to inject where the library takes one."""
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def sandbox(box: Sandbox | None = None) -> AsyncIterator[Sandbox]:
    """Serve `box` on 127.0.0.1, at a free port, for the length of an `async with` block.

    Without `box`, a `Sandbox()`: the demo credentials (`dispatcher.tim.config.DEMO_CREDENTIALS`),
    every valid GroupId a Public group with open membership, the API's default rate. Give one of
    your own to set its rules (`sandbox(Sandbox(rate=5, groups=...))`). Yields it serving: `box.url`
    to send to, `box.ledger` and `box.stats` to check what arrived. It is stopped at the end of the
    block, whatever ends it, and its port is then closed.
    """
    box = Sandbox() if box is None else box
    await box.start("127.0.0.1", 0)
    try:
        yield box
    finally:
        await box.stop()


def run_config(box: Sandbox, jobs: PathArg | Iterable[PathArg], out: PathArg, **options: Any) -> RunConfig:
    """A RunConfig that sends `jobs` (one file or several) to the serving sandbox `box` and journals
    to `out`.

    It takes the sandbox's URL, credentials and rate (so no request is refused 60007 for the
    config's sake) and `QUICK_RETRIES`. `options` are any other field of RunConfig, or override
    these: `run_config(box, jobs, out, resume=True, rate=50)`.
    """
    if not box.url:
        raise ValueError("the sandbox is not serving: start it first (async with dispatcher.testing.sandbox() as box)")
    paths = (jobs,) if isinstance(jobs, (str, os.PathLike)) else tuple(jobs)
    fields: dict[str, Any] = {"endpoint": box.url, "credentials": box.credentials, "policy": QUICK_RETRIES, **options}
    if "rate" not in fields:  # read only when it is needed: a stand-in server may have none
        fields["rate"] = box.rate
    return RunConfig(jobs=tuple(os.fspath(path) for path in paths), out=Path(out), **fields)
