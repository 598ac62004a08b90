-- The run's row, the send's lock and its heartbeat (dispatcher/shared/liveness.py, open.py).

-- try_lock --
SELECT pg_try_advisory_lock(hashtext(%s))

-- holder --
SELECT holder, extract(epoch FROM clock_timestamp() - beat_at) FROM dispatcher.journal_runs WHERE journal = %s

-- run_row --
SELECT rate, rate_store, max_attempts, message_quota, plan_complete FROM dispatcher.journal_runs WHERE journal = %s

-- exists --
SELECT 1 FROM dispatcher.journal_runs WHERE journal = %s

-- begin_send --
INSERT INTO dispatcher.journal_runs (journal, holder, beat_at, rate, rate_store, max_attempts, message_quota)
VALUES (%s, %s, clock_timestamp(), %s, %s, %s, %s) ON CONFLICT (journal) DO UPDATE SET
holder = excluded.holder, beat_at = excluded.beat_at, rate = excluded.rate,
rate_store = excluded.rate_store, max_attempts = excluded.max_attempts,
message_quota = excluded.message_quota

-- beat --
UPDATE dispatcher.journal_runs SET beat_at = clock_timestamp() WHERE journal = %s AND holder = %s

-- let_go --
UPDATE dispatcher.journal_runs SET holder = NULL, beat_at = NULL WHERE journal = %s AND holder = %s

-- status --
SELECT plan_complete, (SELECT count(*) FROM dispatcher.journal_batches WHERE journal = %(j)s AND NOT final)
FROM dispatcher.journal_runs WHERE journal = %(j)s

-- try_lock_shared --
SELECT pg_try_advisory_lock_shared(hashtext(%s))

-- unlock_shared --
SELECT pg_advisory_unlock_shared(hashtext(%s))

-- outcomes --
SELECT doc FROM dispatcher.journal_outcomes WHERE journal = %s ORDER BY seq
