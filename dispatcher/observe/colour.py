"""Whether output is coloured: the NO_COLOR and FORCE_COLOR conventions first, then the terminal.

- `NO_COLOR` set to anything but the empty string: no colour, whatever else is set (https://no-color.org).
- `FORCE_COLOR` set to anything but the empty string: colour even when the stream is not a terminal
  (https://force-color.org), say a CI log that renders ANSI colours.
- Neither: colour when the stream is a terminal.

The console log (structlog) and the rich output (progress display, summary table) both ask here, so
they never disagree. Colour is all these decide: whether the progress display and the summary table
are drawn at all still depends on the stream being a terminal, so FORCE_COLOR never changes what a
script reading stdout gets. The environment is read when the output is set up, not at import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # closed, detached or not a real stream
        return False


def wanted(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour on `stream`, by NO_COLOR, FORCE_COLOR and whether it is a terminal (in that order)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", ""):
        return False
    if env.get("FORCE_COLOR", ""):
        return True
    return _isatty(stream)


def rich_console(*, stderr: bool, environ: Mapping[str, str] | None = None) -> Console:
    """A rich Console on stderr (or stdout) whose colour is decided by `wanted`, not by rich's own
    reading of the environment (rich takes an empty FORCE_COLOR to mean "not a terminal", even on
    one, and then stops redrawing the progress display in place)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    colour = wanted(stream, environ)
    # Like Console(stderr=True) alone, it writes to whatever sys.stderr is at the time.
    return Console(stderr=stderr, force_terminal=colour or _isatty(stream), no_color=not colour)
