"""The formats of an export, by the name a job gives in recipients_format (or exclude_format). One line each.

A format is one module of this package holding a `Format`: its name, the ends of the file names that say
it, and how one file of it is read into clean blocks (`dedup.Clean`: validated UserIDs, one a line).
Adding a format is one new module and one line here: `sources` takes the names and suffixes from this
registry, and `exports` reads each file with its format's `read`. What every format shares stays
outside: the compression and the opening of a file (`inputs`), the Unicode encodings (`encodings`), and
a table's column checked with the rules of a UserID (`tables`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Final, Protocol

from dispatcher.jobs.dedup import Clean
from dispatcher.jobs.files import Side, Source
from dispatcher.jobs.formats.csv import CSV, TSV
from dispatcher.jobs.formats.jsonl import JSONL
from dispatcher.jobs.formats.parquet import PARQUET
from dispatcher.jobs.formats.text import TEXT


class Format(Protocol):
    """One format of an export."""

    @property
    def name(self) -> str:
        """As a job gives it in recipients_format or exclude_format."""

    @property
    def suffixes(self) -> tuple[str, ...]:
        """The ends of a file's name that say it, in lower case, before a compression's (`.csv` of `.csv.gz`)."""

    @property
    def no_columns(self) -> str | None:
        """Why a job cannot name a column of it; None: it has columns."""

    def read(
        self, source: Source, side: Side, stop: threading.Event | None, on_column: Callable[[str], None]
    ) -> Iterator[Clean]:
        """The clean blocks of one file, rows in order; `on_column` is told the column it reads, before the first.

        Raises Reject naming the file (and the row) at the first thing that keeps it from being read
        exactly, ExportError for a reason outside the job (exit 2), and Stopped once `stop` is set."""


REGISTRY: Final[dict[str, Format]] = {
    form.name: form
    for form in (
        TEXT,
        CSV,
        TSV,
        JSONL,
        PARQUET,
    )
}
DEFAULT: Final[Format] = TEXT  # the format of a file whose name says none (before formats existed: every one)

__all__ = ["DEFAULT", "REGISTRY", "Format"]
