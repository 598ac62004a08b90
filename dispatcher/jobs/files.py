"""One file of an export as every reader of it sees it: the job's list it belongs to (`Side`), the file
itself (`Source`), and what a reading in a thread shares: the stop that ends it (`Stopped`) and the
hand-over of the GIL to the event loop (`breathe`).

These are values only; which files a job's export is, is `sources`' to say, and how each is read, its
format's (`formats`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from dispatcher.errors import PATH_CHARS, quoted

RECIPIENTS = "recipients_file"
EXCLUDE = "exclude_file"
RECIPIENTS_QUERY = "recipients_query"
EXCLUDE_QUERY = "exclude_query"


class Stopped(Exception):
    """`stop` was set: reading ends where it is, and the job being read is not yielded."""


_BREATH = 0.001  # seconds of reading between two hand-overs of the GIL
_next_breath = 0.0


def breathe() -> None:
    """Hand the GIL to the event loop for real, at most once a millisecond of reading.

    An export is read in a thread while the event loop sends. A read or a numpy call lets go of the GIL
    and takes it straight back, which keeps the loop from ever forcing a switch: it stalled for long spells.
    Sleeping hands it over; doing so after every block cost too much of the reading, so it is done once
    a millisecond (docs/guide/measurements.md#breathe)."""
    global _next_breath
    now = time.monotonic()
    if now >= _next_breath:
        time.sleep(0)
        _next_breath = now + _BREATH


@dataclasses.dataclass(frozen=True)
class Kept:
    """Where a run keeps the rows of each query it ran, so that a resume sends to the same audience: a
    directory beside a file journal, or a table in a PostgreSQL journal's database (`journal` names the
    run). `reuse`: the run resumes a journal, so a copy found there is its own; a new run starts with none.

    `read_only`: a report's, which reads the run's state and never changes it. Its copies are read,
    never made, replaced or removed, and a query with no copy runs again with nothing kept. `also`: the
    copies of the report's other journals, looked in after these, in turn."""

    directory: Path | None = None
    conninfo: str | None = dataclasses.field(default=None, repr=False)  # may hold the journal's password
    journal: str | None = None
    reuse: bool = False
    read_only: bool = False
    also: tuple[Kept, ...] = ()


def beside(journal: Path) -> Path:
    """The directory of a file journal's copies: `<journal>.queries/`, found wherever the journal is."""
    return journal.with_name(journal.name + ".queries")


@dataclasses.dataclass(frozen=True)
class Side:
    """One named list of a job: its recipients (recipients_file, recipients_query) or its suppression
    list (exclude_file, exclude_query)."""

    field: str  # recipients_file or exclude_file; recipients_query or exclude_query
    name: str  # as the job gives it: a file's name or glob, or a query's text
    column: str | None
    format: str | None  # as the job gives it; None: from each file's name
    database: str | None = None  # a query's: the URI it runs on (its password never shown)
    kept: Kept | None = None  # a query's: where the run keeps its rows (None: nowhere, a dry run's)

    @property
    def column_field(self) -> str:
        return "recipients_column" if self.field in (RECIPIENTS, RECIPIENTS_QUERY) else "exclude_column"

    @property
    def format_field(self) -> str:
        return "recipients_format" if self.field in (RECIPIENTS, RECIPIENTS_QUERY) else "exclude_format"

    @property
    def label(self) -> str:
        if self.database is not None:
            return f"the {self.field}"
        return quoted(self.name, bare=True, limit=PATH_CHARS)


@dataclasses.dataclass(frozen=True)
class Stored:
    """What identifies an object in a store (`remote`): its size and its version, the ETag (S3) or the
    generation (GCS), which changes whenever the object is written."""

    scheme: str  # s3:// or gs://
    size: int
    version: str


@dataclasses.dataclass(frozen=True)
class Source:
    """One file of an export: a shard, or the export itself."""

    path: Path
    name: str  # as shown and hashed: the job's name, or the match of its glob (relative like it)
    format: str  # a name in formats.REGISTRY, or of an origin in sources.ORIGINS (a query)
    compression: str | None  # GZIP, ZSTD (inputs) or None (a non-text stream's is found from its first bytes)
    stream: bool  # a FIFO, `<(cmd)`, a device: it can be read once only
    # An object in a store (its name is its URI): `path` is then the local copy it is read from, once made.
    stored: Stored | None = None

    @property
    def label(self) -> str:
        return quoted(self.name, bare=True, limit=PATH_CHARS)
