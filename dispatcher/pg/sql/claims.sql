-- Claims on the plan's batches (dispatcher/shared/claims.py). Each claim carries its number
-- (`claim`, the fencing token): a statement about a claim names it, and touches nothing if the
-- batch was claimed again since.

-- claim --
UPDATE dispatcher.journal_batches b SET claimed_by = %(me)s, claim = b.claim + 1,
lease_until = now() + %(lease)s * interval '1 second'
FROM (SELECT job_id, batch FROM dispatcher.journal_batches WHERE journal = %(j)s AND NOT final
AND (lease_until IS NULL OR lease_until < now()) ORDER BY seq LIMIT %(n)s FOR UPDATE SKIP LOCKED) c
WHERE b.journal = %(j)s AND b.job_id = c.job_id AND b.batch = c.batch
RETURNING b.seq, b.job_id, b.batch, b.recipients, b.random, b.last_doc, b.claim

-- jobs --
SELECT job_id, job_hash, api, group_id, group_type, fields, named, recipient_count, batch_size,
source FROM dispatcher.journal_jobs WHERE journal = %s AND job_id = ANY(%b)

-- confirm --
SELECT b.job_id, b.batch FROM dispatcher.journal_batches b
JOIN unnest(%b::text[], %b::int[], %b::bigint[]) AS u(job_id, batch, claim)
ON b.job_id = u.job_id AND b.batch = u.batch AND b.claim = u.claim
WHERE b.journal = %s AND b.claimed_by = %s AND NOT b.final

-- release --
UPDATE dispatcher.journal_batches b SET claimed_by = NULL, lease_until = NULL
FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS u(job_id, batch, claim)
WHERE b.journal = %s AND b.job_id = u.job_id AND b.batch = u.batch AND b.claim = u.claim
AND b.claimed_by = %s AND NOT b.final

-- renew --
UPDATE dispatcher.journal_batches b SET lease_until = now() + %s * interval '1 second'
FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS u(job_id, batch, claim)
WHERE b.journal = %s AND b.job_id = u.job_id AND b.batch = u.batch AND b.claim = u.claim
AND b.claimed_by = %s AND NOT b.final AND b.lease_until > now() RETURNING b.job_id, b.batch

-- give_back --
UPDATE dispatcher.journal_batches SET claimed_by = NULL, lease_until = NULL
WHERE journal = %s AND claimed_by = %s AND NOT final
