"""Jobs held in memory, given from Python (`Runner(jobs=...)`): an iterable of dicts, each what one line of
a jobs file holds, or of job values (`values`: Notification, DirectMessage, GroupMessage), each its dict.
They are validated by the same rules, with the same rejections, each named by its index among them
(`jobs[2]: field GroupId: is required`) where a file's job is named by its line.

A job's values are what JSON holds (str, int, float, bool, None, list, tuple, dict). Each job is written
as JSON and read back, so that a dict and the same job's line in a file are one job: the same checks,
the same hash, the same default job_id, and a run of either resumes with the other. Its recipients
(ToMembers_Account, To_Account) may instead be any other iterable of UserIDs, a generator of millions
say, read once, in bounded memory (`streamed`). A set is refused: it has no order, and batch i must be
the same recipients on a resume.

The jobs are read one at a time, in a thread of the run's (as a file's are), and only once: a
generator will do. A recipients_file or exclude_file named by a job is relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import orjson

from dispatcher.core.job import IN_MEMORY, Job, place
from dispatcher.errors import InputError, UsageError, quoted, said
from dispatcher.jobs.files import Kept, Stopped
from dispatcher.jobs.reader import CutShort, JobIds, Rejection, RowsRead, Streamed, parse_doc
from dispatcher.jobs.values import DirectMessage, GroupMessage, Notification

# A value JSON cannot hold is refused, not written as a string (a datetime, a dataclass).
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_NOT_STREAMED = (str, bytes, bytearray, memoryview, list, tuple, Mapping)
_END = object()


@dataclasses.dataclass(frozen=True)
class MemoryJobs:
    """A run's jobs held in memory (a `reader.JobsInput`): read once, in order."""

    jobs: Iterable[object]

    def read(
        self,
        batch_size: int,
        *,
        stop: threading.Event | None = None,
        streams: bool = True,
        on_cut: CutShort | None = None,
        on_rows: RowsRead | None = None,
        kept: Kept | None = None,
    ) -> Iterator[Job | Rejection]:
        """Every job, validated, one at a time. Setting `stop` ends it, also in the middle of a job's
        recipients; the job being read then is not yielded. `on_cut` is never told: nothing is a file;
        `on_rows` hears of each job given (a row, as a jobs file's line is); `kept`: where the run keeps
        the rows of the queries it runs, as for a jobs file."""
        if kept is not None:
            from dispatcher.jobs.query import begin

            begin(kept)
        base_dir = Path.cwd()
        ids = JobIds()
        jobs = iter(self.jobs)
        index = 0
        try:
            while not (stop is not None and stop.is_set()):
                try:
                    given = next(jobs, _END)
                except Exception as exc:  # the caller's iterable failed: the run halts, as on a file it cannot read
                    raise InputError(
                        f"the jobs raised {type(exc).__name__} after {index:,} jobs: {said(exc)}"
                    ) from None
                if given is _END:
                    return
                if on_rows is not None:
                    on_rows(1)
                item = job_of(given, index, base_dir, batch_size, stop=stop, streams=streams, kept=kept)
                yield ids.checked(item, place(IN_MEMORY, index))
                index += 1
        except Stopped:
            return


def job_of(
    given: object,
    index: int,
    base_dir: Path,
    batch_size: int,
    *,
    stop: threading.Event | None = None,
    streams: bool = True,
    kept: Kept | None = None,
) -> Job | Rejection:
    """Validate the job at `index` among those given: a Job, or the Rejection that names it by its index."""
    where = place(IN_MEMORY, index)
    if isinstance(given, Notification | DirectMessage | GroupMessage):
        try:
            given = given.job()
        except UsageError as exc:
            return Rejection(where, IN_MEMORY, index, None, str(exc))
    if not isinstance(given, Mapping):
        reason = f"a job must be a dict (one JSON object) or a job value, not {type(given).__name__}"
        return Rejection(where, IN_MEMORY, index, None, reason)
    job_id = given.get("job_id")
    named = job_id if isinstance(job_id, str) and job_id else where
    group_id = given.get("GroupId")
    group = quoted(group_id, bare=True) if isinstance(group_id, str) else None

    def rejected(field: str | None, reason: str) -> Rejection:
        return Rejection(named, IN_MEMORY, index, field, reason, group)

    plain: dict[str, object] = {}
    for key, value in given.items():
        if not isinstance(key, str):
            return rejected(None, f"key {quoted(key)} must be a string")
        if isinstance(value, set | frozenset):
            return rejected(
                key, "is a set, which has no order: give a list or a generator, in the same order on a resume"
            )
        if not isinstance(value, _NOT_STREAMED) and isinstance(value, Iterable):
            continue
        if isinstance(value, list | tuple) and all(type(item) is str for item in value):
            plain[key] = list(value) if isinstance(value, tuple) else value  # its own JSON: no copy of millions
            continue
        try:
            plain[key] = orjson.loads(orjson.dumps(value, option=_STRICT))
        except orjson.JSONEncodeError as exc:
            return rejected(key, f"is not a JSON value ({exc})")
    # In the order given: the first unknown key is the one a rejection names, as in a file.
    doc = {key: plain[key] if key in plain else Streamed(value) for key, value in given.items()}
    return parse_doc(doc, IN_MEMORY, index, base_dir, batch_size, where, stop=stop, streams=streams, kept=kept)
