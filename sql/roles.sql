--
-- Roles: what a stranger, the application, the inbox and the admin may do
--
CREATE EXTENSION otp_link;
\set VERBOSITY terse
SELECT otp_link.otp_link_instance_create('201553730661', 'Roles')->>'uuid' AS inst \gset
CREATE ROLE regress_otp_stranger;
CREATE ROLE regress_otp_app IN ROLE otp_link_app;
CREATE ROLE regress_otp_inbox IN ROLE otp_link_inbox;
CREATE ROLE regress_otp_admin IN ROLE otp_link_admin;

-- nothing in the schema is granted to PUBLIC
SELECT count(*) > 5 AS has_functions,
       count(*) FILTER (WHERE p.proacl IS NULL OR p.proacl::text ~ '(^|[{,])=[a-zA-Z*]*X') AS public_execute
  FROM pg_proc p WHERE p.pronamespace = 'otp_link'::regnamespace;
SELECT count(*) > 5 AS has_relations,
       count(*) FILTER (WHERE c.relacl::text ~ '(^|[{,])=') AS public_access
  FROM pg_class c WHERE c.relnamespace = 'otp_link'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'm');
-- SECURITY DEFINER functions pin search_path
SELECT count(*) > 5 AS has_security_definer,
       count(*) FILTER (WHERE NOT coalesce(p.proconfig @> '{"search_path=pg_catalog, pg_temp"}', false)) AS unpinned
  FROM pg_proc p WHERE p.pronamespace = 'otp_link'::regnamespace AND p.prosecdef;

-- a stranger can do nothing
SET ROLE regress_otp_stranger;
SELECT otp_link.otp_link_generate(:'inst');
SELECT count(*) FROM otp_link.links;
RESET ROLE;

-- the application generates, reads status, cancels; it cannot read tables
-- or create instances
SET ROLE regress_otp_app;
SELECT otp_link.otp_link_generate(:'inst')->>'uuid' AS link \gset
SELECT otp_link.otp_link_status(:'link')->>'status' AS status;
SELECT otp_link.otp_link_cancel(:'link')->>'status' AS status;
SELECT otp_link.otp_link_redeem('no-such-token') AS redeemed;
SELECT otp_link.otp_link_consume_message('447700900123', 'hello [ABCDEFGH]');
SELECT otp_link.otp_link_expire();
SELECT count(*) FROM otp_link.links;
SELECT otp_link.otp_link_instance_create('447700900003');
RESET ROLE;

-- the inbox consumes messages but cannot generate
SET ROLE regress_otp_inbox;
SELECT otp_link.otp_link_consume_message('447700900123', 'hello') AS consumed;
SELECT otp_link.otp_link_redeem('no-such-token');
SELECT otp_link.otp_link_generate(:'inst');
SELECT count(*) FROM otp_link.links;
RESET ROLE;

-- the admin creates instances and reads every table
SET ROLE regress_otp_admin;
SELECT otp_link.otp_link_instance_create('447700900003')->>'phone' AS phone;
SELECT count(*) > 0 AS sees_links FROM otp_link.links;
SELECT count(*) >= 0 AS sees_deliveries FROM otp_link.deliveries;
SELECT otp_link.otp_link_expire() AS expired;
DELETE FROM otp_link.links;
RESET ROLE;

DROP ROLE regress_otp_stranger, regress_otp_app, regress_otp_inbox, regress_otp_admin;
DROP EXTENSION otp_link;
