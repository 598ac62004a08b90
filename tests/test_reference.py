"""docs/reference.md is the contract: its command synopsis and the parser must name the same flags."""

from __future__ import annotations

import argparse
import re

from dispatcher.cli.parser import build_parser
from tests.conftest import ROOT

REFERENCE = ROOT / "docs" / "reference.md"
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def parser_flags() -> dict[str, set[str]]:
    """Every long flag of the parser, by command ("" for the top level), walked from argparse itself."""
    parser = build_parser()
    found: dict[str, set[str]] = {"": set()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                flags = {flag for a in sub._actions for flag in a.option_strings if flag.startswith("--")}
                found[name] = flags - {"--help"}  # every command has it; the synopsis leaves it out
        else:
            found[""].update(flag for flag in action.option_strings if flag.startswith("--"))
    return found


def synopsis_flags() -> dict[str, set[str]]:
    """The flags of each command in the synopsis of section 4 (a line `dispatcher COMMAND ...` and the
    indented lines that continue it)."""
    text = REFERENCE.read_text()
    section = text[text.index("## 4. Command line") :]
    block = section[section.index("```") + 3 :]
    block = block[: block.index("```")]
    found: dict[str, set[str]] = {}
    command = None
    for line in block.splitlines():
        if line.startswith("dispatcher "):
            word = line.split()[1]
            command = "" if word.startswith("--") else word
            found.setdefault(command, set())
        if command is not None:
            found[command].update(FLAG.findall(line))
    return found


def test_every_command_documents_exactly_the_flags_it_has() -> None:
    parsed = parser_flags()
    assert set(parsed) == {"", "send", "report", "sandbox", "usersig", "work"}  # the walk found every command
    assert "--metrics-file" in parsed["send"] and "--port" in parsed["sandbox"]
    documented = synopsis_flags()
    for command, flags in parsed.items():
        label = command or "dispatcher (no command)"
        assert documented.get(command, set()) - flags == set(), f"{label}: documented but not in the parser"
        assert flags - documented.get(command, set()) == set(), f"{label}: in the parser but not documented"


def test_every_flag_the_reference_names_exists() -> None:
    known = set().union(*parser_flags().values())
    named = set(FLAG.findall(REFERENCE.read_text()))
    assert named - known == set()
