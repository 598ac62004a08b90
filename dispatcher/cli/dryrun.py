"""`send --dry-run`: read and check the jobs, print the plan, send nothing (and so no metrics)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dispatcher.cli.output import print_plan, write_json
from dispatcher.cli.status import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from dispatcher.journal.uri import JournalURI


def dry_run(args: argparse.Namespace, out: Path | JournalURI) -> int:
    from dispatcher.jobs.reader import shown
    from dispatcher.journal.outcomes import is_nonempty, load_state
    from dispatcher.observe import logs
    from dispatcher.observe.plan import make_plan
    from dispatcher.run.preflight import check_readable

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
    )
    print_plan(plan)
    if args.summary_json:
        write_json(
            args.summary_json,
            {
                **plan.to_dict(),
                "out": shown(str(out)),
                "exit_code": int(plan.rejected > 0),
                "interrupted": False,
                "elapsed_s": 0.0,
                "rate": 0.0,
            },
        )
    return EXIT_FAILED if plan.rejected else EXIT_OK
