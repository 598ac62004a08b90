-- The run's plan, as its send stores it (dispatcher/shared/plan.py).

-- planned --
SELECT job_id, job_hash FROM dispatcher.journal_jobs WHERE journal = %s

-- reopen_failed --
UPDATE dispatcher.journal_batches SET final = false WHERE journal = %s AND status = 'failed' AND final

-- reopened --
SELECT job_id, batch FROM dispatcher.journal_batches WHERE journal = %s AND status = 'failed' AND NOT final

-- copy_jobs --
COPY dispatcher.journal_jobs (journal, job_id, job_hash, api, group_id, group_type, fields, named,
recipient_count, batch_size, source, export) FROM STDIN

-- copy_batches --
COPY dispatcher.journal_batches (journal, job_id, batch, recipients, random) FROM STDIN

-- withdraw --
UPDATE dispatcher.journal_batches SET final = true, status = 'withdrawn', claimed_by = NULL,
lease_until = NULL WHERE journal = %s AND job_id = %s AND NOT final

-- complete --
UPDATE dispatcher.journal_runs SET plan_complete = true WHERE journal = %s
