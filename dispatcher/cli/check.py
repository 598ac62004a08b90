"""`dispatcher check JOBS...`: try the set-up a send would use, with read-only calls; print one line
per finding, the table of the jobs' groups and a verdict. The check itself is the library's
(`dispatcher.run.check`)."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from dispatcher.cli.output import write_stdout
from dispatcher.errors import UsageError

if TYPE_CHECKING:
    from dispatcher.run.check import CheckResult


def run(args: argparse.Namespace) -> int:
    import asyncio

    from dispatcher.run.check import check_setup, read_for_check
    from dispatcher.run.preflight import check_readable
    from dispatcher.tim import config

    if not (math.isfinite(args.rate) and args.rate > 0):
        raise UsageError("--rate must be a positive number")
    if args.jobs.count("-") > 1:
        raise UsageError("standard input (-) can be given once")
    for path in args.jobs:  # as the send refuses it: `check jobs/*` would read a run's journal as jobs
        if path != "-" and path.endswith(".outcomes.jsonl"):
            raise UsageError(f"{path} is an outcome journal, not a jobs file; leave it out of the jobs")
    creds = config.credentials_from_env()
    endpoint = config.resolve_endpoint(args.region, args.endpoint)
    backup = config.resolve_backup(args.region, args.endpoint, args.backup_endpoint)
    check_readable(tuple(args.jobs))
    jobs = read_for_check(args.jobs)
    result = asyncio.run(check_setup(jobs, creds, endpoint, rate=args.rate, backup=backup))
    write_stdout(render(result))
    return result.exit_code


def render(result: CheckResult) -> str:
    """The check as the command prints it: never a secret (no key, no UserSig)."""
    from dispatcher import uris
    from dispatcher.tim import rules

    region = next((f" (region {name})" for name, url in rules.REGIONS.items() if url == result.endpoint), "")
    jobs = result.jobs
    lines = [
        f"endpoint    {uris.shown_endpoint(result.endpoint)}{region}",
        *(
            [f"backup      {uris.shown_endpoint(result.backup)} (when a connection to the endpoint is not made)"]
            if result.backup
            else []
        ),
        f"sdkappid    {result.sdkappid}",
        f"admin       {result.admin}",
        f"jobs        {jobs.jobs} ({jobs.jobs - jobs.rejected} valid, {jobs.rejected} rejected)",
    ]
    lines += [f"{f.label:<11} {f.text}" for f in result.findings]
    for sender in result.senders:
        if sender.exists:
            lines.append(f"sender      {sender.user_id}: exists")
        elif sender.result_code == 0:
            lines.append(f"sender      {sender.user_id}: does not exist (not imported); its jobs' batches would fail")
        else:
            lines.append(f"sender      {sender.user_id}: not checked: {sender.result_code} {sender.result_info}")
    if result.groups:
        named, missing = len(result.groups), len(result.missing_groups)
        lines.append(f"groups      {named} named by the jobs: {named - missing} exist, {missing} do not")
        lines += _group_table(result)
    lines += [f"rejected    {rej.job_id}: {rej.message}" for rej in jobs.rejections]
    if jobs.rejected > len(jobs.rejections):
        lines.append(f"rejected    ... and {jobs.rejected - len(jobs.rejections)} more")
    lines.append(f"verdict     {_verdict(result)}")
    return "\n".join(lines) + "\n"


def _group_table(result: CheckResult) -> list[str]:
    from dispatcher.tim import rules

    width = max(len("GroupId"), *(len(g.group_id) for g in result.groups))
    rows = [f"{'GroupId':<{width}}  {'type':<10}  members"]
    for group in result.groups:
        if group.exists:
            rows.append(f"{group.group_id:<{width}}  {group.type:<10}  {group.members:,}")
        elif group.error_code in (rules.GROUP_NOT_FOUND, rules.INVALID_GROUP_ID):
            said = "does not exist" if group.error_code == rules.GROUP_NOT_FOUND else "invalid GroupId"
            rows.append(f"{group.group_id:<{width}}  {said} ({group.error_code}): a send would fail its batches")
        else:
            rows.append(f"{group.group_id:<{width}}  not checked: {group.error_code} {group.error_info}")
    return rows


def _verdict(result: CheckResult) -> str:
    code = result.exit_code
    if code == 2:
        stop = next(f for f in result.findings if f.stops_a_run)
        return f"a send would stop: {stop.label} {stop.text} (exit 2)"
    if code == 1:
        problems = []
        if result.missing_groups:
            problems.append(f"{len(result.missing_groups)} group(s) do not exist, and their batches would fail")
        if result.missing_senders:
            problems.append(f"{len(result.missing_senders)} sender(s) do not exist, and their jobs' batches would fail")
        if result.jobs.rejected:
            problems.append(f"{result.jobs.rejected} job(s) would be rejected")
        return f"a send would run, but {'; '.join(problems)} (exit 1)"
    return "ready: a send would be accepted; nothing was sent (exit 0)"
