"""Splitting a job's recipients into API-sized batches, deterministically.

Batch `i` of a job is always the same recipients for the same job (and batch size), so an outcome
journal can name it and a resumed run can skip it. A job without named recipients (all members of
a group, or one group message) is one batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from itertools import islice

from dispatcher.core.job import Job
from dispatcher.tim.apis.base import batch_random


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    job: Job
    index: int
    recipients: tuple[str, ...] | None  # None: all members
    # The batch's Random/MsgRandom: the same on every attempt, in every run (see tim.apis.base);
    # 0 for an API that takes none. Made once, when the batch is split off, not on every attempt.
    random: int = 0

    def body(self, recipients: Sequence[str] | None = None) -> bytes:
        """The request body, exactly as the API takes it; to `recipients` (some of the batch's, on a
        retry of those a partial reply left undelivered) when given."""
        job = self.job
        return job.endpoint.body(job.fields, self.recipients if recipients is None else recipients, self.random)


def split(job: Job) -> Iterator[Batch]:
    """The batches of a job, in order: one all-members batch, or chunks of `job.batch_size`."""
    takes_random = job.endpoint.takes_random
    if job.recipients is None:
        yield Batch(job, 0, None, batch_random(job.job_id, job.job_hash, 0) if takes_random else 0)
        return
    ids = iter(job.recipients)
    index = 0
    while chunk := tuple(islice(ids, job.batch_size)):
        yield Batch(job, index, chunk, batch_random(job.job_id, job.job_hash, index) if takes_random else 0)
        index += 1
