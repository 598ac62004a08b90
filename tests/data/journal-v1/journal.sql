--
-- PostgreSQL database dump
--

\restrict vVilSDkioF56FcBsl7WCYQorfZ8vUbQqqgv19sjpm0ojM6WjnsAH11kCKoXSbLg

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
    paused_until = b.paused_until, pace = b.pace, pace_at = b.pace_at, stepped = b.stepped, expires = b.expires
  WHERE key = p_key;

END
$$;


--
-- Name: budget_step_down(text, bigint, bigint, bigint, bigint, bigint, bigint); Type: FUNCTION; Schema: dispatcher; Owner: -
--

CREATE FUNCTION dispatcher.budget_step_down(p_key text, p_sent_ago bigint, p_decrease bigint, p_floor bigint, p_settle bigint, p_increase bigint, p_now bigint, OUT stepped integer, OUT pace bigint) RETURNS record
    LANGUAGE plpgsql
    AS $$
DECLARE
  b dispatcher.budget%ROWTYPE;
  now bigint;
  share float8;
  lower bigint;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT * INTO b FROM dispatcher.budget WHERE key = p_key FOR UPDATE;
  now := coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  IF NOT FOUND OR b.rate IS NULL OR b.expires <= now THEN
    stepped := 0; pace := 0; RETURN;
  END IF;
  share := least(1000000::float8, coalesce(b.pace, 1000000)::float8
    + p_increase::float8 * greatest(0, now - coalesce(b.pace_at, 0))::float8 / 1000000);
  stepped := 0;
  pace := floor(share)::bigint;
  IF b.stepped IS NOT NULL AND now - p_sent_ago < b.stepped + p_settle THEN
    RETURN;
  END IF;
  lower := floor(share * p_decrease::float8 / 1000000)::bigint;
  IF lower < p_floor THEN
    RETURN;
  END IF;
  UPDATE dispatcher.budget SET pace = lower, pace_at = now, stepped = now WHERE key = p_key;
  stepped := 1;
  pace := lower;
END
$$;


--
-- Name: budget_take(text, text, text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint); Type: FUNCTION; Schema: dispatcher; Owner: -
--

CREATE FUNCTION dispatcher.budget_take(p_key text, p_rate text, p_quota text, p_cost bigint, p_tolerance bigint, p_ttl bigint, p_now bigint, p_interval bigint, p_unit bigint, p_limit bigint, p_window bigint, p_start bigint, p_increase bigint, p_idle bigint, OUT status integer, OUT value bigint, OUT pace bigint, OUT held text) RETURNS record
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
    share := least(1000000::float8, coalesce(b.pace, 1000000)::float8
    + p_increase::float8 * greatest(0, now - coalesce(b.pace_at, 0))::float8 / 1000000);
    IF b.tat IS NULL OR now - tat > p_idle THEN  -- new, or idle: from the start (or lower)
      share := floor(least(share, p_start::float8));
      b.pace := share::bigint;
      b.pace_at := now;
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
    paused_until = b.paused_until, pace = b.pace, pace_at = b.pace_at, stepped = b.stepped, expires = b.expires
  WHERE key = p_key;

      status := 0; value := wait; RETURN;
    END IF;
    tat := greatest(now, tat) + step;
    later := tat - p_tolerance - now;
    b.tat := tat;
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
    paused_until = b.paused_until, pace = b.pace, pace_at = b.pace_at, stepped = b.stepped, expires = b.expires
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
    expires bigint
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
    last_doc text
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
    source text NOT NULL
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
    message_quota integer NOT NULL
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

COPY dispatcher.budget (key, rate, quota, tat, utat, logged, paused_until, pace, pace_at, stepped, expires) FROM stdin;
dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification	2		1796609534374331	\N	\N	\N	994500	1796609531811546	\N	1796610133860261
\.


--
-- Data for Name: budget_log; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.budget_log (key, seq, at, units) FROM stdin;
\.


--
-- Data for Name: journal_batches; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.journal_batches (journal, seq, job_id, batch, recipients, random, final, status, claimed_by, lease_until, last_doc) FROM stdin;
run	9	u-8	0	["u8"]	0	f	\N	\N	\N	\N
run	10	u-9	0	["u9"]	0	f	\N	\N	\N	\N
run	11	u-10	0	["u10"]	0	f	\N	\N	\N	\N
run	12	u-11	0	["u11"]	0	f	\N	\N	\N	\N
run	1	u-0	0	["u0"]	0	t	ok	\N	\N	{"job_id":"u-0","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u0"],"error_code":0,"error_info":"","http_status":200,"latency_ms":1.5,"at":"2026-12-07T02:12:11.814Z","job_hash":"35573e9ad6c295572574f9e0563f2943"}
run	2	u-1	0	["u1"]	0	t	ok	\N	\N	{"job_id":"u-1","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u1"],"error_code":0,"error_info":"","http_status":200,"latency_ms":4.5,"at":"2026-12-07T02:12:12.328Z","job_hash":"41dcde3caa6b193af5472b51ea6ead06"}
run	3	u-2	0	["u2"]	0	t	ok	\N	\N	{"job_id":"u-2","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u2"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.7,"at":"2026-12-07T02:12:12.836Z","job_hash":"e745e8212e084e885fcd551ead3d0318"}
run	4	u-3	0	["u3"]	0	t	ok	\N	\N	{"job_id":"u-3","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u3"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.7,"at":"2026-12-07T02:12:13.349Z","job_hash":"9f84d330f232b2a797794db5c2031783"}
run	5	u-4	0	["u4"]	0	t	ok	\N	\N	{"job_id":"u-4","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u4"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.7,"at":"2026-12-07T02:12:13.861Z","job_hash":"cae5823efb4e872b8fe51bd69643b432"}
run	6	u-5	0	["u5"]	0	f	\N	\N	\N	\N
run	7	u-6	0	["u6"]	0	f	\N	\N	\N	\N
run	8	u-7	0	["u7"]	0	f	\N	\N	\N	\N
\.


--
-- Data for Name: journal_jobs; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.journal_jobs (journal, job_id, job_hash, api, group_id, group_type, fields, named, recipient_count, batch_size, source) FROM stdin;
run	u-0	35573e9ad6c295572574f9e0563f2943	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:1
run	u-1	41dcde3caa6b193af5472b51ea6ead06	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:2
run	u-2	e745e8212e084e885fcd551ead3d0318	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:3
run	u-3	9f84d330f232b2a797794db5c2031783	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:4
run	u-4	cae5823efb4e872b8fe51bd69643b432	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:5
run	u-5	072739d50c51c82b264222234e2b16d5	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:6
run	u-6	d358b7f16a6cbea848e82d850343ea81	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:7
run	u-7	43bf2d55290a600eff7bdd3b520c9786	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:8
run	u-8	8426b01fb28033f2c3eb0fc7b0d3a464	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:9
run	u-9	3ed1edb3b8dbecc3a5112365d48d5f64	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:10
run	u-10	f305def1e3ce1fb77740c097bbd57bd8	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:11
run	u-11	dd539d53741ad354f67c494be01c02e2	send_group_system_notification	@TGS#pg	\N	{"GroupId":"@TGS#pg","Content":"hi"}	t	1	500	/tmp/v1/jobs.jsonl:12
\.


--
-- Data for Name: journal_outcomes; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.journal_outcomes (journal, seq, doc) FROM stdin;
run	1	{"job_id":"u-0","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u0"],"error_code":0,"error_info":"","http_status":200,"latency_ms":1.5,"at":"2026-12-07T02:12:11.814Z","job_hash":"35573e9ad6c295572574f9e0563f2943"}
run	2	{"job_id":"u-1","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u1"],"error_code":0,"error_info":"","http_status":200,"latency_ms":4.5,"at":"2026-12-07T02:12:12.328Z","job_hash":"41dcde3caa6b193af5472b51ea6ead06"}
run	3	{"job_id":"u-2","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u2"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.7,"at":"2026-12-07T02:12:12.836Z","job_hash":"e745e8212e084e885fcd551ead3d0318"}
run	4	{"job_id":"u-3","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u3"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.7,"at":"2026-12-07T02:12:13.349Z","job_hash":"9f84d330f232b2a797794db5c2031783"}
run	5	{"job_id":"u-4","batch":0,"batches":1,"attempt":1,"status":"ok","final":true,"group_id":"@TGS#pg","recipients":["u4"],"error_code":0,"error_info":"","http_status":200,"latency_ms":0.7,"at":"2026-12-07T02:12:13.861Z","job_hash":"cae5823efb4e872b8fe51bd69643b432"}
\.


--
-- Data for Name: journal_runs; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.journal_runs (journal, created_at, holder, plan_complete, rate, rate_store, max_attempts, message_quota) FROM stdin;
run	2026-12-07 02:12:11.56559+00	\N	t	2	the journal's database	5	12000
\.


--
-- Data for Name: meta; Type: TABLE DATA; Schema: dispatcher; Owner: -
--

COPY dispatcher.meta (component, version) FROM stdin;
journal	1
budget	1
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

\unrestrict vVilSDkioF56FcBsl7WCYQorfZ8vUbQqqgv19sjpm0ojM6WjnsAH11kCKoXSbLg

