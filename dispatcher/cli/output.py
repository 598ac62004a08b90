"""The one place the command line prints: the plan, the summary, errors, and files of results.

A closed stdout (`| head`, a closed terminal) is not an error: output then goes nowhere and the
exit status is what it would have been. Heavy imports wait until something is printed."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from rich.table import Table

    from dispatcher.observe.plan import Plan
    from dispatcher.observe.summary import Summary


def write_stdout(text: str) -> None:
    """Print to stdout; from a failed write on, stdout goes to /dev/null."""
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


def say_error(line: str) -> None:
    """One line on stderr."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # stderr is gone (closed terminal): the exit status still tells
        pass


def report_error(message: str, exit_code: int, as_json: bool) -> None:
    """The one line of an error: text, or one JSON object when every stderr line must be one."""
    if as_json:
        import orjson

        doc = {"event": "error", "level": "error", "error": message, "exit_code": exit_code}
        say_error(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS).decode())
    else:
        say_error(message)


def print_plan(plan: Plan) -> None:
    """The dry run's plan, on stdout."""
    from dispatcher.observe.plan import GROUP_PACE, least_time_text

    slowest = plan.slowest_api
    lines = [
        f"jobs        {plan.jobs} ({plan.jobs - plan.rejected} valid, {plan.rejected} rejected)",
        f"batches     {plan.batches}" + (f" ({plan.skipped} already final in the journal)" if plan.skipped else ""),
        f"requests    {plan.requests}",
        f"recipients  {plan.recipients} named",
        f"least time  {least_time_text(plan.least_seconds)} at {plan.rate_of(slowest or ''):g} requests/s"
        + (f" ({slowest})" if plan.paced_apart and slowest else "")
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
    if plan.paced_apart:  # an API at a rate of its own (the Push Service's): each API's pace, and whose it is
        lines.append(
            "pace        "
            + ", ".join(f"{name} {plan.rate_of(name):g} requests/s" for name in sorted(plan.api_requests))
            + " (--rate, or --api-rate API=N)"
        )
    lines += plan.export_lines()
    # A line that is no job names its place as its job_id ("jobs.csv:3"), which its message starts with.
    lines += [
        f"rejected    {rej.message if rej.message.startswith(f'{rej.job_id}:') else f'{rej.job_id}: {rej.message}'}"
        for rej in plan.rejections
    ]
    if plan.rejected > len(plan.rejections):
        lines.append(f"rejected    ... and {plan.rejected - len(plan.rejections)} more")
    write_stdout("\n".join(lines) + "\n")


EXIT_MEANINGS = {
    0: "every batch delivered",
    1: "some batch failed or some job was rejected: `dispatcher report` says which and why",
    2: "stopped early: fix the cause, then run again with --resume",
    130: "interrupted: run again with --resume to send the rest",
}


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary as a person reads it: labels, thousands separators, codes with their meanings."""
    from dispatcher.tim.codes import meaning

    rows = [
        ("Jobs", f"{data['jobs']:,}" + (f" ({data['rejected']:,} rejected)" if data["rejected"] else "")),
        (
            "Batches",
            f"{data['batches']:,}: {data['ok']:,} ok, {data['failed']:,} failed, {data['skipped']:,} skipped "
            f"(already final), {data['pending']:,} pending",
        ),
        ("Requests", f"{data['requests']:,} ({data['retries']:,} retries)"),
    ]
    recipients = f"{data['recipients']:,} named"
    if data["all_members_batches"]:
        whole = data["all_members_batches"]
        recipients += f", and all members of the group in {whole:,} batch{'' if whole == 1 else 'es'}"
    rows.append(("Recipients", recipients))
    if data["duplicates"] or data["excluded"]:
        rows.append(("Left out", f"{data['duplicates']:,} duplicates, {data['excluded']:,} excluded"))
    replies = "; ".join(f"{code} {meaning(code)}: {count:,}" for code, count in data["error_codes"].items())
    rows.append(("Replies", replies or "none"))
    pace = f"{data['elapsed_s']:,.1f} s, {data['rate']:,.1f} requests a second"
    if data["paced_by"] == "quota":
        pace += (
            f", held by batchsendmsg's quota of {data['message_quota']:,} messages a minute "
            f"({data['quota_messages']:,} messages), not by --rate"
        )
    if data["rate_steps_down"]:
        steps = data["rate_steps_down"]
        pace += f"; the server said too frequent: the pace stepped down {steps:,} time{'' if steps == 1 else 's'}"
        pace += f", to {data['pace_min']:,.1f} a second at the least"
    rows.append(("Time", pace))
    rows.append(("Journal", str(data["out"])))
    if data["jobs_cut_short"]:
        rows.append(("Cut short", ", ".join(data["jobs_cut_short"]) + " became shorter while read"))
    if data["claims_lost"]:
        rows.append(("Claims lost", f"{data['claims_lost']:,} batches left to other workers"))
    if data["unanswered"]:
        rows.append(("Unanswered", unanswered_text(data)))
    if data.get("unknown"):  # the Push Service: a push whose reply never came is left, never resent on its own
        rows.append(
            ("Unknown", f"{data['unknown']:,} pushes whose reply never came: `dispatcher report` says what to check")
        )
    code = data["exit_code"]
    rows.append(("Exit status", f"{code} ({EXIT_MEANINGS.get(code, '')})"))
    return rows


MAX_NAMED_BATCHES = 10  # batches the summary's lines name (--summary-json has all of them)


def unanswered_text(data: dict[str, Any]) -> str:
    """The requests a stop at once left unanswered, for a person: how many, to whom, and what a resume does."""
    count = data["unanswered"]
    batches = data["unanswered_batches"]
    whole = sum(1 for b in batches if b["recipients"] is None)
    to = f"{data['unanswered_recipients']:,} recipients" if data["unanswered_recipients"] or not whole else ""
    if whole:
        to += f"{' and ' if to else ''}all members of the group in {whole:,} batch{'' if whole == 1 else 'es'}"
    return (
        f"{count:,} request{'' if count == 1 else 's'} in flight when the run stopped at once, to {to}: "
        "never answered (their journal lines say so); a resume sends them again, and they may have been "
        f"delivered already ({batches_text(batches)})"
    )


def batches_text(batches: list[dict[str, Any]]) -> str:
    named = ", ".join(f"{b['job_id']} batch {b['batch']}" for b in batches[:MAX_NAMED_BATCHES])
    more = len(batches) - MAX_NAMED_BATCHES
    return named + (f" and {more:,} more" if more > 0 else "")


def summary_table(data: dict[str, Any]) -> Table:
    """The summary as the table a terminal shows."""
    from rich.table import Table

    table = Table(title="dispatcher summary", show_header=False)
    for label, value in summary_rows(data):
        table.add_row(label, value)
    return table


def print_summary(summary: Summary) -> None:
    """The run's summary: a table for a person on a terminal; `key value` lines otherwise, the keys of
    --summary-json, for scripts. Then the warning that says how to go on, if the run stopped or was
    interrupted."""
    data = summary.to_dict()
    if sys.stdout.isatty():
        from dispatcher.observe.colour import rich_console

        try:
            rich_console(stderr=False).print(summary_table(data))
        except OSError:  # the terminal hung up while the run drained
            _silence_stdout()
    else:
        rows = [(k, v) for k, v in data.items() if k not in ("error_codes", "interrupted", "stopped")]
        rows = [(k, batches_text(v) or "-" if k == "unanswered_batches" else v) for k, v in rows]
        codes = ", ".join(f"{k}: {v}" for k, v in data["error_codes"].items()) or "-"
        write_stdout("".join(f"{key:<11} {value}\n" for key, value in rows) + f"{'error_codes':<11} {codes}\n")
    import structlog

    log = structlog.get_logger("dispatcher")
    if summary.stopped:
        log.error("stopped early: fix the cause, then run again with --resume", reason=summary.stopped)
    elif summary.interrupted:
        log.warning("interrupted: run again with --resume to send the rest")
    if summary.unanswered:
        log.warning(
            "requests in flight when the run stopped at once were never answered: a resume sends them again, "
            "and their recipients may get the message twice",
            requests=data["unanswered"],
            recipients=data["unanswered_recipients"],
            batches=batches_text(data["unanswered_batches"]),
        )


def write_json(path: str, doc: dict[str, Any]) -> None:
    """The summary as one JSON object in `path`, replaced whole: readers never see half of it."""
    import orjson

    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    if path == "-":  # standard output, as for the jobs
        write_stdout(data.decode())
        return
    replace_file(path, "the summary", lambda handle: handle.write(data))


def replace_file(path: str, what: str, fill: Callable[[BinaryIO], object]) -> None:
    """Write `path` through `fill`, replacing it whole: a reader sees the old file or the new one.
    A write that fails is one line naming `path` and `what` (OutputError, exit 2); the old file stays."""
    import tempfile

    from dispatcher.errors import OutputError

    directory, name = os.path.split(path)
    tmp = ""
    try:
        # A name of its own beside the file: two runs writing one file at once never share it.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
        with open(fd, "wb") as handle:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is not the mode such files always had
            fill(handle)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"{path}: cannot write {what}: {exc.strerror}") from None
        raise


def _umask() -> int:
    """This process's umask, read without changing it (Linux): os.umask can only set it, and setting
    it back and forth would race with a thread creating a file meanwhile."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022  # the usual one
