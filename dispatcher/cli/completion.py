"""`dispatcher completion bash|zsh`: a completion script made from the parser itself (shtab), so it
knows every command and flag of this version."""

from __future__ import annotations

import argparse

from dispatcher.cli.output import write_stdout
from dispatcher.cli.status import EXIT_OK


def run(args: argparse.Namespace) -> int:
    import shtab

    from dispatcher.cli.parser import build_parser

    write_stdout(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK
