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

from dispatcher.endpoints.batchsendmsg import DEFAULT_QUOTA, QUOTA_SECONDS
from dispatcher.events import BatchSkipped, JobAccepted, JobRejected
from dispatcher.jobs import Job, Rejection, read_jobs
from dispatcher.limiter import Quota
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
    message_quota: int = DEFAULT_QUOTA  # batchsendmsg's messages a minute
    batch_size: int = 500
    quota_messages: int = 0  # batchsendmsg's recipients still to send, which count against its quota
    api_requests: dict[str, int] = dataclasses.field(default_factory=dict)  # API name -> requests to make
    rejections: list[Rejection] = dataclasses.field(default_factory=list)
    groups: dict[str, str] = dataclasses.field(default_factory=dict)  # GroupId -> group_type, when collected

    @property
    def requests(self) -> int:
        """Requests the run makes if no request has to be retried."""
        return self.batches - self.skipped

    def _least(self) -> tuple[float, float]:
        """The least seconds at the call rate and under the message quota."""
        # Each API has a budget of its own (per app and API path): the busiest one's calls set the pace.
        calls = max(self.api_requests.values(), default=0)
        at_rate = 0.0 if calls <= 1 or self.rate <= 0 else (calls - 1) * (1 + HEADROOM) / self.rate
        # The quota is paced evenly from the first message (limiter.Quota): each call waits for the
        # units of the one before it, so only the last call's own units are not waited for.
        quota = Quota(self.message_quota, QUOTA_SECONDS)
        waited = max(0, self.quota_messages - min(self.quota_messages, self.batch_size))
        return at_rate, waited * quota.unit_interval

    @property
    def least_seconds(self) -> float:
        """The least time the requests can take under both limits: the call rate (starts are paced,
        never bursted) and batchsendmsg's per-minute message quota."""
        return round(max(self._least()), 3)

    @property
    def least_reason(self) -> str:
        """Which limit sets the least time: "rate" or "quota"."""
        at_rate, at_quota = self._least()
        return "quota" if at_quota > at_rate else "rate"

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
            "quota_messages": self.quota_messages,
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
    message_quota: int = DEFAULT_QUOTA,
) -> Plan:
    """The plan of a run; `streams` False raises jobs.StreamedExport at an export that is a stream
    (a pre-scan must leave it to the run)."""
    plan = Plan(rate=rate, message_quota=message_quota, batch_size=batch_size)
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
        skipped = 0
        if state.jobs:
            for i in range(item.batches):
                if state.should_skip(item.job_id, i, retry_failed):
                    skipped += 1
                    tally.on_event(BatchSkipped(item.job_id, i, state.fate(item.job_id, i) == FAILED))
        name = item.endpoint.name
        plan.api_requests[name] = plan.api_requests.get(name, 0) + item.batches - skipped
        if item.endpoint.counts_recipients and skipped < item.batches:
            # The job's recipients, less full batches a resume skips (the last may be short).
            plan.quota_messages += max(0, item.recipient_count - skipped * item.batch_size)
        if collect_groups and item.group_id is not None:
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
