"""The reply recorder: reply -> decision -> journal line -> event, in one step of the event loop.

Invariant: nothing here awaits. A reply's journal line is written, and its event emitted, in the
step that received the reply, so a reply is on record before anything else can happen (a stop, a
crash of another task). What a reply means is decided by `decide` (pure); this acts on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from dispatcher import uris
from dispatcher.core.batch import Batch
from dispatcher.core.job import Job
from dispatcher.core.ports import Journal
from dispatcher.core.record import record
from dispatcher.core.status import FINAL, REJECTED, UNKNOWN
from dispatcher.errors import JournalWriteError
from dispatcher.observe.events import Event, JobRejected, ReplyRecorded
from dispatcher.pacing.budgets import Budgets
from dispatcher.run.client import Reply
from dispatcher.run.config import RunConfig
from dispatcher.run.decide import Decision, Sent, SignatureUse, decide
from dispatcher.run.health import Health
from dispatcher.tim import rules
from dispatcher.tim.usersig import Signer

log = structlog.get_logger("dispatcher")

# The text of the line of a request a stop at once cancelled in flight.
UNANSWERED = "no reply: the run stopped at once with this request in flight; it may have been delivered"
# The text of the line that marks a request that must never go twice as sent, before it leaves.
SENT_UNSURE = (
    "sent, no reply yet: as the batch's latest line, the process ended with it in flight; it may have been delivered"
)


class Recorder:
    """Writes every line of a run: a reply's (`reply`) and a rejected job's (`reject`)."""

    def __init__(
        self,
        config: RunConfig,
        journal: Journal,
        *,
        emit: Callable[[Event], None],
        halt: Callable[[str], None],
        signer: Signer,
        health: Health,
        budgets: Budgets,
    ) -> None:
        self._config = config
        self._journal = journal
        self._emit = emit
        self._halt = halt
        self._signer = signer
        self._health = health
        self._budgets = budgets
        self._renewed_on_refusal = -1  # the signer's generation made because a UserSig was refused (70001)
        self._signature_accepted = -1  # the newest signer's generation the server took a request signed with
        self._told_export: set[str] = set()  # jobs whose export stats are on a line of this run

    def write(self, doc: dict[str, object]) -> bool:
        """Append one journal line; on a write error, halt the run. True if the line was written."""
        try:
            self._journal.write(doc)
        except JournalWriteError as exc:
            self._halt(str(exc))
            return False
        return True

    def unanswered(self, batch: Batch, attempt: int, sent: Sent, latency_ms: float) -> None:
        """The line of a request that a stop at once cancelled in flight: no reply will come. A retry, not
        final, as a transport fault's: a resume sends what it sent again, and the report tells why (for a
        request that must never go twice, `unknown`, final). It goes through no rule of the replies (no
        outage, pause or halt): nothing was answered."""
        reply = Reply(None, UNANSWERED, None, latency_ms)
        endpoint = batch.job.endpoint
        decision = decide(
            reply,
            rules.Verdict.RETRY,
            endpoint,
            sent,
            batch_recipients=len(batch.recipients or ()),
            last=False,
            can_renew=False,
            policy=self._config.policy,
            target=uris.shown_endpoint(self._config.endpoint),
        )
        # A retry, or `unknown` where a request must never go twice.
        self._no_reply(batch, attempt, decision.status, sent, UNANSWERED, latency_ms, decision.extra)

    def sent_unsure(self, batch: Batch, attempt: int, sent: Sent) -> bool:
        """Mark a request that must never go twice (`Endpoint.resends_unsure` False) as sent, before it
        leaves: `unknown`, final, so that a process killed with it in flight leaves it to --retry-unknown
        rather than to a resume. Its reply's line, or any later line of the batch, says what became of it."""
        job = batch.job
        extra: dict[str, object] = {"api": job.endpoint.name} if job.endpoint.names_api else {}
        return self._no_reply(batch, attempt, UNKNOWN, sent, SENT_UNSURE, None, extra)

    def _no_reply(
        self,
        batch: Batch,
        attempt: int,
        status: str,
        sent: Sent,
        error_info: str,
        latency_ms: float | None,
        extra: Mapping[str, object],
    ) -> bool:
        """The line of a request that has no reply to record: no code, no HTTP status."""
        job = batch.job
        return self.write(
            record(
                job_id=job.job_id,
                batch=batch.index,
                batches=job.batches,
                attempt=attempt,
                status=status,
                final=status in FINAL,
                group_id=job.group_id,
                recipients=sent.recipients,
                error_code=None,
                error_info=error_info,
                http_status=None,
                latency_ms=latency_ms,
                job_hash=job.job_hash,
                **self._with_export(job, extra),
            )
        )

    def _with_export(self, job: Job, extra: Mapping[str, object]) -> Mapping[str, object]:
        """The first line of a job read from an export, in each run, says what was read (for the report)."""
        if job.export is None or job.job_id in self._told_export:
            return extra
        self._told_export.add(job.job_id)
        return {**extra, "export": job.export.to_json()}

    def reject(
        self, job_id: str, group_id: str | None, message: str, api_name: str | None, exit_code: int = 1, **extra: object
    ) -> None:
        if api_name is not None:  # rejections of notifications keep the keys they always had
            extra["api"] = api_name
        written = self.write(
            record(
                job_id=job_id,
                batch=None,
                batches=None,
                attempt=0,
                status=REJECTED,
                final=True,
                group_id=group_id,
                recipients=None,
                error_code=None,
                error_info=message,
                http_status=None,
                latency_ms=None,
                job_hash=None,
                **extra,
            )
        )
        self._emit(JobRejected(job_id, message, recorded=written, exit_code=exit_code))

    def reply(
        self, batch: Batch, attempt: int, n: int, reply: Reply, number: int, first_number: int, sent: Sent
    ) -> tuple[Decision, bool]:
        """Record one reply and act on it: the decision, and whether the batch is to be sent again.

        `number` is this request's place among the run's requests, `first_number` that of the
        batch's first attempt in this run; `sent` what this request sent. Nothing here awaits."""
        endpoint = batch.job.endpoint
        signer = self._signer
        verdict = endpoint.classify(reply.error_code, reply.http_status, reply.details)
        last = n >= self._config.policy.max_attempts
        outage = self._health.observe(reply, verdict is rules.Verdict.RETRY, number, first_number, last)
        decision = decide(
            reply,
            verdict,
            endpoint,
            sent,
            batch_recipients=len(batch.recipients or ()),
            last=last,
            can_renew=signer.can_renew,
            policy=self._config.policy,
            target=uris.shown_endpoint(self._config.endpoint),
            outage=outage,
            signature=SignatureUse(
                current=sent.signed == signer.generation,
                made_on_refusal=sent.signed == self._renewed_on_refusal,
                accepted=sent.signed <= self._signature_accepted,
                now=signer.now(),
            ),
        )
        if decision.signature_accepted:  # a later UserSig the server took shows the clocks agree as well
            self._signature_accepted = max(self._signature_accepted, sent.signed)
        if decision.renew:  # once for all the requests signed with the refused UserSig, not once for each
            signer.renew()
            self._renewed_on_refusal = signer.generation
        if decision.pause:
            self._budgets.pause(decision.pause)
            if decision.signature_pause:
                log.warning("signature checks rate-limited (70050): pausing all sending", seconds=decision.pause)
        job = batch.job
        extra = self._with_export(job, decision.extra)
        written = self.write(
            record(
                job_id=job.job_id,
                batch=batch.index,
                batches=job.batches,
                attempt=attempt,
                status=decision.status,
                final=decision.status in FINAL,
                group_id=job.group_id,
                recipients=sent.recipients,
                error_code=reply.error_code,
                error_info=reply.error_info,
                http_status=reply.http_status,
                latency_ms=reply.latency_ms,
                job_hash=job.job_hash,
                **extra,
            )
        )
        self._emit(
            ReplyRecorded(
                api=endpoint.name,
                job_id=job.job_id,
                batch=batch.index,
                retry=n > 1,
                code=decision.code,
                error_info=reply.error_info or reply.details.dropped,
                verdict=verdict.value,
                status=decision.status,
                recipients=len(batch.recipients or ()),
                latency_s=None if reply.latency_ms is None else reply.latency_ms / 1000,
                recorded=written,
                delivered=decision.delivered,
                undelivered=decision.undelivered,
            )
        )
        if decision.halt is not None:
            self._halt(decision.halt)
        # Not on record, so not done: a resume sends it again.
        return decision, written and decision.again
