-- The schema `dispatcher`, as this version makes it in a database that has none of a component's
-- objects: one block a component, named as its row in dispatcher.meta. A database made by an
-- earlier version is brought here by migrations/ instead (migrate.py); both end at the version of
-- the component's last migration.

-- journal --
-- The run in PostgreSQL (dispatcher/shared): one row a journal, its plan (jobs, batches with their
-- claims) and its outcome lines, in the order the workers committed them.
CREATE TABLE dispatcher.journal_runs (
    journal text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    holder text,
    plan_complete boolean NOT NULL DEFAULT false,
    rate double precision NOT NULL,
    rate_store text NOT NULL,
    max_attempts integer NOT NULL,
    message_quota integer NOT NULL,
    beat_at timestamptz
);
CREATE TABLE dispatcher.journal_jobs (
    journal text NOT NULL,
    job_id text NOT NULL,
    job_hash text NOT NULL,
    api text NOT NULL,
    group_id text,
    group_type text,
    fields text NOT NULL,
    named boolean NOT NULL,
    recipient_count integer NOT NULL,
    batch_size integer NOT NULL,
    source text NOT NULL,
    export text,
    PRIMARY KEY (journal, job_id)
);
CREATE TABLE dispatcher.journal_batches (
    journal text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    job_id text NOT NULL,
    batch integer NOT NULL,
    recipients text,
    random bigint NOT NULL,
    final boolean NOT NULL DEFAULT false,
    status text,
    claimed_by text,
    lease_until timestamptz,
    last_doc text,
    claim bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (journal, job_id, batch)
);
CREATE INDEX journal_batches_open ON dispatcher.journal_batches (journal, seq) WHERE NOT final;
CREATE TABLE dispatcher.journal_outcomes (
    journal text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    doc text NOT NULL,
    PRIMARY KEY (journal, seq)
);

-- budget --
-- The rate budget (dispatcher/pacing/postgres.py): one row a budget, the quota's log, and the three
-- functions that are the twins of the Lua scripts of the Redis budget, line for line. 64 is
-- adaptive.RAMPED: the seconds after which the ramp no longer bounds the pace.
-- fillfactor: every slot updates the row; room on its page keeps the updates HOT (no index change).
CREATE TABLE dispatcher.budget (
  key text PRIMARY KEY,
  rate text,             -- as the first user gave them; another is refused
  quota text,            -- '' for none
  tat bigint,            -- the theoretical time of the next call, us
  utat bigint,           -- of the next unit of the quota
  logged bigint,         -- the units in the quota's log
  paused_until bigint,
  pace bigint,           -- the adaptive pace's share of the ceiling, ppm, at pace_at (us)
  pace_at bigint,
  stepped bigint,        -- when the pace last stepped down
  expires bigint,        -- past this the budget is gone (Redis's TTL)
  slots bigint,          -- the second after the last step: slots taken in it
  refused bigint,        -- and its requests refused (-1 or NULL: not counted)
  taken bigint           -- slots granted, ever: each TAKE says which it granted
) WITH (fillfactor = 50);

CREATE TABLE dispatcher.budget_log (
  key text NOT NULL,
  seq bigint GENERATED ALWAYS AS IDENTITY,
  at bigint NOT NULL,
  units bigint NOT NULL,
  PRIMARY KEY (key, seq)
);

CREATE INDEX budget_log_at ON dispatcher.budget_log (key, at);

-- TAKE. p_cost 0 only checks the budget and claims it. Returns status 1 taken (value: the us in
-- which nobody's next call can win; pace: the share of the ceiling, ppm, it was paced at), 0 not
-- yet (ask again in value us), -1 or -2 the budget holds another rate or quota (held).
CREATE FUNCTION dispatcher.budget_take(
  p_key text, p_rate text, p_quota text, p_cost bigint, p_tolerance bigint, p_ttl bigint, p_now bigint,
  p_interval bigint, p_unit bigint, p_limit bigint, p_window bigint, p_top bigint, p_first bigint,
  p_increase bigint, p_idle bigint, p_ramp bigint, p_settle bigint,
  OUT status int, OUT value bigint, OUT pace bigint, OUT held text, OUT number bigint)
LANGUAGE plpgsql AS $$
DECLARE
  b dispatcher.budget%ROWTYPE;
  now bigint;
  share float8;
  tat bigint;
  step bigint;
  wait bigint;
  later bigint;
  utat bigint;
  logged bigint;
  excess bigint;
  entry record;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);

  SELECT * INTO b FROM dispatcher.budget WHERE key = p_key FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO dispatcher.budget (key) VALUES (p_key) ON CONFLICT (key) DO NOTHING;
    SELECT * INTO b FROM dispatcher.budget WHERE key = p_key FOR UPDATE;
  END IF;
  now := coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  IF b.expires <= now THEN
    b := NULL;
    b.key := p_key;
    DELETE FROM dispatcher.budget_log WHERE key = p_key;
  END IF;

  IF b.rate IS NOT NULL AND b.rate <> p_rate THEN
    status := -1; value := 0; held := b.rate; RETURN;
  END IF;
  IF b.quota IS NOT NULL AND b.quota <> p_quota THEN
    status := -2; value := 0; held := b.quota; RETURN;
  END IF;
  IF b.rate IS NULL THEN  -- a new budget (or one deleted by hand): no log of an old one counts
    DELETE FROM dispatcher.budget_log WHERE key = p_key;
  END IF;
  IF p_cost > 0 THEN
    tat := coalesce(b.tat, 0);
    IF b.tat IS NULL OR now - tat > p_idle THEN
      IF b.tat IS NULL THEN  -- new (or deleted by hand): the pace begins
        share := p_first;
      ELSE  -- idle: from where it was at the last slot, at most from the top; nothing counted
        share := floor(least(least(1000000::float8, CASE WHEN b.stepped IS NULL
    THEN least(p_top::float8 * (1 + p_increase::float8 / 1000000 * (greatest(0, tat - coalesce(b.pace_at, 0))::float8 / 1000000)), coalesce(b.pace, 1000000)::float8 * power(p_ramp::float8 / 1000000, least((greatest(0, tat - coalesce(b.pace_at, 0))::float8 / 1000000), 64)))
    ELSE coalesce(b.pace, 1000000)::float8 * (1 + p_increase::float8 / 1000000 * (greatest(0, tat - coalesce(b.pace_at, 0))::float8 / 1000000)) END), p_top::float8));
      END IF;
      b.pace := share::bigint;
      b.pace_at := now;
      b.refused := -1;
    ELSE
      share := least(1000000::float8, CASE WHEN b.stepped IS NULL
    THEN least(p_top::float8 * (1 + p_increase::float8 / 1000000 * (greatest(0, now - coalesce(b.pace_at, 0))::float8 / 1000000)), coalesce(b.pace, 1000000)::float8 * power(p_ramp::float8 / 1000000, least((greatest(0, now - coalesce(b.pace_at, 0))::float8 / 1000000), 64)))
    ELSE coalesce(b.pace, 1000000)::float8 * (1 + p_increase::float8 / 1000000 * (greatest(0, now - coalesce(b.pace_at, 0))::float8 / 1000000)) END);
    END IF;
    step := ceil(p_interval::float8 * 1000000 / share)::bigint;
    wait := greatest(coalesce(b.paused_until, 0), tat - p_tolerance) - now;
    IF p_quota <> '' THEN
      utat := coalesce(b.utat, 0);
      logged := coalesce(b.logged, 0);
      wait := greatest(wait, utat - p_tolerance - now);
      -- The guard: a call counts while it lies in [now - window, now]; the oldest leave first.
      WITH gone AS (DELETE FROM dispatcher.budget_log WHERE key = p_key AND at < now - p_window RETURNING units)
      SELECT logged - coalesce(sum(units), 0) INTO logged FROM gone;
      b.logged := logged;
      excess := logged + p_cost - p_limit;
      IF excess > 0 THEN
        FOR entry IN SELECT l.at, l.units FROM dispatcher.budget_log l WHERE l.key = p_key ORDER BY l.seq LOOP
          excess := excess - entry.units;
          IF excess <= 0 THEN
            wait := greatest(wait, entry.at + p_window + 1 - now);
            EXIT;
          END IF;
        END LOOP;
      END IF;
    END IF;
    IF wait > 0 THEN

  UPDATE dispatcher.budget SET rate = b.rate, quota = b.quota, tat = b.tat, utat = b.utat, logged = b.logged,
    paused_until = b.paused_until, pace = b.pace, pace_at = b.pace_at, stepped = b.stepped, slots = b.slots,
    refused = b.refused, taken = b.taken, expires = b.expires
  WHERE key = p_key;

      status := 0; value := wait; RETURN;
    END IF;
    tat := greatest(now, tat) + step;
    later := tat - p_tolerance - now;
    b.tat := tat;
    b.taken := coalesce(b.taken, 0) + 1;  -- which slot of the budget this is
    number := b.taken;
    IF b.stepped IS NOT NULL AND now < b.stepped + p_settle AND coalesce(b.refused, -1) >= 0 THEN
      b.slots := coalesce(b.slots, 0) + 1;  -- the second after a step is counted
    END IF;
    IF p_quota <> '' THEN
      utat := greatest(now, utat) + p_cost * p_unit;
      later := greatest(later, utat - p_tolerance - now);
      b.utat := utat;
      b.logged := logged + p_cost;
      INSERT INTO dispatcher.budget_log (key, at, units) VALUES (p_key, now, p_cost);
    END IF;
    status := 1; value := greatest(0, later); pace := floor(share)::bigint;
  ELSE
    status := 1; value := 0; pace := 1000000;
  END IF;
  b.rate := p_rate;
  b.quota := p_quota;
  b.expires := greatest(coalesce(b.expires, 0), now + p_ttl);  -- never shorten what a pause set

  UPDATE dispatcher.budget SET rate = b.rate, quota = b.quota, tat = b.tat, utat = b.utat, logged = b.logged,
    paused_until = b.paused_until, pace = b.pace, pace_at = b.pace_at, stepped = b.stepped, slots = b.slots,
    refused = b.refused, taken = b.taken, expires = b.expires
  WHERE key = p_key;

END
$$;

-- STEP_DOWN. p_sent_ago: how long ago the request told "too frequent" was sent, us; p_top and
-- p_first the pace's top and first share (ppm), p_unit the ceiling's interval (us), p_window the
-- slots granted in the second before the request (-1: unknown). refused -2: the last step was to
-- what filled the window. Returns stepped 1 down to pace (ppm), or 0: see
-- `adaptive.Pace.told_too_frequent`, line for line; or there is no budget (the next TAKE makes one).
CREATE FUNCTION dispatcher.budget_step_down(
  p_key text, p_sent_ago bigint, p_now bigint, p_top bigint, p_first bigint, p_unit bigint, p_window bigint,
  p_decrease bigint, p_floor bigint, p_settle bigint, p_increase bigint, p_ramp bigint, p_too_many bigint,
  p_in_use bigint, OUT stepped int, OUT pace bigint)
LANGUAGE plpgsql AS $$
DECLARE
  b dispatcher.budget%ROWTYPE;
  now bigint;
  share float8;
  sent bigint;
  since bigint;
  level float8;
  decrease float8 := p_decrease::float8 / 1000000;
  ramp float8 := p_ramp::float8 / 1000000;
  a float8;
  z float8;
  allowed float8;
  filled float8;
  target float8;
  took float8;
  lower bigint;
  steady boolean;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT * INTO b FROM dispatcher.budget WHERE key = p_key FOR UPDATE;
  now := coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  IF NOT FOUND OR b.rate IS NULL OR b.expires <= now THEN
    stepped := 0; pace := 0; RETURN;
  END IF;
  share := least(1000000::float8, CASE WHEN b.stepped IS NULL
    THEN least(p_top::float8 * (1 + p_increase::float8 / 1000000 * (greatest(0, now - coalesce(b.pace_at, 0))::float8 / 1000000)), coalesce(b.pace, 1000000)::float8 * power(p_ramp::float8 / 1000000, least((greatest(0, now - coalesce(b.pace_at, 0))::float8 / 1000000), 64)))
    ELSE coalesce(b.pace, 1000000)::float8 * (1 + p_increase::float8 / 1000000 * (greatest(0, now - coalesce(b.pace_at, 0))::float8 / 1000000)) END);
  sent := now - p_sent_ago;
  since := coalesce(b.pace_at, 0);
  level := coalesce(b.pace, 1000000)::float8;
  stepped := 0;
  pace := floor(share)::bigint;
  IF b.stepped IS NULL AND sent >= since THEN  -- never stepped: the window held what was sent since the start
    a := (greatest(sent - 1000000, since) - since)::float8 / 1000000;
    z := (sent - since)::float8 / 1000000;
    allowed := p_top::float8 * ((z - a) + p_increase::float8 / 1000000 * (z * z - a * a) / 2);
    IF z <= 64 THEN
      allowed := least(allowed, level * (power(ramp, z) - power(ramp, a)) / ln(ramp));
    END IF;
    filled := CASE WHEN p_window >= 0 THEN p_window * p_unit::float8 ELSE allowed END;
    target := share;
    IF filled >= p_in_use::float8 / 1000000 * allowed THEN  -- else others filled the window (or a stray reply)
      target := greatest(p_first::float8, decrease * filled);
    END IF;
    IF target < share * decrease THEN
      lower := floor(greatest(p_floor::float8, target))::bigint;
      UPDATE dispatcher.budget SET pace = lower, pace_at = now, stepped = now, slots = 0, refused = -2
      WHERE key = p_key;
      stepped := 1; pace := lower; RETURN;
    END IF;
  END IF;
  IF b.refused = -2 AND b.stepped IS NOT NULL AND sent < b.stepped AND p_window >= 0 THEN  -- about that window
    lower := floor(greatest(p_floor::float8, p_first::float8, decrease * p_window * p_unit::float8))::bigint;
    IF lower < level THEN
      UPDATE dispatcher.budget SET pace = lower WHERE key = p_key;
    END IF;
    RETURN;
  END IF;
  IF b.stepped IS NOT NULL AND sent < b.stepped + p_settle THEN  -- the window still held the pace before the step
    IF coalesce(b.refused, -1) >= 0 AND sent >= b.stepped THEN
      UPDATE dispatcher.budget SET refused = b.refused + 1 WHERE key = p_key;
    END IF;
    RETURN;
  END IF;
  target := share * decrease;
  steady := sent - 1000000 >= since;
  IF b.stepped IS NOT NULL AND coalesce(b.refused, -1) > p_too_many::float8 / 1000000 * coalesce(b.slots, 0)
      AND sent < b.stepped + 2 * p_settle THEN
    took := decrease * (b.slots - b.refused) * p_unit::float8 / p_settle * 1000000;
    IF took < target THEN
      target := took;
      steady := false;
    END IF;
  END IF;
  lower := floor(greatest(p_floor::float8, target))::bigint;
  IF lower > share * decrease THEN  -- near the floor: less than a whole step is not taken
    RETURN;
  END IF;
  UPDATE dispatcher.budget SET pace = lower, pace_at = now, stepped = now, slots = 0,
    refused = CASE WHEN steady THEN 0 ELSE -1 END
  WHERE key = p_key;
  stepped := 1;
  pace := lower;
END
$$;

-- PAUSE. p_pause, p_ttl: us. Every process's next TAKE honours paused_until; a shorter pause never
-- cuts a longer one, and the budget lives at least p_ttl past the pause's end.
CREATE FUNCTION dispatcher.budget_pause(p_key text, p_pause bigint, p_ttl bigint, p_now bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  b dispatcher.budget%ROWTYPE;
  now bigint;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);

  SELECT * INTO b FROM dispatcher.budget WHERE key = p_key FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO dispatcher.budget (key) VALUES (p_key) ON CONFLICT (key) DO NOTHING;
    SELECT * INTO b FROM dispatcher.budget WHERE key = p_key FOR UPDATE;
  END IF;
  now := coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  IF b.expires <= now THEN
    b := NULL;
    b.key := p_key;
    DELETE FROM dispatcher.budget_log WHERE key = p_key;
  END IF;

  b.paused_until := greatest(coalesce(b.paused_until, 0), now + p_pause);
  b.expires := greatest(coalesce(b.expires, 0), now + p_pause + p_ttl);

  UPDATE dispatcher.budget SET rate = b.rate, quota = b.quota, tat = b.tat, utat = b.utat, logged = b.logged,
    paused_until = b.paused_until, pace = b.pace, pace_at = b.pace_at, stepped = b.stepped, slots = b.slots,
    refused = b.refused, taken = b.taken, expires = b.expires
  WHERE key = p_key;

END
$$;
