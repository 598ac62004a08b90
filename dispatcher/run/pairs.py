"""The one place that knows both stores: a journal store gives a run its source and its journal port."""

from __future__ import annotations

from dispatcher.core.ports import BatchSource, Journal
from dispatcher.journal.lifecycle import FileLifecycle, SharedLifecycle
from dispatcher.journal.store import JournalStore, SharedRun
from dispatcher.run.config import RunConfig
from dispatcher.run.sources.claims import Claims
from dispatcher.run.sources.local import LocalJobs


def pair_of(journal: JournalStore, run: RunConfig) -> tuple[BatchSource, Journal]:
    """Where the run's batches come from and where their fates go: the jobs files into a file, or a
    run shared in PostgreSQL, whose plan the send's jobs go into and whose claims every worker sends."""
    if isinstance(journal, SharedRun):
        claims = Claims(journal, run.jobs, run.batch_size, resume=run.resume, retry_failed=run.retry_failed)
        return claims, SharedLifecycle(journal)
    return LocalJobs(run.jobs, run.batch_size, run.retry_failed), FileLifecycle(journal)
