"""The two passes of `dispatcher report` over outcome journals, which the summary, the list of those not
notified and the recipients table share. The first pass finds each job (`Jobs`), each batch's fate and
where its first and latest lines are; a second pass, the reader's own, reads the lines again for the
recipients. Memory is bounded by the batches, not by the recipients.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from dispatcher.core.status import REJECTED, RETRY, UNKNOWN, code_key
from dispatcher.journal.uri import JournalURI
from dispatcher.observe.journals import plan_of, records_of
from dispatcher.tim.apis import DEFAULT
from dispatcher.tim.codes import DROPPED

if TYPE_CHECKING:
    from dispatcher.shared.report import RunSnapshot

Place = tuple[int, int]  # (which journal, which line)
Paths = tuple[str | os.PathLike[str] | JournalURI, ...]  # the journals as the user named them
Sources = Sequence["str | os.PathLike[str] | RunSnapshot"]  # the same, opened for reading
Fates = dict[tuple[int, int], tuple[str | None, Place]]  # (job, batch) -> (final status, the place of its latest line)


@dataclasses.dataclass
class BatchSeen:
    """What the first pass learns of a batch's recipients, to count them (reconciliation) and to list
    them (the recipients table) without holding them: where its first line is, how many it names."""

    first: Place  # its first line: the whole batch (a later attempt of batchsendmsg sends only some)
    size: int | None  # recipients of its first line; None: a batch to all members
    lines: int = 1  # requests made for it
    latest_whole: bool = True  # its latest line names the whole batch and no recipient_errors
    errors: int | None = None  # recipients in its latest line's recipient_errors (None: it has none)
    resend: int = 0  # of those, the ones its latest line sends again (a retry's `resend`)


@dataclasses.dataclass
class JobInfo:
    """One job of the report: a job_id with one job_hash. Journals can hold one job_id for several jobs
    (a cron job that sends "daily" with new content every day): those never stand for each other."""

    job_id: str
    job_hash: str | None  # None: its lines carry none (rejections), see Jobs
    journal: int  # the journal of its latest line
    group_id: str | None = None
    api: str | None = None  # None: send_group_system_notification (its lines name no api)
    batches: int = 0
    rejected: str | None = None  # the reason, while the latest line about the job is a rejection
    # While the job has no job_hash yet: the batches of its lines, to be folded with it into the job of
    # the hash that a later line of its journal gives (see Jobs.of).
    unhashed: list[int] = dataclasses.field(default_factory=list)
    merged: bool = False  # folded into another: not listed
    export: dict[str, Any] | None = None  # what its latest run read of its export (a line's "export")
    # The Push Service's TaskId of each batch pushed (its latest line's): what Tencent's console knows it by.
    task_ids: dict[int, str] = dataclasses.field(default_factory=dict)


class Jobs:
    """Which job each line is about: its job_id and job_hash, so that lines of one job merge across
    journals (a run split over machines, a resumed run) and lines of different jobs never do.

    A line without a job_hash (a rejection: nothing of the job was sent) is about the job of that
    job_id in its own journal: the one whose lines there carry a hash, also when they come after it
    (a job rejected, fixed and sent on a resume). A journal whose lines of the job_id all lack one
    holds a job of its own, told apart by the journal.
    """

    def __init__(self) -> None:
        self.all: list[JobInfo] = []
        self._index: dict[tuple[str, str | int], int] = {}  # (job_id, job_hash, or the journal without one)
        self._hashes: dict[str, str] = {}  # job_id -> its latest job_hash in the journal being read
        self._journal = -1
        self.batches: dict[tuple[int, int], BatchSeen] = {}  # (job, batch) -> its recipients, see BatchSeen

    def of(self, job_id: str, job_hash: str | None, journal: int, fates: Fates) -> int:
        """The job a line of `journal` is about, made if new. `fates` are moved along when two fold."""
        if journal != self._journal:
            self._journal, self._hashes = journal, {}
        unhashed = (job_id, journal)
        if job_hash is None:
            known = self._hashes.get(job_id)
            return self._get((job_id, known) if known is not None else unhashed, job_id, None, journal)
        key = (job_id, job_hash)
        if self._hashes.get(job_id) != job_hash:
            self._hashes[job_id] = job_hash
            waiting = self._index.pop(unhashed, None)
            if waiting is not None:  # lines of this journal without a hash came first: they are this job's
                self._fold(waiting, key, job_hash, fates)
        return self._get(key, job_id, job_hash, journal)

    def find(self, job_id: str, job_hash: str) -> int | None:
        """The job of this job_id and hash, if a line or a plan named it."""
        return self._index.get((job_id, job_hash))

    def _get(self, key: tuple[str, str | int], job_id: str, job_hash: str | None, journal: int) -> int:
        found = self._index.get(key)
        if found is None:
            found = self._index[key] = len(self.all)
            self.all.append(JobInfo(job_id, job_hash, journal))
        self.all[found].journal = journal
        return found

    def _fold(self, waiting: int, key: tuple[str, str], job_hash: str, fates: Fates) -> None:
        early = self.all[waiting]
        into = self._index.get(key)
        if into is None:  # the job of this hash starts here: it keeps the place of its first line
            self._index[key] = waiting
            early.job_hash, early.unhashed = job_hash, []
            return
        # The job of this hash has lines in an earlier journal; those of `early` come after them all.
        job = self.all[into]
        job.group_id = early.group_id or job.group_id
        job.api = early.api or job.api
        job.batches = early.batches or job.batches
        job.rejected = early.rejected
        job.export = early.export or job.export
        job.task_ids.update(early.task_ids)
        for batch in early.unhashed:
            fate, place = fates.pop((waiting, batch))
            before, _ = fates.get((into, batch), (None, place))
            fates[(into, batch)] = (fate or before, place)
            moved = self.batches.pop((waiting, batch))
            kept = self.batches.get((into, batch))
            if kept is not None:  # the batch's first line is in the earlier journal: its latest is `moved`'s
                moved.first, moved.size, moved.lines = kept.first, kept.size, kept.lines + moved.lines
            self.batches[(into, batch)] = moved
        early.merged = True


def journal_records(
    paths: Sequence[str | os.PathLike[str] | RunSnapshot], jobs: Jobs | None = None, fates: Fates | None = None
) -> Iterator[tuple[Place, dict[str, Any]]]:
    """Every line of every journal, each with its place: (which journal, which line). With `jobs`, a
    run's plan (PostgreSQL keeps one) is read into them before its lines: jobs and batches that no
    line names yet are the run's too, pending."""
    for index, path in enumerate(paths):
        if jobs is not None and fates is not None:
            for planned in plan_of(path):
                info = jobs.all[jobs.of(planned.job_id, planned.job_hash, index, fates)]
                info.batches = planned.batches
                info.group_id = planned.group_id
                info.api = None if planned.api == DEFAULT else planned.api  # as the lines name it
                info.export = planned.export
        for lineno, doc in enumerate(records_of(path)):
            yield (index, lineno), doc


@dataclasses.dataclass
class FirstPass:
    """What the first pass over the lines learns: each job, each batch's fate and the codes counted."""

    jobs: Jobs
    fates: Fates
    codes: collections.Counter[str]


def first_pass(sources: Sources) -> FirstPass:
    fates: Fates = {}
    jobs = Jobs()
    codes: collections.Counter[str] = collections.Counter()
    for place, doc in journal_records(sources, jobs, fates):
        job_hash = doc.get("job_hash")
        uid = jobs.of(str(doc["job_id"]), job_hash if isinstance(job_hash, str) and job_hash else None, place[0], fates)
        info = jobs.all[uid]
        info.group_id = doc.get("group_id") or info.group_id
        info.api = doc.get("api") or info.api
        if isinstance(doc.get("export"), dict):
            info.export = doc["export"]
        if doc.get("status") == REJECTED or doc.get("batch") is None:
            info.rejected = str(doc.get("error_info") or "rejected")
            continue
        info.rejected = None
        info.batches = int(doc.get("batches") or info.batches)
        if isinstance(doc.get("task_id"), str):
            info.task_ids[int(doc["batch"])] = doc["task_id"]
        if not (doc.get("status") == UNKNOWN and doc.get("latency_ms") is None):  # a push's mark is no reply
            codes[reason_of(doc)] += 1  # as the summary counts them
        key = (uid, int(doc["batch"]))
        if info.job_hash is None and key not in fates:
            info.unhashed.append(key[1])
        fate, _ = fates.get(key, (None, place))
        if doc.get("final"):
            fate = str(doc["status"])
        elif fate == UNKNOWN:  # a line after "sent, no reply yet" (a retry): the request was not taken
            fate = None
        fates[key] = (fate, place)
        note_line(jobs.batches, key, place, doc)
    return FirstPass(jobs, fates, codes)


def note_line(
    batches: dict[tuple[int, int], BatchSeen], key: tuple[int, int], place: Place, doc: dict[str, Any]
) -> None:
    """Note a line of a batch: its first line names the whole batch; its latest, who is left and why."""
    recipients = doc.get("recipients")
    named = len(recipients) if isinstance(recipients, list) else None
    batch = batches.get(key)
    if batch is None:
        batch = batches[key] = BatchSeen(place, named)
    else:
        batch.lines += 1
    errors = doc.get("recipient_errors")
    batch.errors = len(errors) if isinstance(errors, dict) else None
    resend = doc.get("resend")
    batch.resend = len(resend) if isinstance(resend, list) and doc.get("status") == RETRY else 0
    batch.latest_whole = batch.errors is None and named == batch.size


NOT_SENT = "not sent yet"  # a planned batch no worker has sent: no reply, no code


def reason_of(doc: dict[str, Any]) -> str:
    """The code a batch's latest line was not delivered for, as the summary counts codes."""
    code = code_key(doc.get("error_code"))
    return DROPPED if code == "0" and doc.get("msg_drop_reason") else code
