"""The end-of-run summary: counters kept from the run's events, and the JSON that cron jobs read."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from dispatcher.core.status import FAILED, OK, UNKNOWN
from dispatcher.observe.events import (
    BatchClaimed,
    BatchSkipped,
    ClaimLost,
    Event,
    Halted,
    JobAccepted,
    JobRejected,
    JobsCutShort,
    PaceStepped,
    RateWaited,
    ReplyRecorded,
    RequestUnanswered,
    StopRequested,
)
from dispatcher.pacing.base import Quota
from dispatcher.tim import rules


@dataclasses.dataclass
class Summary:
    out: str = ""
    jobs: int = 0
    rejected: int = 0
    batches: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_failed: int = 0  # of the skipped, those whose fate is failed (resumed without --retry-failed)
    requests: int = 0
    retries: int = 0
    recipients: int = 0
    all_members_batches: int = 0  # batches delivered to all members of a group: no count of recipients
    duplicates: int = 0  # named recipients of the accepted jobs left out as a repeat of an earlier one
    excluded: int = 0  # and those left out as in their job's exclude_file
    error_codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    elapsed_s: float = 0.0
    sending_s: float = 0.0  # from the first request's start to the last one's
    exit_code: int = 0
    interrupted: bool = False
    stopped: str | None = None  # why the run stopped early on a configuration error
    # Jobs files that became shorter while they were read: jobs were lost without a record.
    jobs_cut_short: list[str] = dataclasses.field(default_factory=list)
    pace_min: float | None = None  # the slowest pace a request was started at, requests a second
    rate_steps_down: int = 0  # times a "too frequent" reply stepped the pace down
    unreadable: int = 0  # rejected jobs whose export could not be read (a store): the run exits 2
    claims_lost: int = 0  # a shared run: batches this worker claimed and left to another (its lease ran out)
    # The run's limits (--rate, --message-quota), to tell which one set the pace; 0: not known.
    rate_limit: float = 0.0
    message_quota: int = 0
    quota_messages: int = 0  # messages the requests counted against batchsendmsg's quota
    first_quota_cost: int = 0  # ... of them, the first request's, which waited for none before it
    # Requests in flight when the run stopped at once: never answered (their lines say so), sent again by a resume.
    unanswered: list[RequestUnanswered] = dataclasses.field(default_factory=list)
    # Batches whose fate is unknown: a push whose reply never came (timpush_push), and of the skipped, those
    # whose fate is unknown (resumed without --retry-unknown). Either makes the exit status 1: check them.
    unknown: int = 0
    skipped_unknown: int = 0

    def on_event(self, event: Event) -> None:
        """Count one event of the run (the engine's subscriber; the dry-run plan feeds it too)."""
        if isinstance(event, ReplyRecorded):
            self.requests += 1  # made, whether or not its line could be written
            self.retries += event.retry
            self.error_codes[event.code] += 1
            if event.recorded:
                self.recipients += event.delivered
            if event.recorded and event.status == OK:
                self.ok += 1
                self.all_members_batches += event.recipients == 0  # a named batch names at least one
            elif event.recorded and event.status == FAILED:
                self.failed += 1
            elif event.recorded and event.status == UNKNOWN:
                self.unknown += 1
        elif isinstance(event, RateWaited):
            if event.pace is not None and (self.pace_min is None or event.pace < self.pace_min):
                self.pace_min = event.pace
            if event.messages and not self.quota_messages:
                self.first_quota_cost = event.messages
            self.quota_messages += event.messages
        elif isinstance(event, PaceStepped):
            self.rate_steps_down += 1
        elif isinstance(event, JobAccepted):
            self.jobs += 1
            self.batches += event.batches
            self.duplicates += event.duplicates
            self.excluded += event.excluded
        elif isinstance(event, JobRejected):
            self.jobs += 1
            self.rejected += event.recorded
            self.unreadable += event.exit_code == 2
        elif isinstance(event, BatchClaimed):  # a shared run: this worker's batches are those it claims
            self.batches += 1
        elif isinstance(event, ClaimLost):  # ... and no longer one it gave up: another worker finishes it
            self.batches -= 1
            self.claims_lost += 1
            self.recipients -= event.delivered
            self.ok -= event.status == OK
            self.failed -= event.status == FAILED
        elif isinstance(event, BatchSkipped):
            self.skipped += 1
            self.skipped_failed += event.failed
            self.skipped_unknown += event.unknown
        elif isinstance(event, StopRequested):
            self.interrupted = True
        elif isinstance(event, Halted) and event.first:
            self.stopped = event.reason
        elif isinstance(event, JobsCutShort):
            self.jobs_cut_short.append(event.path)
        elif isinstance(event, RequestUnanswered):
            self.unanswered.append(event)

    @property
    def pending(self) -> int:
        return max(0, self.batches - self.ok - self.failed - self.unknown - self.skipped)

    @property
    def rate(self) -> float:
        """Requests started per second while sending, never above --rate for a run of one API.

        Over starts that span a second or more, N starts span N-1 intervals: the pace the limiter
        held. Starts that span less all lie in one window of a second, so the rate is N, what that
        second held: N-1 over the span would read 218/s for 3 requests at --rate 200, because a
        limiter may start a request a millisecond early (pacing.memory.TOLERANCE), which only a long run
        averages out."""
        if self.sending_s < 1.0:
            return float(self.requests)
        return (self.requests - 1) / self.sending_s

    @property
    def paced_by(self) -> str:
        """What set the run's pace: "quota" when batchsendmsg's messages a minute held its requests
        longer than --rate alone would have (the least times as the dry run reckons them), else "rate"."""
        if not (self.quota_messages and self.message_quota and self.rate_limit):
            return "rate"
        at_rate = max(0, self.requests - 1) / self.rate_limit
        quota = Quota(self.message_quota, rules.QUOTA_SECONDS)
        at_quota = (self.quota_messages - self.first_quota_cost) * quota.unit_interval
        return "quota" if at_quota > at_rate else "rate"

    @property
    def unanswered_recipients(self) -> int:
        return sum(event.recipients or 0 for event in self.unanswered)

    def decide_exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.stopped or self.unreadable:
            return 2
        if self.failed or self.skipped_failed or self.rejected or self.pending or self.jobs_cut_short:
            return 1
        if self.unknown or self.skipped_unknown:
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "rejected": self.rejected,
            "batches": self.batches,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "pending": self.pending,
            "requests": self.requests,
            "retries": self.retries,
            "recipients": self.recipients,
            "all_members_batches": self.all_members_batches,
            "duplicates": self.duplicates,
            "excluded": self.excluded,
            "error_codes": dict(sorted(self.error_codes.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "rate": round(self.rate, 2),
            "out": self.out,
            "exit_code": self.exit_code,
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "jobs_cut_short": self.jobs_cut_short,
            "pace_min": None if self.pace_min is None else round(self.pace_min, 2),
            "rate_steps_down": self.rate_steps_down,
            "claims_lost": self.claims_lost,
            "paced_by": self.paced_by,
            "quota_messages": self.quota_messages,
            "message_quota": self.message_quota or None,
            "unanswered": len(self.unanswered),
            "unanswered_recipients": self.unanswered_recipients,
            "unanswered_batches": [
                {"job_id": e.job_id, "batch": e.batch, "api": e.api, "recipients": e.recipients}
                for e in sorted(self.unanswered, key=lambda e: (e.job_id, e.batch))
            ],
            "unknown": self.unknown,
        }
