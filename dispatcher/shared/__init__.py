"""A run shared by workers on any machine through PostgreSQL: its plan (`plan`), the claims on its
batches (`claims`), the send's lock and heartbeat (`liveness`), how a send or a worker opens it
(`open`), and what the report reads of it (`report`). The outcome lines are the journal's
(`dispatcher.journal.postgres`); the SQL is in `dispatcher/pg/sql`."""
