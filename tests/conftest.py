"""Shared fixtures: an in-process sandbox on 127.0.0.1, a real redis-server and Pushgateway, job-file writers,
a virtual clock."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import structlog

from dispatcher.journal.outcomes import iter_records
from dispatcher.observe.summary import Summary
from dispatcher.pacing.memory import RateLimiter
from dispatcher.run.engine import Engine, RunConfig
from dispatcher.run.retry import RetryPolicy
from dispatcher.sandbox import Sandbox
from dispatcher.tim.config import DEMO_CREDENTIALS

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
def restore_logging() -> Iterator[None]:
    """For a test that configures logging, which structlog holds for the whole process: what it
    found is put back, so that no later test logs through this one's processors or level."""
    was_configured, saved = structlog.is_configured(), structlog.get_config()
    yield
    if was_configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


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
    sandbox: Sandbox,
    jobs: Path | str,
    out: Path,
    *,
    clock: FakeClock | None = None,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> Summary:
    """Run the engine against the sandbox. With a clock, the limiter and backoff run in virtual
    time; with a seeded `rng`, the backoff's jitter is known."""
    config = make_config(sandbox, jobs, out, **kwargs)
    if clock is None:
        return await Engine(config, rng=rng).run()
    limiter = RateLimiter(config.rate, clock=clock.time, sleep=clock.sleep)
    return await Engine(config, limiter=limiter, sleep=clock.sleep, rng=rng, clock=clock.time).run()


def cli_env(**extra: str) -> dict[str, str]:
    # No credentials of the caller's, and no colour choice of theirs: a test that wants one says so.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIM_") and k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(extra)
    return env


DISPATCHER: Callable[..., list[str]] = lambda *args: [sys.executable, "-m", "dispatcher", *args]  # noqa: E731


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """A server process of the tests' own, on 127.0.0.1 in a temporary directory."""

    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """Gone at once, as a crash or a cut network would have it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


Server = TypeVar("Server", bound=LocalServer)


def running(server: Server) -> Iterator[Server]:
    """A fixture's body: the server started, and killed once the test is done."""
    server.start()
    yield server
    server.kill()


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


class RedisServer(LocalServer):
    """A real redis-server of our own on 127.0.0.1: a free port, no persistence, a temporary
    directory. It can be killed and started again on the same port, as an outage would."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.extra = extra
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(self.workdir), "--daemonize", "no", *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running(RedisServer(workdir(tmp_path, "redis")))


class Pushgateway(LocalServer):
    """A real Prometheus Pushgateway of our own on 127.0.0.1: a free port, no persistence file."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("prometheus-pushgateway")
        if binary is None:
            pytest.fail(
                "prometheus-pushgateway is not installed: `make test` installs it "
                "(apt-get install prometheus-pushgateway)"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [self.binary, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file="]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"prometheus-pushgateway did not start on port {self.port}")

    def metrics(self) -> str:
        """What the gateway exposes now: every pushed group, as Prometheus would scrape it."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            return str(response.read().decode())


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    yield from running(Pushgateway(workdir(tmp_path, "pushgateway")))
