"""A region's backup domain: a main domain that cannot be connected to sends the next attempts to the
backup, the run goes back to the main one after a while, and a request that may have reached a server
is never sent elsewhere as if it had not. Two sandboxes stand for the two domains; a closed port for a
main domain that refuses connections."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import structlog

from dispatcher.errors import ConfigError
from dispatcher.observe.events import DomainSwitched, Event
from dispatcher.observe.metrics import RunMetrics
from dispatcher.run.check import check_setup, read_for_check
from dispatcher.run.client import Client, Reply
from dispatcher.run.engine import Engine
from dispatcher.run.failover import Failover
from dispatcher.run.health import Health
from dispatcher.sandbox import Sandbox
from dispatcher.testing import sandbox as serving
from dispatcher.tim.config import DEMO_CREDENTIALS, resolve_backup
from dispatcher.tim.usersig import Signer
from tests.conftest import (
    DEMO_ENV,
    DISPATCHER,
    ROOT,
    FakeClock,
    cli_env,
    finish,
    free_port,
    journal,
    make_config,
    start_send,
    users,
    write_jobs,
)

GROUP = "@TGS#backup"
NOTICE = b'{"GroupId": "@TGS#backup", "Content": "hi"}'


@pytest.fixture
async def backup() -> AsyncIterator[Sandbox]:
    async with serving() as box:
        yield box


def closed_port_url() -> str:
    """A main domain that refuses every connection: a port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def client(main: str, failover: Failover) -> Client:
    creds = DEMO_CREDENTIALS
    signer = Signer(creds.sdkappid, creds.identifier, creds.secret_key)
    return Client(main, creds.sdkappid, creds.identifier, signer, concurrency=2, timeout=5, failover=failover)


# -- the table and where a backup comes from -------------------------------------------------------------


def test_each_region_has_the_backup_domain_tencent_lists_and_tokyo_none() -> None:
    backups = {region: resolve_backup(region, None, None, {}) for region in ("china", "singapore", "mumbai", "tokyo")}
    assert backups == {
        "china": "https://adminapi.my-imcloud.com",
        "singapore": "https://adminapisgp.my-imcloud.com",
        "mumbai": "https://adminapiind.my-imcloud.com",
        "tokyo": None,  # document 34620 lists none: none is guessed
    }
    assert resolve_backup(None, None, None, {}) == "https://adminapi.my-imcloud.com"  # the default region's
    assert resolve_backup(None, None, None, {"TIM_REGION": "jakarta"}) == "https://adminapiidn.my-imcloud.com"


def test_a_backup_comes_only_from_beside_its_main_endpoint() -> None:
    env = {"TIM_ENDPOINT": "https://im.example.com", "TIM_BACKUP_ENDPOINT": "https://im2.example.com/"}
    assert resolve_backup(None, "https://a.example", "https://b.example", {}) == "https://b.example"
    assert resolve_backup(None, None, None, env) == "https://im2.example.com"
    # An --endpoint on the command line is not paired with the environment's backup, meant for TIM_ENDPOINT.
    assert resolve_backup(None, "https://a.example", None, env) is None
    # A region named on the command line beats the environment, its backup included.
    assert resolve_backup("seoul", None, None, env) == "https://adminapikr.my-imcloud.com"
    assert resolve_backup(None, None, None, {"TIM_ENDPOINT": "https://im.example.com"}) is None
    refused = [
        ((None, None, "https://b.example", {}), "--backup-endpoint goes with --endpoint"),
        (("china", None, "https://b.example", {}), "--backup-endpoint goes with --endpoint"),
        ((None, None, None, {"TIM_BACKUP_ENDPOINT": "https://b.example"}), "TIM_BACKUP_ENDPOINT goes with"),
        ((None, None, None, {**env, "TIM_BACKUP_ENDPOINT": " "}), "TIM_BACKUP_ENDPOINT is set but empty"),
        ((None, "https://a.example", "https://a.example/", {}), "--backup-endpoint names the main endpoint itself"),
        ((None, "https://a.example", "ftp://b.example", {}), "endpoint 'ftp://b.example' must start with http://"),
    ]
    for args, message in refused:
        with pytest.raises(ConfigError) as caught:
            resolve_backup(*args)
        assert str(caught.value).startswith(message), args


# -- the client: a refused main domain, the backup, and the way back ----------------------------------------


async def test_a_refused_main_sends_the_next_requests_to_the_backup_and_they_come_back_after_a_minute(
    backup: Sandbox, clock: FakeClock
) -> None:
    port = free_port()
    main_url = f"http://127.0.0.1:{port}"
    switches: list[Event] = []
    failover = Failover(main_url, backup.url, clock=clock.time, on_switch=switches.append)
    sender = client(main_url, failover)
    main = Sandbox()
    try:
        refused = await sender.send(NOTICE)
        assert (refused.error_code, refused.connect_failed, refused.failed_over) == (None, True, True)
        assert refused.error_info.startswith(f"ClientConnectorError: cannot connect to 127.0.0.1:{port}")
        assert (await sender.send(NOTICE)).error_code == 0
        assert backup.stats["requests"] == 1

        await main.start("127.0.0.1", port)  # the main domain is back, but the run stays a minute on the backup
        clock.now += 59.9
        assert (await sender.send(NOTICE)).error_code == 0
        assert (backup.stats["requests"], main.stats["requests"]) == (2, 0)

        clock.now += 0.1  # a minute on the backup: one request tries the main domain, and it answers
        assert [(await sender.send(NOTICE)).error_code for _ in range(3)] == [0, 0, 0]
        assert (backup.stats["requests"], main.stats["requests"]) == (2, 3)
        assert switches == [
            DomainSwitched("backup", backup.url, refused.error_info),
            DomainSwitched("main", main_url, "the main domain is reachable again"),
        ]
    finally:
        await sender.aclose()
        await main.stop()


async def test_a_tls_handshake_that_times_out_sent_nothing_and_the_next_request_goes_to_the_backup(
    backup: Sandbox, clock: FakeClock
) -> None:
    heard: list[bytes] = []
    ended = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heard.append(await reader.read())  # the TLS hello, never answered, until the client gives up
        ended.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    main_url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    creds = DEMO_CREDENTIALS
    failover = Failover(main_url, backup.url, clock=clock.time)
    sender = Client(
        main_url,
        creds.sdkappid,
        creds.identifier,
        Signer(creds.sdkappid, creds.identifier, creds.secret_key),
        concurrency=1,
        timeout=0.2,  # 0.1 s to connect, TLS included
        failover=failover,
    )
    try:
        timed_out = await sender.send(NOTICE)
        assert (timed_out.error_info, timed_out.connect_failed, timed_out.failed_over) == (
            "connect timeout after 0.1s",
            True,
            True,
        )
        assert failover.pick() == "backup"  # where the next request goes (a 0.2 s request is not timed here)
        await asyncio.wait_for(ended.wait(), 30)  # bounds a failure; a pass does not wait
        assert b"POST" not in heard[0] and b"GroupId" not in heard[0]  # at most a TLS hello: nothing of the request
    finally:
        await sender.aclose()
        server.close()


def test_while_a_probe_of_the_main_domain_is_out_the_others_stay_on_the_backup(clock: FakeClock) -> None:
    failover = Failover("https://main", "https://backup", clock=clock.time, back_after=30)
    assert failover.pick() == "main"
    assert failover.unreachable("main", "refused") is True
    assert [failover.pick() for _ in range(2)] == ["backup", "backup"]
    clock.now += 30
    assert [failover.pick() for _ in range(3)] == ["probe", "backup", "backup"]
    assert failover.unreachable("probe", "refused again") is True  # still down: another 30 s on the backup
    clock.now += 29
    assert failover.pick() == "backup"
    clock.now += 1
    assert failover.pick() == "probe"
    failover.abandoned("probe")  # cancelled: no outcome, so another request probes
    assert failover.pick() == "probe"
    failover.connected("probe")
    assert [failover.pick() for _ in range(2)] == ["main", "main"]
    # A failure to connect to the backup keeps the run there: it is an ordinary fault, counted as one.
    assert failover.unreachable("main", "refused") is True
    assert failover.unreachable("backup", "refused") is False
    assert failover.pick() == "backup"


def test_failures_to_connect_that_sent_the_run_to_the_backup_do_not_count_as_an_unreachable_endpoint() -> None:
    # Workers that went to the main domain at once all fail to connect before any tries the backup.
    health = Health("https://main or its backup https://backup")
    moved = Reply(None, "refused", None, 1.0, connect_failed=True, failed_over=True)
    assert [health.observe(moved, True, health.start(), 1, False) for _ in range(5)] == [None] * 5
    refused = Reply(None, "refused by the backup", None, 1.0, connect_failed=True)
    assert [health.observe(refused, True, health.start(), 1, False) for _ in range(3)] == [
        None,
        None,
        "cannot reach https://main or its backup https://backup: refused by the backup; "
        "check --endpoint or --region, DNS and the network",
    ]


# -- a run ----------------------------------------------------------------------------------------------


def switches_of(events: list[Event]) -> list[str]:
    return [event.to for event in events if isinstance(event, DomainSwitched)]


async def test_a_run_whose_main_domain_refuses_connections_delivers_everything_once_through_the_backup(
    backup: Sandbox, tmp_path: Path
) -> None:
    ids = users(40)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "ToMembers_Account": ids}])
    config = make_config(
        backup, jobs, tmp_path / "out.jsonl", endpoint=closed_port_url(), backup_endpoint=backup.url, batch_size=5
    )
    metrics = RunMetrics(0.0)
    events: list[Event] = []
    with structlog.testing.capture_logs() as logs:
        summary = await Engine(config, subscribers=[metrics, events.append]).run()
    assert summary.exit_code == 0, summary.stopped
    assert backup.ledger.recipients(GROUP, "hi") == {uid: 1 for uid in ids}
    assert switches_of(events) == ["backup"]
    assert metrics.registry.get_sample_value("dispatcher_backup_switches_total") == 1.0
    warned = [line for line in logs if line["event"].startswith("the main domain cannot be reached")]
    assert len(warned) == 1 and warned[0]["backup"] == backup.url
    assert {line["status"] for line in journal(tmp_path / "out.jsonl")} <= {"ok", "retry"}


async def test_a_request_cut_after_it_was_sent_is_not_sent_to_the_backup(backup: Sandbox, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "ToMembers_Account": ["ana"]}])
    async with serving() as main:
        main.script("drop")  # the request arrives, and the connection is closed unanswered: maybe delivered
        config = make_config(main, jobs, tmp_path / "out.jsonl", backup_endpoint=backup.url, concurrency=1)
        events: list[Event] = []
        summary = await Engine(config, subscribers=[events.append]).run()
    assert summary.exit_code == 0
    assert (main.stats["dropped"], main.stats["requests"], backup.stats["requests"]) == (1, 2, 0)
    assert switches_of(events) == []
    lines = journal(tmp_path / "out.jsonl")
    assert [(line["status"], line["error_info"][:18]) for line in lines] == [
        ("retry", "ServerDisconnected"),
        ("ok", ""),
    ]


async def test_a_run_whose_two_domains_refuse_connections_stops_resumable(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "ToMembers_Account": ["ana"]}])
    main, other = closed_port_url(), closed_port_url()
    async with serving() as box:
        config = make_config(box, jobs, tmp_path / "out.jsonl", endpoint=main, backup_endpoint=other)
    summary = await Engine(config).run()
    assert summary.exit_code == 2
    assert summary.stopped is not None
    assert summary.stopped.startswith(f"cannot reach {main} or its backup {other}: ClientConnectorError")
    assert {line["status"] for line in journal(tmp_path / "out.jsonl")} == {"retry"}  # nothing failed


async def test_send_with_a_refused_endpoint_and_its_backup_warns_once_and_counts_the_switch(
    backup: Sandbox, tmp_path: Path
) -> None:
    ids = users(30)
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "ToMembers_Account": ids}])
    metrics = tmp_path / "run.prom"
    main = closed_port_url()
    proc = await start_send(
        jobs, tmp_path / "out.jsonl", main, "--backup-endpoint", backup.url, "--metrics-file", str(metrics)
    )
    code, stderr = await finish(proc)
    assert code == 0, stderr
    assert backup.ledger.recipients(GROUP, "hi") == {uid: 1 for uid in ids}
    lines = [orjson.loads(line) for line in stderr.splitlines()]
    warned = [line for line in lines if line["event"].startswith("the main domain cannot be reached")]
    assert [(line["level"], line["backup"]) for line in warned] == [("warning", backup.url)]
    assert warned[0]["error"].startswith(f"ClientConnectorError: cannot connect to {main.removeprefix('http://')}")
    sending = next(line for line in lines if line["event"] == "sending")
    assert (sending["endpoint"], sending["backup_endpoint"]) == (main, backup.url)
    assert "dispatcher_backup_switches_total 1.0" in metrics.read_text().splitlines()


async def test_a_password_in_an_endpoints_url_is_never_shown(backup: Sandbox, tmp_path: Path) -> None:
    # A gateway in front of the API may take HTTP basic auth from the URL: its password is a secret.
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi", "ToMembers_Account": ["ana"]}])
    main = closed_port_url().replace("http://", "http://ops:Gw-s3cret@")
    with_password = backup.url.replace("http://", "http://ops:Gw-s3cret@")
    proc = await start_send(jobs, tmp_path / "out.jsonl", main, "--backup-endpoint", with_password)
    code, stderr = await finish(proc)
    assert code == 0, stderr
    lines = [orjson.loads(line) for line in stderr.splitlines()]
    sending = next(line for line in lines if line["event"] == "sending")
    assert (sending["endpoint"], sending["backup_endpoint"]) == (
        main.replace("Gw-s3cret", "[redacted]"),
        backup.url.replace("http://", "http://ops:[redacted]@"),
    )
    assert "Gw-s3cret" not in stderr
    # A wrong path stops the run naming the endpoint to check: without its password.
    wrong = with_password + "/nope"
    proc = await start_send(jobs, tmp_path / "wrong.jsonl", wrong)
    code, stderr = await finish(proc)
    finished = next(orjson.loads(line) for line in stderr.splitlines() if orjson.loads(line)["event"] == "finished")
    assert (code, finished["stopped"]) == (
        2,
        f"HTTP 404 from {backup.url.replace('http://', 'http://ops:[redacted]@')}/nope; check --endpoint or --region",
    )
    assert "Gw-s3cret" not in stderr
    done = dry_run(tmp_path, "--endpoint", main, "--backup-endpoint", with_password)
    assert done.returncode == 0, done.stderr
    assert "ops:[redacted]@" in done.stdout
    assert "Gw-s3cret" not in done.stdout + done.stderr


# -- what check and the dry run show --------------------------------------------------------------------------


async def test_check_tries_the_backup_when_the_main_domain_refuses_and_says_so(backup: Sandbox, tmp_path: Path) -> None:
    from dispatcher.cli.check import render

    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi"}])
    main = closed_port_url()
    result = await check_setup(read_for_check([str(jobs)]), DEMO_CREDENTIALS, main, backup=backup.url)
    assert result.exit_code == 0
    lines = render(result).splitlines()
    assert lines[:2] == [
        f"endpoint    {main}",
        f"backup      {backup.url} (when a connection to the endpoint is not made)",
    ]
    assert lines[5].startswith(
        f"endpoint    unreachable: ClientConnectorError: cannot connect to {main.removeprefix('http://')}"
    )
    assert lines[5].endswith("; the requests went to the backup")


def dry_run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": GROUP, "Content": "hi"}])
    return subprocess.run(
        DISPATCHER("send", str(jobs), "--dry-run", *args),
        env=cli_env(**DEMO_ENV, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_dry_run_shows_the_backup_and_refuses_one_without_its_endpoint(tmp_path: Path) -> None:
    done = dry_run(tmp_path, "--region", "singapore")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-4:] == [
        "endpoint    https://adminapisgp.im.qcloud.com (region singapore)",
        "backup      https://adminapisgp.my-imcloud.com (when a connection to the endpoint is not made)",
        "sdkappid    1400000000",
        "admin       administrator",
    ]
    refused = dry_run(tmp_path, "--backup-endpoint", "https://b.example", TIM_REGION="seoul")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        "dispatcher: error: --backup-endpoint goes with --endpoint; a region's backup comes from its table\n"
    )
