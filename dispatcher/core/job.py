"""A job: one validated line of a jobs file, whoever reads it (the jobs files, or a shared run's plan)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Protocol

from dispatcher.core.export import Stats
from dispatcher.tim.apis import DEFAULT_ENDPOINT, Endpoint

DERIVED_ID_PREFIX = "auto-"  # of the job_ids made from a job's content (tim.apis: derived_id)
# The `file` of a job given from Python (`Runner(jobs=...)`), whose `line` is its index among them. A NUL
# is in no file's name, so no jobs file is ever taken for one.
IN_MEMORY = "\x00jobs"


def place(file: str, line: int) -> str:
    """Where a job was given: `jobs.jsonl:3` (its file and line), or `jobs[2]` (the third given from Python)."""
    return f"jobs[{line}]" if file == IN_MEMORY else f"{file}:{line}"


class Recipients(Protocol):
    """The de-duplicated recipients of a job, in file order; iterable more than once."""

    def __iter__(self) -> Iterator[str]: ...


@dataclasses.dataclass(frozen=True)
class InlineRecipients:
    ids: tuple[str, ...]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)


@dataclasses.dataclass(frozen=True)
class Job:
    job_id: str
    file: str
    line: int
    group_id: str | None  # None: one-to-one messages (batchsendmsg)
    group_type: str | None
    recipients: Recipients | None  # None: all members of the group
    recipient_count: int  # named recipients after de-duplication; 0 for all members
    batch_size: int
    job_hash: str
    derived_id: bool = False  # job_id made from the content: the job gave none
    endpoint: Endpoint = DEFAULT_ENDPOINT  # the API it is sent with
    fields: Mapping[str, object] = dataclasses.field(default_factory=dict)  # request fields of every batch
    duplicates: int = 0  # named recipients left out as a repeat of an earlier one
    excluded: int = 0  # named recipients left out as in the job's exclude_file
    export: Stats | None = None  # what was read of its recipients_file and exclude_file

    @property
    def batches(self) -> int:
        if self.recipients is None:
            return 1
        return -(-self.recipient_count // self.batch_size)

    @property
    def source(self) -> str:
        return place(self.file, self.line)
