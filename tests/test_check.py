"""`dispatcher check`: a set-up tried with read-only calls against a real sandbox, no message sent;
and the dry run's endpoint, SDKAppID and admin lines."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dispatcher.pacing.memory import RateLimiter
from dispatcher.run.check import check_setup, read_for_check
from dispatcher.sandbox import Group, Sandbox
from dispatcher.testing import FakeClock
from dispatcher.testing import sandbox as serving
from dispatcher.tim import usersig
from dispatcher.tim.config import DEMO_CREDENTIALS
from tests.conftest import DEMO_ENV, DISPATCHER, ROOT, SandboxProcess, cli_env, free_port, write_jobs

GROUPS = {
    "@TGS#1AAA": {"type": "Public", "members": ["alice", "bob", "carol"]},
    "@TGS#2BBB": {"type": "Community", "members": ["alice"]},
}


@pytest.fixture
def box(tmp_path: Path) -> Iterator[SandboxProcess]:
    (tmp_path / "groups.json").write_bytes(orjson.dumps(GROUPS))
    (tmp_path / "accounts.txt").write_text("administrator\nalice\nbot\n")
    server = SandboxProcess("--groups", str(tmp_path / "groups.json"), "--accounts", str(tmp_path / "accounts.txt"))
    try:
        yield server
    finally:
        server.stop()


def jobs_file(tmp_path: Path, *extra: dict[str, Any]) -> Path:
    return write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "a", "GroupId": "@TGS#1AAA", "Content": "hi", "ToMembers_Account": ["alice"]},
            {"job_id": "b", "GroupId": "@TGS#2BBB", "Content": "hi"},
            {"job_id": "c", "api": "batchsendmsg", "From_Account": "bot", "To_Account": ["alice"], "Text": "hi"},
            *extra,
        ],
    )


def check(jobs: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        DISPATCHER("check", str(jobs), *args),
        env=cli_env(**{**DEMO_ENV, **env}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def nothing_sent(box: SandboxProcess) -> None:
    assert box.get("/sandbox/ledger") == {"deliveries": []}


def test_the_right_set_up_passes_with_each_group_its_type_and_members(tmp_path: Path, box: SandboxProcess) -> None:
    done = check(jobs_file(tmp_path), "--endpoint", box.url)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        f"endpoint    {box.url}",
        "sdkappid    1400000000",
        "admin       administrator",
        "jobs        3 (3 valid, 0 rejected)",
    ]
    assert "credentials accepted: the server verified the UserSig of administrator" in lines
    assert "admin       accepted: administrator is an App admin" in lines
    assert f"region      right: {box.url.removeprefix('http://')} knows SDKAppID 1400000000" in lines
    assert "sender      bot: exists" in lines
    assert "groups      2 named by the jobs: 2 exist, 0 do not" in lines
    table = lines[lines.index("GroupId    type        members") :]
    assert table[1:3] == ["@TGS#1AAA  Public      3", "@TGS#2BBB  Community   1"]
    assert lines[-1] == "verdict     ready: a send would be accepted; nothing was sent (exit 0)"
    assert DEMO_ENV["TIM_SECRET_KEY"] not in done.stdout + done.stderr
    stats = box.get("/sandbox/stats")
    assert (stats["requests"], stats["0"], stats["account_check_calls"], stats["get_group_info_calls"]) == (2, 2, 1, 1)
    nothing_sent(box)


def test_a_wrong_secret_key_stops_it(tmp_path: Path, box: SandboxProcess) -> None:
    done = check(jobs_file(tmp_path), "--endpoint", box.url, TIM_SECRET_KEY="not-the-key")
    assert done.returncode == 2
    assert "credentials refused: 70003 (UserSig invalid: a wrong secret key?)" in done.stdout
    assert "admin       not known: the first request did not pass" in done.stdout
    assert "GroupId" not in done.stdout  # no group was asked about
    assert done.stdout.endswith(
        "verdict     a send would stop: credentials refused: 70003 (UserSig invalid: a wrong secret key?) (exit 2)\n"
    )
    assert "not-the-key" not in done.stdout + done.stderr
    assert box.get("/sandbox/stats")["70003"] == 1
    nothing_sent(box)


def test_a_wrong_admin_stops_it(tmp_path: Path, box: SandboxProcess) -> None:
    done = check(jobs_file(tmp_path), "--endpoint", box.url, TIM_IDENTIFIER="alice")
    assert done.returncode == 2
    assert (
        "admin       refused: alice is not accepted as an App admin: 60010 (the identifier is not an App admin)"
        in done.stdout.splitlines()
    )
    assert "region      not known: a host of another region may answer 60010 too" in done.stdout.splitlines()
    nothing_sent(box)


def test_an_app_the_host_does_not_know_is_a_wrong_region(tmp_path: Path, box: SandboxProcess) -> None:
    done = check(jobs_file(tmp_path), "--endpoint", box.url, TIM_SDKAPPID="1400000999")
    assert done.returncode == 2
    host = box.url.removeprefix("http://")
    assert (
        f"region      wrong: {host} does not know SDKAppID 1400000999 (70020): a wrong SDKAppID, or another region"
        in done.stdout.splitlines()
    )
    nothing_sent(box)


def test_an_endpoint_that_is_not_tencents_stops_it(tmp_path: Path, box: SandboxProcess) -> None:
    closed = check(jobs_file(tmp_path), "--endpoint", f"http://127.0.0.1:{free_port()}")
    assert closed.returncode == 2
    assert "endpoint    unreachable: ClientConnectorError: cannot connect to 127.0.0.1:" in closed.stdout
    elsewhere = check(jobs_file(tmp_path), "--endpoint", box.url + "/not/the/api")
    assert elsewhere.returncode == 2
    assert "answered HTTP 404: not Tencent's IM REST API (a wrong --endpoint?)" in elsewhere.stdout
    journal = check(tmp_path / "jobs.outcomes.jsonl", "--endpoint", box.url)
    assert (journal.returncode, journal.stdout) == (2, "")
    assert journal.stderr.endswith(
        "jobs.outcomes.jsonl is an outcome journal, not a jobs file; leave it out of the jobs\n"
    )
    unknown = check(jobs_file(tmp_path), "--region", "eu-frankfurt")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("dispatcher: error: unknown region 'eu-frankfurt'")
    nothing_sent(box)


def test_a_missing_group_and_sender_and_a_bad_job_are_exit_1(tmp_path: Path, box: SandboxProcess) -> None:
    jobs = jobs_file(
        tmp_path,
        {"job_id": "gone", "GroupId": "@TGS#1NOSUCH", "Content": "hi"},
        {"job_id": "ghost", "api": "batchsendmsg", "From_Account": "nobody", "To_Account": ["alice"], "Text": "x"},
        {"job_id": "bad", "Content": "no group"},
    )
    done = check(jobs, "--endpoint", box.url)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "sender      nobody: does not exist (not imported); its jobs' batches would fail" in lines
    assert "groups      3 named by the jobs: 2 exist, 1 do not" in lines
    assert "@TGS#1NOSUCH  does not exist (10010): a send would fail its batches" in lines
    assert f"rejected    bad: {jobs}:6: field GroupId: is required" in lines  # as the dry run says it
    assert lines[-1] == (
        "verdict     a send would run, but 1 group(s) do not exist, and their batches would fail; "
        "1 sender(s) do not exist, and their jobs' batches would fail; 1 job(s) would be rejected (exit 1)"
    )
    nothing_sent(box)


async def test_more_than_50_groups_take_several_requests_each_paced(tmp_path: Path) -> None:
    """120 groups: get_group_info three times (50, 50, 20) and account_check once, at a rate of 2 a
    second, in virtual time. A sandbox that admits 2 a second per API refuses none: the requests were
    paced (unpaced, the third get_group_info in the same second is 60007). One request at a time, so
    that each arrives at the virtual time it was sent."""
    clock = FakeClock()
    ids = [f"@TGS#G{i:04d}" for i in range(120)]
    groups = {gid: Group("Public", frozenset({"alice"})) for gid in ids}
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"job_id": gid, "GroupId": gid, "Content": "hi"} for gid in ids])
    async with serving(Sandbox(groups=groups, rate=2, clock=clock.time)) as sandbox:
        limiter = RateLimiter(2, clock=clock.time, sleep=clock.sleep)
        result = await check_setup(
            read_for_check([str(jobs)]), DEMO_CREDENTIALS, sandbox.url, limiter=limiter, in_flight=1
        )
        assert result.exit_code == 0
        assert [(g.group_id, g.type, g.members) for g in result.groups] == [(gid, "Public", 1) for gid in ids]
        assert sandbox.stats["requests"] == 4 and sandbox.stats["0"] == 4 and "60007" not in sandbox.stats
        assert sandbox.api_stats() == {"get_group_info_calls": 3, "account_check_calls": 1}
        assert clock.now - 1000.0 >= 1.5  # four starts at 2 a second: three intervals of half a second
        assert sandbox.ledger.entries() == []


async def post(box: Sandbox, path: str, body: Any) -> dict[str, Any]:
    creds = DEMO_CREDENTIALS
    query = {
        "sdkappid": str(creds.sdkappid),
        "identifier": creds.identifier,
        "usersig": usersig.generate(creds.sdkappid, creds.identifier, creds.secret_key or "", 3600),
        "random": "1",
        "contenttype": "json",
    }
    async with aiohttp.ClientSession() as http, http.post(box.url + path, params=query, json=body) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def test_the_sandbox_emulates_get_group_info_and_account_check() -> None:
    groups = {"@TGS#1AAA": Group("AVChatRoom", frozenset({"a", "b"}))}
    async with serving(Sandbox(groups=groups, accounts=["alice"])) as box:
        info = await post(
            box,
            "/v4/group_open_http_svc/get_group_info",
            {"GroupIdList": ["@TGS#1AAA", "@TGS#NONE", "x" * 49], "ResponseFilter": {"GroupBaseInfoFilter": ["Type"]}},
        )
        assert info["ErrorCode"] == 0
        assert [(g["GroupId"], g["ErrorCode"], g.get("Type"), g.get("MemberNum")) for g in info["GroupInfo"]] == [
            ("@TGS#1AAA", 0, "AVChatRoom", None),  # only what the filter asked for
            ("@TGS#NONE", 10010, None, None),
            ("x" * 49, 10015, None, None),
        ]
        full = await post(box, "/v4/group_open_http_svc/get_group_info", {"GroupIdList": ["@TGS#1AAA"]})
        assert full["GroupInfo"][0]["MemberNum"] == 2
        too_many = await post(box, "/v4/group_open_http_svc/get_group_info", {"GroupIdList": ["@TGS#1AAA"] * 51})
        assert too_many["ErrorCode"] == 10004
        accounts = await post(
            box, "/v4/im_open_login_svc/account_check", {"CheckItem": [{"UserID": "alice"}, {"UserID": "zed"}]}
        )
        assert [(r["UserID"], r["ResultCode"], r["AccountStatus"]) for r in accounts["ResultItem"]] == [
            ("alice", 0, "Imported"),
            ("zed", 0, "NotImported"),
        ]
        over = await post(box, "/v4/im_open_login_svc/account_check", {"CheckItem": [{"UserID": "a"}] * 101})
        assert over["ErrorCode"] == 70402
        assert box.ledger.entries() == []
        assert box.api_stats() == {"get_group_info_calls": 3, "account_check_calls": 2}


# -- the dry run ---------------------------------------------------------------------------------


def dry_run(jobs: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        DISPATCHER("send", str(jobs), "--dry-run", *args),
        env=cli_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_dry_run_says_where_and_as_whom_never_a_secret(tmp_path: Path) -> None:
    done = dry_run(jobs_file(tmp_path), "--region", "tokyo", **DEMO_ENV)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "jobs        3 (3 valid, 0 rejected)"  # the plan's lines come first, as before
    assert lines[-3:] == [
        "endpoint    https://adminapijpn.im.qcloud.com (region tokyo)",
        "sdkappid    1400000000",
        "admin       administrator",
    ]
    assert DEMO_ENV["TIM_SECRET_KEY"] not in done.stdout + done.stderr
    bare = dry_run(jobs_file(tmp_path))  # a dry run needs no credentials
    assert bare.returncode == 0
    assert bare.stdout.splitlines()[-2:] == [
        "sdkappid    not set (TIM_SDKAPPID; a send needs it)",
        "admin       not set (TIM_IDENTIFIER; a send needs it)",
    ]


def test_the_dry_run_refuses_an_unknown_region_as_the_send_does(tmp_path: Path) -> None:
    done = dry_run(jobs_file(tmp_path), "--region", "eu-frankfurt")
    assert done.returncode == 2
    assert done.stderr.startswith("dispatcher: error: unknown region 'eu-frankfurt'; choose one of: china,")
    assert done.stdout == ""
