"""What a journal holds, as a run needs it: each batch's fate and last attempt, and what a partial
reply left undelivered. A resume skips, or sends again, from this alone, whichever store kept the lines."""

from __future__ import annotations

import dataclasses
from typing import Any

from dispatcher.core.job import DERIVED_ID_PREFIX
from dispatcher.core.status import FAILED, OK, REJECTED, UNKNOWN


@dataclasses.dataclass
class JobRecord:
    job_hash: str | None = None  # from the lines of requests made; None if only ever rejected
    # batch index -> (latest final status or None, last attempt number)
    batches: dict[int, tuple[str | None, int]] = dataclasses.field(default_factory=dict)
    # batch index -> what its latest line left undelivered, for batches a partial reply cut up
    # (batchsendmsg): every recipient not delivered to with its last code, and those to send next.
    left: dict[int, tuple[dict[str, int | None], tuple[str, ...]]] = dataclasses.field(default_factory=dict)

    @property
    def sent(self) -> bool:
        return self.job_hash is not None


@dataclasses.dataclass
class JournalState:
    jobs: dict[str, JobRecord] = dataclasses.field(default_factory=dict)
    sent_as: dict[str, str] = dataclasses.field(default_factory=dict)  # job_hash -> job_id it was sent under

    def fate(self, job_id: str, batch: int) -> str | None:
        """The latest final status of a batch, or None if it has none."""
        rec = self.jobs.get(job_id)
        if rec is None:
            return None
        return rec.batches.get(batch, (None, 0))[0]

    def last_attempt(self, job_id: str, batch: int) -> int:
        rec = self.jobs.get(job_id)
        return 0 if rec is None else rec.batches.get(batch, (None, 0))[1]

    def changed(self, job_id: str, job_hash: str) -> bool:
        """True when the job had requests made under a different content, recipients or batch size."""
        rec = self.jobs.get(job_id)
        return rec is not None and rec.sent and rec.job_hash != job_hash

    def conflict(self, job_id: str, job_hash: str, derived_id: bool) -> str | None:
        """Why a job must not be sent on a resume of this journal, or None.

        Besides a job changed under its id, a job without a job_id of its own whose very content
        (job_hash) the journal holds under another id: resumed under its new id, all of it would be
        sent again. That happens to an id-less job in a journal written before default ids were made
        from the content (they were `file:line`), or after its job_id was taken out. Jobs that name
        their ids are left alone: two ids for one content is then what the user wrote.
        """
        if self.changed(job_id, job_hash):
            return (
                "job changed since the outcome journal was written (content, recipients or --batch-size); "
                "nothing of it was sent"
            )
        rec = self.jobs.get(job_id)
        other = self.sent_as.get(job_hash)
        # A job that names its id is checked only against a job the journal holds under a derived id:
        # the same job, sent without a job_id and named since.
        if other is not None and not (derived_id or other.startswith(DERIVED_ID_PREFIX)):
            other = None
        if other is not None and other != job_id and not (rec is not None and rec.sent):
            return (
                f"the outcome journal holds this very job (same content, recipients and batch size) as job_id "
                f'{other!r}; nothing of it was sent again. To resume it, give it "job_id": "{other}"'
            )
        return None

    def undelivered(
        self, job_id: str, batch: int, retry_failed: bool
    ) -> tuple[tuple[str, ...], dict[str, int | None]] | None:
        """For a batch a partial reply cut up: the recipients a resume sends, and those it leaves as
        failed for good; None to send the whole batch. A recipient delivered to is never in either.
        With `retry_failed`, a failed batch's recipients that failed for good are sent again too."""
        rec = self.jobs.get(job_id)
        if rec is None or batch not in rec.left:
            return None
        errors, resend = rec.left[batch]
        if retry_failed and self.fate(job_id, batch) == FAILED:
            resend = tuple(errors)
        sending = set(resend)  # once: a batch of 500 looked up 500 times
        return resend, {uid: code for uid, code in errors.items() if uid not in sending}

    def should_skip(self, job_id: str, batch: int, retry_failed: bool, retry_unknown: bool = False) -> bool:
        """A batch whose fate is ok is never sent again; a failed one only with --retry-failed; one
        whose fate is unknown (it may have been delivered) only with --retry-unknown."""
        fate = self.fate(job_id, batch)
        return fate == OK or (fate == FAILED and not retry_failed) or (fate == UNKNOWN and not retry_unknown)

    def add(self, doc: dict[str, Any]) -> None:
        rec = self.jobs.setdefault(str(doc["job_id"]), JobRecord())
        if doc.get("status") == REJECTED or doc.get("batch") is None:
            return
        if doc.get("job_hash"):
            rec.job_hash = str(doc["job_hash"])
            self.sent_as.setdefault(rec.job_hash, str(doc["job_id"]))
        index = int(doc["batch"])
        fate, _ = rec.batches.get(index, (None, 0))
        if doc.get("final"):
            fate = str(doc["status"])
        elif fate == UNKNOWN:  # a line after "sent, no reply yet" (a retry) says the request was not taken
            fate = None
        rec.batches[index] = (fate, int(doc.get("attempt") or 0))
        errors = doc.get("recipient_errors")
        if isinstance(errors, dict):
            resend = doc.get("resend")
            rec.left[index] = (errors, tuple(resend) if isinstance(resend, list) else ())
        elif fate == OK:
            rec.left.pop(index, None)
