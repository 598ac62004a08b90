"""`send --dry-run`: read and check the jobs, print the plan, send nothing (and so no metrics).

It also says where a send would go and as whom: the endpoint, the SDKAppID and the admin account,
never a secret. An endpoint a send would refuse (an unknown region) is refused here too."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dispatcher.cli.output import print_plan, write_json, write_stdout
from dispatcher.cli.status import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from dispatcher.journal.uri import JournalURI


def dry_run(args: argparse.Namespace, out: Path | JournalURI) -> int:
    from dispatcher.jobs.reader import shown
    from dispatcher.journal.outcomes import is_nonempty, load_state
    from dispatcher.observe import logs
    from dispatcher.observe.plan import make_plan
    from dispatcher.run.preflight import check_readable

    where = _where(args)  # before the jobs are read: a send refuses a wrong endpoint before it reads them
    check_readable(tuple(args.jobs))  # a send's runner checks its inputs itself
    logs.configure(args.log_format, level=logs.level_of(args.quiet, args.verbose))
    # A run in PostgreSQL: the plan is made as for a new run (the database is not read by a dry run).
    state = load_state(out, repair=False) if isinstance(out, Path) and args.resume and is_nonempty(out) else None
    plan = make_plan(
        args.jobs,
        args.batch_size,
        args.rate,
        state,
        args.retry_failed,
        message_quota=args.message_quota,
        headroom=args.store.headroom,  # a Redis budget paces at 98% of the rate, this process at 99.5%
        api_rates=dict(args.api_rates),
        retry_unknown=args.retry_unknown,
    )
    if args.summary_json != "-":  # `--summary-json -`: the JSON is the plan on stdout
        print_plan(plan)
        write_stdout("".join(f"{label:<11} {value}\n" for label, value in where))
    # 2: an export could not be read (a store); 1: a job was rejected.
    code = 2 if plan.unreadable else EXIT_FAILED if plan.rejected else EXIT_OK
    if args.summary_json:
        write_json(
            args.summary_json,
            {
                **plan.to_dict(),
                "out": shown(str(out)),
                "exit_code": code,
                "interrupted": False,
                "elapsed_s": 0.0,
                "rate": 0.0,
            },
        )
    return code


def _where(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The endpoint, SDKAppID and admin a send would use, as the send resolves them. A dry run needs
    no credentials: one not set is said so; one set but invalid, or a wrong endpoint, is refused."""
    import os

    from dispatcher import uris
    from dispatcher.tim import config, rules

    if args.sandbox:
        return [
            ("endpoint", "the built-in sandbox, started on 127.0.0.1 by the send"),
            ("sdkappid", f"{config.DEMO_SDKAPPID} (the sandbox's demo credentials)"),
            ("admin", config.DEMO_IDENTIFIER),
        ]
    endpoint = config.resolve_endpoint(args.region, args.endpoint)
    region = next((f" (region {name})" for name, url in rules.REGIONS.items() if url == endpoint), "")
    backup = config.resolve_backup(args.region, args.endpoint, args.backup_endpoint)
    # Shown when a region or an endpoint was named: with none, the dry run keeps the three lines it
    # always printed, which scripts read.
    named = args.region or args.endpoint or os.environ.get("TIM_REGION") or os.environ.get("TIM_ENDPOINT")
    also = []
    if backup and named:
        also.append(("backup", f"{uris.shown_endpoint(backup)} (when a connection to the endpoint is not made)"))
    if os.environ.get("TIM_SDKAPPID") and os.environ.get("TIM_IDENTIFIER"):
        creds = config.credentials_from_env(need_secret=False)
        sdkappid, admin = str(creds.sdkappid), creds.identifier
    else:
        sdkappid = os.environ.get("TIM_SDKAPPID") or "not set (TIM_SDKAPPID; a send needs it)"
        admin = os.environ.get("TIM_IDENTIFIER") or "not set (TIM_IDENTIFIER; a send needs it)"
    return [("endpoint", uris.shown_endpoint(endpoint) + region), *also, ("sdkappid", sdkappid), ("admin", admin)]
