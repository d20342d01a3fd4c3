/* otp_link--1.1.sql: install script of otp_link 1.1 */

\echo Use "CREATE EXTENSION otp_link" to load this file. \quit

/*
 * The schema must be safe to resolve our own objects through.  CREATE
 * EXTENSION adopts a schema named otp_link that already exists, and every
 * SECURITY DEFINER function (and the worker, as a superuser) uses the
 * objects it finds under that name: a role that owns the schema could
 * rename it and put look-alike tables with triggers in its place, and a
 * role with CREATE on it could add objects.  So the schema must be owned by
 * a superuser, and no other role than superusers may create in it.
 */
DO $check$
DECLARE
	bad text;
BEGIN
	SELECT pg_catalog.format('is owned by role %I, which is not a superuser', r.rolname)
	  INTO bad
	  FROM pg_catalog.pg_namespace n
	  JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
	 WHERE n.nspname = 'otp_link' AND NOT r.rolsuper;
	IF bad IS NULL THEN
		SELECT pg_catalog.format('grants CREATE to %s',
								 CASE WHEN a.grantee = 0 THEN 'PUBLIC'
									  ELSE pg_catalog.quote_ident(r.rolname) END)
		  INTO bad
		  FROM pg_catalog.pg_namespace n
		 CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
		  LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
		 WHERE n.nspname = 'otp_link' AND a.privilege_type = 'CREATE'
		   AND NOT coalesce(r.rolsuper, false)
		 LIMIT 1;
	END IF;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'schema "otp_link" %', bad
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'otp_link''s functions run with their owner''s rights and use the objects in schema otp_link, so a role that owns it or can create objects in it could run code as a superuser.',
				  HINT = 'Check what the schema holds, then drop it or give it to a superuser (ALTER SCHEMA otp_link OWNER TO postgres) and revoke CREATE on it from other roles.';
	END IF;
END
$check$;

/* a schema that existed before CREATE EXTENSION must also be empty */
DO $empty$
BEGIN
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relnamespace = 'otp_link'::pg_catalog.regnamespace)
	   OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE pronamespace = 'otp_link'::pg_catalog.regnamespace)
	   OR EXISTS (SELECT 1 FROM pg_catalog.pg_type WHERE typnamespace = 'otp_link'::pg_catalog.regnamespace)
	   OR EXISTS (SELECT 1 FROM pg_catalog.pg_operator WHERE oprnamespace = 'otp_link'::pg_catalog.regnamespace)
	THEN
		RAISE EXCEPTION 'schema "otp_link" already holds objects'
			USING ERRCODE = 'duplicate_schema',
				  HINT = 'Install otp_link into a new schema: move or drop what schema otp_link holds first.';
	END IF;
END
$empty$;

/*
 * Roles.  Roles are cluster-wide objects, so they are created only when they
 * do not exist yet (a second database may already have them) and they are not
 * members of the extension: DROP EXTENSION leaves them for the DBA to drop.
 */
DO $roles$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['otp_link_app', 'otp_link_inbox', 'otp_link_admin']
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$roles$;

REVOKE ALL ON SCHEMA otp_link FROM PUBLIC;
GRANT USAGE ON SCHEMA otp_link TO otp_link_app, otp_link_inbox, otp_link_admin;

/*
 * Instances: one registered WhatsApp number each.
 */
CREATE TABLE otp_link.instances (
	id			uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
	phone		text NOT NULL UNIQUE CHECK (phone ~ '^[0-9]{8,15}$'),
	name		text,
	options		jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(options) = 'object'),
	secret		text NOT NULL CHECK (secret LIKE 'whsec\_%'),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	previous_secret text CHECK (previous_secret LIKE 'whsec\_%'),
	previous_secret_until timestamptz
);
COMMENT ON TABLE otp_link.instances IS 'Registered WhatsApp numbers, their defaults and their webhook signing secret';

/*
 * Links: one OTP link each.  The code is stored only as its SHA-256 digest;
 * so is the one-time {link} token and the browser binding.
 */
CREATE TABLE otp_link.links (
	id				uuid PRIMARY KEY,
	instance_id		uuid NOT NULL REFERENCES otp_link.instances (id) ON DELETE CASCADE,
	code_hash		bytea NOT NULL,
	status			text NOT NULL DEFAULT 'pending'
					CHECK (status IN ('pending', 'verified', 'failed', 'expired')),
	name			text,
	messages		jsonb NOT NULL,
	callbacks		jsonb NOT NULL,
	phone			text,
	binding_hash	bytea,
	link_url		text,
	rate_key		text,
	metadata		jsonb,
	created_at		timestamptz NOT NULL,
	expires_at		timestamptz NOT NULL,
	messages_received integer NOT NULL DEFAULT 0,
	chat_id			text,
	reason			text,
	finished_at		timestamptz,
	token_hash		bytea,
	token_expires_at timestamptz,
	redeemed_at		timestamptz,
	clicks			integer,
	first_clicked_at timestamptz,
	open_link		text
);
COMMENT ON TABLE otp_link.links IS 'OTP links; codes, tokens and bindings are kept only as SHA-256 digests';
COMMENT ON COLUMN otp_link.links.clicks IS 'Clicks counted by otp_link_open; NULL when the link was made without a click link';
COMMENT ON COLUMN otp_link.links.open_link IS 'The wa.me link (with the code) that otp_link_open answers while the link is pending; cleared when it ends';

/* generate: uniqueness of codes and the lookup of consume_message */
CREATE UNIQUE INDEX links_code_hash_key ON otp_link.links (code_hash);
/* the expiry sweep finds overdue pending links in expires_at order */
CREATE INDEX links_pending_expires_idx ON otp_link.links (expires_at) WHERE status = 'pending';
/* rate limits per (instance, rate_key); also serves the foreign key */
CREATE INDEX links_instance_rate_idx ON otp_link.links (instance_id, rate_key, created_at);
/* monitoring windows over created_at: BRIN is nearly free to maintain */
CREATE INDEX links_created_brin ON otp_link.links USING brin (created_at);
/* redeem */
CREATE UNIQUE INDEX links_token_hash_key ON otp_link.links (token_hash) WHERE token_hash IS NOT NULL;

/*
 * Incoming message ids already processed, for idempotency; purged after
 * otp_link.message_retention.
 */
CREATE TABLE otp_link.messages_seen (
	message_id	text PRIMARY KEY,
	outcome		text NOT NULL,
	link_id		uuid,
	seen_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX messages_seen_seen_at_idx ON otp_link.messages_seen (seen_at);
COMMENT ON TABLE otp_link.messages_seen IS 'Processed incoming message ids (idempotency window)';

/*
 * Unknown-code counters per sender, for the abuse limit.
 */
CREATE TABLE otp_link.senders (
	chat_id			text PRIMARY KEY,
	window_start	timestamptz NOT NULL,
	unknown_codes	integer NOT NULL DEFAULT 0,
	blocked_until	timestamptz,
	window_s		integer NOT NULL DEFAULT 0
);
COMMENT ON TABLE otp_link.senders IS 'Unknown-code counters and blocks per WhatsApp sender';
COMMENT ON COLUMN otp_link.senders.window_s IS 'The longest unknown_code_window (seconds) of the instances guessed at since window_start: a count only restarts after it';

/*
 * Deliveries: every callback and every reply, until delivered or dead.
 */
CREATE TABLE otp_link.deliveries (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	webhook_id		text NOT NULL UNIQUE
					DEFAULT 'msg_' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''),
	instance_id		uuid NOT NULL REFERENCES otp_link.instances (id) ON DELETE CASCADE,
	link_id			uuid,
	kind			text NOT NULL CHECK (kind IN ('callback', 'reply')),
	event			text NOT NULL,
	destination		text NOT NULL,
	payload			jsonb NOT NULL,
	status			text NOT NULL DEFAULT 'queued'
					CHECK (status IN ('queued', 'held', 'delivered', 'dead')),
	attempts		integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	locked_until	timestamptz,
	last_http_status integer,
	last_error		text,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	delivered_at	timestamptz,
	/* the destination, for fairness and circuit breaking (docs/worker.md) */
	dest_key		text NOT NULL GENERATED ALWAYS AS (
		CASE WHEN kind = 'callback'
			 THEN pg_catalog."left"(pg_catalog.lower(COALESCE(pg_catalog."substring"(destination,
					'^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]*)'), '')), 255)
			 ELSE 'reply:' || instance_id::text END) STORED
)
/*
 * room for the claim's HOT update (src/queue.c); VACUUM always cleans the
 * indexes, so that the worker's walk of the queue index does not step over
 * entries of rows deleted or delivered in bulk (docs/worker.md)
 */
WITH (fillfactor = 70, vacuum_index_cleanup = on);
/* the worker's claim: destination by destination, oldest due first */
CREATE INDEX deliveries_dest_due_idx ON otp_link.deliveries (dest_key, next_attempt_at)
	WHERE status = 'queued';
CREATE INDEX deliveries_link_idx ON otp_link.deliveries (link_id);
CREATE INDEX deliveries_instance_idx ON otp_link.deliveries (instance_id);
COMMENT ON TABLE otp_link.deliveries IS 'Outgoing callbacks and replies; the background worker drains it';

/* user data survives pg_dump */
SELECT pg_catalog.pg_extension_config_dump('otp_link.instances', '');
SELECT pg_catalog.pg_extension_config_dump('otp_link.links', '');
SELECT pg_catalog.pg_extension_config_dump('otp_link.messages_seen', '');
SELECT pg_catalog.pg_extension_config_dump('otp_link.senders', '');
SELECT pg_catalog.pg_extension_config_dump('otp_link.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('otp_link.deliveries_id_seq', '');

REVOKE ALL ON ALL TABLES IN SCHEMA otp_link FROM PUBLIC;
GRANT SELECT ON otp_link.instances, otp_link.links, otp_link.deliveries,
	otp_link.messages_seen, otp_link.senders TO otp_link_admin;
GRANT UPDATE (status, next_attempt_at, locked_until) ON otp_link.deliveries TO otp_link_admin;

/*
 * SQL-callable API.  Functions that touch the tables are SECURITY DEFINER
 * with a pinned search_path; EXECUTE is granted per role below.
 */
CREATE FUNCTION otp_link.otp_link_whatsapp_url(phone text, prompt text, code text)
RETURNS text
AS 'MODULE_PATHNAME', 'otp_link_whatsapp_url'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION otp_link.otp_link_whatsapp_url(text, text, text) IS
'The wa.me link that opens a chat with phone and a draft "<prompt> [<code>] - DO NOT CHANGE THIS MESSAGE"';

CREATE FUNCTION otp_link.otp_link_instance_create(phone text, name text DEFAULT NULL,
												  options jsonb DEFAULT '{}')
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_instance_create'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_instance_create(text, text, jsonb) IS
'Registers a WhatsApp number; returns its uuid, phone, chat_id and webhook signing secret';

CREATE FUNCTION otp_link.otp_link_instance_update(instance uuid, name text DEFAULT NULL,
												  options jsonb DEFAULT NULL,
												  rotate_secret boolean DEFAULT false,
												  grace interval DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_instance_update'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_instance_update(uuid, text, jsonb, boolean, interval) IS
'Replaces an instance''s name and/or options, optionally with a new signing secret (with grace, callbacks are also signed with the previous one until it ends); links already made keep their texts';

CREATE FUNCTION otp_link.otp_link_instance_delete(instance uuid)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH d AS (DELETE FROM otp_link.instances WHERE id = instance RETURNING 1)
	SELECT count(*) = 1 FROM d
$$;
COMMENT ON FUNCTION otp_link.otp_link_instance_delete(uuid) IS
'Deletes an instance with its links and deliveries (queued ones are not sent); true if it existed';

/*
 * Replies held for the application (instances without a reply endpoint):
 * the application sends them through its own WhatsApp provider.
 *
 * otp_link_replies_lease takes them like a queue: each reply is leased
 * (deliveries.locked_until) for a while and returned; otp_link_replies_ack
 * then confirms it sent them (delivered) or releases them.  A reply whose
 * lease runs out is leased again, so an application that crashes before
 * sending loses nothing.  otp_link_replies_take (1.0) marks replies
 * delivered as it returns them.  SKIP LOCKED lets several application
 * workers take replies at once without returning one twice.
 */
CREATE FUNCTION otp_link.otp_link_replies_check(max_replies integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF max_replies IS NULL OR max_replies < 1 OR max_replies > 1000 THEN
		RAISE EXCEPTION 'max_replies must be between 1 and 1000'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('It was %s.', coalesce(max_replies::text, 'NULL')),
				  HINT = 'Take at most 1000 replies per call; call again for more.';
	END IF;
END
$$;
COMMENT ON FUNCTION otp_link.otp_link_replies_check(integer) IS
'Raises 22023 unless max_replies is between 1 and 1000 (used by the replies functions)';

CREATE FUNCTION otp_link.otp_link_replies_json(ids bigint[])
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT jsonb_build_object('replies', coalesce(jsonb_agg(jsonb_build_object(
			   'id', d.id, 'instance', d.instance_id, 'link', d.link_id, 'link_uuid', d.link_id,
			   'event', d.event,
			   'to', d.payload->>'to', 'chat_id', (d.payload->>'to') || '@c.us',
			   'body', d.payload->>'body',
			   'created_at', to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'))
			   ORDER BY d.id), '[]'::jsonb))
	  FROM otp_link.deliveries d
	 WHERE d.id = ANY (ids)
$$;
COMMENT ON FUNCTION otp_link.otp_link_replies_json(bigint[]) IS
'The replies with these delivery ids, as otp_link_replies_take and otp_link_replies_lease return them';

CREATE FUNCTION otp_link.otp_link_replies_take(instance uuid DEFAULT NULL,
											   max_replies integer DEFAULT 100)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	taken bigint[];
BEGIN
	PERFORM otp_link.otp_link_replies_check(max_replies);
	WITH t AS (
		SELECT d.id FROM otp_link.deliveries d
		 WHERE d.status = 'held' AND d.kind = 'reply'
		   AND (otp_link_replies_take.instance IS NULL OR d.instance_id = otp_link_replies_take.instance)
		   AND (d.locked_until IS NULL OR d.locked_until <= now())
		 ORDER BY d.id LIMIT max_replies
		   FOR UPDATE SKIP LOCKED),
	done AS (
		UPDATE otp_link.deliveries d
		   SET status = 'delivered', delivered_at = now(), updated_at = now(), locked_until = NULL,
			   attempts = d.attempts + 1, last_error = 'taken by the application'
		  FROM t WHERE d.id = t.id
		RETURNING d.id)
	SELECT coalesce(array_agg(id), '{}') INTO taken FROM done;
	RETURN otp_link.otp_link_replies_json(taken);
END
$$;
COMMENT ON FUNCTION otp_link.otp_link_replies_take(uuid, integer) IS
'Takes up to max_replies held replies (for instances without a reply endpoint) for the application to send; they become delivered at once (see otp_link_replies_lease for a lease and an acknowledgement)';

CREATE FUNCTION otp_link.otp_link_replies_lease(instance uuid DEFAULT NULL,
												max_replies integer DEFAULT 100,
												lease interval DEFAULT '60 seconds')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	leased bigint[];
BEGIN
	PERFORM otp_link.otp_link_replies_check(max_replies);
	IF lease IS NULL OR lease < interval '1 second' OR lease > interval '1 day' THEN
		RAISE EXCEPTION 'lease must be between 1 second and 1 day'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give the time your application needs to send a reply, e.g. ''60 seconds''.';
	END IF;
	WITH t AS (
		SELECT d.id FROM otp_link.deliveries d
		 WHERE d.status = 'held' AND d.kind = 'reply'
		   AND (otp_link_replies_lease.instance IS NULL OR d.instance_id = otp_link_replies_lease.instance)
		   AND (d.locked_until IS NULL OR d.locked_until <= now())
		 ORDER BY d.id LIMIT max_replies
		   FOR UPDATE SKIP LOCKED),
	l AS (
		UPDATE otp_link.deliveries d
		   SET locked_until = now() + lease, updated_at = now(), attempts = d.attempts + 1
		  FROM t WHERE d.id = t.id
		RETURNING d.id)
	SELECT coalesce(array_agg(id), '{}') INTO leased FROM l;
	RETURN otp_link.otp_link_replies_json(leased)
		   || jsonb_build_object('lease_expires_at',
								 to_char((now() + lease) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'));
END
$$;
COMMENT ON FUNCTION otp_link.otp_link_replies_lease(uuid, integer, interval) IS
'Leases up to max_replies held replies for the application to send; confirm or release them with otp_link_replies_ack, else they are leased again when the lease runs out';

CREATE FUNCTION otp_link.otp_link_replies_ack(ids bigint[], sent boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	done bigint[];
BEGIN
	IF ids IS NULL OR sent IS NULL THEN
		RAISE EXCEPTION 'ids and sent must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the ids otp_link_replies_lease returned.';
	END IF;
	WITH a AS (
		UPDATE otp_link.deliveries d
		   SET status = CASE WHEN sent THEN 'delivered' ELSE 'held' END,
			   delivered_at = CASE WHEN sent THEN now() END,
			   locked_until = NULL, updated_at = now(),
			   last_error = CASE WHEN sent THEN 'sent by the application'
								 ELSE 'released by the application' END
		 WHERE d.id = ANY (ids) AND d.status = 'held' AND d.kind = 'reply'
		   AND d.locked_until IS NOT NULL
		RETURNING d.id)
	SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO done FROM a;
	RETURN jsonb_build_object(CASE WHEN sent THEN 'delivered' ELSE 'released' END, to_jsonb(done));
END
$$;
COMMENT ON FUNCTION otp_link.otp_link_replies_ack(bigint[], boolean) IS
'Confirms (sent) or releases (not sent) replies leased by otp_link_replies_lease; returns the ids it changed';

CREATE FUNCTION otp_link.otp_link_generate(instance uuid,
										   expires integer DEFAULT 1800,
										   name text DEFAULT NULL,
										   message jsonb DEFAULT NULL,
										   callback jsonb DEFAULT NULL,
										   phone text DEFAULT NULL,
										   binding text DEFAULT NULL,
										   link_url text DEFAULT NULL,
										   rate_key text DEFAULT NULL,
										   metadata jsonb DEFAULT NULL,
										   click_url text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_generate'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_generate(uuid, integer, text, jsonb, jsonb, text, text, text, text, jsonb, text) IS
'Creates an OTP link; returns uuid, code, chat_id, status, otp_type, expires_at, created_at, whatsapp_link and (with a click URL) click_link';

CREATE FUNCTION otp_link.otp_link_status(uuid uuid)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_status'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_status(uuid) IS
'The state of one OTP link (never its code)';

CREATE FUNCTION otp_link.otp_link_cancel(uuid uuid)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_cancel'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_cancel(uuid) IS
'Withdraws a pending OTP link (it becomes failed with reason cancelled); returns its state';

CREATE FUNCTION otp_link.otp_link_consume_message(chat_id text, body text,
												  message_id text DEFAULT NULL,
												  instance uuid DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_consume_message'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_consume_message(text, text, text, uuid) IS
'Consumes one incoming WhatsApp message; returns its outcome: verified, expired, failed, already_verified, unknown_code, blocked, duplicate or ignored';

CREATE FUNCTION otp_link.otp_link_consume_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'otp_link_consume_trigger'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_consume_trigger() IS
'Row trigger for INSERT on an inbox table; arguments: chat id column, body column [, message id column [, instance uuid]]';

CREATE FUNCTION otp_link.otp_link_consume_webhook(payload jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_consume_webhook'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_consume_webhook(jsonb) IS
'Consumes every text message of a WhatsApp Cloud API webhook payload';

CREATE FUNCTION otp_link.otp_link_expire(max_links integer DEFAULT 10000)
RETURNS integer
AS 'MODULE_PATHNAME', 'otp_link_expire'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_expire(integer) IS
'Expires up to max_links overdue pending links and queues their expired callbacks; returns how many';

CREATE FUNCTION otp_link.otp_link_redeem(token text, binding text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_redeem'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_redeem(text, text) IS
'Exchanges the one-time {link} token once; result: redeemed, invalid_token, already_redeemed, token_expired or binding_mismatch';

CREATE FUNCTION otp_link.otp_link_verify_meta_signature(payload text, signature text,
														app_secret text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'otp_link_verify_meta_signature'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION otp_link.otp_link_verify_meta_signature(text, text, text) IS
'True when signature (the X-Hub-Signature-256 header, sha256=<hex>) signs payload with app_secret';

/*
 * Monitoring (SPEC section 5): the figures as jsonb, as a view, and in
 * Prometheus' text exposition format.
 */
CREATE FUNCTION otp_link.otp_link_worker()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_worker'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION otp_link.otp_link_worker() IS
'Whether a delivery worker serves this database: running, pid, last_round, database, preloaded';

CREATE FUNCTION otp_link.otp_link_stats(since interval DEFAULT '24 hours')
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
WITH l AS (
	SELECT count(*) AS generated,
		   count(*) FILTER (WHERE status = 'verified') AS verified,
		   count(*) FILTER (WHERE status = 'failed') AS failed,
		   count(*) FILTER (WHERE status = 'expired'
							 OR (status = 'pending' AND expires_at <= now())) AS expired,
		   count(*) FILTER (WHERE status = 'pending' AND expires_at > now()) AS pending,
		   count(*) FILTER (WHERE redeemed_at IS NOT NULL) AS redeemed,
		   count(clicks) AS click_links,
		   count(*) FILTER (WHERE clicks > 0) AS clicked,
		   coalesce(sum(messages_received), 0) AS messages,
		   avg(extract(epoch FROM finished_at - created_at))
			   FILTER (WHERE status = 'verified') AS mean_s,
		   percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
			   FILTER (WHERE status = 'verified') AS p95_s
	  FROM otp_link.links
	 WHERE created_at >= now() - since),
m AS (
	SELECT count(*) FILTER (WHERE outcome = 'unknown_code') AS unknown_codes,
		   count(*) FILTER (WHERE outcome = 'blocked') AS blocked,
		   count(*) FILTER (WHERE outcome = 'failed') AS failed_messages
	  FROM otp_link.messages_seen
	 WHERE seen_at >= now() - since),
d AS (
	SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
		   count(*) FILTER (WHERE status = 'queued' AND next_attempt_at <= now()) AS due,
		   count(*) FILTER (WHERE status = 'held') AS held,
		   count(*) FILTER (WHERE status = 'delivered') AS delivered,
		   count(*) FILTER (WHERE status = 'dead') AS dead,
		   coalesce(sum(attempts), 0) AS attempts,
		   coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued')), 0)
			   AS oldest_queued_s
	  FROM otp_link.deliveries)
SELECT jsonb_build_object(
	'window_seconds', extract(epoch FROM since)::bigint,
	'links_generated', l.generated,
	'links_pending', l.pending,
	'links_verified', l.verified,
	'links_failed', l.failed,
	'links_expired', l.expired,
	'links_redeemed', l.redeemed,
	'links_clicked', l.clicked,
	'click_through_rate', CASE WHEN l.click_links > 0 THEN round(l.clicked::numeric / l.click_links, 4) ELSE 0 END,
	'messages_received', l.messages,
	'messages_per_link', CASE WHEN l.generated > 0 THEN round(l.messages::numeric / l.generated, 3) ELSE 0 END,
	'verification_rate', CASE WHEN l.generated > 0 THEN round(l.verified::numeric / l.generated, 4) ELSE 0 END,
	'expiration_rate', CASE WHEN l.generated > 0 THEN round(l.expired::numeric / l.generated, 4) ELSE 0 END,
	'failed_attempts', l.failed + m.unknown_codes + m.blocked,
	'unknown_codes', m.unknown_codes,
	'blocked_messages', m.blocked,
	'time_to_verify_mean_s', round(coalesce(l.mean_s, 0)::numeric, 3),
	'time_to_verify_p95_s', round(coalesce(l.p95_s, 0)::numeric, 3),
	'deliveries_queued', d.queued,
	'deliveries_due', d.due,
	'deliveries_held', d.held,
	'deliveries_delivered', d.delivered,
	'deliveries_dead', d.dead,
	'delivery_attempts', d.attempts,
	'oldest_queued_delivery_s', round(d.oldest_queued_s::numeric, 3),
	'worker_running', CASE WHEN (w.j->>'running')::boolean THEN 1 ELSE 0 END,
	'worker_pid', (w.j->>'pid')::int,
	'worker_last_round_age_s', coalesce(round(extract(epoch FROM now() - (w.j->>'last_round')::timestamptz)::numeric, 3), -1))
  FROM l, m, d, (SELECT otp_link.otp_link_worker() AS j) w
$$;
COMMENT ON FUNCTION otp_link.otp_link_stats(interval) IS
'Monitoring figures over links created (and messages seen) in the window, and the delivery queue now';

CREATE VIEW otp_link.stats AS
	SELECT key AS metric, value
	  FROM pg_catalog.jsonb_each(otp_link.otp_link_stats());
COMMENT ON VIEW otp_link.stats IS 'otp_link_stats() over the last 24 hours, one row per figure';

CREATE FUNCTION otp_link.otp_link_metrics(since interval DEFAULT '24 hours')
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT string_agg(
		   format(E'# HELP otp_link_%s %s\n# TYPE otp_link_%s gauge\notp_link_%s %s\n',
				  key, replace(key, '_', ' '), key, key, value),
		   '' ORDER BY key)
  FROM jsonb_each_text(otp_link.otp_link_stats(since))
$$;
COMMENT ON FUNCTION otp_link.otp_link_metrics(interval) IS
'otp_link_stats() in Prometheus text exposition format (gauges named otp_link_<figure>)';

CREATE FUNCTION otp_link.otp_link_destination_allowed(address inet)
RETURNS boolean
AS 'MODULE_PATHNAME', 'otp_link_destination_allowed'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION otp_link.otp_link_destination_allowed(inet) IS
'Whether the delivery worker may connect to this address when otp_link.allow_private_networks is off (the SSRF guard)';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA otp_link FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_whatsapp_url(text, text, text)
	TO otp_link_app, otp_link_inbox, otp_link_admin;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_generate(uuid, integer, text, jsonb, jsonb, text, text, text, text, jsonb, text),
	otp_link.otp_link_status(uuid),
	otp_link.otp_link_cancel(uuid)
	TO otp_link_app, otp_link_admin;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_instance_create(text, text, jsonb),
	otp_link.otp_link_worker(),
	otp_link.otp_link_expire(integer),
	otp_link.otp_link_stats(interval),
	otp_link.otp_link_metrics(interval)
	TO otp_link_admin;
GRANT SELECT ON otp_link.stats TO otp_link_admin;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_redeem(text, text),
	otp_link.otp_link_replies_take(uuid, integer),
	otp_link.otp_link_replies_lease(uuid, integer, interval),
	otp_link.otp_link_replies_ack(bigint[], boolean)
	TO otp_link_app, otp_link_admin;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_destination_allowed(inet) TO otp_link_admin;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_instance_update(uuid, text, jsonb, boolean, interval),
	otp_link.otp_link_instance_delete(uuid)
	TO otp_link_admin;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_consume_message(text, text, text, uuid),
	otp_link.otp_link_consume_trigger(),
	otp_link.otp_link_consume_webhook(jsonb),
	otp_link.otp_link_verify_meta_signature(text, text, text)
	TO otp_link_inbox, otp_link_admin;

/* ------------------------------------------------------------------------
 * Delivery worker (src/worker.c).  Everything below belongs to the
 * background worker and its administration.
 * ------------------------------------------------------------------------
 */

/* the retention purge finds finished deliveries in updated_at order */
CREATE INDEX deliveries_finished_idx ON otp_link.deliveries (updated_at)
	WHERE status IN ('delivered', 'dead');

CREATE FUNCTION otp_link.otp_link_delivery_requeue(id bigint)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_delivery_requeue'
LANGUAGE C VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_delivery_requeue(bigint) IS
'Puts a dead delivery back in the queue (attempts reset to 0, due now) and wakes the worker; returns id, status, attempts and requeued';

REVOKE ALL ON FUNCTION otp_link.otp_link_delivery_requeue(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_delivery_requeue(bigint) TO otp_link_admin;

/*
 * Any committed INSERT into otp_link.deliveries (or an UPDATE of its status
 * or next_attempt_at, e.g. a manual requeue) wakes the worker at COMMIT, so
 * rows queued by any code path are sent at once, not at the next sweep.
 */
CREATE FUNCTION otp_link.otp_link_deliveries_wake()
RETURNS trigger
AS 'MODULE_PATHNAME', 'otp_link_deliveries_wake'
LANGUAGE C;
COMMENT ON FUNCTION otp_link.otp_link_deliveries_wake() IS
'Trigger function: wakes the delivery worker when the transaction commits';
REVOKE ALL ON FUNCTION otp_link.otp_link_deliveries_wake() FROM PUBLIC;

CREATE TRIGGER deliveries_wake
	AFTER INSERT OR UPDATE OF status, next_attempt_at ON otp_link.deliveries
	FOR EACH STATEMENT EXECUTE FUNCTION otp_link.otp_link_deliveries_wake();

/* ------------------------------------------------------------------------
 * Click-through (issue #14, item 4): otp_link_open counts a click on a
 * link made with a click URL and answers its wa.me link (a 302 over
 * PostgREST).  Knowing a link's uuid is what entitles the caller, so it may
 * be granted to an anonymous web role (docs/security.md).
 * ------------------------------------------------------------------------
 */
CREATE FUNCTION otp_link.otp_link_open(uuid uuid)
RETURNS text
AS 'MODULE_PATHNAME', 'otp_link_open'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_open(uuid) IS
'Counts a click on a pending link made with a click URL and returns its whatsapp_link (PostgREST: 302 with Location); PT404 unknown, PT410 no longer pending';
REVOKE ALL ON FUNCTION otp_link.otp_link_open(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_open(uuid) TO otp_link_app, otp_link_admin;

/* the wa.me link holds the code: keep it only while the link is pending */
CREATE FUNCTION otp_link.otp_link_links_forget_open_link()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	NEW.open_link := NULL;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION otp_link.otp_link_links_forget_open_link() IS
'Trigger function: clears links.open_link when a link leaves pending';
REVOKE ALL ON FUNCTION otp_link.otp_link_links_forget_open_link() FROM PUBLIC;

CREATE TRIGGER links_forget_open_link
	BEFORE UPDATE OF status ON otp_link.links
	FOR EACH ROW
	WHEN (NEW.status <> 'pending' AND NEW.open_link IS NOT NULL)
	EXECUTE FUNCTION otp_link.otp_link_links_forget_open_link();

/*
 * Say so where the user is looking when no delivery worker will serve this
 * database: deliveries would wait, silently.
 */
DO $worker$
DECLARE
	w jsonb := otp_link.otp_link_worker();
BEGIN
	IF NOT (w->>'preloaded')::boolean THEN
		RAISE WARNING 'otp_link is not in shared_preload_libraries: deliveries stay queued'
			USING HINT = 'Add otp_link to shared_preload_libraries and restart the server to start the delivery worker.';
	ELSIF w->>'database' <> pg_catalog.current_database() THEN
		RAISE WARNING 'otp_link worker serves database "%": deliveries queued in database "%" stay queued',
			w->>'database', pg_catalog.current_database()
			USING HINT = pg_catalog.format('Set otp_link.database = %L and restart the server, or use otp_link in database "%s".',
										   pg_catalog.current_database(), w->>'database');
	END IF;
END
$worker$;

/* ------------------------------------------------------------------------
 * Scoped redeem (issue #18): otp_link_redeem limited to one instance (and
 * optionally one metadata purpose, and bound links only).  A link outside
 * the scope answers invalid_token and is not used up.  The 2-argument
 * otp_link_redeem(token, binding) stays as it was; calls that name
 * "instance" reach this one.
 * ------------------------------------------------------------------------
 */
CREATE FUNCTION otp_link.otp_link_redeem(token text, instance uuid, binding text DEFAULT NULL,
										 require_binding boolean DEFAULT false,
										 purpose text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_redeem_scoped'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_redeem(text, uuid, text, boolean, text) IS
'Exchanges the one-time {link} token once if its link belongs to instance (and has metadata purpose = purpose, and a binding when require_binding); otherwise invalid_token, and the link is left as it was';
REVOKE ALL ON FUNCTION otp_link.otp_link_redeem(text, uuid, text, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_redeem(text, uuid, text, boolean, text)
	TO otp_link_app, otp_link_admin;

/* ------------------------------------------------------------------------
 * Inbound gateways (issue #14, items 1 and 2): webhook payload formats as
 * data, and the gateways' signatures (src/webhook.c, src/verify.c).
 * ------------------------------------------------------------------------
 */

/*
 * Webhook formats: where a gateway's payload holds its messages, and in
 * each message the sender, the text, the message id and the receiving
 * number, as SQL/JSON path expressions.  otp_link_consume_webhook(payload,
 * format) reads them; an administrator adds a gateway with one INSERT.
 * Built-in rows belong to the extension: they cannot be changed, and they
 * are not dumped (CREATE EXTENSION makes them again).
 */
CREATE TABLE otp_link.webhook_formats (
	name			text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
	batches			jsonpath NOT NULL DEFAULT '$',
	messages		jsonpath NOT NULL,
	sender			jsonpath NOT NULL,
	text			jsonpath NOT NULL,
	message_id		jsonpath,
	receiver		jsonpath,
	text_filter		jsonpath,
	address_prefix	text CHECK (address_prefix <> ''),
	builtin			boolean NOT NULL DEFAULT false,
	description		text
);
COMMENT ON TABLE otp_link.webhook_formats IS 'Webhook payload formats of WhatsApp gateways, as SQL/JSON path expressions (otp_link_consume_webhook(payload, format))';
COMMENT ON COLUMN otp_link.webhook_formats.batches IS 'On the payload: the groups of messages that share a receiving number (default $, the payload itself)';
COMMENT ON COLUMN otp_link.webhook_formats.messages IS 'On each batch: the messages';
COMMENT ON COLUMN otp_link.webhook_formats.sender IS 'On each message: the sender''s chat id or phone number (its first item, a string)';
COMMENT ON COLUMN otp_link.webhook_formats.text IS 'On each message: the text (its first item, a string)';
COMMENT ON COLUMN otp_link.webhook_formats.message_id IS 'On each message: the gateway''s message id, for idempotency (NULL: none)';
COMMENT ON COLUMN otp_link.webhook_formats.receiver IS 'On each batch: the number that received the messages; when it is an instance''s phone, only that instance''s codes count (NULL: none)';
COMMENT ON COLUMN otp_link.webhook_formats.text_filter IS 'On each message: a predicate, true for the text messages to consume (NULL: every message)';
COMMENT ON COLUMN otp_link.webhook_formats.address_prefix IS 'Removed from the front of sender and receiver when present, e.g. whatsapp: (NULL: none)';
COMMENT ON COLUMN otp_link.webhook_formats.builtin IS 'Made by the extension; cannot be changed or deleted, not dumped';

/*
 * A format must be usable for every payload: a path with a variable would
 * raise on each call (no variables are passed), text_filter must be a
 * predicate, and the other paths must not be.  Raises 22023.
 */
CREATE FUNCTION otp_link.otp_link_webhook_format_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	col text;
	p jsonpath;
BEGIN
	FOR col, p IN
		SELECT c, v FROM (VALUES ('batches', NEW.batches), ('messages', NEW.messages),
								 ('sender', NEW.sender), ('text', NEW.text),
								 ('message_id', NEW.message_id), ('receiver', NEW.receiver),
								 ('text_filter', NEW.text_filter)) AS t(c, v)
		 WHERE v IS NOT NULL
	LOOP
		-- tokens of the canonical text: a string literal, or $" (a variable)
		IF EXISTS (SELECT 1 FROM regexp_matches(p::text, '(\$"|"(?:[^"\\]|\\.)*")', 'g') AS m
					WHERE m[1] = '$"') THEN
			RAISE EXCEPTION 'webhook format "%": % uses a jsonpath variable', NEW.name, col
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.format('%s is %s; otp_link passes no variables.', col, p),
					  HINT = 'Write the value into the path, e.g. $.type == "text".';
		END IF;
		-- datetime methods: comparing a date with a timestamptz raises even
		-- in silent mode, which would refuse the whole payload
		IF regexp_replace(p::text, '"(?:[^"\\]|\\.)*"', '""', 'g')
		   ~ '\.(datetime|date|time|time_tz|timestamp|timestamp_tz)\(' THEN
			RAISE EXCEPTION 'webhook format "%": % uses a datetime method', NEW.name, col
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.format('%s is %s; a comparison of datetime values can raise an error whatever the payload, and a raised error refuses every message of it.', col, p),
					  HINT = 'Compare the value as a string or a number instead, e.g. $.timestamp > 1700000000.';
		END IF;
		IF col <> 'text_filter'
		   AND jsonb_typeof(jsonb_path_query_first('{}', p, '{}', true)) = 'boolean' THEN
			RAISE EXCEPTION 'webhook format "%": % is a predicate, not a path', NEW.name, col
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.format('%s is %s.', col, p),
					  HINT = 'Only text_filter is a predicate; the other columns select values, e.g. $.from.';
		END IF;
	END LOOP;
	IF NEW.text_filter IS NOT NULL THEN
		BEGIN
			PERFORM jsonb_path_match('{}', NEW.text_filter);
		EXCEPTION WHEN data_exception THEN
			RAISE EXCEPTION 'webhook format "%": text_filter is not a predicate', NEW.name
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.format('text_filter is %s.', NEW.text_filter),
					  HINT = 'Write a condition on the message, e.g. $.type == "text", or exists($.Body).';
		END;
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION otp_link.otp_link_webhook_format_check() IS
'Trigger function: refuses (22023) a webhook format with a jsonpath variable or datetime method, a text_filter that is no predicate, or another column that is one';

CREATE TRIGGER webhook_formats_check
	BEFORE INSERT OR UPDATE ON otp_link.webhook_formats
	FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_webhook_format_check();

/*
 * The built-in formats.  Sources (field names) are cited in
 * docs/gateways.md.
 */
INSERT INTO otp_link.webhook_formats
	(name, batches, messages, sender, text, message_id, receiver, text_filter, address_prefix,
	 builtin, description)
VALUES
	('whatsapp_cloud', '$.entry[*].changes[*].value', '$.messages[*]', '$.from', '$.text.body',
	 '$.id', '$.metadata.display_phone_number', '$.type == "text"', NULL, true,
	 'WhatsApp Cloud API (Meta): the messages webhook'),
	('twilio', '$', '$', '$.From', '$.Body', '$.MessageSid', '$.To',
	 'exists($.Body) && $.From starts with "whatsapp:"', 'whatsapp:', true,
	 'Twilio Programmable Messaging: the incoming message webhook''s form parameters as a JSON object'),
	('waha', '$ ? (@.event == "message")', '$.payload', '$.from', '$.body', '$.id', '$.me.id',
	 '!($.fromMe == true) && !($.hasMedia == true)', NULL, true,
	 'WAHA (and other whatsapp-web.js servers of its shape): the message event'),
	('green_api', '$ ? (@.typeWebhook == "incomingMessageReceived")', '$', '$.senderData.chatId',
	 '$.messageData.keyvalue() ? (@.key == "textMessageData" || @.key == "extendedTextMessageData").value.keyvalue() ? (@.key == "textMessage" || @.key == "text").value',
	 '$.idMessage', '$.instanceData.wid',
	 '$.messageData.typeMessage == "textMessage" || $.messageData.typeMessage == "extendedTextMessage"',
	 NULL, true,
	 'GREEN-API: incomingMessageReceived, text and extended text messages');

/*
 * Built-in rows are the extension's: no role changes or deletes them, and
 * no INSERT makes one.  Raises 42501.
 */
CREATE FUNCTION otp_link.otp_link_webhook_format_protect()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	touched text;
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		IF OLD.builtin THEN
			touched := OLD.name;
		END IF;
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		IF NEW.builtin THEN
			touched := NEW.name;
		END IF;
	END IF;
	IF touched IS NOT NULL THEN
		RAISE EXCEPTION 'webhook format "%" is built in', touched
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Built-in formats belong to the extension: CREATE EXTENSION and ALTER EXTENSION UPDATE make them, and pg_dump leaves them out.',
				  HINT = 'Add your own format under another name, with builtin false.';
	END IF;
	IF TG_OP = 'DELETE' THEN
		RETURN OLD;
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION otp_link.otp_link_webhook_format_protect() IS
'Trigger function: refuses (42501) to insert, change or delete a built-in webhook format';

CREATE TRIGGER webhook_formats_protect
	BEFORE INSERT OR UPDATE OR DELETE ON otp_link.webhook_formats
	FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_webhook_format_protect();

/* formats added by an administrator survive pg_dump; built-in ones are made again */
SELECT pg_catalog.pg_extension_config_dump('otp_link.webhook_formats', 'WHERE NOT builtin');

REVOKE ALL ON otp_link.webhook_formats FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON otp_link.webhook_formats TO otp_link_admin;
REVOKE ALL ON FUNCTION otp_link.otp_link_webhook_format_check(),
	otp_link.otp_link_webhook_format_protect() FROM PUBLIC;

CREATE FUNCTION otp_link.otp_link_consume_webhook(payload jsonb, format text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_consume_webhook_format'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_consume_webhook(jsonb, text) IS
'Consumes every text message that a format of otp_link.webhook_formats finds in a gateway''s webhook payload; malformed messages are skipped and listed';

CREATE FUNCTION otp_link.otp_link_verify_hmac(payload text, signature text, secret text,
											  algorithm text DEFAULT 'sha256',
											  encoding text DEFAULT 'hex',
											  prefix text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'otp_link_verify_hmac'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION otp_link.otp_link_verify_hmac(text, text, text, text, text, text) IS
'True when signature is prefix followed by the HMAC (sha1, sha256 or sha512; hex or base64) of payload keyed with secret; constant-time';

CREATE FUNCTION otp_link.otp_link_verify_twilio_signature(url text, params jsonb, signature text,
														  auth_token text,
														  algorithm text DEFAULT 'sha1')
RETURNS boolean
AS 'MODULE_PATHNAME', 'otp_link_verify_twilio_signature'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION otp_link.otp_link_verify_twilio_signature(text, jsonb, text, text, text) IS
'True when signature (X-Twilio-Signature) is the base64 HMAC-SHA1 of url followed by the POST parameters sorted by name, keyed with auth_token; constant-time';

REVOKE ALL ON FUNCTION otp_link.otp_link_consume_webhook(jsonb, text),
	otp_link.otp_link_verify_hmac(text, text, text, text, text, text),
	otp_link.otp_link_verify_twilio_signature(text, jsonb, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_consume_webhook(jsonb, text),
	otp_link.otp_link_verify_hmac(text, text, text, text, text, text),
	otp_link.otp_link_verify_twilio_signature(text, jsonb, text, text, text)
	TO otp_link_inbox, otp_link_admin;

/* ------------------------------------------------------------------------
 * Metrics a scraper can afford (#14 item 5; src/metrics.c): cumulative
 * counters in shared memory, queue gauges from indexes, and the
 * Prometheus text exposition of both.  otp_link_metrics(since) keeps its
 * 1.0 behaviour (figures over the links created in the window).
 * ------------------------------------------------------------------------
 */

/* held and dead deliveries, counted by an index-only scan */
CREATE INDEX deliveries_held_dead_idx ON otp_link.deliveries (status)
	WHERE status IN ('held', 'dead');

CREATE FUNCTION otp_link.otp_link_counters()
RETURNS TABLE (metric text, label text, value double precision)
AS 'MODULE_PATHNAME', 'otp_link_counters'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION otp_link.otp_link_counters() IS
'The server-wide counters kept in shared memory since the server started (committed work only), one row per Prometheus series; no rows when otp_link is not in shared_preload_libraries';

CREATE FUNCTION otp_link.otp_link_gauges()
RETURNS TABLE (metric text, help text, value double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
WITH q AS (
	SELECT count(*) AS queued,
		   count(*) FILTER (WHERE next_attempt_at <= now()) AS due,
		   coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0) AS oldest_s
	  FROM otp_link.deliveries WHERE status = 'queued'),
hd AS (
	SELECT count(*) FILTER (WHERE status = 'held') AS held,
		   count(*) FILTER (WHERE status = 'dead') AS dead
	  FROM otp_link.deliveries WHERE status IN ('held', 'dead')),
p AS (
	SELECT count(*) AS pending,
		   count(*) FILTER (WHERE expires_at <= now()) AS overdue
	  FROM otp_link.links WHERE status = 'pending'),
w AS (SELECT otp_link.otp_link_worker() AS j)
SELECT g.metric, g.help, g.value
  FROM q, hd, p, w, LATERAL (VALUES
	('otp_link_deliveries_queued', 'Deliveries waiting to be sent (due now or later).', q.queued::float8),
	('otp_link_deliveries_due', 'Queued deliveries due now.', q.due::float8),
	('otp_link_deliveries_oldest_due_seconds', 'Seconds since the most overdue queued delivery was due (0 when none is due).',
	 greatest(q.oldest_s, 0)::float8),
	('otp_link_deliveries_held', 'Replies held for the application to take.', hd.held::float8),
	('otp_link_deliveries_dead', 'Dead deliveries still in the table.', hd.dead::float8),
	('otp_link_links_pending', 'Pending links, overdue ones included.', p.pending::float8),
	('otp_link_links_overdue', 'Pending links past their expiry that otp_link_expire has not ended yet.', p.overdue::float8),
	('otp_link_preloaded', 'Whether otp_link is in shared_preload_libraries (1: the counters are kept).',
	 CASE WHEN (w.j->>'preloaded')::boolean THEN 1 ELSE 0 END::float8),
	('otp_link_worker_running', 'Whether a delivery worker serves this database.',
	 CASE WHEN (w.j->>'running')::boolean THEN 1 ELSE 0 END::float8),
	('otp_link_worker_last_round_age_seconds', 'Seconds since the worker''s last round ended (-1: no worker).',
	 coalesce(extract(epoch FROM now() - (w.j->>'last_round')::timestamptz), -1)::float8))
	AS g(metric, help, value)
$$;
COMMENT ON FUNCTION otp_link.otp_link_gauges() IS
'Monitoring gauges read from indexes: the delivery queue, pending links, the worker';

CREATE FUNCTION otp_link.otp_link_prometheus()
RETURNS text
AS 'MODULE_PATHNAME', 'otp_link_prometheus'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION otp_link.otp_link_prometheus() IS
'otp_link_counters() and otp_link_gauges() in Prometheus text exposition format (counters _total, the time-to-verify histogram, gauges); costs no scan of the links';

REVOKE ALL ON FUNCTION otp_link.otp_link_counters(),
	otp_link.otp_link_gauges(),
	otp_link.otp_link_prometheus() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_counters(),
	otp_link.otp_link_gauges(),
	otp_link.otp_link_prometheus()
	TO otp_link_admin, pg_monitor;
/* a monitoring role (the exporter's) finds them; the tables stay closed */
GRANT USAGE ON SCHEMA otp_link TO pg_monitor;
