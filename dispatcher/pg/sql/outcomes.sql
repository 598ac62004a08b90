-- The outcome lines of a run in PostgreSQL (dispatcher/journal/postgres.py).

-- commit --
-- A worker's round of lines: each batch's latest line where the worker still holds its claim, under
-- the claim's number, and no final line yet; then every line of a batch so taken, and every line
-- about no batch (a rejection), in the order written. The arrays go as binary (%b): psycopg would
-- escape every quote of every line in Python otherwise (~0.5 ms a request).
WITH u AS (SELECT * FROM unnest(%(job)b::text[], %(batch)b::int[], %(claim)b::bigint[], %(final)b::bool[], %(status)b::text[], %(doc)b::text[]) AS u(job_id, batch, claim, final, status, doc)),
taken AS (UPDATE dispatcher.journal_batches b SET last_doc = u.doc, final = u.final,
  status = CASE WHEN u.final THEN u.status ELSE b.status END,
  claimed_by = CASE WHEN u.final THEN NULL ELSE b.claimed_by END,
  lease_until = CASE WHEN u.final THEN NULL ELSE b.lease_until END FROM u
  WHERE b.journal = %(j)s AND b.job_id = u.job_id AND b.batch = u.batch AND b.claim = u.claim
  AND b.claimed_by = %(me)s AND NOT b.final RETURNING b.job_id, b.batch),
written AS (INSERT INTO dispatcher.journal_outcomes (journal, doc) SELECT %(j)s, l.doc
  FROM unnest(%(lines)b::text[], %(line_job)b::text[], %(line_batch)b::int[]) WITH ORDINALITY AS l(doc, job_id, batch, n)
  WHERE l.batch IS NULL OR EXISTS (SELECT 1 FROM taken t WHERE t.job_id = l.job_id AND t.batch = l.batch)
  ORDER BY l.n)
SELECT job_id, batch FROM taken
