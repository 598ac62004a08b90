"""Splitting a job's recipients into API-sized batches, deterministically.

Batch `i` of a job is always the same recipients for the same job (and batch size), so an outcome
journal can name it and a resumed run can skip it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from itertools import islice

import orjson

from dispatcher.jobs import Job


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    job: Job
    index: int
    recipients: tuple[str, ...] | None  # None: all members

    def body(self) -> bytes:
        """The request body, exactly as the API takes it."""
        doc: dict[str, object] = {"GroupId": self.job.group_id, "Content": self.job.content}
        if self.recipients is not None:
            doc["ToMembers_Account"] = self.recipients
        if self.job.topic_id is not None:
            doc["TopicId"] = self.job.topic_id
        return orjson.dumps(doc)


def split(job: Job) -> Iterator[Batch]:
    """The batches of a job, in order: one all-members batch, or chunks of `job.batch_size`."""
    if job.recipients is None:
        yield Batch(job, 0, None)
        return
    ids = iter(job.recipients)
    index = 0
    while chunk := tuple(islice(ids, job.batch_size)):
        yield Batch(job, index, chunk)
        index += 1
