"""`dispatcher work URI`: one more worker of a run kept in PostgreSQL, from any machine."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from dispatcher.cli import metrics
from dispatcher.cli.files import check_writable
from dispatcher.cli.output import print_summary, say_error, write_json
from dispatcher.cli.ratestore import api_rates_of, rate_store
from dispatcher.cli.status import EXIT_FAILED, EXIT_OK
from dispatcher.errors import DispatcherError

if TYPE_CHECKING:
    from dispatcher.journal.uri import JournalURI
    from dispatcher.observe.metrics import Exporter


def run(args: argparse.Namespace, decide: Callable[[], None]) -> int:
    """`decide`: told when the exit status is decided (from then on a signal changes nothing)."""
    from dispatcher.journal.uri import parse_journal_uri

    args.jobs = []
    args.journal_uri = uri = parse_journal_uri(args.journal, option="work")
    from dispatcher.journal.pgsession import check_available

    check_available(uri)
    from dispatcher.run.preflight import check_options

    # A worker has the run's batch size, attempts and quota; its rate None takes the run's.
    check_options(rate=args.rate, concurrency=args.concurrency, timeout=args.timeout, lease=args.lease, shared_run=True)
    args.out = uri.shown  # what the metrics and summary checks compare other files with
    if args.summary_json and args.summary_json != "-":
        check_writable(args.summary_json, "--summary-json", keep=[])
    rate_store(args)
    api_rates_of(args)
    options = metrics.options_of(args, args.out)
    exporter = metrics.exporter(options) if options is not None else None
    try:
        return _checked(args, uri, exporter, decide)
    except (DispatcherError, KeyboardInterrupt) as exc:
        if exporter is not None:
            metrics.report_failure(exporter, exc, decide)
        raise


def _checked(args: argparse.Namespace, uri: JournalURI, exporter: Exporter | None, decide: Callable[[], None]) -> int:
    import asyncio

    from dispatcher.observe import logs
    from dispatcher.run.runner import work
    from dispatcher.tim import config

    creds = config.credentials_from_env()
    logs.configure(
        args.log_format,
        level=logs.level_of(args.quiet, args.verbose),
        secrets=(*creds.secrets(), args.store.password, uri.password),
        drop=("finished",) if logs.person_watching(args.log_format) and not args.quiet else (),
    )
    endpoint = config.resolve_endpoint(args.region, args.endpoint)
    backup = config.resolve_backup(args.region, args.endpoint, args.backup_endpoint)
    if exporter is not None:
        exporter.serve()

    worked = asyncio.run(
        work(
            uri,
            endpoint=endpoint,
            credentials=creds,
            rate=args.rate,
            store=args.store,
            concurrency=args.concurrency,
            request_timeout=args.timeout,
            lease=args.lease,
            exporter=exporter,
            on_finished=decide,
            backup_endpoint=backup,
            api_rates=args.api_rates,
        )
    )
    summary, incomplete = worked.summary, worked.incomplete
    if not args.quiet and args.summary_json != "-":  # `--summary-json -`: the JSON is the summary on stdout
        print_summary(summary)
    code = summary.exit_code
    if incomplete and code == EXIT_OK:
        summary.exit_code = code = EXIT_FAILED
        say_error(
            f"dispatcher: the run's plan in {uri.shown} is incomplete and its send is gone: every batch planned "
            "is final; run `dispatcher send --resume` with the jobs files to plan and send the rest"
        )
    if args.summary_json:
        write_json(args.summary_json, summary.to_dict())
    if exporter is not None:
        exporter.finish(code, summary)
    return code
