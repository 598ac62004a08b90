"""The plan of a run, without sending: what `--dry-run` prints and what the progress display counts.

It validates every job exactly as a send does (the same reader), so a dry run that passes means the
send will reject nothing; with a journal it also counts what a resume would skip.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterable
from typing import Any

from dispatcher.events import BatchSkipped, JobAccepted, JobRejected
from dispatcher.jobs import Job, Rejection, read_jobs
from dispatcher.outcomes import FAILED, JournalState
from dispatcher.ratelimit import HEADROOM
from dispatcher.summary import Summary

MAX_LISTED_REJECTIONS = 1000  # a plan lists this many rejections in full and counts the rest


@dataclasses.dataclass
class Plan:
    jobs: int = 0
    rejected: int = 0
    batches: int = 0  # batches of the accepted jobs
    skipped: int = 0  # of those, batches a resume would not send again
    recipients: int = 0  # named recipients of the accepted jobs
    rate: float = 0.0
    rejections: list[Rejection] = dataclasses.field(default_factory=list)
    groups: dict[str, str] = dataclasses.field(default_factory=dict)  # GroupId -> group_type, when collected

    @property
    def requests(self) -> int:
        """Requests the run makes if no request has to be retried."""
        return self.batches - self.skipped

    @property
    def least_seconds(self) -> float:
        """The least time the requests can take at the rate (starts are paced, never bursted)."""
        if self.requests <= 1 or self.rate <= 0:
            return 0.0
        return round((self.requests - 1) * (1 + HEADROOM) / self.rate, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "rejected": self.rejected,
            "batches": self.batches,
            "ok": 0,
            "failed": 0,
            "skipped": self.skipped,
            "pending": self.requests,
            "requests": self.requests,
            "retries": 0,
            "recipients": self.recipients,
            "error_codes": {},
            "least_seconds": self.least_seconds,
            "rejections": [
                {"job_id": r.job_id, "source": r.source, "field": r.field, "reason": r.reason} for r in self.rejections
            ],
        }


def make_plan(
    paths: Iterable[str],
    batch_size: int,
    rate: float,
    state: JournalState | None = None,
    retry_failed: bool = False,
    collect_groups: bool = False,
    *,
    stop: threading.Event | None = None,
    streams: bool = True,
) -> Plan:
    """The plan of a run; `streams` False raises jobs.StreamedExport at an export that is a stream
    (a pre-scan must leave it to the run)."""
    plan = Plan(rate=rate)
    state = state or JournalState()
    # Counted by the summary's own code from the events a send would emit, so a plan and the
    # summary of the run it plans cannot count jobs, rejections, batches or skips differently.
    tally = Summary()
    for item in read_jobs(paths, batch_size, stop=stop, streams=streams):
        conflict = state.conflict(item.job_id, item.job_hash, item.derived_id) if isinstance(item, Job) else None
        if isinstance(item, Job) and conflict is not None:
            item = Rejection(item.job_id, item.file, item.line, None, conflict, item.group_id)
        if isinstance(item, Rejection):
            tally.on_event(JobRejected(item.job_id, item.message))
            if len(plan.rejections) < MAX_LISTED_REJECTIONS:
                plan.rejections.append(item)
            continue
        tally.on_event(JobAccepted(item.job_id, item.batches))
        plan.recipients += item.recipient_count
        if state.jobs:
            for i in range(item.batches):
                if state.should_skip(item.job_id, i, retry_failed):
                    tally.on_event(BatchSkipped(item.job_id, i, state.fate(item.job_id, i) == FAILED))
        if collect_groups:
            plan.groups.setdefault(item.group_id, item.group_type or "Public")
    plan.jobs, plan.rejected, plan.batches, plan.skipped = tally.jobs, tally.rejected, tally.batches, tally.skipped
    return plan


def least_time_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.1f} min"
    return f"{math.floor(minutes / 60)} h {round(minutes % 60)} min"
