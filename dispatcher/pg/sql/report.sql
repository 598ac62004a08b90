-- What the report reads of a run, in one transaction (dispatcher/shared/report.py).

-- has_runs --
SELECT to_regclass('dispatcher.journal_runs') IS NOT NULL

-- version --
SELECT version FROM dispatcher.meta WHERE component = 'journal'

-- exists --
SELECT 1 FROM dispatcher.journal_runs WHERE journal = %s

-- has_column --
-- A journal at version 1 (not yet opened by a send or work of version 2) lacks the later columns.
SELECT 1 FROM information_schema.columns WHERE table_schema = 'dispatcher' AND table_name = %s AND column_name = %s

-- records --
SELECT doc FROM dispatcher.journal_outcomes WHERE journal = %s ORDER BY seq

-- plan --
SELECT j.job_id, j.job_hash, j.api, j.group_id, j.export, (SELECT count(*) FROM dispatcher.journal_batches b
WHERE b.journal = j.journal AND b.job_id = j.job_id) FROM dispatcher.journal_jobs j WHERE j.journal = %s
ORDER BY j.job_id

-- plan_v1 --
-- A journal that no send or work of version 2 has opened yet: no export.
SELECT j.job_id, j.job_hash, j.api, j.group_id, NULL, (SELECT count(*) FROM dispatcher.journal_batches b
WHERE b.journal = j.journal AND b.job_id = j.job_id) FROM dispatcher.journal_jobs j WHERE j.journal = %s
ORDER BY j.job_id

-- unsent --
SELECT b.job_id, j.job_hash, b.batch, j.group_id, b.recipients FROM dispatcher.journal_batches b
JOIN dispatcher.journal_jobs j ON j.journal = b.journal AND j.job_id = b.job_id
WHERE b.journal = %s AND NOT b.final AND b.last_doc IS NULL ORDER BY b.seq
