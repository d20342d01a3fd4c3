-- test/bench/setup.sql: objects of the benchmark database (schema "bench").
--
-- Run by test/bench/run.sh with psql variables:
--   :inst  uuid of the instance every benchmark uses
--   :cb    base URL of the callback receiver (nginx), e.g. http://127.0.0.1:PORT
--
-- The baselines are plain tables shaped like the extension's, written with
-- bare SQL: bench.links_plain is otp_link.links (LIKE ... INCLUDING ALL:
-- columns, defaults, CHECKs and the same six indexes: uuid primary key,
-- unique code_hash, partial expires_at WHERE pending, (instance_id,
-- rate_key, created_at), BRIN created_at, partial unique token_hash) plus
-- the same foreign key to otp_link.instances; bench.deliveries_plain is
-- otp_link.deliveries the same way.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE SCHEMA bench;

CREATE TABLE bench.links_plain (LIKE otp_link.links INCLUDING ALL);
ALTER TABLE bench.links_plain
	ADD FOREIGN KEY (instance_id) REFERENCES otp_link.instances (id) ON DELETE CASCADE;

CREATE TABLE bench.deliveries_plain (LIKE otp_link.deliveries INCLUDING ALL);
ALTER TABLE bench.deliveries_plain
	ADD FOREIGN KEY (instance_id) REFERENCES otp_link.instances (id) ON DELETE CASCADE;

-- the arguments every benchmarked otp_link_generate call passes (the hosted
-- API's example request, plus a link_url so that consume issues a token)
CREATE TABLE bench.args (
	inst		uuid NOT NULL,
	name		text NOT NULL,
	message		jsonb NOT NULL,
	callback	jsonb NOT NULL,
	link_url	text NOT NULL
);
INSERT INTO bench.args VALUES (
	:'inst', 'Bench',
	'{"prompt": "Give me link to login at {name}",
	  "success": "Here is your login link: {link}",
	  "failed": "Login failed, please try again later.",
	  "expired": "The link has been expired, please try another one."}',
	jsonb_build_object('success', :'cb' || '/cb/success', 'failed', :'cb' || '/cb/failed'),
	'https://app.example/login?token={token}');

-- one link made by the real otp_link_generate: the template of every link
-- the benchmarks insert directly (fillers and code pools)
CREATE TABLE bench.generated AS
	SELECT otp_link.otp_link_generate(instance => a.inst, name => a.name, message => a.message,
									  callback => a.callback, link_url => a.link_url) AS g
	  FROM bench.args a;
CREATE TABLE bench.template AS
	SELECT l.* FROM otp_link.links l, bench.generated WHERE l.id = (g ->> 'uuid')::uuid;
DO $$
BEGIN
	IF (SELECT count(*) FROM bench.template) <> 1 THEN
		RAISE EXCEPTION 'no template link';
	END IF;
END
$$;

-- known codes for the consume benchmarks: pool entry n has code code_of(n)
CREATE TABLE bench.codes (
	n		bigint PRIMARY KEY,
	code	text NOT NULL
);
CREATE SEQUENCE bench.ext_seq;		-- next pool entry for otp_link_consume_message
CREATE SEQUENCE bench.plain_seq;	-- next pool entry for the baseline
CREATE SEQUENCE bench.lat_seq;		-- webhook ids of the latency run

-- code_of(n): eight letters A-Z, distinct for distinct n < 26^8 (n times a
-- multiplier prime to 26, modulo 26^8, written in base 26)
CREATE FUNCTION bench.code_of(n bigint) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
	SELECT string_agg(chr(65 + ((((n * 48271 + 12345) % 208827064576) / (26::bigint ^ i)::bigint) % 26)::int),
					  '' ORDER BY i)
	  FROM generate_series(0, 7) i
$$;

-- add_pool(k): k more pending links with known codes, in otp_link.links
-- and (the same rows) in bench.links_plain; returns the new pool size.  A
-- candidate code that a random code already took is skipped, so pool
-- numbers stay contiguous.
CREATE SEQUENCE bench.code_ctr;
CREATE FUNCTION bench.add_pool(k integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	first bigint := coalesce((SELECT max(n) FROM bench.codes), 0) + 1;
BEGIN
	WITH cand AS MATERIALIZED (
		SELECT bench.code_of(nextval('bench.code_ctr')) AS code FROM generate_series(1, k)),
	ins AS (
		INSERT INTO otp_link.links (id, instance_id, code_hash, status, name, messages, callbacks,
									link_url, created_at, expires_at)
		SELECT gen_random_uuid(), t.instance_id, sha256(convert_to(c.code, 'UTF8')), 'pending',
			   t.name, t.messages, t.callbacks, t.link_url, now(), now() + interval '20 hours'
		  FROM bench.template t, cand c
		ON CONFLICT (code_hash) DO NOTHING
		RETURNING code_hash)
	INSERT INTO bench.codes
		SELECT first - 1 + row_number() OVER (), c.code
		  FROM ins JOIN cand c ON ins.code_hash = sha256(convert_to(c.code, 'UTF8'));
	INSERT INTO bench.links_plain
		SELECT l.* FROM otp_link.links l JOIN bench.codes c
			ON l.code_hash = sha256(convert_to(c.code, 'UTF8'))
		 WHERE c.n >= first
		ON CONFLICT (code_hash) DO NOTHING;
	RETURN (SELECT max(n) FROM bench.codes);
END
$$;

-- fill(tbl, n, part, parts): n links inserted directly into tbl
-- (otp_link.links or bench.links_plain) with INSERT ... SELECT, no
-- otp_link_generate, shaped like the template: 2% pending (expiring in 1 to
-- 18 hours), the rest verified, expired or failed over the last 30 days,
-- created_at ascending.  part/parts split the work between sessions.
CREATE FUNCTION bench.fill(tbl text, n bigint, part integer DEFAULT 0, parts integer DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	done bigint;
BEGIN
	EXECUTE format($q$
	INSERT INTO %s (id, instance_id, code_hash, status, name, messages, callbacks,
					link_url, created_at, expires_at, finished_at, chat_id, messages_received)
		SELECT gen_random_uuid(), t.instance_id, sha256(uuid_send(gen_random_uuid())),
			   CASE WHEN g %% 50 = 0 THEN 'pending'
					WHEN g %% 10 < 7 THEN 'verified'
					WHEN g %% 10 < 9 THEN 'expired' ELSE 'failed' END,
			   t.name, t.messages, t.callbacks, t.link_url,
			   c.created_at,
			   CASE WHEN g %% 50 = 0 THEN now() + interval '1 hour' + (g %% 1000) * interval '1 minute'
					ELSE c.created_at + interval '30 minutes' END,
			   CASE WHEN g %% 50 = 0 THEN NULL ELSE c.created_at + interval '1 minute' END,
			   CASE WHEN g %% 10 < 7 AND g %% 50 <> 0
					THEN '2010' || lpad((g %% 100000000)::text, 8, '0') || '@c.us' END,
			   CASE WHEN g %% 50 = 0 THEN 0 ELSE 1 END
		  FROM bench.template t,
			   generate_series(1 + $1, $2, $3) g,
			   LATERAL (SELECT now() - interval '30 days' * ($2 - g) / $2 AS created_at) c
	$q$, tbl) USING part, n, parts;
	GET DIAGNOSTICS done = ROW_COUNT;
	RETURN done;
END
$$;

-- overdue(n): n pending links that expired a minute to an hour ago, with
-- no callback (the sweep benchmark measures the sweep, not deliveries)
CREATE FUNCTION bench.overdue(n bigint, part integer DEFAULT 0, parts integer DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	done bigint;
BEGIN
	INSERT INTO otp_link.links (id, instance_id, code_hash, status, name, messages, callbacks,
								link_url, created_at, expires_at)
		SELECT gen_random_uuid(), t.instance_id, sha256(uuid_send(gen_random_uuid())), 'pending',
			   t.name, t.messages, '{}', t.link_url,
			   now() - interval '2 hours' + g * interval '1 ms',
			   now() - interval '1 hour' + (g * 3600000 / n) * interval '1 ms'
		  FROM bench.template t, generate_series(1 + part, n, parts) g;
	GET DIAGNOSTICS done = ROW_COUNT;
	RETURN done;
END
$$;

-- the whole-flow benchmark (test/bench/flow.sh): flow_generate.sql stores
-- every link it generates with its code, a phone of its own and the
-- moment it is due (1 to 5 s later); flow_consume.sql consumes the oldest
-- due one and notes its pgbench client and transaction (k counts a
-- client's transactions from 1) for the join with pgbench's log
CREATE SEQUENCE bench.flow_seq;
CREATE TABLE bench.flow (
	n			bigint PRIMARY KEY,
	link		uuid NOT NULL,
	code		text NOT NULL,
	phone		text NOT NULL,
	generated_at timestamptz NOT NULL,
	due_at		timestamptz NOT NULL,
	outcome		text,
	consumed_at timestamptz,
	client		integer,
	k			bigint
);
CREATE INDEX flow_due_idx ON bench.flow (due_at) WHERE outcome IS NULL;
