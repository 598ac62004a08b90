"""The one place that knows both stores: a journal store gives a run its source and its journal port."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dispatcher.core.ports import BatchSource, Journal
from dispatcher.jobs.files import Kept, beside
from dispatcher.jobs.reader import JobFiles, JobsInput
from dispatcher.journal.lifecycle import FileLifecycle
from dispatcher.journal.outcomes import open_journal
from dispatcher.journal.store import JournalStore
from dispatcher.journal.uri import JournalURI
from dispatcher.run.config import RunConfig
from dispatcher.run.sources.claims import Claims
from dispatcher.run.sources.local import LocalJobs
from dispatcher.shared.lifecycle import SharedLifecycle
from dispatcher.shared.run import SharedRun


def pair_of(journal: JournalStore, run: RunConfig, jobs: JobsInput | None = None) -> tuple[BatchSource, Journal]:
    """Where the run's batches come from and where their fates go: the jobs (the files of `run`, or
    `jobs` held in memory) into a file, or a run shared in PostgreSQL, whose plan the send's jobs go
    into and whose claims every worker sends (a worker, with no jobs, only claims)."""
    if jobs is None:
        jobs = JobFiles(run.jobs)
    if isinstance(journal, SharedRun):
        planned = jobs if not isinstance(jobs, JobFiles) or jobs.paths else None
        uri = journal.uri
        kept = Kept(conninfo=uri.conninfo, journal=uri.name, reuse=run.resume)
        claims = Claims(journal, planned, run.batch_size, resume=run.resume, retry_failed=run.retry_failed, kept=kept)
        return claims, SharedLifecycle(journal)
    local = LocalJobs(jobs, run.batch_size, run.retry_failed, run.retry_unknown, kept=kept_beside(journal))
    return local, FileLifecycle(journal)


def kept_beside(journal: JournalStore) -> Kept | None:
    """Where a file journal's run keeps the rows of its queries: `<journal>.queries/` beside it. Its
    copies are read only when the journal held a run at open (a resume): a new run makes its own."""
    path = getattr(journal, "path", None)
    if not isinstance(path, Path):
        return None
    return Kept(directory=beside(path), reuse=getattr(journal, "size_at_open", 0) > 0)


async def open_store(
    out: os.PathLike[str] | JournalURI, *, resume: bool, retry_failed: bool = False, **run: Any
) -> JournalStore:
    """Open a run's journal: the file at a path (`outcomes.open_journal`), or the run in PostgreSQL
    that a URI names, as its `send` (`run` carries what the PostgreSQL run records: rate, store...)."""
    if isinstance(out, JournalURI):
        from dispatcher.shared.open import open_send

        return await open_send(out, resume=resume, retry_failed=retry_failed, **run)
    return open_journal(out, resume=resume)
