"""`dispatcher send JOBS...`: check the command line, then hand the run to the library's Runner."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dispatcher.cli import metrics
from dispatcher.cli.files import check_writable
from dispatcher.cli.output import print_summary, write_json
from dispatcher.cli.ratestore import api_rates_of, rate_store
from dispatcher.errors import DispatcherError, JournalLockedError, UsageError

if TYPE_CHECKING:
    from dispatcher.observe.metrics import Exporter


def run(args: argparse.Namespace, decide: Callable[[], None]) -> int:
    """`decide`: told when the exit status is decided (from then on a signal changes nothing)."""
    options = metrics.options_of(args, args.out or default_out(args.jobs[0]))
    if args.dry_run or options is None:  # a dry run sends nothing, so it has no metrics
        return _checked(args, None, decide)
    exporter = metrics.exporter(options)
    try:
        return _checked(args, exporter, decide)
    except JournalLockedError:
        # The run that holds the journal owns its metrics too: the same textfile, the same group in
        # the Pushgateway. A second run (cron starting the next night's while this one goes on) is
        # refused in one line and must not write a failure over the live run's figures.
        exporter.stop_serving()
        raise
    except (DispatcherError, KeyboardInterrupt) as exc:
        metrics.report_failure(exporter, exc, decide)
        raise


def default_out(first_jobs: str) -> str:
    name = first_jobs[: -len(".jsonl")] if first_jobs.endswith(".jsonl") else first_jobs
    return f"{name}.outcomes.jsonl"


def _checked(args: argparse.Namespace, exporter: Exporter | None, decide: Callable[[], None]) -> int:
    _check(args)
    from dispatcher.observe import logs
    from dispatcher.tim import config

    out = args.journal_uri or Path(args.out or default_out(args.jobs[0]))
    for path in args.jobs:
        # `send jobs/*.jsonl` a second time would otherwise read the first run's journal as jobs.
        if path == "-":
            continue
        if path.endswith(".outcomes.jsonl"):
            raise UsageError(f"{path} is an outcome journal, not a jobs file; leave it out of the jobs")
        if Path(path).resolve() == Path(str(out)).resolve():  # the mistake is in --out: it names a jobs file
            raise UsageError(
                f"--out {args.out} names a jobs file of this run: the journal would be written into it; "
                f"give --out another name, or leave it out (then: {default_out(path)})"
            )
    if args.dry_run:
        from dispatcher.cli.dryrun import dry_run

        return dry_run(args, out)

    creds = config.DEMO_CREDENTIALS if args.sandbox else config.credentials_from_env()
    journal_password = args.journal_uri.password if args.journal_uri is not None else ""
    logs.configure(
        args.log_format,
        level=logs.level_of(args.quiet, args.verbose),
        secrets=(*creds.secrets(), args.store.password, journal_password),
        drop=("finished",) if logs.person_watching(args.log_format) and not args.quiet else (),
    )
    if exporter is not None:
        exporter.serve()
    endpoint = "" if args.sandbox else config.resolve_endpoint(args.region, args.endpoint)
    backup = None if args.sandbox else config.resolve_backup(args.region, args.endpoint, args.backup_endpoint)
    from dispatcher.run.config import RunConfig
    from dispatcher.run.retry import RetryPolicy

    run = RunConfig(
        jobs=tuple(args.jobs),
        out=out,
        endpoint=endpoint,
        credentials=creds,
        resume=args.resume,
        retry_failed=args.retry_failed,
        rate=args.rate,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        policy=RetryPolicy(max_attempts=args.max_attempts),
        timeout=args.timeout,
        message_quota=args.message_quota,
        lease=args.lease,
        backup_endpoint=backup,
        api_rates=args.api_rates,
        retry_unknown=args.retry_unknown,
    )
    show_progress = sys.stderr.isatty() and not args.no_progress and not args.quiet
    import asyncio

    from dispatcher.run.runner import Runner

    runner = Runner(
        run,
        sandbox=args.sandbox,
        store=args.store,
        progress=show_progress,
        exporter=exporter,
        on_finished=decide,  # from then on a signal leaves the exit status the summary says
    )
    summary = asyncio.run(runner.run())
    if not args.quiet and args.summary_json != "-":  # `--summary-json -`: the JSON is the summary on stdout
        print_summary(summary)
    if args.summary_json:
        write_json(args.summary_json, summary.to_dict())
    if exporter is not None:
        exporter.finish(summary.exit_code, summary)
    return summary.exit_code


def _check(args: argparse.Namespace) -> None:
    """The command line as a whole, before credentials are read or anything is opened: the run's
    options are RunConfig's, checked by the library's own check_options."""
    _journal_of(args)
    if args.jobs.count("-") > 1:
        raise UsageError("standard input (-) can be given once")
    if "-" in args.jobs and args.out is None and not args.dry_run:  # a dry run writes no journal
        raise UsageError("jobs from standard input need --out (there is no file name to derive it from)")
    from dispatcher.run.preflight import check_options

    check_options(
        batch_size=args.batch_size,
        rate=args.rate,
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        resume=args.resume,
        retry_failed=args.retry_failed,
        message_quota=args.message_quota,
        lease=args.lease,
        shared_run=args.journal_uri is not None,
    )
    if args.sandbox and (args.region or args.endpoint):
        raise UsageError("--sandbox sends to the built-in emulator; drop --region/--endpoint")
    if args.sandbox and args.backup_endpoint:
        raise UsageError("--sandbox sends to the built-in emulator; drop --backup-endpoint")
    if args.summary_json and args.summary_json != "-":
        out = Path(args.out or default_out(args.jobs[0]))
        check_writable(args.summary_json, "--summary-json", keep=[str(out), *args.jobs], jobs=args.jobs)
    rate_store(args)
    api_rates_of(args)
    from dispatcher.run.preflight import check_retry_unknown

    check_retry_unknown(args.retry_unknown, resume=args.resume, shared_run=args.journal_uri is not None)


def _journal_of(args: argparse.Namespace) -> None:
    """`args.journal_uri`: the run in PostgreSQL that --out names, or None for a file."""
    from dispatcher.journal.uri import is_journal_uri, parse_journal_uri, refuse_other_scheme

    refuse_other_scheme(args.out, "--out")
    args.journal_uri = parse_journal_uri(args.out) if is_journal_uri(args.out) else None
    if args.journal_uri is not None:
        from dispatcher.journal.pgsession import check_available

        check_available(args.journal_uri)
