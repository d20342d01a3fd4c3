/* otp_link--1.0--1.1.sql: update of otp_link from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION otp_link UPDATE TO '1.1'" to load this file. \quit

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

/*
 * The unknown-code counter of a sender is shared by every instance; its
 * window now only grows while it runs, so an instance with a short
 * unknown_code_window cannot restart a count another instance started.
 */
ALTER TABLE otp_link.senders ADD COLUMN window_s integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN otp_link.senders.window_s IS 'The longest unknown_code_window (seconds) of the instances guessed at since window_start: a count only restarts after it';

/*
 * Held replies: a lease and an acknowledgement (otp_link_replies_lease,
 * otp_link_replies_ack); otp_link_replies_take refuses a max_replies outside
 * 1..1000 instead of reading NULL as 1000 and 0 as nothing, and skips
 * replies under a lease.
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

DROP FUNCTION otp_link.otp_link_replies_take(uuid, integer);
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

REVOKE ALL ON FUNCTION otp_link.otp_link_replies_check(integer),
	otp_link.otp_link_replies_json(bigint[]),
	otp_link.otp_link_replies_take(uuid, integer),
	otp_link.otp_link_replies_lease(uuid, integer, interval),
	otp_link.otp_link_replies_ack(bigint[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_replies_take(uuid, integer),
	otp_link.otp_link_replies_lease(uuid, integer, interval),
	otp_link.otp_link_replies_ack(bigint[], boolean)
	TO otp_link_app, otp_link_admin;

/*
 * The worker's health, readable by otp_link_admin (pg_stat_activity hides
 * backend_type from roles without pg_read_all_stats): otp_link_worker(),
 * and worker_running, worker_pid and worker_last_round_age_s in
 * otp_link_stats().
 */
CREATE FUNCTION otp_link.otp_link_worker()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'otp_link_worker'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION otp_link.otp_link_worker() IS
'Whether a delivery worker serves this database: running, pid, last_round, database, preloaded';

/*
 * Click-through (issue #14, item 4): the click columns of links, here
 * because otp_link_stats below counts them; the rest is at the end.
 */
ALTER TABLE otp_link.links
	ADD COLUMN clicks integer,
	ADD COLUMN first_clicked_at timestamptz,
	ADD COLUMN open_link text;
COMMENT ON COLUMN otp_link.links.clicks IS 'Clicks counted by otp_link_open; NULL when the link was made without a click link';
COMMENT ON COLUMN otp_link.links.open_link IS 'The wa.me link (with the code) that otp_link_open answers while the link is pending; cleared when it ends';

CREATE OR REPLACE FUNCTION otp_link.otp_link_stats(since interval DEFAULT '24 hours')
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

REVOKE ALL ON FUNCTION otp_link.otp_link_worker() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_worker() TO otp_link_admin;

/*
 * Secret rotation with a grace period: while previous_secret_until is in
 * the future, callbacks carry a second signature made with previous_secret.
 */
ALTER TABLE otp_link.instances
	ADD COLUMN previous_secret text CHECK (previous_secret LIKE 'whsec\_%'),
	ADD COLUMN previous_secret_until timestamptz;
DROP FUNCTION otp_link.otp_link_instance_update(uuid, text, jsonb, boolean);
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
REVOKE ALL ON FUNCTION otp_link.otp_link_instance_update(uuid, text, jsonb, boolean, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_instance_update(uuid, text, jsonb, boolean, interval) TO otp_link_admin;

/* ------------------------------------------------------------------------
 * Click-through (issue #14, item 4): generate takes click_url; the click
 * columns of links are added above, before otp_link_stats.
 * ------------------------------------------------------------------------
 */
DROP FUNCTION otp_link.otp_link_generate(uuid, integer, text, jsonb, jsonb, text, text, text, text, jsonb);
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
REVOKE ALL ON FUNCTION otp_link.otp_link_generate(uuid, integer, text, jsonb, jsonb, text, text, text, text, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_generate(uuid, integer, text, jsonb, jsonb, text, text, text, text, jsonb, text)
	TO otp_link_app, otp_link_admin;

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
 * Delivery isolation: each delivery's destination (the host and port of a
 * callback URL, or the replies of one instance), and the claim's index,
 * destination by destination (docs/worker.md).
 */
ALTER TABLE otp_link.deliveries ADD COLUMN
	dest_key		text NOT NULL GENERATED ALWAYS AS (
		CASE WHEN kind = 'callback'
			 THEN pg_catalog."left"(pg_catalog.lower(COALESCE(pg_catalog."substring"(destination,
					'^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]*)'), '')), 255)
			 ELSE 'reply:' || instance_id::text END) STORED;
DROP INDEX otp_link.deliveries_due_idx;
CREATE INDEX deliveries_dest_due_idx ON otp_link.deliveries (dest_key, next_attempt_at)
	WHERE status = 'queued';

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

/* ------------------------------------------------------------------------
 * Delivery throughput (#16): the claim no longer touches an indexed
 * column, so its update is HOT when the page has room; new pages keep 30 %
 * free for it.  VACUUM always cleans the indexes: the worker walks the
 * queue index each round, and entries of rows deleted or delivered in
 * bulk that a VACUUM left behind (PostgreSQL skips index cleanup when few
 * heap pages have dead rows) made every round read them (docs/worker.md).
 * ------------------------------------------------------------------------
 */
ALTER TABLE otp_link.deliveries SET (fillfactor = 70, vacuum_index_cleanup = on);
