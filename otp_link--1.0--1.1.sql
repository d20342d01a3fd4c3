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
