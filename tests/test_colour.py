"""Colour follows NO_COLOR and FORCE_COLOR, in the console log and in the rich output alike."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest
import structlog

from dispatcher.observe import colour, logs
from tests.conftest import DISPATCHER, ROOT, cli_env, run_in_pty, write_jobs

_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def colours(text: str) -> set[str]:
    """The colour codes (foreground or background) of the text's SGR sequences; bold, dim or italic
    are not colours, so NO_COLOR leaves them alone."""
    found = set()
    for params in _SGR.findall(text):
        for code in params.split(";"):
            if code and (30 <= int(code) <= 38 or 40 <= int(code) <= 48 or 90 <= int(code) <= 107):
                found.add(code)
    return found


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("environ", "terminal", "expected"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"NO_COLOR": "1"}, True, False),
        ({"NO_COLOR": "0"}, True, False),  # any value but the empty one, even "0"
        ({"NO_COLOR": ""}, True, True),  # set but empty: as if unset
        ({"FORCE_COLOR": "1"}, False, True),
        ({"FORCE_COLOR": "0"}, False, True),  # force-color.org: any value but the empty one
        ({"FORCE_COLOR": ""}, False, False),
        ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True, False),  # NO_COLOR wins
    ],
)
def test_colour_wanted(environ: dict[str, str], terminal: bool, expected: bool) -> None:
    stream = FakeTerminal() if terminal else io.StringIO()
    assert colour.wanted(stream, environ) is expected


@pytest.mark.parametrize(
    ("environ", "coloured"),
    [({}, False), ({"FORCE_COLOR": "1"}, True), ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False)],
)
def test_the_console_log_follows_force_color_and_no_color(
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    coloured: bool,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    logs.configure("console")
    structlog.get_logger("dispatcher").warning("hello", where="here")
    line = capsys.readouterr().err
    assert "hello" in line and "where" in line
    assert bool(colours(line)) is coloured


@pytest.mark.parametrize(
    ("environ", "coloured"),
    [({}, False), ({"FORCE_COLOR": "1"}, True), ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False)],
)
def test_rich_output_follows_force_color_and_no_color(
    capsys: pytest.CaptureFixture[str], environ: dict[str, str], coloured: bool
) -> None:
    colour.rich_console(stderr=True, environ=environ).print("[red]alarm[/red]")
    text = capsys.readouterr().err
    assert "alarm" in text
    assert bool(colours(text)) is coloured


def test_no_color_on_a_terminal_keeps_the_progress_and_drops_the_colour(tmp_path: Path) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"GroupId": "@TGS#2C5SZEAEF", "Content": f"n{i}", "ToMembers_Account": ["p"]} for i in range(5)],
    )
    plain = run_in_pty(DISPATCHER("send", str(jobs), "--sandbox", "--out", str(tmp_path / "a.jsonl")), tmp_path)
    assert colours(plain)  # a terminal: coloured log, bar and counts
    shown = run_in_pty(
        DISPATCHER("send", str(jobs), "--sandbox", "--out", str(tmp_path / "b.jsonl")), tmp_path, NO_COLOR="1"
    )
    assert "req/s" in shown and "5/5" in shown and "dispatcher summary" in shown
    assert colours(shown) == set()


def test_force_color_colours_the_log_of_a_run_whose_stderr_is_a_file(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"GroupId": "@TGS#2C5SZEAEF", "Content": "x"}])

    def run(name: str, **env: str) -> subprocess.CompletedProcess[str]:
        args = DISPATCHER("send", str(jobs), "--sandbox", "--out", str(tmp_path / name))
        return subprocess.run(args, env=cli_env(**env), cwd=ROOT, capture_output=True, text=True, timeout=60)

    plain, forced = run("a.jsonl"), run("b.jsonl", FORCE_COLOR="1")
    assert (plain.returncode, forced.returncode) == (0, 0)
    assert "sandbox started" in plain.stderr and colours(plain.stderr) == set()
    assert "sandbox started" in forced.stderr and colours(forced.stderr)
    # The layout of stdout is the terminal's business alone: the same plain lines for a script.
    assert forced.stdout.splitlines()[0] == plain.stdout.splitlines()[0] == "jobs        1"
