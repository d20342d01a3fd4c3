--
-- Metrics a scraper can afford (issue #14, item 5): server-wide counters in
-- shared memory, counted at COMMIT only, exposed by otp_link_counters() and,
-- with the gauges of otp_link_gauges(), by otp_link_prometheus() in
-- Prometheus' text format.  The counters are server-wide and the other
-- tests ran before: this file compares differences.
--
CREATE EXTENSION otp_link;
SELECT otp_link.otp_link_instance_create('201553730671', 'Metrics',
    '{"click_url": "https://api.example/rpc/otp_link_open?uuid={uuid}",
      "callback": {"success": "https://cb.example/ok", "failed": "https://cb.example/ko"}}')->>'uuid' AS inst \gset
CREATE TEMP TABLE before AS SELECT * FROM otp_link.otp_link_counters();
CREATE FUNCTION pg_temp.moved() RETURNS TABLE (metric text, label text, delta double precision)
LANGUAGE sql AS $$
    SELECT c.metric, c.label, c.value - coalesce(b.value, 0)
      FROM otp_link.otp_link_counters() c
      LEFT JOIN before b ON b.metric = c.metric AND b.label IS NOT DISTINCT FROM c.label
     WHERE c.value <> coalesce(b.value, 0) AND c.metric <> 'otp_link_time_to_verify_seconds_sum'
     ORDER BY 1, 2
$$;

SET otp_link.debug_codes = 'PROMAAAA,PROMBBBB,PROMCCCC,PROMDDDD,PROMEEEE,PROMFFFF,PROMGGGG';
SELECT otp_link.otp_link_generate(:'inst') AS a \gset
SELECT otp_link.otp_link_generate(:'inst', phone => '447700900111') AS b \gset
SELECT otp_link.otp_link_generate(:'inst') AS c \gset
SELECT otp_link.otp_link_generate(:'inst') AS d \gset
-- rolled back: neither the link nor its count
BEGIN;
SELECT otp_link.otp_link_generate(:'inst') IS NOT NULL AS rolled_back;
ROLLBACK;
-- a subtransaction rolled back loses its counts, a released one keeps them
BEGIN;
SAVEPOINT s1;
SELECT otp_link.otp_link_generate(:'inst') IS NOT NULL AS in_savepoint_rolled_back;
ROLLBACK TO SAVEPOINT s1;
SAVEPOINT s2;
SAVEPOINT s3;
SELECT otp_link.otp_link_generate(:'inst') IS NOT NULL AS in_savepoint_released;
RELEASE SAVEPOINT s3;
RELEASE SAVEPOINT s2;
SAVEPOINT s4;
SELECT otp_link.otp_link_consume_message('447700900999', '[PROMGGGG]', 'p0')->>'outcome' AS verified_then_rolled_back;
ROLLBACK TO SAVEPOINT s4;
COMMIT;
RESET otp_link.debug_codes;
SELECT count(*) AS links FROM otp_link.links;

-- link a was created 45 seconds ago: it falls in the buckets from le="60" up
UPDATE otp_link.links SET created_at = created_at - interval '45 seconds'
 WHERE id = (:'a'::jsonb->>'uuid')::uuid;
SELECT otp_link.otp_link_consume_message('447700900999', '[PROMAAAA]', 'p1')->>'outcome' AS a,
       otp_link.otp_link_consume_message('447700900999', '[PROMAAAA]', 'p2')->>'outcome' AS a_again,
       otp_link.otp_link_consume_message('447700900999', '[PROMAAAA]', 'p2')->>'outcome' AS a_duplicate,
       otp_link.otp_link_consume_message('447700900999', '[PROMBBBB]', 'p3')->>'outcome' AS b_wrong_sender,
       otp_link.otp_link_consume_message('447700900999', '[PROMZZZZ]', 'p4')->>'outcome' AS unknown;
-- a click (the first on that link), another click, a cancel, an expiry
SELECT otp_link.otp_link_open((:'c'::jsonb->>'uuid')::uuid) IS NOT NULL AS clicked,
       otp_link.otp_link_open((:'c'::jsonb->>'uuid')::uuid) IS NOT NULL AS clicked_again;
SELECT otp_link.otp_link_cancel((:'c'::jsonb->>'uuid')::uuid)->>'cancelled' AS cancelled;
UPDATE otp_link.links SET expires_at = now() - interval '1 second'
 WHERE id = (:'d'::jsonb->>'uuid')::uuid;
SELECT otp_link.otp_link_expire() AS expired;

-- what moved: committed work only
SELECT * FROM pg_temp.moved();
SELECT (SELECT value FROM otp_link.otp_link_counters() WHERE metric = 'otp_link_time_to_verify_seconds_sum')
     - (SELECT value FROM before WHERE metric = 'otp_link_time_to_verify_seconds_sum') >= 0 AS sum_grew;

-- the exposition: HELP and TYPE before each family, samples that parse,
-- counters named _total, one histogram with cumulative buckets up to +Inf
CREATE TEMP TABLE expo AS
    SELECT n, line FROM regexp_split_to_table(otp_link.otp_link_prometheus(), E'\n')
                        WITH ORDINALITY AS t(line, n) WHERE line <> '';
SELECT count(*) FILTER (WHERE line !~ '^# (HELP|TYPE) ' AND line !~ '^[a-z_]+(\{[a-z]+="[^"]*"\})? [0-9.e+-]+$') AS bad_lines,
       count(*) FILTER (WHERE line ~ '^# TYPE \S+ counter$' AND line !~ '_total counter$') AS counters_without_total
  FROM expo;
SELECT regexp_replace(line, '^# TYPE (\S+) (\S+)$', '\1 \2') AS family
  FROM expo WHERE line LIKE '# TYPE %' ORDER BY n;
SELECT regexp_replace(line, ' .*', '') AS sample FROM expo
 WHERE line LIKE 'otp_link_time_to_verify_seconds%' OR line LIKE 'otp_link_messages_total%' ORDER BY n;
-- a sample without its HELP and TYPE lines
SELECT s.line FROM expo s
 WHERE s.line NOT LIKE '#%'
   AND NOT EXISTS (SELECT FROM expo t WHERE t.n < s.n AND t.line ~ ('^# TYPE ' || regexp_replace(s.line, '(_bucket|_sum|_count)?(\{.*)? .*$', '') || ' '));
-- the gauges agree with the tables
SELECT (SELECT value FROM otp_link.otp_link_gauges() WHERE metric = 'otp_link_deliveries_queued')
       = (SELECT count(*) FROM otp_link.deliveries WHERE status = 'queued') AS queued_agrees,
       (SELECT value FROM otp_link.otp_link_gauges() WHERE metric = 'otp_link_links_pending')
       = (SELECT count(*) FROM otp_link.links WHERE status = 'pending') AS pending_agrees,
       (SELECT value FROM otp_link.otp_link_gauges() WHERE metric = 'otp_link_preloaded') AS preloaded;
-- otp_link_metrics(since) still answers as in 1.0
SELECT count(*) FILTER (WHERE line LIKE '# TYPE % gauge') > 20 AS metrics_1_0
  FROM regexp_split_to_table(otp_link.otp_link_metrics('1 hour'), E'\n') AS line;
-- roles: otp_link_admin and pg_monitor, nobody else
SELECT p.proname, has_function_privilege('otp_link_admin', p.oid, 'EXECUTE') AS admin,
       has_function_privilege('pg_monitor', p.oid, 'EXECUTE') AS monitor,
       has_function_privilege('otp_link_app', p.oid, 'EXECUTE') AS app
  FROM pg_proc p WHERE p.pronamespace = 'otp_link'::regnamespace
   AND p.proname IN ('otp_link_counters', 'otp_link_gauges', 'otp_link_prometheus') ORDER BY 1;
-- the text does not depend on the session's float settings (outside
-- review: extra_float_digits = -15 printed 100001 pending links as 1e+05)
SELECT count(otp_link.otp_link_generate(i.id)) AS generated
  FROM (SELECT id FROM otp_link.instances LIMIT 1) i, generate_series(1, 12);
SET extra_float_digits = -15;
SELECT l = 'otp_link_links_pending ' || (SELECT count(*) FROM otp_link.links WHERE status = 'pending') AS pending_exact
  FROM regexp_split_to_table(otp_link.otp_link_prometheus(), E'\n') l
 WHERE l LIKE 'otp_link_links_pending %';
RESET extra_float_digits;
DROP EXTENSION otp_link;
