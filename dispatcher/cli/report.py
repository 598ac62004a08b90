"""`dispatcher report JOURNAL...`: the summary of outcome journals, as text or one JSON object."""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import BinaryIO

from dispatcher.cli.output import replace_file, write_stdout
from dispatcher.cli.status import EXIT_OK


def run(args: argparse.Namespace) -> int:
    import stat

    from dispatcher.errors import InputError
    from dispatcher.journal.uri import JournalURI, is_journal_uri, parse_journal_uri, refuse_other_scheme
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
    if args.undelivered == "-":  # the list alone on stdout, to pipe on
        undelivered(sys.stdout, *sources)
        sys.stdout.flush()
        return EXIT_OK
    result = summarise(*sources)
    if args.undelivered is not None:

        def fill(handle: BinaryIO) -> None:
            text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
            undelivered(text, *sources)
            text.flush()
            text.detach()  # the file is the caller's to close

        replace_file(args.undelivered, "the undelivered recipients", fill)
    if args.json:
        import orjson

        write_stdout(orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE).decode())
    else:
        write_stdout(render_text(result, *map(str, sources)) + "\n")
    return EXIT_OK
