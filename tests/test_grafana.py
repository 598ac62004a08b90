"""The Grafana dashboard (dashboards/grafana/dispatcher.json): a shape Grafana imports, and every query of
it answered with data by a real Prometheus that scraped a real run, live and from its Pushgateway."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import (
    DEMO_ENV,
    DISPATCHER,
    ROOT,
    Prometheus,
    Pushgateway,
    SandboxProcess,
    cli_env,
    free_port,
    users,
)

DASHBOARD = ROOT / "dashboards" / "grafana" / "dispatcher.json"
JOB = "digest"  # the run's --pushgateway-job, and the name of the scrape job of its live /metrics
WINDOW = "1m"  # what Grafana's $__rate_interval becomes; it holds the whole run
METRIC = re.compile(r"\bdispatcher_[a-z_]+\b")
GRID_WIDTH = 24  # Grafana's grid has 24 columns
# The reader hands jobs over 256 at a time: a pipe with this many in it, and kept open, has a run that
# sent them all and waits for more, served live on /metrics.
CHUNK = 256


# A sandbox in a process of its own, as `dispatcher sandbox` serves it, that answers its first requests
# with the ErrorCodes given (Sandbox.script) and knows only the groups of the file given.
SCRIPTED_SANDBOX = """
import asyncio, sys
from dispatcher.sandbox import Sandbox
from dispatcher.sandbox.groups import load_groups

async def main(groups, *codes):
    box = Sandbox(groups=load_groups(groups))
    box.script(*map(int, codes))
    await box.serve(0, asyncio.Event(), lambda url: print(url, flush=True))

asyncio.run(main(*sys.argv[1:]))
"""


class ScriptedSandboxProcess(SandboxProcess):
    def __init__(self, groups: Path, *codes: int) -> None:
        args = [sys.executable, "-c", SCRIPTED_SANDBOX, str(groups), *map(str, codes)]
        self.proc = subprocess.Popen(args, env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return doc


def targets(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in doc["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target


def as_grafana_sends(expr: str) -> str:
    """The query as Grafana sends it, for the run's job chosen in the `job` variable."""
    return expr.replace("$__rate_interval", WINDOW).replace("$job", JOB)


def test_the_dashboard_is_one_grafana_imports() -> None:
    doc = dashboard()
    assert doc["title"] == "dispatcher"
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["query"]["query"] == "label_values(dispatcher_run_start_timestamp_seconds, job)"
    ids = [panel["id"] for panel in doc["panels"]]
    assert len(ids) == len(set(ids)) == 15
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        mine = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_metric_the_dashboard_draws_is_in_the_guides_table() -> None:
    table = (ROOT / "docs" / "guide" / "operations.md").read_text(encoding="utf-8")
    drawn = {
        name.removesuffix("_bucket") for _, target in targets(dashboard()) for name in METRIC.findall(target["expr"])
    }
    assert len(drawn) == 21
    assert {name for name in drawn if f"| `{name}` |" not in table} == set()


def test_every_panel_is_described_in_the_guide() -> None:
    guide = (ROOT / "docs" / "guide" / "operations.md").read_text(encoding="utf-8")
    assert [p["title"] for p in dashboard()["panels"] if f"\n| {p['title']} |" not in guide] == []


def wait_for(what: str, check: Callable[[], bool], *procs: subprocess.Popen[bytes], deadline_s: float = 60.0) -> None:
    """Until `check()` holds: a state of the Prometheus, looked at every 50 ms, for at most `deadline_s`;
    fail at once if one of `procs`, which was to bring it about, ended."""
    deadline = time.monotonic() + deadline_s
    while not check():
        assert all(proc.poll() is None for proc in procs), f"{what}: the run ended first"
        assert time.monotonic() < deadline, f"{what}: not within {deadline_s:g} s"
        time.sleep(0.05)


def scraped_up(prometheus: Prometheus, port: int) -> bool:
    active = prometheus.api("targets", state="active")["activeTargets"]
    return any(t["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics" and t["health"] == "up" for t in active)


def test_every_query_of_the_dashboard_returns_data_from_prometheus(
    tmp_path: Path, prometheus: Prometheus, pushgateway: Pushgateway
) -> None:
    # The sandbox answers the first two requests "too frequent" (60007): retries, the pace stepped down.
    # One group of the jobs does not exist (10010): a failed batch, recipients not notified.
    groups = tmp_path / "groups.json"
    groups.write_bytes(orjson.dumps({"@TGS#digest": {"type": "Public"}}))
    sandbox = ScriptedSandboxProcess(groups, 60007, 60007)
    live_port = free_port()
    gateway_port = int(pushgateway.url.rsplit(":", 1)[1])
    prometheus.start(
        [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{live_port}"]}]},
            # honor_labels keeps the pushed job label, as the guide says to scrape a Pushgateway.
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}],
            },
        ]
    )
    # Yesterday's run succeeded: today's, which fails, carries its last success forward.
    yesterday = tmp_path / "yesterday.jsonl"
    yesterday.write_bytes(orjson.dumps({"GroupId": "@TGS#digest", "Content": "hi"}) + b"\n")
    flags = ["--pushgateway", pushgateway.url, "--pushgateway-job", JOB, "--no-progress"]
    args = ["send", str(yesterday), "--sandbox", "--out", str(tmp_path / "yesterday.out.jsonl"), *flags]
    ok = subprocess.run(DISPATCHER(*args), cwd=ROOT, env=cli_env(**DEMO_ENV), capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr.decode()
    jobs = [{"GroupId": "@TGS#missing", "Content": "hi", "ToMembers_Account": ["ghost"]}]
    jobs += [{"GroupId": "@TGS#digest", "Content": f"n{i}", "ToMembers_Account": users(3)} for i in range(1, CHUNK)]
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.jsonl"
    args = ["send", str(fifo), "--out", str(out), "--rate", "100", "--metrics-port", str(live_port), *flags]
    args += ["--endpoint", sandbox.url]
    log = tmp_path / "send.log"  # a file: a pipe nobody reads during the run could fill and hold it
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            DISPATCHER(*args), cwd=ROOT, env=cli_env(**DEMO_ENV), stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        # While the pipe is open the run goes on, served live on /metrics: Prometheus scrapes it.
        with open(fifo, "wb") as writer:
            writer.write(b"".join(orjson.dumps(job) + b"\n" for job in jobs))
            writer.flush()
            wait_for("the live /metrics scraped", lambda: scraped_up(prometheus, live_port), proc)
            # Every batch final in a scrape, and two scrapes since: each live series has three samples or
            # more, enough for rate().
            live = f'job="{JOB}", instance="127.0.0.1:{live_port}"'
            done = f'sum(dispatcher_batches_total{{{live}, status=~"ok|failed"}}) == {CHUNK}'
            wait_for("every batch final", lambda: bool(prometheus.query(done)), proc)
            scrapes = f"count_over_time(dispatcher_running{{{live}}}[{WINDOW}])"
            then = float(prometheus.query(scrapes)[0]["value"][1])
            wait_for("two more scrapes", lambda: bool(prometheus.query(f"{scrapes} >= {then + 2}")), proc)
        assert proc.wait(timeout=30) == 1, log.read_text()  # the batch to the missing group failed
    finally:
        if proc.poll() is None:
            proc.kill()
        sandbox.stop()
    # The end of the run (its exit code, last success, duration) comes from the Pushgateway it pushed to.
    wait_for("the pushed end scraped", lambda: bool(prometheus.query(f'dispatcher_exit_code{{job="{JOB}"}} == 1')))
    try:
        assert JOB in prometheus.api("label/job/values", **{"match[]": "dispatcher_run_start_timestamp_seconds"})
        empty = []
        for title, target in targets(dashboard()):
            expr = as_grafana_sends(target["expr"])
            if not prometheus.query(expr):
                empty.append(f"{title} {target['refId']}: {expr}")
            # A name misspelled in one arm of an `or` or `and` would not empty the whole query.
            for name in METRIC.findall(expr):
                if not prometheus.query(f'{name}{{job="{JOB}"}}'):
                    empty.append(f"{title} {target['refId']}: no series {name}")
        assert empty == []
        # The check can fail: a name that is no metric of ours returns no series.
        assert prometheus.query(f'rate(dispatcher_requests{{job="{JOB}"}}[{WINDOW}])') == []
        # The run drawn has what the sandbox and the jobs made: the pace stepped down, a failed batch.
        steps = prometheus.query(f'sum(dispatcher_rate_steps_down_total{{job="{JOB}"}})')
        assert float(steps[0]["value"][1]) >= 1
        failed = prometheus.query(f'dispatcher_batches_total{{job="{JOB}", status="failed"}}')
        assert {float(series["value"][1]) for series in failed} == {1.0}
    finally:
        prometheus.kill()
