"""The plan of a run, without sending: what `--dry-run` prints and what the progress display counts.

It validates every job exactly as a send does (the same reader), so a dry run that passes means the
send will reject nothing; with a journal it also counts what a resume would skip.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dispatcher.core.job import Job
from dispatcher.core.state import JournalState
from dispatcher.core.status import FAILED, UNKNOWN
from dispatcher.jobs.reader import Rejection, api_of, read_jobs
from dispatcher.observe.events import BatchSkipped, JobAccepted, JobRejected
from dispatcher.observe.summary import Summary
from dispatcher.pacing.base import MEMORY_HEADROOM, Quota
from dispatcher.pacing.budgets import api_rate
from dispatcher.pacing.group import SHARE
from dispatcher.tim import rules

if TYPE_CHECKING:
    from dispatcher.core.export import Stats

MAX_LISTED_REJECTIONS = 1000  # a plan lists this many rejections (and exports) in full and counts the rest
GROUP_PACE = rules.GROUP_RATE * SHARE  # send_group_msg's messages a second into one group, as the engine paces them


@dataclasses.dataclass
class Plan:
    jobs: int = 0
    rejected: int = 0
    unreadable: int = 0  # of those, jobs whose export could not be read (a store): the dry run exits 2
    batches: int = 0  # batches of the accepted jobs
    skipped: int = 0  # of those, batches a resume would not send again
    recipients: int = 0  # named recipients of the accepted jobs
    rate: float = 0.0
    message_quota: int = rules.DEFAULT_MESSAGE_QUOTA  # batchsendmsg's messages a minute
    batch_size: int = 500
    headroom: float = MEMORY_HEADROOM  # how far below `rate` the run's limiter paces at most
    quota_messages: int = 0  # batchsendmsg's recipients still to send, which count against its quota
    api_requests: dict[str, int] = dataclasses.field(default_factory=dict)  # API name -> requests to make
    # API name -> calls a second its budget holds (`pacing.budgets.api_rate`: --api-rate, its own, --rate)
    api_rates: dict[str, float] = dataclasses.field(default_factory=dict)
    # GroupId -> messages to send into it by an API with a pace per group (send_group_msg)
    group_messages: dict[str, int] = dataclasses.field(default_factory=dict)
    rejections: list[Rejection] = dataclasses.field(default_factory=list)
    duplicates: int = 0  # named recipients left out as a repeat of an earlier one
    excluded: int = 0  # named recipients left out as in their job's exclude_file
    exports: list[tuple[str, Stats]] = dataclasses.field(default_factory=list)  # job_id, what was read
    export_jobs: int = 0  # jobs read from an export (the first MAX_LISTED_REJECTIONS are in `exports`)
    groups: dict[str, str] = dataclasses.field(default_factory=dict)  # GroupId -> group_type, when collected

    @property
    def requests(self) -> int:
        """Requests the run makes if no request has to be retried."""
        return self.batches - self.skipped

    def _least(self) -> tuple[float, float, float]:
        """The least seconds at the call rate, under the message quota and at the busiest group's pace."""
        # Each API has a budget of its own (per app and API path), at its own rate: the one that takes
        # longest sets the pace.
        at_rate = max((self._at_rate(name) for name in self.api_requests), default=0.0)
        # The quota is paced evenly from the first message (limiter.Quota): each call waits for the
        # units of the one before it, so only the last call's own units are not waited for.
        quota = Quota(self.message_quota, rules.QUOTA_SECONDS)
        waited = max(0, self.quota_messages - min(self.quota_messages, self.batch_size))
        # Messages into one group are paced as the engine paces them (pacing.group).
        busiest = max(self.group_messages.values(), default=0)
        at_group = 0.0 if busiest <= 1 else (busiest - 1) * (1 + MEMORY_HEADROOM) / GROUP_PACE  # in-process
        return at_rate, waited * quota.unit_interval, at_group

    def rate_of(self, name: str) -> float:
        """The calls a second of the API `name`'s budget."""
        return self.api_rates.get(name, self.rate)

    def _at_rate(self, name: str) -> float:
        calls, rate = self.api_requests[name], self.rate_of(name)
        return 0.0 if calls <= 1 or rate <= 0 else (calls - 1) * (1 + self.headroom) / rate

    @property
    def slowest_api(self) -> str | None:
        """The API whose calls take longest at its rate, if any call is to be made."""
        return max(self.api_requests, key=self._at_rate, default=None)

    @property
    def paced_apart(self) -> bool:
        """Whether some API of the plan is paced at a rate other than --rate (the Push Service's)."""
        return any(self.rate_of(name) != self.rate for name in self.api_requests)

    @property
    def least_seconds(self) -> float:
        """The least time the requests can take under every limit: the call rate (starts are paced,
        never bursted), batchsendmsg's per-minute message quota and send_group_msg's pace per group."""
        return round(max(self._least()), 3)

    @property
    def least_reason(self) -> str:
        """Which limit sets the least time: "rate", "quota" or "group"."""
        at_rate, at_quota, at_group = self._least()
        if at_group > max(at_rate, at_quota):
            return "group"
        return "quota" if at_quota > at_rate else "rate"

    @property
    def busiest_group(self) -> tuple[str, int] | None:
        """The group that most group messages go into, and how many, if any does."""
        return max(self.group_messages.items(), key=lambda item: item[1], default=None)

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
            "duplicates": self.duplicates,
            "excluded": self.excluded,
            "error_codes": {},
            "least_seconds": self.least_seconds,
            "api_rates": dict(sorted(self.api_rates.items())),
            "quota_messages": self.quota_messages,
            "rejections": [
                {"job_id": r.job_id, "source": r.source, "field": r.field, "reason": r.reason} for r in self.rejections
            ],
            "exports": [{"job_id": job_id, **stats.shown()} for job_id, stats in self.exports],
        }

    def export_lines(self) -> list[str]:
        """What the dry run prints of each job read from an export (after the totals)."""
        lines = [f"export      {job_id}: {stats.text()}" for job_id, stats in self.exports]
        if self.export_jobs > len(self.exports):
            lines.append(f"export      ... and {self.export_jobs - len(self.exports)} more")
        return lines


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
    message_quota: int = rules.DEFAULT_MESSAGE_QUOTA,
    headroom: float = MEMORY_HEADROOM,
    on_rows: Callable[[int], None] | None = None,
    api_rates: Mapping[str, float] | None = None,
    retry_unknown: bool = False,
) -> Plan:
    """The plan of a run; `streams` False raises jobs.StreamedExport at an export that is a stream
    (a pre-scan must leave it to the run). `on_rows` hears of the rows read (the progress display)."""
    plan = Plan(rate=rate, message_quota=message_quota, batch_size=batch_size, headroom=headroom)
    state = state or JournalState()
    # Counted by the summary's own code from the events a send would emit, so a plan and the
    # summary of the run it plans cannot count jobs, rejections, batches or skips differently.
    tally = Summary()
    for item in read_jobs(paths, batch_size, stop=stop, streams=streams, on_rows=on_rows):
        conflict = state.conflict(item.job_id, item.job_hash, item.derived_id) if isinstance(item, Job) else None
        if isinstance(item, Job) and conflict is not None:
            item = Rejection(item.job_id, item.file, item.line, None, conflict, item.group_id, api_of(item))
        if isinstance(item, Rejection):
            tally.on_event(JobRejected(item.job_id, item.message, exit_code=item.exit_code))
            if len(plan.rejections) < MAX_LISTED_REJECTIONS:
                plan.rejections.append(item)
            continue
        tally.on_event(JobAccepted(item.job_id, item.batches, item.duplicates, item.excluded))
        plan.recipients += item.recipient_count
        if item.export is not None:
            plan.export_jobs += 1
            if len(plan.exports) < MAX_LISTED_REJECTIONS:
                plan.exports.append((item.job_id, item.export))
        skipped = 0
        quota = item.endpoint.quota_seconds is not None
        to_send = item.recipient_count if quota else 0  # recipients that count against the quota
        if state.jobs:
            for i in range(item.batches):
                if state.should_skip(item.job_id, i, retry_failed, retry_unknown):
                    skipped += 1
                    fate = state.fate(item.job_id, i)
                    tally.on_event(BatchSkipped(item.job_id, i, fate == FAILED, fate == UNKNOWN))
                    to_send -= _batch_size(item, i) if quota else 0
                elif quota:
                    # A batch a partial reply cut up sends only what it left (as the engine does).
                    left = state.undelivered(item.job_id, i, retry_failed)
                    to_send -= 0 if left is None else _batch_size(item, i) - len(left[0])
        name = item.endpoint.name
        plan.api_requests[name] = plan.api_requests.get(name, 0) + item.batches - skipped
        plan.api_rates[name] = api_rate(item.endpoint, rate, api_rates or {})
        plan.quota_messages += to_send
        if item.endpoint.group_rate is not None and item.group_id is not None and item.batches > skipped:
            plan.group_messages[item.group_id] = plan.group_messages.get(item.group_id, 0) + item.batches - skipped
        if collect_groups and item.group_id is not None:
            plan.groups.setdefault(item.group_id, item.group_type or "Public")
    plan.jobs, plan.rejected, plan.batches, plan.skipped = tally.jobs, tally.rejected, tally.batches, tally.skipped
    plan.unreadable = tally.unreadable
    plan.duplicates, plan.excluded = tally.duplicates, tally.excluded
    return plan


def _batch_size(job: Job, index: int) -> int:
    """The recipients of batch `index` of a job with named recipients (the last may be short)."""
    return min(job.batch_size, job.recipient_count - index * job.batch_size)


def least_time_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.1f} min"
    return f"{math.floor(minutes / 60)} h {round(minutes % 60)} min"
