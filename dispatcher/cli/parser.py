"""The parser of every command. A flag that `send` and `work` share is added by one function here,
and every default comes from the module whose behaviour it sets: the help shows it with
%(default)s, so the two cannot drift apart. Nothing heavy is imported: `dispatcher --help` is fast."""

from __future__ import annotations

import argparse
from typing import Any

from dispatcher.version import DISTRIBUTION, __version__

PUSHGATEWAY_ENV = "DISPATCHER_PUSHGATEWAY"


class ArgumentsError(Exception):
    """A command line argparse refuses: the whole line to show, which `main` prints as every error."""


class _Parser(argparse.ArgumentParser):
    """argparse, with every error one ArgumentsError: `main` prints it as one line (JSON under
    --log-format json) and exits 2, as for every other user error.

    Not argparse's `exit_on_error=False`: in Python 3.11 it raises ArgumentError for a bad value,
    but "unrecognized arguments" and "the following arguments are required" still go through
    `error()`, which prints the usage too (two lines and more), and a subcommand's parser has a
    setting of its own. Overriding `error()` is the one place that catches them all."""

    def error(self, message: str) -> Any:
        raise ArgumentsError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dispatcher",
        description="Send Tencent Cloud IM messages (group system notifications, batchsendmsg one-to-one\n"
        "messages, send_group_msg group messages) from JSONL jobs, rate-limited, retried and journaled\n"
        "so that an interrupted run resumes without resending.",
        epilog=EXAMPLES + DOCS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dispatcher {__version__} ({DISTRIBUTION})")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _send(commands.add_parser)
    _work(commands.add_parser)
    _check(commands.add_parser)
    _report(commands.add_parser)
    _sandbox(commands.add_parser)
    _usersig(commands.add_parser)
    _completion(commands.add_parser)
    return parser


EXAMPLES = """examples:
  dispatcher send jobs.jsonl --sandbox           try it on the built-in emulator, offline
  dispatcher send jobs.jsonl --dry-run           validate and plan; send nothing
  dispatcher send jobs.jsonl --region singapore  send for real (credentials in TIM_*)
  dispatcher send jobs.jsonl --resume            finish an interrupted run; nothing is sent twice
  dispatcher report jobs.outcomes.jsonl          what was delivered, what was not, and why
"""
DOCS = """
docs: the Quickstart (docs/guide/quickstart.md) and the reference (docs/reference.md) of the source
"""


def _completion(add_parser: Any) -> None:
    completion = add_parser(
        "completion",
        help="print a shell completion script",
        epilog="examples:\n"
        "  dispatcher completion bash > ~/.local/share/bash-completion/completions/dispatcher\n"
        "  dispatcher completion zsh > ~/.zfunc/_dispatcher   # with fpath+=(~/.zfunc) before compinit\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", choices=("bash", "zsh"))


def _send(add_parser: Any) -> None:
    from dispatcher.run.retry import RetryPolicy
    from dispatcher.tim import rules

    send = add_parser(
        "send",
        help="send the messages of one or more jobs files",
        description="Credentials come from TIM_SDKAPPID, TIM_IDENTIFIER and TIM_SECRET_KEY "
        "(or TIM_USERSIG); TIM_REGION or TIM_ENDPOINT may give the endpoint.",
        epilog=EXAMPLES.replace(
            "  dispatcher report jobs.outcomes.jsonl          what was delivered, what was not, and why\n", ""
        )
        + DOCS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    _endpoint(send, region_help=_regions())
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
    _concurrency(send)
    send.add_argument(
        "--batch-size",
        type=int,
        default=rules.MAX_MEMBERS,
        help=f"recipients per request, 1-{rules.MAX_MEMBERS} (default %(default)s)",
    )
    send.add_argument(
        "--max-attempts", type=int, default=RetryPolicy.max_attempts, help="attempts of one batch (default %(default)s)"
    )
    _timeout(send, "seconds for one request, at most half of them to connect (default %(default)s)")
    _summary_json(send)
    _log_format(send)
    send.add_argument("--no-progress", action="store_true", help="no progress display, even on a terminal")
    send.add_argument("--rate-store", metavar="URI", help=_rate_store_help())
    _metrics(send, for_send=True)
    _lease(send)
    # The Push Service (issue 28): an API's rate of its own, beside --rate.
    _api_rate(send)
    send.add_argument(
        "--retry-unknown",
        action="store_true",
        help="with --resume: send again the pushes whose reply never came (status unknown). A push may have "
        "reached every user already: this can push twice. Check its TaskId or Tencent's console first",
    )


def _api_rate(parser: argparse.ArgumentParser, also: str = "") -> None:
    parser.add_argument(
        "--api-rate",
        action="append",
        metavar="API=N",
        help="one API's calls a second, repeatable: the Push Service's edition (timpush_batch=10 free, 30 "
        f"standard, the default, 40 advanced); --rate stays the other APIs'{also} (env DISPATCHER_API_RATE, "
        "comma-separated)",
    )


def _work(add_parser: Any) -> None:
    work = add_parser(
        "work",
        help="join a run kept in PostgreSQL from any machine: send its batches that have no final outcome",
        description="Credentials come from TIM_SDKAPPID, TIM_IDENTIFIER and TIM_SECRET_KEY (or TIM_USERSIG); "
        "TIM_REGION or TIM_ENDPOINT may give the endpoint. Exit 0 when every batch of a complete plan is final; "
        "1 when the plan is incomplete and its send is gone (run send --resume with the jobs).",
    )
    work.add_argument("journal", metavar="URI", help="postgresql://[user[:password]@]host[:port]/dbname?journal=NAME")
    _endpoint(work, region_help="as for send")
    work.add_argument("--rate", type=float, help="requests started in any one second: the run's (default: the run's)")
    work.add_argument("--rate-store", metavar="URI", help="the run's rate store (env DISPATCHER_RATE_STORE)")
    _api_rate(work, also="; give the send's: a budget held at another rate is refused")
    _concurrency(work)
    _timeout(work, "seconds for one request (default %(default)s)")
    _lease(work)
    work.add_argument("--no-progress", action="store_true", help="accepted as for send (work shows no progress bar)")
    _log_format(work)
    _summary_json(work)
    _metrics(work, for_send=False)


def _check(add_parser: Any) -> None:
    from dispatcher.tim import rules

    check = add_parser(
        "check",
        help="try the credentials, the region and the jobs' groups with read-only calls; send nothing",
        description="Credentials come from TIM_SDKAPPID, TIM_IDENTIFIER and TIM_SECRET_KEY (or TIM_USERSIG); "
        "TIM_REGION or TIM_ENDPOINT may give the endpoint, as for send. Exit 0 when a send would work; 1 when "
        "it would run but a group or sender does not exist, or a job is rejected; 2 when it would stop.",
    )
    check.add_argument("jobs", nargs="+", metavar="JOBS.jsonl", help="jobs files; - reads standard input")
    _endpoint(check, region_help="as for send")
    check.add_argument(
        "--rate",
        type=float,
        default=rules.DEFAULT_RATE,
        help="requests started in any one second by the check (default %(default)s)",
    )


def _report(add_parser: Any) -> None:
    from dispatcher.tim import rules

    report = add_parser(
        "report",
        help="summarise outcome journals (several: one run split over processes or machines)",
        epilog="examples:\n"
        "  dispatcher report jobs.outcomes.jsonl                     the run, and why some were not notified\n"
        "  dispatcher report jobs.outcomes.jsonl --undelivered -    every recipient not notified, as CSV\n"
        "  dispatcher report 'postgresql://db/ops?journal=nightly'  a run in PostgreSQL\n"
        "  dispatcher report jobs.outcomes.jsonl --recipients fates.parquet  every recipient's fate, as a table\n"
        + DOCS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("journals", nargs="+", metavar="OUTCOMES.jsonl", help="journal files, or a PostgreSQL URI")
    report.add_argument("--json", action="store_true", help="one JSON object on stdout")
    report.add_argument(
        "--undelivered",
        metavar="FILE",
        help="also write every named recipient not notified to FILE as CSV (job_id,user_id,error_code,meaning); "
        "- writes it alone to stdout",
    )
    report.add_argument(
        "--html",
        metavar="FILE",
        help="write the run as one self-contained page (charts, outcomes, jobs, recipients not notified) "
        "instead of printing the report",
    )
    report.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help=f"with --html: the rate limit drawn, requests a second (default {rules.DEFAULT_RATE}, as for send)",
    )
    report.add_argument(
        "--recipients",
        metavar="FILE",
        help="also write every named recipient's fate to FILE, one row each, for a warehouse; the format from "
        "its name: .parquet, .csv, .csv.gz or .jsonl",
    )
    report.add_argument(
        "--jobs",
        action="append",
        metavar="JOBS.jsonl",
        help="with --recipients: the run's jobs files, read again to list its exports' duplicates and excluded "
        "recipients, and the batches a file journal never sent (each job's hash must be the journal's)",
    )
    report.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"with --jobs: the run's --batch-size (default {rules.MAX_MEMBERS}, as for send)",
    )


def _sandbox(add_parser: Any) -> None:
    from dispatcher.tim import rules

    sandbox = add_parser(
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
    # The Push Service (issue 28).
    sandbox.add_argument(
        "--api-rate",
        action="append",
        metavar="API=N",
        help="one API's calls a second before 60007, repeatable (timpush_batch: 10 free, 30 standard, the "
        "default, 40 advanced)",
    )
    sandbox.add_argument(
        "--no-push-service", action="store_true", help="the app has no Push Service: every push is answered 90045"
    )
    sandbox.add_argument(
        "--push-daily-limit", type=int, default=100, help="timpush_push: calls a day before 90047 (default %(default)s)"
    )


def _usersig(add_parser: Any) -> None:
    from dispatcher.tim.usersig import DEFAULT_EXPIRE

    usersig = add_parser("usersig", help="print a UserSig for the configured admin")
    usersig.add_argument("--expire", type=int, default=DEFAULT_EXPIRE, help="lifetime in seconds (default %(default)s)")


# -- the flags `send` and `work` share -----------------------------------------------------------


def _endpoint(parser: argparse.ArgumentParser, region_help: str) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--region", help=region_help)
    where.add_argument("--endpoint", help="base URL, overriding the region")
    parser.add_argument(
        "--backup-endpoint",
        metavar="URL",
        help="with --endpoint: where requests go for a while after a connection to it could not be made "
        "(env TIM_BACKUP_ENDPOINT, with TIM_ENDPOINT); a region's backup domain is known already",
    )


def _regions() -> str:
    """The regions, the default first, as the help lists them."""
    from dispatcher.tim import rules

    others = [name for name in rules.REGIONS if name != rules.DEFAULT_REGION]
    return f"{rules.DEFAULT_REGION} (default), {', '.join(others[:-1])} or {others[-1]}"


def _concurrency(parser: argparse.ArgumentParser) -> None:
    from dispatcher.run.preflight import DEFAULT_CONCURRENCY_RANGE

    low, high = DEFAULT_CONCURRENCY_RANGE
    parser.add_argument(
        "--concurrency", type=int, help=f"requests in flight (default: half the rate, from {low} to {high})"
    )


def _timeout(parser: argparse.ArgumentParser, help: str) -> None:
    from dispatcher.tim.config import DEFAULT_TIMEOUT

    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help=help)


def _lease(parser: argparse.ArgumentParser) -> None:
    from dispatcher.core.lease import DEFAULT_LEASE

    parser.add_argument(
        "--lease",
        type=float,
        default=DEFAULT_LEASE,
        metavar="SECONDS",
        help="with a PostgreSQL journal: how long a claim on a batch holds unless renewed; at least twice "
        "--timeout (default %(default)s)",
    )


def _summary_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary-json", help="write the summary as one JSON object to this file")


def _log_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", choices=("console", "json"), default="console", help="stderr log format")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="warnings and errors only: no progress display and no summary on stdout (the exit status and "
        "--summary-json still tell)",
    )
    talk.add_argument("-v", "--verbose", action="store_true", help="debug lines on stderr too")


def _rate_store_help() -> str:
    from dispatcher.pacing.base import DEFAULT_PREFIX

    return (
        "where the rate budget lives: memory:// (this process alone; the default) or "
        "redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path, "
        "postgresql://[user[:password]@]host[:port]/dbname, shared by every process "
        f"of the app (env DISPATCHER_RATE_STORE; ?prefix=KEYPREFIX, default {DEFAULT_PREFIX})"
    )


def _metrics(parser: argparse.ArgumentParser, *, for_send: bool) -> None:
    """--metrics-file, --metrics-port, --metrics-host, --pushgateway, --pushgateway-job: `send`'s help
    explains them, `work`'s refers to it."""
    from dispatcher.observe.metrics_options import DEFAULT_HOST, DEFAULT_JOB

    def told(explained: str, referred: str = "as for send") -> str:
        return explained if for_send else referred

    parser.add_argument(
        "--metrics-file",
        metavar="PATH",
        help=told("write Prometheus metrics here (node_exporter textfile format), every few seconds and at the end"),
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help=told("serve Prometheus metrics on /metrics during the run (0: any)"),
    )
    parser.add_argument(
        "--metrics-host",
        default=DEFAULT_HOST,
        metavar="HOST",
        help=told("address for --metrics-port (default %(default)s)"),
    )
    parser.add_argument(
        "--pushgateway",
        metavar="URL",
        help=told(
            f"push the metrics to this Prometheus Pushgateway at the end of the run (env {PUSHGATEWAY_ENV}, "
            "which keeps a password in the URL out of ps)",
            f"as for send (env {PUSHGATEWAY_ENV})",
        ),
    )
    parser.add_argument(
        "--pushgateway-job",
        default=DEFAULT_JOB,
        metavar="NAME",
        help=told("the job grouping key (default %(default)s)"),
    )
