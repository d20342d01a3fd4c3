--
-- otp_link_expire: the bounded expiry sweep and its callbacks
--
CREATE EXTENSION otp_link;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

SELECT otp_link.otp_link_instance_create('201553730661', 'Shop')->>'uuid' AS inst \gset

-- nothing to do
SELECT otp_link.otp_link_expire() AS expired;

-- seven overdue links with every kind of callback set, oldest first: a1..a7
SELECT count(*) AS links FROM (
    SELECT otp_link.otp_link_generate(:'inst',
        callback => CASE i % 3
            WHEN 1 THEN '{"success": "https://app.example/ok", "failed": "https://app.example/ko", "expired": "https://app.example/exp"}'
            WHEN 2 THEN '{"success": "https://app.example/ok", "failed": "https://app.example/ko"}'
            ELSE '{"success": "https://app.example/ok"}' END::jsonb,
        metadata => jsonb_build_object('t', 'a' || i))
      FROM generate_series(1, 7) i) s;
UPDATE otp_link.links SET expires_at = now() - make_interval(mins => 100 - substr(metadata->>'t', 2)::int)
 WHERE metadata->>'t' LIKE 'a%';
-- and links the sweep must leave alone: pending and not yet due, verified
-- and overdue, failed and overdue
SET otp_link.debug_codes = 'NOTDUEAA,VERIFIED,FAILEDAA';
SELECT otp_link.otp_link_generate(:'inst', callback => '{"expired": "https://app.example/exp"}',
    metadata => '{"t": "notdue"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', callback => '{"expired": "https://app.example/exp"}',
    metadata => '{"t": "verified"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', callback => '{"expired": "https://app.example/exp"}',
    metadata => '{"t": "failed"}')->>'code' AS code;
SELECT otp_link.otp_link_consume_message('447700900123', '[VERIFIED]')->>'outcome' AS outcome;
SELECT otp_link.otp_link_cancel(id)->>'status' AS status FROM otp_link.links WHERE metadata->>'t' = 'failed';
UPDATE otp_link.links SET expires_at = now() - interval '1 day' WHERE metadata->>'t' IN ('verified', 'failed');
UPDATE otp_link.links SET expires_at = now() + interval '1 hour' WHERE metadata->>'t' = 'notdue';
SELECT count(*) AS deliveries_before FROM otp_link.deliveries \gset

-- the status already reads expired before the sweep
SELECT otp_link.otp_link_status(id)->>'status' AS status FROM otp_link.links WHERE metadata->>'t' = 'a1';

-- bounded: at most max_links per call, oldest first, until 0
SELECT otp_link.otp_link_expire(max_links => 3) AS expired;
SELECT metadata->>'t' AS t FROM otp_link.links WHERE status = 'expired' ORDER BY 1;
SELECT otp_link.otp_link_expire(3) AS expired;
SELECT otp_link.otp_link_expire(3) AS expired;
SELECT otp_link.otp_link_expire(3) AS expired;
SELECT metadata->>'t' AS t, status, reason, finished_at IS NOT NULL AS finished,
       messages_received, chat_id
  FROM otp_link.links ORDER BY 1;

-- one callback per expired link: to callback.expired, else callback.failed,
-- none without either; no reply (nobody wrote)
SELECT l.metadata->>'t' AS t, d.kind, d.event, d.destination, d.status
  FROM otp_link.deliveries d JOIN otp_link.links l ON l.id = d.link_id
 WHERE d.id > :deliveries_before ORDER BY 1;
SELECT jsonb_object_keys(payload) AS keys FROM otp_link.deliveries
 WHERE link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'a1') ORDER BY 1;
SELECT jsonb_object_keys(payload->'data') AS data_keys FROM otp_link.deliveries
 WHERE link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'a1') ORDER BY 1;
SELECT d.payload->>'type' AS type,
       d.payload->>'timestamp' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$' AS timestamp_iso,
       d.payload->'data'->>'uuid' = l.id::text AS uuid_ok,
       d.payload->'data'->>'status' AS status,
       d.payload->'data'->>'reason' AS reason,
       d.payload->'data'->'sender' AS sender,
       d.payload->'data'->'verified_chat_id' AS verified_chat_id,
       d.payload->'data'->>'chat_id' AS chat_id,
       d.payload->'data'->'metadata' AS metadata,
       (d.payload->'data'->>'finished_at')::timestamptz = date_trunc('second', l.finished_at) AS finished_at_ok
  FROM otp_link.deliveries d JOIN otp_link.links l ON l.id = d.link_id
 WHERE l.metadata->>'t' = 'a1';

-- the link that was not due becomes due
UPDATE otp_link.links SET expires_at = now() - interval '1 second' WHERE metadata->>'t' = 'notdue';
SELECT otp_link.otp_link_expire() AS expired;
SELECT otp_link.otp_link_expire() AS expired;
SELECT count(*) AS callbacks, count(DISTINCT link_id) AS links
  FROM otp_link.deliveries WHERE event = 'otp_link.expired';

-- a ROLLBACK undoes the sweep and its callbacks
SET otp_link.debug_codes = 'ROLLBACK';
SELECT otp_link.otp_link_generate(:'inst', callback => '{"expired": "https://app.example/exp"}',
    metadata => '{"t": "rollback"}')->>'code' AS code;
UPDATE otp_link.links SET expires_at = now() - interval '1 second' WHERE metadata->>'t' = 'rollback';
BEGIN;
SELECT otp_link.otp_link_expire() AS expired;
ROLLBACK;
SELECT status FROM otp_link.links WHERE metadata->>'t' = 'rollback';
SELECT count(*) AS callbacks FROM otp_link.deliveries
 WHERE link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'rollback');
SELECT otp_link.otp_link_expire() AS expired;

-- a large backlog in bounded batches
RESET otp_link.debug_codes;
SELECT count(*) AS links FROM (
    SELECT otp_link.otp_link_generate(:'inst', callback => '{"failed": "https://app.example/ko"}',
        metadata => jsonb_build_object('t', 'bulk'))
      FROM generate_series(1, 250) i) s;
UPDATE otp_link.links SET expires_at = now() - interval '1 minute' WHERE metadata->>'t' = 'bulk';
SELECT otp_link.otp_link_expire(100) AS expired;
SELECT otp_link.otp_link_expire(100) AS expired;
SELECT otp_link.otp_link_expire(100) AS expired;
SELECT otp_link.otp_link_expire(100) AS expired;
SELECT status, count(*) FROM otp_link.links WHERE metadata->>'t' = 'bulk' GROUP BY 1;
SELECT count(*) AS callbacks, count(DISTINCT link_id) AS links, min(destination) AS destination
  FROM otp_link.deliveries
 WHERE link_id IN (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'bulk');

-- bad input
SELECT pg_temp.err($$SELECT otp_link.otp_link_expire(0)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_expire(NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_expire(-1)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_expire(max_links => 0)$$);

-- roles: the admin sweeps; the application and the inbox cannot
CREATE ROLE regress_otp_expire_admin IN ROLE otp_link_admin;
CREATE ROLE regress_otp_expire_inbox IN ROLE otp_link_inbox;
CREATE ROLE regress_otp_expire_app IN ROLE otp_link_app;
SET ROLE regress_otp_expire_inbox;
SELECT pg_temp.err($$SELECT otp_link.otp_link_expire()$$);
SET ROLE regress_otp_expire_app;
SELECT pg_temp.err($$SELECT otp_link.otp_link_expire()$$);
SET ROLE regress_otp_expire_admin;
SELECT otp_link.otp_link_expire() AS expired;
RESET ROLE;
DROP ROLE regress_otp_expire_admin, regress_otp_expire_inbox, regress_otp_expire_app;

RESET otp_link.debug_codes;
DROP EXTENSION otp_link;
