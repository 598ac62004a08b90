"""The recipes of the guide run as written: the cron script under cron's bare environment, and the
Kubernetes CronJob manifest says what it promises."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from dispatcher.cli.parser import build_parser
from dispatcher.sandbox import Sandbox
from tests.conftest import DEMO_ENV, ROOT, write_jobs

RECIPES = ROOT / "recipes"
GROUP = "@TGS#digest"


def install_cron_script(where: Path, endpoint: str, mode: int = 0o600) -> Path:
    """The script as an operator installs it: its one line naming the command edited, the jobs and the
    credentials file beside it."""
    where.mkdir()
    script = where / "run.sh"
    text = (RECIPES / "cron" / "run.sh").read_text()
    command = Path(sys.executable).parent / "dispatcher"
    assert "DISPATCHER=/opt/dispatcher/bin/dispatcher " in text
    script.write_text(text.replace("DISPATCHER=/opt/dispatcher/bin/dispatcher ", f"DISPATCHER={command} ", 1))
    script.chmod(0o755)
    jobs = [{"job_id": f"digest-{i}", "GroupId": GROUP, "Content": f"digest {i}"} for i in range(3)]
    write_jobs(where / "digest.jsonl", jobs)
    credentials = where / "credentials.env"
    credentials.write_text("".join(f"{k}={v}\n" for k, v in {**DEMO_ENV, "TIM_ENDPOINT": endpoint}.items()))
    credentials.chmod(mode)
    return script


async def as_cron_runs(script: Path) -> int:
    """`env -i PATH=/usr/bin:/bin script`: no HOME, no venv on the PATH, no credentials."""
    proc = await asyncio.create_subprocess_exec("env", "-i", "PATH=/usr/bin:/bin", str(script), cwd="/")
    return await asyncio.wait_for(proc.wait(), 120)


def only(directory: Path, pattern: str) -> Path:
    (found,) = sorted(directory.glob(pattern))
    return found


async def test_the_cron_script_runs_under_crons_bare_environment(sandbox: Sandbox, tmp_path: Path) -> None:
    script = install_cron_script(tmp_path / "digest", sandbox.url)
    assert await as_cron_runs(script) == 0
    here = script.parent
    assert sandbox.ledger.total() == 3
    summary = orjson.loads(only(here / "outcomes", "*.summary.json").read_bytes())
    assert (summary["ok"], summary["exit_code"]) == (3, 0)
    report = orjson.loads(only(here / "outcomes", "*.report.json").read_bytes())
    assert report["ok"] == 3
    assert only(here / "logs", "*.log").is_file()
    # Run again the same day, as a retrying scheduler would: the day's journal is resumed, nothing resent.
    assert await as_cron_runs(script) == 0
    assert sandbox.ledger.total() == 3
    assert orjson.loads(only(here / "outcomes", "*.summary.json").read_bytes())["skipped"] == 3


async def test_the_cron_script_refuses_credentials_others_can_read(sandbox: Sandbox, tmp_path: Path) -> None:
    script = install_cron_script(tmp_path / "digest", sandbox.url, mode=0o644)
    assert await as_cron_runs(script) == 2
    assert sandbox.ledger.total() == 0
    log = only(script.parent / "logs", "*.log").read_text()
    assert "credentials.env is readable by others: chmod 600 it" in log


def manifests() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((RECIPES / "kubernetes" / "cronjob.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


def test_the_cronjob_runs_one_pod_at_a_time_and_retries_only_what_a_retry_can_fix() -> None:
    cronjob = manifests()["CronJob"]
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 3
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # a policy on exit codes needs it
    rules = job["podFailurePolicy"]["rules"]
    assert {
        "action": "FailJob",
        "onExitCodes": {"containerName": "dispatcher", "operator": "In", "values": [1]},
    } in rules
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


def test_the_cronjob_takes_every_secret_from_a_secret_and_none_on_its_command_line() -> None:
    kinds = manifests()
    (container,) = kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    from_secret = {
        env["name"]: env["valueFrom"]["secretKeyRef"]["name"] for env in container["env"] if "valueFrom" in env
    }
    names = {"TIM_SDKAPPID", "TIM_IDENTIFIER", "TIM_SECRET_KEY", "PGPASSWORD", "JOURNAL_URI"}
    assert names <= set(from_secret)
    assert names <= set(kinds["Secret"]["stringData"])
    assert all(value == kinds["Secret"]["metadata"]["name"] for value in from_secret.values())
    script = container["args"][-1]
    assert "PGPASSWORD" not in script and "TIM_SECRET_KEY" not in script and "password" not in script.lower()


def test_the_cronjobs_command_is_one_dispatcher_accepts() -> None:
    (container,) = manifests()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    script = container["args"][-1]
    expanded = script.replace('"$JOURNAL_URI', '"postgresql://dispatch@db.internal/ops?sslmode=require').replace(
        "$(date +%F)", "2026-12-07"
    )
    words = shlex.split(expanded)
    assert words[:2] == ["exec", "dispatcher"]
    args = build_parser().parse_args(words[2:])
    assert (args.command, args.resume, args.out) == (
        "send",
        True,
        "postgresql://dispatch@db.internal/ops?sslmode=require&journal=nightly-2026-12-07",
    )


@pytest.mark.parametrize("name", ["run.sh", "credentials.env.example"])
def test_the_guide_shows_the_cron_recipe_as_it_is_tested(name: str) -> None:
    guide = (ROOT / "docs" / "guide" / "operations.md").read_text()
    assert f'--8<-- "recipes/cron/{name}"' in guide
    assert os.access(RECIPES / "cron" / "run.sh", os.X_OK)  # as cloned: the crontab line runs it as it is
