"""The edges of a run: a rate store that stalls, budgets checked before the first request, the
journal of a run refused before sending, and the summary's rate of a tiny run."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import orjson
import pytest

from dispatcher.errors import RateStoreError
from dispatcher.observe.summary import Summary
from dispatcher.pacing.redis import connect
from dispatcher.pacing.store import parse_store
from dispatcher.sandbox import Sandbox
from tests.conftest import (
    DEMO_ENV,
    DISPATCHER,
    ROOT,
    FakeClock,
    RedisServer,
    SilentStore,
    cli_env,
    run_engine,
    write_jobs,
)

KEY = "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification"
BATCHSENDMSG_KEY = "dispatcher:budget:1400000000:/v4/openim/batchsendmsg"


async def dispatcher(*args: str) -> tuple[int, str]:
    """`dispatcher ARGS` in a process of its own, while this test's event loop serves its sandbox:
    the exit status and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *DISPATCHER(*args), env=cli_env(**DEMO_ENV), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def mixed_jobs(path: Path) -> Path:
    """Twenty notifications, then one batchsendmsg job: the order in which the issue met them."""
    notifications = [{"job_id": f"n{i}", "GroupId": "@TGS#a", "Content": "x"} for i in range(20)]
    return write_jobs(path, [*notifications, {"api": "batchsendmsg", "To_Account": ["u1", "u2"], "Text": "hi"}])


class StallingProxy:
    """A Redis stand-in in front of a real one: it passes everything through until `stall()`, then
    takes what comes and answers nothing. It counts the connections and TAKEs it got while stalled."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.stalled = False
        self.connections_while_stalled = 0
        self.asks_while_stalled = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        self.stalled = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stalled:
            self.connections_while_stalled += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, counted: bool) -> None:
            while data := await source.read(65536):
                if self.stalled:
                    if counted:  # a TAKE goes as EVALSHA (the limiter's way) or EVAL (after NOSCRIPT)
                        self.asks_while_stalled += data.count(b"EVALSHA\r\n") + data.count(b"\r\nEVAL\r\n")
                    continue
                sink.write(data)
                await sink.drain()

        for task in (pipe(reader, up_writer, True), pipe(up_reader, writer, False)):
            running = asyncio.create_task(task)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


async def test_a_redis_that_stalls_mid_run_is_lost_after_one_unanswered_slot(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer within 2 s (the README) is one slot's ask: not retried, on a new connection or the
    client's way (four more timeouts made a stalled Redis lost only after 8-10 s)."""
    from dispatcher.pacing import redis as redislimit

    monkeypatch.setattr(redislimit, "TIMEOUT_S", 0.2)  # real seconds: the stall is a real socket's
    proxy = StallingProxy(redis_server.port)
    await proxy.start()
    limiter = await connect(parse_store(f"redis://127.0.0.1:{proxy.port}/0"), rate=1000, key=KEY)
    await limiter.acquire()
    proxy.stall()
    with pytest.raises(RateStoreError) as lost:
        await limiter.acquire()
    assert str(lost.value) == (
        f"lost the rate store redis://127.0.0.1:{proxy.port}/0: no answer within 0.2 s; no new requests start, "
        "those in flight are recorded; resume with --resume when it is back"
    )
    assert (proxy.asks_while_stalled, proxy.connections_while_stalled) == (1, 0)
    await limiter.aclose()
    await proxy.close()


async def test_a_redis_that_never_answers_at_start_is_one_unanswered_connection(
    silent_store: SilentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher.pacing import redis as redislimit

    monkeypatch.setattr(redislimit, "TIMEOUT_S", 0.2)
    with pytest.raises(RateStoreError, match=rf"^cannot reach the rate store {silent_store.url}: Timeout reading"):
        await connect(parse_store(silent_store.url), rate=200, key=KEY)
    assert silent_store.connections == 1  # not retried: three more made it 8-10 s


async def test_the_rate_of_a_run_shorter_than_a_second_is_what_its_one_second_held(
    sandbox: Sandbox, tmp_path: Path, clock: FakeClock
) -> None:
    """Three requests at --rate 200 read 218/s: two intervals over a span a millisecond short of
    two slots (a start may come that early). All of them lie in one second: that second held 3."""
    jobs = write_jobs(
        tmp_path / "j.jsonl", [{"job_id": f"j{i}", "GroupId": "@TGS#a", "Content": "x"} for i in range(3)]
    )
    summary = await run_engine(sandbox, jobs, tmp_path / "o.jsonl", clock=clock, rate=200)
    assert (summary.requests, summary.to_dict()["rate"]) == (3, 3.0)


def test_the_rate_over_a_second_or_more_is_the_pace_of_the_starts() -> None:
    assert Summary(requests=400, sending_s=2.0).to_dict()["rate"] == 199.5  # 399 intervals in 2 s
    assert Summary(requests=201, sending_s=1.004).to_dict()["rate"] == 199.2  # 200 paced slots, 1 ms early
    assert Summary().to_dict()["rate"] == 0.0


async def test_every_api_the_jobs_name_has_its_budget_checked_before_the_first_request(
    sandbox: Sandbox, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A budget at --rate 100 for batchsendmsg and none for notifications: a mixed run at --rate 200
    sent its notifications, then stopped at the first batchsendmsg job. Now nothing is sent."""
    one = write_jobs(tmp_path / "one.jsonl", [{"api": "batchsendmsg", "To_Account": ["u0"], "Text": "hi"}])
    code, err = await dispatcher("send", str(one), "--sandbox", "--rate", "100", "--rate-store", redis_server.url)
    assert code == 0, err
    jobs = mixed_jobs(tmp_path / "mixed.jsonl")
    out = tmp_path / "mixed.outcomes.jsonl"
    args = ["send", str(jobs), "--endpoint", sandbox.url, "--rate", "200", "--rate-store", redis_server.url]
    code, err = await dispatcher(*args)
    assert code == 2
    assert err == (
        f"dispatcher: error: the shared budget {BATCHSENDMSG_KEY} in {redis_server.url} holds --rate 100, and this "
        f"run asks for --rate 200: run with --rate 100, or change the budget by deleting the key (redis-cli DEL "
        f"'{BATCHSENDMSG_KEY}') once no run uses it, or wait for it to expire (600 s after its last use)\n"
    )
    assert sandbox.stats["requests"] == 0
    assert not out.exists()  # nor an empty journal left behind


def test_the_scan_for_apis_reads_what_a_run_would_send_with(tmp_path: Path) -> None:
    from dispatcher.jobs.reader import api_names

    jobs = write_jobs(
        tmp_path / "j.jsonl",
        [
            '{"\\u0061pi": "send_group_msg", "GroupId": "@TGS#a", "Text": "x"}',  # the key written with an escape
            '{"api": "BatchSendMsg", "To_Account": ["u"], "Text": "x"}',  # rejected by the run: sent with nothing
            "not a job",
            "",
        ],
    )
    assert api_names([str(jobs)]) == {"send_group_msg", "send_group_system_notification"}
    only = write_jobs(tmp_path / "k.jsonl", [{"api": "batchsendmsg", "To_Account": ["u"], "Text": "x"}])
    assert api_names([str(only), str(tmp_path / "missing.jsonl")]) == {"batchsendmsg"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        DISPATCHER(*args), env=cli_env(**DEMO_ENV), cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_run_refused_before_sending_leaves_no_journal_it_made_and_keeps_any_other(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs = write_jobs(tmp_path / "j.jsonl", [{"GroupId": "@TGS#a", "Content": "x"}])
    store = ["--sandbox", "--rate-store", redis_server.url]
    assert run_cli("send", str(jobs), *store, "--rate", "200", "--out", str(tmp_path / "first.jsonl")).returncode == 0
    made = tmp_path / "made.jsonl"
    refused = run_cli("send", str(jobs), *store, "--rate", "300", "--out", str(made))
    assert refused.returncode == 2
    assert "holds --rate 200" in refused.stderr
    assert not made.exists()
    there = tmp_path / "there.jsonl"
    there.write_bytes(b"")  # the operator's own, empty: the run did not make it
    assert run_cli("send", str(jobs), *store, "--rate", "300", "--out", str(there)).returncode == 2
    assert there.read_bytes() == b""
    resumed = tmp_path / "resumed.jsonl"  # named to be continued: kept even when the run made it
    assert run_cli("send", str(jobs), *store, "--rate", "300", "--out", str(resumed), "--resume").returncode == 2
    assert resumed.read_bytes() == b""


def test_a_streamed_job_refused_for_its_budget_leaves_no_journal(tmp_path: Path, redis_server: RedisServer) -> None:
    """An API first met in a stream has its budget opened when first used: another rate there stops
    the run (exit 2, resumable) before its request, and the journal it made holds nothing."""
    store = ["--sandbox", "--rate-store", redis_server.url]
    one = write_jobs(tmp_path / "one.jsonl", [{"api": "batchsendmsg", "To_Account": ["u0"], "Text": "hi"}])
    assert run_cli("send", str(one), *store, "--rate", "100").returncode == 0
    out = tmp_path / "streamed.jsonl"
    done = subprocess.run(
        DISPATCHER("send", "-", *store, "--rate", "200", "--out", str(out)),
        input='{"api": "batchsendmsg", "To_Account": ["u1"], "Text": "hi"}\n',
        env=cli_env(**DEMO_ENV),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"the shared budget {BATCHSENDMSG_KEY} in {redis_server.url} holds --rate 100" in done.stderr
    assert not out.exists()


def test_a_dry_run_with_a_redis_store_counts_the_shared_budget_s_pace(tmp_path: Path) -> None:
    """201 requests at --rate 200: 200 intervals of 1.005/200 s in-process, of 1.02/200 s through
    a Redis budget (98%). The dry run connects to nothing; it only knows which store paces the run."""
    jobs = write_jobs(tmp_path / "j.jsonl", [{"GroupId": f"@TGS#d{i}", "Content": "x"} for i in range(201)])
    least = {}
    for store in ("memory://", "redis://127.0.0.1:9/0"):
        summary = tmp_path / "s.json"
        done = run_cli(
            "send",
            str(jobs),
            "--dry-run",
            "--rate-store",
            store,
            "--summary-json",
            str(summary),
            "--out",
            str(tmp_path / "o.jsonl"),
        )
        assert done.returncode == 0, done.stderr
        least[store] = orjson.loads(summary.read_bytes())["least_seconds"]
    assert least == {"memory://": 1.005, "redis://127.0.0.1:9/0": 1.02}
