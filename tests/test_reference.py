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
    assert set(parsed) == {"", "send", "report", "sandbox", "usersig", "work", "check", "completion"}  # every command
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


# The reference is a page a user scans: short sentences and tables. A "sentence" is measured on the prose
# only: fenced code blocks and headings are dropped, an inline code span counts as one word, a link as its
# text, and a word is a run of non-space characters holding a letter or digit. Paragraphs, list items and
# table cells each end a sentence; inside them a sentence ends at `.`, `!` or `?` followed by a space and
# anything but a lower-case letter. The average is over paragraphs and list items (table cells are short
# by nature and would flatter it); the ceiling of 50 words holds for table cells too.
MOST_WORDS_ON_AVERAGE = 22
MOST_WORDS = 50
CODE_SPAN = re.compile(r"`[^`]*`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[^a-z\s])")
LIST_ITEM = re.compile(r"([-*]|\d+\.)\s+")


def prose(text: str) -> tuple[list[str], list[str]]:
    """The reference's prose, as (paragraphs and list items, table cells)."""
    blocks: list[str] = []
    cells: list[str] = []
    current: list[str] = []
    fenced = False

    def close() -> None:
        if current:
            blocks.append(" ".join(current))
            current.clear()

    for line in text.splitlines():
        line = line.strip()
        if line.startswith("```"):
            fenced = not fenced
            close()
        elif fenced:
            continue
        elif not line or line.startswith("#"):
            close()
        elif line.startswith("|"):
            close()
            if not set(line) <= set("|-: "):  # not the row under the header
                cells.extend(cell.strip() for cell in line.strip("|").split("|") if cell.strip())
        else:
            item = LIST_ITEM.match(line)
            if item:
                close()
                line = line[item.end() :]
            current.append(line)
    close()
    return blocks, cells


def sentence_lengths(block: str) -> list[int]:
    """The words of each sentence of one paragraph, list item or cell."""
    plain = LINK_TARGET.sub("]", CODE_SPAN.sub("CODE", block)).replace("e.g.", "eg").replace("i.e.", "ie")
    lengths = [sum(1 for word in sentence.split() if re.search(r"\w", word)) for sentence in SENTENCE_END.split(plain)]
    return [length for length in lengths if length]


def sentence_figures(text: str) -> tuple[float, list[int]]:
    """(the average words a sentence of the paragraphs and list items, every sentence's words, cells included)."""
    blocks, cells = prose(text)
    in_prose = [length for block in blocks for length in sentence_lengths(block)]
    in_cells = [length for cell in cells for length in sentence_lengths(cell)]
    return sum(in_prose) / len(in_prose), in_prose + in_cells


def test_the_measure_counts_words_and_sentences_as_a_reader_does() -> None:
    text = (
        "# A heading of many words that is not prose at all\n"
        "One two `--flag with spaces` four. Five six, e.g. seven: eight.\n"
        "Nine ten.\n\n"
        "```\ncode block words are not counted here at all\n```\n"
        "- A list item of [a link](guide/x.md#y) is its own sentence\n"
        "| key | meaning |\n|---|---|\n| `k` | one two three |\n"
    )
    average, lengths = sentence_figures(text)
    assert lengths == [4, 5, 2, 10, 1, 1, 1, 3]  # the last four are the table's cells, its header's included
    assert average == 5.25  # (4 + 5 + 2 + 10) / 4: the cells are outside the average


def test_the_reference_is_written_in_short_sentences() -> None:
    average, lengths = sentence_figures(REFERENCE.read_text())
    longest = max(lengths)
    assert average < MOST_WORDS_ON_AVERAGE, f"the reference's sentences average {average:.1f} words"
    assert longest <= MOST_WORDS, (
        f"{sum(1 for n in lengths if n > MOST_WORDS)} sentences over 50 words, one of {longest}"
    )
