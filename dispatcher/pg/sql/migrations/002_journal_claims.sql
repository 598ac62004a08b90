-- The journal from version 1 to 2: the claim's fencing token, the send's heartbeat, and what a
-- job's export held (for the report).
ALTER TABLE dispatcher.journal_batches ADD COLUMN claim bigint NOT NULL DEFAULT 0;
ALTER TABLE dispatcher.journal_runs ADD COLUMN beat_at timestamptz;
ALTER TABLE dispatcher.journal_jobs ADD COLUMN export text;
