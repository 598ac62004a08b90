"""The metrics flags of `send` and `work`: checked first, so that any later error can still be
pushed; and a run that could not start reported as a failed run."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dispatcher.cli.files import check_writable
from dispatcher.cli.parser import PUSHGATEWAY_ENV
from dispatcher.cli.status import EXIT_INTERRUPTED
from dispatcher.errors import DispatcherError, UsageError

if TYPE_CHECKING:
    from dispatcher.observe.metrics import Exporter, MetricsOptions


def options_of(args: argparse.Namespace, out: str) -> MetricsOptions | None:
    """The metrics flags, checked; None without any (then prometheus_client is not even imported).
    `out`: the run's journal, which the metrics file must not replace."""
    # From the environment, a password in the Pushgateway's URL stays out of `ps`, as a store's does.
    args.pushgateway = args.pushgateway or os.environ.get(PUSHGATEWAY_ENV) or None
    if args.metrics_file is None and args.metrics_port is None and args.pushgateway is None:
        return None
    from dispatcher.observe.metrics import MetricsOptions

    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise UsageError("--metrics-port must be between 0 and 65535")
    if args.pushgateway is not None:
        from dispatcher.observe.metrics import parse_gateway, shown_url

        try:
            parse_gateway(args.pushgateway)
        except ValueError as exc:  # the URL may hold a password: never shown
            raise UsageError(f"--pushgateway {shown_url(args.pushgateway)}: {exc}") from None
    if not args.pushgateway_job or "/" in args.pushgateway_job:
        raise UsageError("--pushgateway-job must be a non-empty name without /")
    if args.metrics_file is not None:
        keep = [str(Path(out)), *args.jobs, *([args.summary_json] if args.summary_json else [])]
        check_writable(args.metrics_file, "--metrics-file", keep=keep, jobs=args.jobs)
        if args.summary_json and os.path.abspath(args.summary_json) == os.path.abspath(args.metrics_file):
            raise UsageError(f"--metrics-file {args.metrics_file}: is also the --summary-json file")
    return MetricsOptions(
        file=args.metrics_file,
        port=args.metrics_port,
        host=args.metrics_host,
        pushgateway=args.pushgateway,
        job=args.pushgateway_job,
    )


def exporter(options: MetricsOptions) -> Exporter:
    """The run's exporter, started now."""
    import time

    from dispatcher.observe.metrics import Exporter

    return Exporter(options, started=time.time())


def report_failure(exporter: Exporter, exc: DispatcherError | KeyboardInterrupt, decide: Callable[[], None]) -> None:
    """A run that could not start (a configuration error, say) is a failed run too: a dashboard must
    see it. The error that stopped it is the one reported, not a second one from here."""
    code = exc.exit_code if isinstance(exc, DispatcherError) else EXIT_INTERRUPTED
    decide()  # what the metrics say now is the exit status
    with contextlib.suppress(DispatcherError):
        exporter.finish(code)
