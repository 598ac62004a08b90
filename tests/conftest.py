"""Shared fixtures: an in-process sandbox on 127.0.0.1, job-file writers, a virtual clock."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.config import DEMO_CREDENTIALS
from dispatcher.engine import Engine, RunConfig
from dispatcher.outcomes import iter_records
from dispatcher.ratelimit import RateLimiter
from dispatcher.retry import RetryPolicy
from dispatcher.sandbox import Sandbox
from dispatcher.summary import Summary

ROOT = Path(__file__).resolve().parent.parent
DEMO_ENV = {
    "TIM_SDKAPPID": str(DEMO_CREDENTIALS.sdkappid),
    "TIM_IDENTIFIER": DEMO_CREDENTIALS.identifier,
    "TIM_SECRET_KEY": DEMO_CREDENTIALS.secret_key or "",
}


class FakeClock:
    """Virtual time: `sleep` advances the clock instead of waiting, so tests never depend on speed."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    emulator = Sandbox()
    await emulator.start()
    yield emulator
    await emulator.stop()


def write_jobs(path: Path, jobs: Iterable[dict[str, Any] | str]) -> Path:
    """Write a JSONL jobs file; a str item is written as it is (for malformed lines)."""
    with path.open("wb") as handle:
        for job in jobs:
            handle.write((job.encode() if isinstance(job, str) else orjson.dumps(job)) + b"\n")
    return path


def users(n: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(n)]


def journal(path: Path) -> list[dict[str, Any]]:
    return list(iter_records(path))


def make_config(sandbox: Sandbox, jobs: Path | str, out: Path, **kwargs: Any) -> RunConfig:
    options: dict[str, Any] = {
        "endpoint": sandbox.url,
        "credentials": sandbox.credentials,
        "policy": RetryPolicy(base=0.001, cap=0.01),
        "rate": 10_000,
        **kwargs,
    }
    return RunConfig(jobs=(str(jobs),), out=out, **options)


async def run_engine(
    sandbox: Sandbox, jobs: Path | str, out: Path, *, clock: FakeClock | None = None, **kwargs: Any
) -> Summary:
    """Run the engine against the sandbox. With a clock, the limiter and backoff run in virtual time."""
    config = make_config(sandbox, jobs, out, **kwargs)
    if clock is None:
        return await Engine(config).run()
    limiter = RateLimiter(config.rate, clock=clock.time, sleep=clock.sleep)
    return await Engine(config, limiter=limiter, sleep=clock.sleep).run()


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIM_")}
    env.update(extra)
    return env


DISPATCHER: Callable[..., list[str]] = lambda *args: [sys.executable, "-m", "dispatcher", *args]  # noqa: E731
