"""The program's entry: the signal policy, the standard files, and the one place where an error
becomes one line on stderr and its exit status. Each command is imported when it is run."""

from __future__ import annotations

import itertools
import os
import signal
import sys
from collections.abc import Callable, Sequence

from dispatcher.cli.output import report_error
from dispatcher.cli.parser import ArgumentsError, build_parser
from dispatcher.cli.status import EXIT_INTERRUPTED, EXIT_USAGE
from dispatcher.errors import DispatcherError

# Nothing heavy at the top: the console script imports this module before `main` can install the
# signal handling.
from dispatcher.run.signals import STOP_SIGNALS


class ProcessSignals:
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


def main(argv: Sequence[str] | None = None) -> int:
    """The program. It owns the process's SIGINT, SIGTERM and SIGHUP from its first line to the
    exit (`ProcessSignals`): a signal at any moment is exit 130 with nothing sent, or, once the
    exit status is decided, changes nothing."""
    signals = ProcessSignals()
    signals.install()  # first, before anything heavy is imported
    try:
        return _main(argv, signals.decide)
    except KeyboardInterrupt:  # only ever raised before the exit status was decided
        signals.decide()
        return EXIT_INTERRUPTED
    finally:
        signals.ignore()  # also after argparse's SystemExit (--help, --version): the status is final either way


def _main(argv: Sequence[str] | None, decide: Callable[[], None]) -> int:
    _open_standard_files()
    words = list(sys.argv[1:] if argv is None else argv)
    json_errors = "--log-format=json" in words or ("--log-format", "json") in itertools.pairwise(words)
    try:
        args = build_parser().parse_args(words)
    except ArgumentsError as exc:  # one line, exit 2, like every other user error (not argparse's usage)
        report_error(str(exc), EXIT_USAGE, as_json=json_errors)
        return EXIT_USAGE
    try:
        if args.command == "send":
            from dispatcher.cli import send

            return send.run(args, decide)
        if args.command == "work":
            from dispatcher.cli import work

            return work.run(args, decide)
        if args.command == "check":
            from dispatcher.cli import check

            return check.run(args)
        if args.command == "report":
            from dispatcher.cli import report

            return report.run(args)
        if args.command == "sandbox":
            from dispatcher.cli import sandbox

            return sandbox.run(args)
        if args.command == "completion":
            from dispatcher.cli import completion

            return completion.run(args)
        from dispatcher.cli import usersig

        return usersig.run(args)
    except DispatcherError as exc:
        decide()
        if getattr(args, "log_format", "console") == "json":  # then every stderr line is one JSON object
            report_error(exc.for_cli, exc.exit_code, as_json=True)
        else:
            report_error(f"dispatcher: error: {exc.for_cli}", exc.exit_code, as_json=False)
        return exc.exit_code


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
