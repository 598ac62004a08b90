"""What was read of a job's export (its files, rows, duplicates, suppressed IDs): a value the dry run
shows, the journal keeps for the report, and the plan of a shared run stores."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Stats:
    """What was read of a job's export: the dry run shows it, and the journal keeps it for the report."""

    files: tuple[str, ...]
    rows: int  # UserIDs read (a text export's blank lines are none)
    distinct: int
    excluded: int  # distinct recipients found in the suppression list
    columns: tuple[str, ...] = ()  # the column read of each file (a table export)
    exclude_files: tuple[str, ...] = ()
    exclude_rows: int = 0

    @property
    def duplicates(self) -> int:
        return self.rows - self.distinct

    @property
    def recipients(self) -> int:
        return self.distinct - self.excluded

    def shown(self) -> dict[str, object]:
        """For a dry run's --summary-json: the files by name."""
        doc: dict[str, object] = {"files": list(self.files)}
        if self.columns:
            doc["columns"] = list(self.columns)
        doc.update(rows=self.rows, distinct=self.distinct, duplicates=self.duplicates, excluded=self.excluded)
        if self.exclude_files:
            doc.update(exclude_files=list(self.exclude_files), exclude_rows=self.exclude_rows)
        return doc

    def text(self) -> str:
        """One line for a dry run: the files, rows, distinct recipients, duplicates and excluded."""
        parts = []
        if self.files:
            parts.append(_files(self.files))
        if self.columns and len(set(self.columns)) == 1:
            parts.append(f"column {self.columns[0]}")
        parts.append(f"{self.rows:,} rows, {self.distinct:,} distinct, {self.duplicates:,} duplicates")
        excluded = f"{self.excluded:,} excluded"
        if self.exclude_files:
            excluded += f" (exclude_file: {_files(self.exclude_files)}, {self.exclude_rows:,} rows)"
        return ", ".join([*parts, excluded])

    def to_json(self) -> dict[str, int]:
        doc = {
            "files": len(self.files),
            "rows": self.rows,
            "distinct": self.distinct,
            "duplicates": self.duplicates,
            "excluded": self.excluded,
        }
        if self.exclude_files:
            doc["exclude_files"] = len(self.exclude_files)
            doc["exclude_rows"] = self.exclude_rows
        return doc


def _files(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return f"1 file ({names[0]})"
    if len(names) == 2:
        return f"2 files ({names[0]}, {names[1]})"
    return f"{len(names):,} files ({names[0]} ... {names[-1]})"
