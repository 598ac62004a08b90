--
-- PostgreSQL database dump
--

\restrict NQVbXovp6ZovZYmY6ZDCCsK0xI0cwepliuFRAHZO5VcMLShxxH7GZpdjQCwQ6u5

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: dispatcher; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA dispatcher;


--
-- Name: budget_pause(text, bigint, bigint, bigint); Type: FUNCTION; Schema: dispatcher; Owner: -
--

CREATE FUNCTION dispatcher.budget_pause(p_key text, p_pause bigint, p_ttl bigint, p_now bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
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


--
-- Name: budget_step_down(text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint); Type: FUNCTION; Schema: dispatcher; Owner: -
--

CREATE FUNCTION dispatcher.budget_step_down(p_key text, p_sent_ago bigint, p_now bigint, p_top bigint, p_first bigint, p_unit bigint, p_window bigint, p_decrease bigint, p_floor bigint, p_settle bigint, p_increase bigint, p_ramp bigint, p_too_many bigint, p_in_use bigint, OUT stepped integer, OUT pace bigint) RETURNS record
    LANGUAGE plpgsql
    AS $$
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


--
-- Name: budget_take(text, text, text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint); Type: FUNCTION; Schema: dispatcher; Owner: -
--

CREATE FUNCTION dispatcher.budget_take(p_key text, p_rate text, p_quota text, p_cost bigint, p_tolerance bigint, p_ttl bigint, p_now bigint, p_interval bigint, p_unit bigint, p_limit bigint, p_window bigint, p_top bigint, p_first bigint, p_increase bigint, p_idle bigint, p_ramp bigint, p_settle bigint, OUT status integer, OUT value bigint, OUT pace bigint, OUT held text, OUT number bigint) RETURNS record
    LANGUAGE plpgsql
    AS $$
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


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: budget; Type: TABLE; Schema: dispatcher; Owner: -
--

CREATE TABLE dispatcher.budget (
    key text NOT NULL,
    rate text,
    quota text,
    tat bigint,
    utat bigint,
    logged bigint,
    paused_until bigint,
    pace bigint,
    pace_at bigint,
    stepped bigint,
    expires bigint,
    slots bigint,
    refused bigint,
    taken bigint
)
WITH (fillfactor='50');


--
-- Name: budget_log; Type: TABLE; Schema: dispatcher; Owner: -
--

CREATE TABLE dispatcher.budget_log (
    key text NOT NULL,
    seq bigint NOT NULL,
    at bigint NOT NULL,
    units bigint NOT NULL
);


--
-- Name: budget_log_seq_seq; Type: SEQUENCE; Schema: dispatcher; Owner: -
--

ALTER TABLE dispatcher.budget_log ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME dispatcher.budget_log_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: journal_batches; Type: TABLE; Schema: dispatcher; Owner: -
--

CREATE TABLE dispatcher.journal_batches (
    journal text NOT NULL,
    seq bigint NOT NULL,
    job_id text NOT NULL,
    batch integer NOT NULL,
    recipients text,
    random bigint NOT NULL,
    final boolean DEFAULT false NOT NULL,
    status text,
    claimed_by text,
    lease_until timestamp with time zone,
    last_doc text,
    claim bigint DEFAULT 0 NOT NULL
);


--
-- Name: journal_batches_seq_seq; Type: SEQUENCE; Schema: dispatcher; Owner: -
--

ALTER TABLE dispatcher.journal_batches ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME dispatcher.journal_batches_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: journal_jobs; Type: TABLE; Schema: dispatcher; Owner: -
--

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
    export text
);


--
-- Name: journal_outcomes; Type: TABLE; Schema: dispatcher; Owner: -
--

CREATE TABLE dispatcher.journal_outcomes (
    journal text NOT NULL,
    seq bigint NOT NULL,
    doc text NOT NULL
);


--
-- Name: journal_outcomes_seq_seq; Type: SEQUENCE; Schema: dispatcher; Owner: -
--

ALTER TABLE dispatcher.journal_outcomes ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME dispatcher.journal_outcomes_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: journal_runs; Type: TABLE; Schema: dispatcher; Owner: -
--

CREATE TABLE dispatcher.journal_runs (
    journal text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    holder text,
    plan_complete boolean DEFAULT false NOT NULL,
    rate double precision NOT NULL,
    rate_store text NOT NULL,
    max_attempts integer NOT NULL,
    message_quota integer NOT NULL,
    beat_at timestamp with time zone
);


--
-- Name: meta; Type: TABLE; Schema: dispatcher; Owner: -
--

CREATE TABLE dispatcher.meta (
    component text NOT NULL,
    version integer NOT NULL
);


--
-- Data for Name: budget; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.budget (key, rate, quota, tat, utat, logged, paused_until, pace, pace_at, stepped, expires, slots, refused, taken) FROM stdin;
dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification	2		1796619309821384	\N	\N	\N	984300	1796619307232049	\N	1796619909303076	\N	-1	5
\.


--
-- Data for Name: budget_log; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.budget_log (key, seq, at, units) FROM stdin;
\.


--
-- Data for Name: journal_batches; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.journal_batches (journal, seq, job_id, batch, recipients, random, final, status, claimed_by, lease_until, last_doc, claim) FROM stdin;
run	1	v-0	0	["v0"]	0	t	ok	\N	\N	{"job_id":"v-0","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v0"],"error_code":0,"error_info":"","http_status":200,"latency_ms":2.2,"at":"2026-12-07T04:55:07.235Z","job_hash":"aade2d89e1a55f5050318bb73467c3da"}	1
run	2	v-1	0	["v1"]	0	t	ok	\N	\N	{"job_id":"v-1","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v1"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.8,"at":"2026-12-07T04:55:07.750Z","job_hash":"236b4dce679899935d5f550a8a9d8d3d"}	1
run	3	v-2	0	["v2"]	0	t	ok	\N	\N	{"job_id":"v-2","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v2"],"error_code":0,"error_info":"","http_status":200,"latency_ms":1.3,"at":"2026-12-07T04:55:08.269Z","job_hash":"90b8884e509115b118f10657c4e7e0e0"}	1
run	4	v-3	0	["v3"]	0	t	ok	\N	\N	{"job_id":"v-3","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v3"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.9,"at":"2026-12-07T04:55:08.786Z","job_hash":"7f8ee65a00cad5b56eb6620a933e0baf"}	1
run	5	v-4	0	["v4"]	0	t	ok	\N	\N	{"job_id":"v-4","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v4"],"error_code":0,"error_info":"","http_status":200,"latency_ms":1.2,"at":"2026-12-07T04:55:09.305Z","job_hash":"7ba1cb821a3c452fceeabffebe1ec323"}	1
run	6	v-5	0	["v5"]	0	f	\N	\N	\N	\N	1
run	7	v-6	0	["v6"]	0	f	\N	\N	\N	\N	1
run	8	v-7	0	["v7"]	0	f	\N	\N	\N	\N	1
run	9	v-8	0	["v8"]	0	f	\N	\N	\N	\N	1
run	10	v-9	0	["v9"]	0	f	\N	\N	\N	\N	1
run	11	v-10	0	["v10"]	0	f	\N	\N	\N	\N	1
run	12	v-11	0	["v11"]	0	f	\N	\N	\N	\N	1
\.


--
-- Data for Name: journal_jobs; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.journal_jobs (journal, job_id, job_hash, api, group_id, group_type, fields, named, recipient_count, batch_size, source, export) FROM stdin;
run	v-0	aade2d89e1a55f5050318bb73467c3da	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:1	\N
run	v-1	236b4dce679899935d5f550a8a9d8d3d	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:2	\N
run	v-2	90b8884e509115b118f10657c4e7e0e0	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:3	\N
run	v-3	7f8ee65a00cad5b56eb6620a933e0baf	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:4	\N
run	v-4	7ba1cb821a3c452fceeabffebe1ec323	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:5	\N
run	v-5	cf9bac934c038008c01e96ecb0199b09	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:6	\N
run	v-6	7cc1bef181d6e8c6acaaa0cfa69d8dc2	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:7	\N
run	v-7	80f0bcdaf206857c67b985cf11e3e099	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:8	\N
run	v-8	eb13c73b9062cf188240792b8415f1f0	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:9	\N
run	v-9	66523e1097e62c50b2ab0689a5a01783	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:10	\N
run	v-10	85d14c7f00ca38d2102cc34160571a34	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:11	\N
run	v-11	65483aea6cb1b94124c6e2a9d21e9ee3	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	jobs.jsonl:12	\N
\.


--
-- Data for Name: journal_outcomes; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.journal_outcomes (journal, seq, doc) FROM stdin;
run	1	{"job_id":"v-0","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v0"],"error_code":0,"error_info":"","http_status":200,"latency_ms":2.2,"at":"2026-12-07T04:55:07.235Z","job_hash":"aade2d89e1a55f5050318bb73467c3da"}
run	2	{"job_id":"v-1","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v1"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.8,"at":"2026-12-07T04:55:07.750Z","job_hash":"236b4dce679899935d5f550a8a9d8d3d"}
run	3	{"job_id":"v-2","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v2"],"error_code":0,"error_info":"","http_status":200,"latency_ms":1.3,"at":"2026-12-07T04:55:08.269Z","job_hash":"90b8884e509115b118f10657c4e7e0e0"}
run	4	{"job_id":"v-3","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v3"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.9,"at":"2026-12-07T04:55:08.786Z","job_hash":"7f8ee65a00cad5b56eb6620a933e0baf"}
run	5	{"job_id":"v-4","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["v4"],"error_code":0,"error_info":"","http_status":200,"latency_ms":1.2,"at":"2026-12-07T04:55:09.305Z","job_hash":"7ba1cb821a3c452fceeabffebe1ec323"}
\.


--
-- Data for Name: journal_runs; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.journal_runs (journal, created_at, holder, plan_complete, rate, rate_store, max_attempts, message_quota, beat_at) FROM stdin;
run	2026-12-07 04:55:07.177435+00	\N	t	2	the journal's database	5	12000	\N
\.


--
-- Data for Name: meta; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.meta (component, version) FROM stdin;
journal	2
budget	2
\.


--
-- Name: budget_log_seq_seq; Type: SEQUENCE SET; Schema: dispatcher; Owner: -
--

SELECT pg_catalog.setval('dispatcher.budget_log_seq_seq', 1, false);


--
-- Name: journal_batches_seq_seq; Type: SEQUENCE SET; Schema: dispatcher; Owner: -
--

SELECT pg_catalog.setval('dispatcher.journal_batches_seq_seq', 12, true);


--
-- Name: journal_outcomes_seq_seq; Type: SEQUENCE SET; Schema: dispatcher; Owner: -
--

SELECT pg_catalog.setval('dispatcher.journal_outcomes_seq_seq', 5, true);


--
-- Name: budget_log budget_log_pkey; Type: CONSTRAINT; Schema: dispatcher; Owner: -
--

ALTER TABLE ONLY dispatcher.budget_log
    ADD CONSTRAINT budget_log_pkey PRIMARY KEY (key, seq);


--
-- Name: budget budget_pkey; Type: CONSTRAINT; Schema: dispatcher; Owner: -
--

ALTER TABLE ONLY dispatcher.budget
    ADD CONSTRAINT budget_pkey PRIMARY KEY (key);


--
-- Name: journal_batches journal_batches_pkey; Type: CONSTRAINT; Schema: dispatcher; Owner: -
--

ALTER TABLE ONLY dispatcher.journal_batches
    ADD CONSTRAINT journal_batches_pkey PRIMARY KEY (journal, job_id, batch);


--
-- Name: journal_jobs journal_jobs_pkey; Type: CONSTRAINT; Schema: dispatcher; Owner: -
--

ALTER TABLE ONLY dispatcher.journal_jobs
    ADD CONSTRAINT journal_jobs_pkey PRIMARY KEY (journal, job_id);


--
-- Name: journal_outcomes journal_outcomes_pkey; Type: CONSTRAINT; Schema: dispatcher; Owner: -
--

ALTER TABLE ONLY dispatcher.journal_outcomes
    ADD CONSTRAINT journal_outcomes_pkey PRIMARY KEY (journal, seq);


--
-- Name: journal_runs journal_runs_pkey; Type: CONSTRAINT; Schema: dispatcher; Owner: -
--

ALTER TABLE ONLY dispatcher.journal_runs
    ADD CONSTRAINT journal_runs_pkey PRIMARY KEY (journal);


--
-- Name: meta meta_pkey; Type: CONSTRAINT; Schema: dispatcher; Owner: -
--

ALTER TABLE ONLY dispatcher.meta
    ADD CONSTRAINT meta_pkey PRIMARY KEY (component);


--
-- Name: budget_log_at; Type: INDEX; Schema: dispatcher; Owner: -
--

CREATE INDEX budget_log_at ON dispatcher.budget_log USING btree (key, at);


--
-- Name: journal_batches_open; Type: INDEX; Schema: dispatcher; Owner: -
--

CREATE INDEX journal_batches_open ON dispatcher.journal_batches USING btree (journal, seq) WHERE (NOT final);


--
-- PostgreSQL database dump complete
--

\unrestrict NQVbXovp6ZovZYmY6ZDCCsK0xI0cwepliuFRAHZO5VcMLShxxH7GZpdjQCwQ6u5

