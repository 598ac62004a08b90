"""`dispatcher report JOURNAL...`: the summary of outcome journals, as text, one JSON object, or a page."""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import TYPE_CHECKING, BinaryIO

from dispatcher.cli.output import replace_file, write_stdout
from dispatcher.cli.status import EXIT_OK

if TYPE_CHECKING:
    from dispatcher.journal.uri import JournalURI


def run(args: argparse.Namespace) -> int:
    import stat

    from dispatcher.errors import InputError
    from dispatcher.journal.uri import is_journal_uri, parse_journal_uri, refuse_other_scheme
    from dispatcher.observe.report import render_text, summarise, undelivered

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
    read = [s for s in sources if isinstance(s, str)]
    for option, name in (("--html", args.html), ("--undelivered", args.undelivered)):
        if name not in (None, "-"):
            _not_an_input(option, name, read)
    if args.html is not None:
        _page(args, sources)
    elif args.rate is not None:
        raise InputError("--rate is the limit drawn on the page: give it with --html FILE")
    if args.recipients is None and (args.jobs is not None or args.batch_size is not None):
        raise InputError("--jobs and --batch-size add to the recipients table: give them with --recipients FILE")
    if args.jobs is None and args.batch_size is not None:
        raise InputError("--batch-size is the run's, to read its jobs again: give it with --jobs")
    if args.recipients is not None:
        from dispatcher.observe.tables import format_of

        if not _in_store(args.recipients):  # an object store's table is written there (`_recipients`)
            _not_an_input("--recipients", args.recipients, [*read, *(args.jobs or ())])
        format_of(args.recipients)  # a name of no known format is refused before anything is read
        _recipients(args, sources)
    if args.undelivered == "-":  # the list alone on stdout, to pipe on
        undelivered(sys.stdout, *sources)
        sys.stdout.flush()
        return EXIT_OK
    # With --html, the page instead of the report: the report would hold every recipient not notified.
    result = None if args.html is not None else summarise(*sources)
    if args.undelivered is not None:

        def fill(handle: BinaryIO) -> None:
            text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
            undelivered(text, *sources)
            text.flush()
            text.detach()  # the file is the caller's to close

        replace_file(args.undelivered, "the undelivered recipients", fill)
    if result is None:
        write_stdout(f"wrote the report page {args.html}\n")
    elif args.json:
        import orjson

        write_stdout(orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE).decode())
    else:
        write_stdout(render_text(result, *map(str, sources)) + "\n")
    return EXIT_OK


def _not_an_input(option: str, name: str, inputs: list[str]) -> None:
    """What report writes replaces its file whole: naming a journal or a jobs file would put it in its place."""
    from dispatcher import uris
    from dispatcher.errors import InputError

    if uris.scheme_of(name) is not None:  # read as a path, it failed as "No such file", its password shown
        raise InputError(
            f"{option} {uris.split(name).shown(keep=None)}: report writes local files; write one here, then copy it "
            "to the store (aws s3 cp, gcloud storage cp)"
        )
    for path in inputs:
        try:
            same = os.path.samefile(name, path)
        except OSError:
            continue  # either is not there (yet): not the same file
        if same:
            raise InputError(f"{option} {name} is {path}, which this report reads; name a new file for what it writes")


def _recipients(args: argparse.Namespace, sources: list[str | JournalURI]) -> None:
    """Write the recipients table whole. The writer takes the open stream: a destination that is no
    local file (an object store) needs only another way to open one."""
    import functools

    from dispatcher.errors import InputError
    from dispatcher.jobs.inputs import ExportError
    from dispatcher.observe.recipients import More, write_recipients
    from dispatcher.observe.tables import open_table
    from dispatcher.tim import rules

    more: More | None = None
    if args.jobs is not None:
        from dispatcher.observe.left_out import copies_of, left_out

        size = rules.MAX_MEMBERS if args.batch_size is None else args.batch_size
        if not 1 <= size <= rules.MAX_MEMBERS:
            raise InputError(f"--batch-size must be 1 to {rules.MAX_MEMBERS}, not {size}")
        more = functools.partial(left_out, args.jobs, size, copies_of(sources))

    def fill(handle: BinaryIO) -> None:
        sink = open_table(args.recipients, handle)
        write_recipients(sink, *sources, more=more)
        sink.close()

    if _in_store(args.recipients):
        from dispatcher.jobs.remote import write_object

        try:
            write_object(args.recipients, "the recipients table", fill)
        except ExportError as exc:
            raise InputError(str(exc)) from None
        return
    replace_file(args.recipients, "the recipients table", fill)


def _in_store(name: str) -> bool:
    """An `s3://` or `gs://` URI: the recipients table goes to that object."""
    return name.startswith(("s3://", "gs://"))


def _page(args: argparse.Namespace, sources: list[str | JournalURI]) -> None:
    """Write the page whole (a reader sees the old page or the new one)."""
    import math

    from dispatcher.errors import InputError
    from dispatcher.observe.page import render_page
    from dispatcher.tim.rules import DEFAULT_RATE

    if args.json:
        raise InputError("--html writes the report as a page and --json prints it: give one of them")
    rate = DEFAULT_RATE if args.rate is None else args.rate
    if not (math.isfinite(rate) and rate > 0):
        raise InputError(f"--rate must be a number of requests a second above 0, not {args.rate}")
    text = render_page(sources, rate=rate)
    replace_file(args.html, "the report page", lambda handle: handle.write(text.encode("utf-8")))
