"""`dispatcher report --html FILE`: the page of a run, opened in a real browser (Debian's chromium, headless)
with the network cut off, driven over the DevTools protocol: no console error, no request but the page's own,
and the run's numbers in what the browser rendered."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from dispatcher.observe.page import render_page
from dispatcher.observe.page.timeline import MOST_BUCKETS, Timeline
from dispatcher.sandbox import Group, Sandbox
from dispatcher.testing import FakeClock
from tests.conftest import (
    PG_PASSWORD,
    PostgresServer,
    SandboxProcess,
    cli,
    cli_env,
    run_engine,
    users,
    write_jobs,
)

OPEN_WITHIN = 20.0  # seconds for the browser to start, load a page and hand back its DOM


# -- the browser -----------------------------------------------------------------------------------


class Seen:
    """What the browser saw of a page: its errors, the requests it made, and its DOM once drawn."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dom = ""
        self.charts = 0


class Browser:
    """Headless chromium, driven over its DevTools WebSocket (aiohttp's client): each page opens in a
    target of its own. Host names resolve to nothing, so a page that reached out would fail too."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.proc, self.ws = proc, ws
        self._ids = itertools.count(1)

    async def _call(self, method: str, session: str | None = None, **params: Any) -> tuple[dict[str, Any], list[Any]]:
        """Send one command; its result, and the events that came before it."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send_str(orjson.dumps(message).decode())
        events: list[Any] = []
        while True:
            reply = orjson.loads((await self.ws.receive()).data)
            if reply.get("id") == ident:
                assert "error" not in reply, reply
                return reply["result"], events
            events.append(reply)

    async def open(self, page: Path) -> Seen:
        async with asyncio.timeout(OPEN_WITHIN):
            return await self._open(page.resolve().as_uri())

    async def _open(self, url: str) -> Seen:
        seen = Seen()
        target = (await self._call("Target.createTarget", url="about:blank"))[0]["targetId"]
        session = (await self._call("Target.attachToTarget", targetId=target, flatten=True))[0]["sessionId"]
        events: list[Any] = []
        for domain in ("Runtime", "Log", "Network", "Page"):
            events += (await self._call(f"{domain}.enable", session))[1]
        events += (await self._call("Page.navigate", session, url=url))[1]
        while not any(event.get("method") == "Page.loadEventFired" for event in events):
            events.append(orjson.loads((await self.ws.receive()).data))
        # After a frame is drawn: the charts are canvases the script made.
        drawn = "new Promise(r => requestAnimationFrame(() => r(document.documentElement.outerHTML)))"
        result, more = await self._call("Runtime.evaluate", session, expression=drawn, awaitPromise=True)
        seen.dom = result["result"]["value"]
        charts, later = await self._call(
            "Runtime.evaluate", session, expression="document.querySelectorAll('.uplot canvas').length"
        )
        seen.charts = charts["result"]["value"]
        await self._call("Target.closeTarget", targetId=target)
        for event in events + more + later:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                seen.errors.append(params["exceptionDetails"].get("exception", {}).get("description", "exception"))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                seen.errors.append(str(params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                seen.errors.append(params["entry"]["text"])
            elif method == "Network.requestWillBeSent" and params["request"]["url"] != url:
                seen.requests.append(params["request"]["url"])
        return seen


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium is not None, "Debian's chromium is missing: `make test` installs it"
    proc = await asyncio.create_subprocess_exec(
        chromium,
        "--headless=new",
        "--disable-gpu",
        "--no-sandbox",  # as root, in a container: the sandbox needs namespaces it may not have
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--remote-debugging-port=0",
        f"--user-data-dir={tmp_path / 'profile'}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(OPEN_WITHIN), aiohttp.ClientSession() as http:
            assert proc.stderr is not None
            while not (line := (await proc.stderr.readline()).decode()).startswith("DevTools listening on "):
                assert line, "chromium ended before it listened"
            drain = asyncio.ensure_future(_drain(proc.stderr))
            async with http.ws_connect(line.split()[-1], max_msg_size=0) as ws:
                yield Browser(proc, ws)
            drain.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    """Read the browser's log, so that a full pipe never stops it."""
    while await stream.readline():
        pass


# -- a real run ------------------------------------------------------------------------------------

GROUP = "@TGS#here"


def _jobs(tmp_path: Path) -> Path:
    return write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"job_id": "spring", "GroupId": GROUP, "Content": "hi", "ToMembers_Account": users(1200)},
            {"job_id": "gone", "GroupId": "@TGS#1NOSUCHGROUP", "Content": "hi", "ToMembers_Account": ["alice", "zed"]},
        ],
    )


async def test_the_page_of_a_run_shows_its_numbers_in_a_browser_with_no_error_and_no_request(
    tmp_path: Path, browser: Browser
) -> None:
    out = tmp_path / "out.jsonl"
    async with Sandbox(groups={GROUP: Group("Public")}) as box:
        box.script(10002, 60007, 70050)  # three replies retried: one internal error, one over the rate, one pause
        await run_engine(box, _jobs(tmp_path), out, clock=FakeClock(), concurrency=1)
    page = tmp_path / "page.html"
    done = cli("report", str(out), "--html", str(page), "--rate", "150")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"wrote the report page {page}\n", "")

    seen = await browser.open(page)
    assert (seen.errors, seen.requests, seen.charts) == ([], [], 2)
    text = _text(seen.dom)
    # 4 batches (3 of spring, 1 of gone) in 7 requests: the 3 scripted replies were each retried.
    for value, label in [("7", "requests"), ("4", "batches"), ("3", "batches ok"), ("1", "batches failed")]:
        assert f'data-key="{label}"><b>{value}</b>' in seen.dom
    for value, label in [("2", "recipients not notified"), ("3", "retries"), ("1", "too frequent replies")]:
        assert f'data-key="{label}"><b>{value}</b>' in seen.dom
    assert 'data-key="pauses (70050)"><b>1</b>' in seen.dom
    assert "10010 the group does not exist, or was disbanded 1" in text  # outcomes by code, with the meaning
    assert "60007 REST calls too frequent: over the app's rate 1" in text
    assert "spring send_group_system_notification @TGS#here ok 3 3 0 0 0" in text
    assert "gone send_group_system_notification @TGS#1NOSUCHGROUP failed 1 0 1 0 2" in text
    assert "gone 0 alice 10010 the group does not exist, or was disbanded" in text
    assert "gone 0 zed 10010" in text
    assert "rate limit 150/s" in text  # the legend uPlot drew


async def test_the_page_of_a_run_in_postgresql(
    tmp_path: Path, postgres_server: PostgresServer, browser: Browser
) -> None:
    groups = tmp_path / "groups.json"
    groups.write_text(orjson.dumps({GROUP: {"type": "Public"}}).decode())
    box = SandboxProcess("--groups", str(groups))
    try:
        uri = postgres_server.journal("nightly")
        sent = cli("send", str(_jobs(tmp_path)), "--endpoint", box.url, "--out", uri, "--no-progress")
        assert sent.returncode == 1, sent.stderr  # a batch failed
    finally:
        box.stop()
    page = tmp_path / "page.html"
    done = cli("report", uri, "--html", str(page))
    assert done.returncode == 0, done.stderr
    seen = await browser.open(page)
    assert (seen.errors, seen.requests, seen.charts) == ([], [], 2)
    text = _text(seen.dom)
    assert f"journal postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres?journal=nightly" in text
    assert 'data-key="requests"><b>4</b>' in seen.dom
    assert 'data-key="batches ok"><b>3</b>' in seen.dom
    assert "gone 0 alice 10010 the group does not exist, or was disbanded" in text
    assert "rate limit 200/s" in text  # send's default: a journal does not record the run's rate
    assert PG_PASSWORD in uri and PG_PASSWORD not in page.read_text() + done.stdout


async def test_the_browser_check_fails_a_page_with_a_script_error_or_a_request(
    tmp_path: Path, browser: Browser
) -> None:
    """The checks above can fail: the page, with a script error or an image from the network put in."""
    good = render_page([_one_line(tmp_path)], rate=200)
    broken = tmp_path / "broken.html"
    broken.write_text(good.replace("</body>", "<script>window.noSuchFunction();</script></body>"))
    seen = await browser.open(broken)
    assert len(seen.errors) == 1 and "noSuchFunction" in seen.errors[0]
    # A page of its own: the report page's policy forbids any request, which the browser logs as an error.
    fetching = tmp_path / "fetching.html"
    fetching.write_text('<html><body><img src="http://example.com/logo.png"></body></html>')
    seen = await browser.open(fetching)
    assert seen.requests == ["http://example.com/logo.png"]
    walled = tmp_path / "walled.html"
    walled.write_text(good.replace("</body>", '<img src="http://example.com/logo.png"></body>'))
    seen = await browser.open(walled)
    assert seen.errors and "Content Security Policy" in seen.errors[0]


# -- the page without a browser --------------------------------------------------------------------


def _one_line(tmp_path: Path) -> Path:
    path = tmp_path / "one.jsonl"
    doc = {
        "job_id": "a", "batch": 0, "batches": 1, "attempt": 1, "status": "ok", "final": True, "group_id": "@TGS#a",
        "recipients": ["p"], "error_code": 0, "error_info": "OK", "http_status": 200, "latency_ms": 400.0,
        "at": "2026-03-02T12:00:01.200Z", "job_hash": "h",
    }  # fmt: skip
    path.write_bytes(orjson.dumps(doc) + b"\n")
    return path


def _text(dom: str) -> str:
    """The DOM's text, each cell and tag boundary one space."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def _line(at: str, latency: float, attempt: int = 1, code: int = 0) -> dict[str, Any]:
    return {"latency_ms": latency, "at": at, "attempt": attempt, "error_code": code}


def test_a_request_counts_at_its_start_its_line_time_less_its_latency() -> None:
    drawn = (
        Timeline().extend([_line("2026-03-02T12:00:01.200Z", 400.0), _line("2026-03-02T12:00:01.900Z", 100.0)]).drawn()
    )
    start = 1772452800  # 2026-03-02T12:00:00Z
    assert (drawn.width, drawn.times, drawn.counts["requests"]) == (1, [start, start + 1], [1, 1])
    assert drawn.busiest == 1


def test_a_run_of_days_is_drawn_in_wider_buckets_and_every_request_still_counts() -> None:
    # Three days, one request every 10 s, of which every 100th a retry answered 60007 and every 1000th a 70050.
    lines = []
    for i in range(3 * 86_400 // 10):
        seconds = 1772452800 + 10 * i
        at = f"{_iso(seconds)}.500Z"
        code = 70050 if i % 1000 == 0 else 60007 if i % 100 == 0 else 0
        lines.append(_line(at, 0.0, attempt=2 if i % 100 == 0 else 1, code=code))
    drawn = Timeline().extend(lines).drawn()
    # 259,200 s: in buckets of 64 s, 4,051 would be too many; in buckets of 128 s, 2,026 are not.
    assert (drawn.width, len(drawn.times), MOST_BUCKETS) == (128, 2026, 2048)
    assert drawn.totals == {"requests": 25_920, "retries": 260, "over_rate": 234, "paused": 26}
    assert drawn.busiest is None  # seconds are merged: the busiest one is not known
    assert drawn.times[0] == 1772452736  # buckets on the epoch's grid: 13,847,287 times 128 s


def _iso(seconds: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_the_page_lists_the_first_100_recipients_not_notified_and_counts_them_all(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with path.open("wb") as handle:
        for batch in reversed(range(479)):  # every batch failed, the last first
            doc = {
                "job_id": "spring", "batch": batch, "batches": 479, "attempt": 1, "status": "failed", "final": True,
                "group_id": "@TGS#gone", "recipients": [f"u{batch}-{i}" for i in range(500)], "error_code": 10010,
                "error_info": "group id invalid", "latency_ms": 20.0, "at": "2026-03-02T12:00:01.200Z", "job_hash": "h",
            }  # fmt: skip
            handle.write(orjson.dumps(doc) + b"\n")
    text = _text(render_page([path], rate=200))
    assert "239,500 named recipients not notified, by reason:" in text
    assert "10010 the group does not exist, or was disbanded 239,500 479 0" in text
    assert "The first 100 of them, by job and batch" in text
    assert "spring 0 u0-99 10010" in text
    assert "u0-100" not in text and "u1-0" not in text


def test_rate_without_html_and_html_with_json_are_refused_in_one_line(tmp_path: Path) -> None:
    journal = _one_line(tmp_path)
    alone = cli("report", str(journal), "--rate", "100")
    assert (alone.returncode, alone.stderr) == (
        2,
        "dispatcher: error: --rate is the limit drawn on the page: give it with --html FILE\n",
    )
    both = cli("report", str(journal), "--html", str(tmp_path / "p.html"), "--json")
    assert (both.returncode, both.stderr) == (
        2,
        "dispatcher: error: --html writes the report as a page and --json prints it: give one of them\n",
    )
    zero = cli("report", str(journal), "--html", str(tmp_path / "p.html"), "--rate", "0")
    assert (zero.returncode, zero.stderr) == (
        2,
        "dispatcher: error: --rate must be a number of requests a second above 0, not 0.0\n",
    )
    assert not (tmp_path / "p.html").exists()


def test_the_page_needs_no_heavy_import_until_asked(tmp_path: Path) -> None:
    """numpy waits for --html: the text report starts and runs without it."""
    journal = _one_line(tmp_path)
    code = (
        "import sys, contextlib, io\nfrom dispatcher.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(sys.argv[1:])\n"
        "print('numpy' in sys.modules)"
    )
    for extra, imported in (((), "False\n"), (("--html", str(tmp_path / "p.html")), "True\n")):
        args = [sys.executable, "-c", code, "report", str(journal), *extra]
        done = subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=60)
        assert done.stdout == imported, done.stderr
