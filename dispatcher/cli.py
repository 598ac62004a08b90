"""The command line: a thin layer over the library. Heavy imports wait until a command needs them,
so `dispatcher --help` starts fast."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dispatcher.errors import DispatcherError, JournalLockedError, UsageError

# Nothing heavy at the top: the console script imports this module before `main` can install the
# signal handling (the defaults `build_parser` shows are imported there).
from dispatcher.run.signals import STOP_SIGNALS
from dispatcher.version import DISTRIBUTION, __version__

PUSHGATEWAY_ENV = "DISPATCHER_PUSHGATEWAY"

if TYPE_CHECKING:
    from dispatcher.observe.metrics import Exporter, MetricsOptions
    from dispatcher.observe.plan import Plan
    from dispatcher.observe.summary import Summary

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
T = TypeVar("T")


class _ProcessSignals:
    """The process's handling of STOP_SIGNALS outside the event loop, from the first line of `main`
    to the exit (while a send runs, its runner's loop handler has them).

    Until the exit status is decided a signal stops what is under way (KeyboardInterrupt: exit 130;
    nothing has been sent, since sending happens only under the loop's handler). Once it is decided
    (the summary, or the error that ends the run), a signal changes nothing: the status that the
    summary and the metrics report is the one the process exits with, after the few steps left
    (the summary's file, the metrics, a push of at most 10 s). So the handlers stay until the exit:
    the default action of SIGTERM would make it 143 (killed)."""

    def __init__(self) -> None:
        self.decided = False

    def __call__(self, _signum: int, _frame: object) -> None:
        if not self.decided:
            raise KeyboardInterrupt

    def install(self) -> None:
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), self)

    def decide(self) -> None:
        """The exit status is decided: from now on a signal changes nothing (an error of the program
        itself still may, such as a summary that cannot be written: exit 2, and its metrics say so)."""
        self.decided = True

    def ignore(self) -> None:
        """`main` returns its final status. Ignored, not handled: when the interpreter exits it puts
        back the default action of every signal a Python function handles, then tears its modules
        down, and a SIGTERM in that teardown killed the process (143) after a summary that said 0."""
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)


_signals = _ProcessSignals()


class _Parser(argparse.ArgumentParser):
    """argparse, with every error one line and exit 2, as JSON under --log-format json.

    Not argparse's `exit_on_error=False`: in Python 3.11 it raises ArgumentError for a bad value,
    but "unrecognized arguments" and "the following arguments are required" still go through
    `error()`, which prints the usage too (two lines and more), and a subcommand's parser has a
    setting of its own. Overriding `error()` is the one place that catches them all."""

    def __init__(self, *args: Any, json_errors: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.json_errors = json_errors  # --log-format json: an error is one JSON object too

    def error(self, message: str) -> Any:
        # One line, exit 2, like every other user error (argparse's own prints the usage too).
        _report_error(f"{self.prog}: error: {message} (see {self.prog} --help)", EXIT_USAGE, self.json_errors)
        raise SystemExit(EXIT_USAGE)


def _report_error(message: str, exit_code: int, as_json: bool) -> None:
    """The one line of an error: text, or one JSON object when every stderr line must be one."""
    if as_json:
        import orjson

        doc = {"event": "error", "level": "error", "error": message, "exit_code": exit_code}
        _say_error(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS).decode())
    else:
        _say_error(message)


def _say_error(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # stderr is gone (closed terminal): the exit status still tells
        pass


def _open_standard_files() -> None:
    """Open /dev/null on a standard descriptor the process was started without (`>&-`): otherwise the
    journal could be opened as descriptor 1 or 2, and the summary or a log line written into it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        if getattr(sys, name) is None:  # Python sets none up for a descriptor closed at start
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 - lives as long as the process


def write_stdout(text: str) -> None:
    """Print to stdout. A closed stdout (`| head`, a closed terminal) is not an error: from then on
    output goes nowhere, and the command's exit status is what it would have been."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError:  # EPIPE, or EIO from a terminal that hung up
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    from dispatcher.run.retry import RetryPolicy
    from dispatcher.tim import config, rules
    from dispatcher.tim.usersig import DEFAULT_EXPIRE

    parser = _Parser(
        prog="dispatcher",
        description="Send Tencent Cloud IM messages (group system notifications, batchsendmsg one-to-one "
        "messages, send_group_msg group messages) from JSONL jobs, rate-limited, retried and journaled so "
        "that an interrupted run resumes without resending.",
    )
    parser.add_argument("--version", action="version", version=f"dispatcher {__version__} ({DISTRIBUTION})")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    send = commands.add_parser(
        "send",
        help="send the messages of one or more jobs files",
        description="Credentials come from TIM_SDKAPPID, TIM_IDENTIFIER and TIM_SECRET_KEY "
        "(or TIM_USERSIG); TIM_REGION or TIM_ENDPOINT may give the endpoint.",
    )
    send.add_argument("jobs", nargs="+", metavar="JOBS.jsonl", help="jobs files; - reads standard input")
    send.add_argument(
        "--out",
        help="outcome journal (default: {first jobs file without .jsonl}.outcomes.jsonl), or a run in PostgreSQL: "
        "postgresql://[user[:password]@]host[:port]/dbname?journal=NAME",
    )
    send.add_argument("--resume", action="store_true", help="continue the journal: skip every batch already final")
    send.add_argument("--retry-failed", action="store_true", help="with --resume: send the failed batches again")
    send.add_argument("--dry-run", action="store_true", help="validate and print the plan; send nothing")
    send.add_argument("--sandbox", action="store_true", help="send to the built-in emulator (no credentials needed)")
    where = send.add_mutually_exclusive_group()
    where.add_argument(
        "--region", help="china (default), singapore, seoul, tokyo, frankfurt, mumbai, silicon-valley or jakarta"
    )
    where.add_argument("--endpoint", help="base URL, overriding the region")
    # Every default below comes from where the behaviour lives, and the help shows it with
    # %(default)s: the two cannot drift apart.
    send.add_argument(
        "--rate",
        type=float,
        default=rules.DEFAULT_RATE,
        help="requests started in any one second, retries included (default %(default)s)",
    )
    send.add_argument(
        "--message-quota",
        type=int,
        default=rules.DEFAULT_MESSAGE_QUOTA,
        help="batchsendmsg: messages a minute, counted per recipient (default %(default)s; paid editions raise it)",
    )
    send.add_argument("--concurrency", type=int, help="requests in flight (default: half the rate, from 8 to 512)")
    send.add_argument(
        "--batch-size",
        type=int,
        default=rules.MAX_MEMBERS,
        help=f"recipients per request, 1-{rules.MAX_MEMBERS} (default %(default)s)",
    )
    send.add_argument(
        "--max-attempts", type=int, default=RetryPolicy.max_attempts, help="attempts of one batch (default %(default)s)"
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=config.DEFAULT_TIMEOUT,
        help="seconds for one request, at most half of them to connect (default %(default)s)",
    )
    send.add_argument("--summary-json", help="write the summary as one JSON object to this file")
    send.add_argument("--log-format", choices=("console", "json"), default="console", help="stderr log format")
    send.add_argument("--no-progress", action="store_true", help="no progress display, even on a terminal")
    send.add_argument(
        "--rate-store",
        metavar="URI",
        help="where the rate budget lives: memory:// (this process alone; the default) or "
        "redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path, "
        "postgresql://[user[:password]@]host[:port]/dbname, shared by every process "
        "of the app (env DISPATCHER_RATE_STORE; ?prefix=KEYPREFIX, default dispatcher:)",
    )
    send.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write Prometheus metrics here (node_exporter textfile format), every few seconds and at the end",
    )
    send.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on /metrics during the run (0: any)"
    )
    send.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="HOST", help="address for --metrics-port (default 127.0.0.1)"
    )
    send.add_argument(
        "--pushgateway",
        metavar="URL",
        help="push the metrics to this Prometheus Pushgateway at the end of the run (env DISPATCHER_PUSHGATEWAY, "
        "which keeps a password in the URL out of ps)",
    )
    send.add_argument(
        "--pushgateway-job", default="dispatcher", metavar="NAME", help="the job grouping key (default dispatcher)"
    )
    _lease_option(send)

    work = commands.add_parser(
        "work",
        help="join a run kept in PostgreSQL from any machine: send its batches that have no final outcome",
        description="Credentials come from TIM_SDKAPPID, TIM_IDENTIFIER and TIM_SECRET_KEY (or TIM_USERSIG); "
        "TIM_REGION or TIM_ENDPOINT may give the endpoint. Exit 0 when every batch of a complete plan is final; "
        "1 when the plan is incomplete and its send is gone (run send --resume with the jobs).",
    )
    work.add_argument("journal", metavar="URI", help="postgresql://[user[:password]@]host[:port]/dbname?journal=NAME")
    where = work.add_mutually_exclusive_group()
    where.add_argument("--region", help="as for send")
    where.add_argument("--endpoint", help="base URL, overriding the region")
    work.add_argument("--rate", type=float, help="requests started in any one second: the run's (default: the run's)")
    work.add_argument("--rate-store", metavar="URI", help="the run's rate store (env DISPATCHER_RATE_STORE)")
    work.add_argument("--concurrency", type=int, help="requests in flight (default: half the rate, from 8 to 512)")
    work.add_argument(
        "--timeout", type=float, default=config.DEFAULT_TIMEOUT, help="seconds for one request (default %(default)s)"
    )
    _lease_option(work)
    work.add_argument("--no-progress", action="store_true", help="accepted as for send (work shows no progress bar)")
    work.add_argument("--log-format", choices=("console", "json"), default="console", help="stderr log format")
    work.add_argument("--summary-json", help="write the summary as one JSON object to this file")
    work.add_argument("--metrics-file", metavar="PATH", help="as for send")
    work.add_argument("--metrics-port", type=int, metavar="PORT", help="as for send")
    work.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST", help="as for send")
    work.add_argument("--pushgateway", metavar="URL", help="as for send (env DISPATCHER_PUSHGATEWAY)")
    work.add_argument("--pushgateway-job", default="dispatcher", metavar="NAME", help="as for send")

    report = commands.add_parser(
        "report", help="summarise outcome journals (several: one run split over processes or machines)"
    )
    report.add_argument("journals", nargs="+", metavar="OUTCOMES.jsonl", help="journal files, or a PostgreSQL URI")
    report.add_argument("--json", action="store_true", help="one JSON object on stdout")

    sandbox = commands.add_parser(
        "sandbox",
        help="serve a local emulator of the endpoint on 127.0.0.1",
        description="Credentials from TIM_SDKAPPID, TIM_IDENTIFIER and TIM_SECRET_KEY; "
        "without them, the demo credentials (SDKAppID 1400000000, identifier "
        "administrator, key dispatcher-sandbox-demo-key).",
    )
    sandbox.add_argument("--port", type=int, default=8080, help="port (default %(default)s; 0 picks a free one)")
    sandbox.add_argument(
        "--groups",
        help="JSON file: {GroupId: {type, members, topics}}; without it any valid GroupId is an open Public group",
    )
    sandbox.add_argument(
        "--rate",
        type=int,
        default=rules.DEFAULT_RATE,
        help="per-app requests per second of each API before 60007 (default %(default)s)",
    )
    sandbox.add_argument(
        "--message-quota",
        type=int,
        default=rules.DEFAULT_MESSAGE_QUOTA,
        help="batchsendmsg: messages a minute, counted per recipient, before 60018 (default %(default)s)",
    )
    sandbox.add_argument(
        "--accounts", help="file of the app's accounts, one UserID a line (batchsendmsg answers 70107 for others)"
    )
    sandbox.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 10002")
    sandbox.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    sandbox.add_argument("--jitter", type=float, default=0.0, help="+- seconds of uniform jitter on the latency")
    sandbox.add_argument(
        "--arrival-jitter",
        type=float,
        default=0.0,
        help="up to this many seconds, uniform, before a request arrives and is counted (a jittery network)",
    )
    sandbox.add_argument("--drop-rate", type=float, default=0.0, help="share of connections dropped unanswered")
    sandbox.add_argument("--http502-rate", type=float, default=0.0, help="share of requests answered HTTP 502")
    sandbox.add_argument("--seed", type=int, help="seed for the faults, to repeat a rehearsal")

    usersig = commands.add_parser("usersig", help="print a UserSig for the configured admin")
    usersig.add_argument("--expire", type=int, default=DEFAULT_EXPIRE, help="lifetime in seconds (default %(default)s)")
    parser.json_errors = json_errors
    for sub in commands.choices.values():
        sub.json_errors = json_errors
    return parser


def _lease_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lease",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with a PostgreSQL journal: how long a claim on a batch holds unless renewed; at least twice "
        "--timeout (default %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The program. It owns the process's SIGINT, SIGTERM and SIGHUP from its first line to the
    exit (`_ProcessSignals`): a signal at any moment is exit 130 with nothing sent, or, once the
    exit status is decided, changes nothing."""
    global _signals
    _signals = _ProcessSignals()
    _signals.install()  # first, before anything heavy is imported
    try:
        return _main(argv)
    except KeyboardInterrupt:  # only ever raised before the exit status was decided
        _signals.decide()
        return EXIT_INTERRUPTED
    finally:
        _signals.ignore()  # also after argparse's SystemExit: the status is final either way


def _main(argv: Sequence[str] | None) -> int:
    _open_standard_files()
    words = list(sys.argv[1:] if argv is None else argv)
    json_errors = "--log-format=json" in words or ("--log-format", "json") in itertools.pairwise(words)
    args = build_parser(json_errors).parse_args(words)
    try:
        if args.command == "send":
            return _send(args)
        if args.command == "report":
            return _report(args)
        if args.command == "work":
            return _work(args)
        if args.command == "sandbox":
            return _sandbox(args)
        return _usersig(args)
    except DispatcherError as exc:
        _signals.decide()
        if getattr(args, "log_format", "console") == "json":  # then every stderr line is one JSON object
            _report_error(str(exc), exc.exit_code, as_json=True)
        else:
            _report_error(f"dispatcher: error: {exc}", exc.exit_code, as_json=False)
        return exc.exit_code


# -- send --------------------------------------------------------------------------------------


def default_out(first_jobs: str) -> str:
    name = first_jobs[: -len(".jsonl")] if first_jobs.endswith(".jsonl") else first_jobs
    return f"{name}.outcomes.jsonl"


def _journal_of(args: argparse.Namespace) -> None:
    """`args.journal_uri`: the run in PostgreSQL that --out names, or None for a file."""
    from dispatcher.journal.uri import is_journal_uri, parse_journal_uri, refuse_other_scheme

    refuse_other_scheme(args.out, "--out")
    args.journal_uri = parse_journal_uri(args.out) if is_journal_uri(args.out) else None
    if args.journal_uri is not None:
        from dispatcher.journal.postgres import check_available

        check_available(args.journal_uri)


def _rate_store(args: argparse.Namespace) -> None:
    """`args.store`: --rate-store, else DISPATCHER_RATE_STORE; a run in PostgreSQL without either paces
    in the budget its own database keeps."""
    from dispatcher.pacing import store as limiter

    named = args.rate_store or os.environ.get(limiter.ENV_VAR)
    if named is None and args.journal_uri is not None:
        args.store = limiter.in_journal_database(args.journal_uri.conninfo)
    else:
        args.store = limiter.parse_store(named or limiter.MEMORY)
    limiter.check_available(args.store)


def _check_send_args(args: argparse.Namespace) -> None:
    _journal_of(args)
    if args.jobs.count("-") > 1:
        raise UsageError("standard input (-) can be given once")
    if "-" in args.jobs and args.out is None:
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
    if args.summary_json:
        out = Path(args.out or default_out(args.jobs[0]))
        check_writable(args.summary_json, "--summary-json", keep=[str(out), *args.jobs], jobs=args.jobs)
    _rate_store(args)


def check_writable(path: str, option: str, keep: list[str], jobs: Sequence[str] = ()) -> None:
    """Refuse, before anything is sent, an output file that could not be written at the end, or whose
    writing would replace a file the run needs (`keep`: its journal and jobs; the recipients files
    that `jobs` name) or another run's journal."""
    from dispatcher.journal.outcomes import held_by

    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    for other in keep:
        # By name too: a journal that does not exist yet is created by the run, then replaced at its end.
        same_name = other != "-" and os.path.realpath(path) == os.path.realpath(other)
        with contextlib.suppress(OSError):
            if same_name or (other != "-" and target.exists() and target.samefile(other)):
                raise UsageError(f"{option} {path}: is {other}, which the run reads; choose another file")
    if target.exists():
        if not target.is_file():
            # The file is replaced by a rename at the end: a FIFO or a device (/dev/null) would be
            # replaced by a regular file, and a FIFO blocks the reading of the previous metrics.
            raise UsageError(f"{option} {path}: not a regular file (it is replaced by a new file at the end)")
        holder = held_by(target)
        if holder is not None:
            raise UsageError(f"{option} {path}: is the outcome journal of a run in progress (pid {holder or '?'})")
        export = _recipients_file_at(target, jobs)
        if export is not None:
            raise UsageError(f"{option} {path}: is the {export}, which the run reads; choose another file")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: no such directory {str(parent)!r}")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: directory {str(parent)!r} is not writable")


def _recipients_file_at(target: Path, jobs: Sequence[str]) -> str | None:
    """The field and jobs line (`recipients_file of file:line`) that names `target` (as a recipients_file
    or an exclude_file, or a match of its glob), if one does: an export is the user's data, and an
    output written over it would destroy it. Only lines that name one are parsed; standard input
    cannot be read twice and is not looked at (nor are jobs files that are not regular files)."""
    import orjson

    from dispatcher.jobs.sources import named_files

    for path in jobs:
        if path == "-" or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    if b"recipients_file" not in raw and b"exclude_file" not in raw:
                        continue
                    try:
                        doc = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
                    except orjson.JSONDecodeError:  # the run rejects it; nothing of it is read
                        continue
                    for field, named in named_files(doc, Path(path).parent) if isinstance(doc, dict) else []:
                        with contextlib.suppress(OSError, ValueError):
                            if target.samefile(named):
                                return f"{field} of {path}:{number}"
        except OSError:  # unreadable: the run says so, with its file and line
            continue
    return None


def _metrics_options(args: argparse.Namespace) -> MetricsOptions | None:
    """The metrics flags, checked before anything else, so that any later error can still be pushed;
    None without any (then prometheus_client is not even imported)."""
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
        out = str(Path(args.out or default_out(args.jobs[0])))
        keep = [out, *args.jobs, *([args.summary_json] if args.summary_json else [])]
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


def _send(args: argparse.Namespace) -> int:
    options = _metrics_options(args)
    if args.dry_run or options is None:  # a dry run sends nothing, so it has no metrics
        return _send_checked(args, None)
    import time

    from dispatcher.observe.metrics import Exporter

    exporter = Exporter(options, started=time.time())
    try:
        return _send_checked(args, exporter)
    except JournalLockedError:
        # The run that holds the journal owns its metrics too: the same textfile, the same group in
        # the Pushgateway. A second run (cron starting the next night's while this one goes on) is
        # refused in one line and must not write a failure over the live run's figures.
        exporter.stop_serving()
        raise
    except (DispatcherError, KeyboardInterrupt) as exc:
        # A run that could not start (a configuration error, say) is a failed run too: a dashboard
        # must see it. The error that stopped it is the one reported, not a second one from here.
        code = exc.exit_code if isinstance(exc, DispatcherError) else EXIT_INTERRUPTED
        _signals.decide()  # what the metrics say now is the exit status
        with contextlib.suppress(DispatcherError):
            exporter.finish(code)
        raise


def _send_checked(args: argparse.Namespace, exporter: Exporter | None) -> int:
    _check_send_args(args)
    from dispatcher.journal.outcomes import is_nonempty, load_state
    from dispatcher.observe import logs
    from dispatcher.run.preflight import check_readable
    from dispatcher.tim import config

    out = args.journal_uri or Path(args.out or default_out(args.jobs[0]))
    for path in args.jobs:
        # `send jobs/*.jsonl` a second time would otherwise read the first run's journal as jobs.
        if path != "-" and (path.endswith(".outcomes.jsonl") or Path(path).resolve() == Path(str(out)).resolve()):
            raise UsageError(f"{path} is an outcome journal, not a jobs file; leave it out of the jobs")
    if args.dry_run:
        check_readable(tuple(args.jobs))  # a send's runner checks its inputs itself
        logs.configure(args.log_format)
        # A run in PostgreSQL: the plan is made as for a new run (the database is not read by a dry run).
        state = load_state(out, repair=False) if isinstance(out, Path) and args.resume and is_nonempty(out) else None
        from dispatcher.jobs.reader import shown
        from dispatcher.observe.plan import make_plan

        plan = make_plan(
            args.jobs,
            args.batch_size,
            args.rate,
            state,
            args.retry_failed,
            message_quota=args.message_quota,
            headroom=args.store.headroom,  # a Redis budget paces at 98% of the rate, this process at 99.5%
        )
        _print_plan(plan)
        if args.summary_json:
            _write_json(
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

    creds = config.DEMO_CREDENTIALS if args.sandbox else config.credentials_from_env()
    journal_password = args.journal_uri.password if args.journal_uri is not None else ""
    logs.configure(args.log_format, secrets=(*creds.secrets(), args.store.password, journal_password))
    if exporter is not None:
        exporter.serve()
    endpoint = "" if args.sandbox else config.resolve_endpoint(args.region, args.endpoint)
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
    )
    show_progress = sys.stderr.isatty() and not args.no_progress
    import asyncio

    from dispatcher.run.runner import Runner

    runner = Runner(
        run,
        sandbox=args.sandbox,
        store=args.store,
        progress=show_progress,
        exporter=exporter,
        on_finished=_signals.decide,  # from then on a signal leaves the exit status the summary says
    )
    summary = asyncio.run(runner.run())
    _print_summary(summary)
    if args.summary_json:
        _write_json(args.summary_json, summary.to_dict())
    if exporter is not None:
        exporter.finish(summary.exit_code, summary)
    return summary.exit_code


def _print_plan(plan: Plan) -> None:
    from dispatcher.observe.plan import GROUP_PACE, least_time_text

    lines = [
        f"jobs        {plan.jobs} ({plan.jobs - plan.rejected} valid, {plan.rejected} rejected)",
        f"batches     {plan.batches}" + (f" ({plan.skipped} already final in the journal)" if plan.skipped else ""),
        f"requests    {plan.requests}",
        f"recipients  {plan.recipients} named",
        f"least time  {least_time_text(plan.least_seconds)} at {plan.rate:g} requests/s"
        + (
            f" and {plan.message_quota:,} batchsendmsg messages a minute ({plan.quota_messages:,} to send; "
            f"the {plan.least_reason} sets it)"
            if plan.quota_messages
            else ""
        )
        + (
            f"; {busiest[1]:,} messages into group {busiest[0]} at {GROUP_PACE:g} a second set it"
            if plan.least_reason == "group" and (busiest := plan.busiest_group)
            else ""
        ),
    ]
    lines += plan.export_lines()
    lines += [f"rejected    {rej.job_id}: {rej.message}" for rej in plan.rejections]
    if plan.rejected > len(plan.rejections):
        lines.append(f"rejected    ... and {plan.rejected - len(plan.rejections)} more")
    write_stdout("\n".join(lines) + "\n")


def _print_summary(summary: Summary) -> None:
    data = summary.to_dict()
    rows = [(k, v) for k, v in data.items() if k not in ("error_codes", "interrupted", "stopped")]
    codes = ", ".join(f"{k}: {v}" for k, v in data["error_codes"].items()) or "-"
    if sys.stdout.isatty():
        from rich.table import Table

        from dispatcher.observe.colour import rich_console

        table = Table(title="dispatcher summary", show_header=False)
        for key, value in rows:
            table.add_row(key, str(value))
        table.add_row("error_codes", codes)
        try:
            rich_console(stderr=False).print(table)
        except OSError:  # the terminal hung up while the run drained
            _silence_stdout()
    else:
        write_stdout("".join(f"{key:<11} {value}\n" for key, value in rows) + f"{'error_codes':<11} {codes}\n")
    import structlog

    log = structlog.get_logger("dispatcher")
    if summary.stopped:
        log.error("stopped early: fix the cause, then run again with --resume", reason=summary.stopped)
    elif summary.interrupted:
        log.warning("interrupted: run again with --resume to send the rest")


def _write_json(path: str, doc: dict[str, Any]) -> None:
    import tempfile

    import orjson

    from dispatcher.errors import OutputError

    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    directory, name = os.path.split(path)
    tmp = ""
    try:
        # A name of its own beside the summary: two runs writing one summary at once never share it.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
        with open(fd, "wb") as handle:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is not the mode the summary always had
            handle.write(data)
        os.replace(tmp, path)  # readers never see half a summary
    except BaseException as exc:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"{path}: cannot write the summary: {exc.strerror}") from None
        raise


def _umask() -> int:
    """This process's umask, read without changing it (Linux): os.umask can only set it, and setting
    it back and forth would race with a thread creating a file meanwhile."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022  # the usual one


# -- report, sandbox, usersig ------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    import stat

    from dispatcher.errors import InputError
    from dispatcher.journal.uri import JournalURI, is_journal_uri, parse_journal_uri, refuse_other_scheme
    from dispatcher.observe.report import render_text, summarise

    sources: list[str | JournalURI] = []
    for path in args.journals:
        refuse_other_scheme(path, "report")
        if is_journal_uri(path):
            sources.append(parse_journal_uri(path, option="report"))
            continue
        sources.append(path)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
        if not stat.S_ISREG(mode):  # it is read twice (fates, then recipients): a pipe would give nothing back
            raise InputError(f"{path}: not a regular file; report reads a journal twice, so give it the file")
    result = summarise(*sources)
    if args.json:
        import orjson

        write_stdout(orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE).decode())
    else:
        write_stdout(render_text(result, *map(str, sources)) + "\n")
    return EXIT_OK


def _work(args: argparse.Namespace) -> int:
    """`dispatcher work URI`: one more worker of a run kept in PostgreSQL."""
    from dispatcher.journal.uri import parse_journal_uri

    args.jobs = []
    args.journal_uri = uri = parse_journal_uri(args.journal, option="work")
    from dispatcher.journal.postgres import check_available

    check_available(uri)
    from dispatcher.run.preflight import check_options

    check_options(
        batch_size=1,
        rate=args.rate if args.rate is not None else 1.0,
        concurrency=args.concurrency,
        max_attempts=1,
        timeout=args.timeout,
        resume=False,
        retry_failed=False,
        message_quota=1,
        lease=args.lease,
        shared_run=True,
    )
    args.out = uri.shown  # what the metrics and summary checks compare other files with
    if args.summary_json:
        check_writable(args.summary_json, "--summary-json", keep=[])
    _rate_store(args)
    options = _metrics_options(args)
    exporter: Exporter | None = None
    if options is not None:
        import time

        from dispatcher.observe.metrics import Exporter

        exporter = Exporter(options, started=time.time())
    try:
        return _work_checked(args, uri, exporter)
    except (DispatcherError, KeyboardInterrupt) as exc:
        if exporter is not None:
            code = exc.exit_code if isinstance(exc, DispatcherError) else EXIT_INTERRUPTED
            _signals.decide()
            with contextlib.suppress(DispatcherError):
                exporter.finish(code)
        raise


def _work_checked(args: argparse.Namespace, uri: Any, exporter: Exporter | None) -> int:
    import asyncio

    from dispatcher.observe import logs
    from dispatcher.run.runner import work
    from dispatcher.tim import config

    creds = config.credentials_from_env()
    logs.configure(args.log_format, secrets=(*creds.secrets(), args.store.password, uri.password))
    endpoint = config.resolve_endpoint(args.region, args.endpoint)
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
            on_finished=_signals.decide,
        )
    )
    summary, incomplete = worked.summary, worked.incomplete
    _print_summary(summary)
    code = summary.exit_code
    if incomplete and code == EXIT_OK:
        summary.exit_code = code = EXIT_FAILED
        _say_error(
            f"dispatcher: the run's plan in {uri.shown} is incomplete and its send is gone: every batch planned "
            "is final; run `dispatcher send --resume` with the jobs files to plan and send the rest"
        )
    if args.summary_json:
        _write_json(args.summary_json, summary.to_dict())
    if exporter is not None:
        exporter.finish(code, summary)
    return code


def _sandbox(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from dispatcher.sandbox import Faults, Sandbox, load_accounts, load_groups
    from dispatcher.tim import config

    for name in ("fail_rate", "drop_rate", "http502_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 1")
    for name in ("latency", "jitter", "arrival_jitter"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a number of seconds, 0 or more")
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    if args.rate < 1:
        raise UsageError("--rate must be at least 1")
    if args.message_quota < 1:
        raise UsageError("--message-quota must be at least 1")
    groups = load_groups(args.groups) if args.groups else None
    accounts = load_accounts(args.accounts) if args.accounts else None
    faults = Faults(
        args.fail_rate,
        args.latency,
        args.jitter,
        args.drop_rate,
        args.http502_rate,
        args.seed,
        arrival_jitter=args.arrival_jitter,
    )
    emulator = Sandbox(
        config.sandbox_credentials(),
        groups=groups,
        rate=args.rate,
        faults=faults,
        accounts=accounts,
        message_quota=args.message_quota,
    )

    async def serve() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for name in STOP_SIGNALS:
            loop.add_signal_handler(getattr(signal, name), done.set)
        try:
            await emulator.serve(args.port, done, lambda url: write_stdout(url + "\n"))
        except OSError as exc:
            raise UsageError(f"--port {args.port}: cannot listen on 127.0.0.1: {exc.strerror}") from None

    asyncio.run(serve())
    return EXIT_OK


def _usersig(args: argparse.Namespace) -> int:
    from dispatcher.errors import ConfigError
    from dispatcher.tim import config, usersig

    creds = config.credentials_from_env(need_secret=False)
    if creds.secret_key is None:
        raise ConfigError("TIM_SECRET_KEY is needed to make a UserSig")
    if not 0 < args.expire <= usersig.MAX_EXPIRE:
        raise UsageError(f"--expire must be between 1 and {usersig.MAX_EXPIRE} seconds")
    write_stdout(usersig.generate(creds.sdkappid, creds.identifier, creds.secret_key, args.expire) + "\n")
    return EXIT_OK
