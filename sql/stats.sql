--
-- Monitoring: otp_link_stats(), the stats view and otp_link_metrics()
--
CREATE EXTENSION otp_link;
SELECT otp_link.otp_link_instance_create('201553730661', 'Stats',
       '{"callback": {"success": "https://cb.example/ok", "failed": "https://cb.example/ko"}}')->>'uuid' AS inst \gset
SET otp_link.debug_codes = 'AAAAAAAA,BBBBBBBB,CCCCCCCC,DDDDDDDD';
SELECT count(otp_link.otp_link_generate(:'inst')) AS generated FROM generate_series(1, 4);
UPDATE otp_link.links SET phone = '447700900111' WHERE code_hash = sha256('BBBBBBBB');
UPDATE otp_link.links SET expires_at = now() - interval '1 second' WHERE code_hash = sha256('CCCCCCCC');
SELECT otp_link.otp_link_consume_message('447700900999', '[AAAAAAAA]', 'm1')->>'outcome' AS a,
       otp_link.otp_link_consume_message('447700900999', '[AAAAAAAA]', 'm2')->>'outcome' AS a_again,
       otp_link.otp_link_consume_message('447700900999', '[BBBBBBBB]', 'm3')->>'outcome' AS b,
       otp_link.otp_link_consume_message('447700900999', '[ZZZZZZZZ]', 'm4')->>'outcome' AS z;
SELECT key, CASE WHEN key LIKE 'time_to_verify%' OR key = 'oldest_queued_delivery_s'
                 THEN (value::numeric >= 0)::text::jsonb ELSE value END AS value
  FROM jsonb_each(otp_link.otp_link_stats())
 ORDER BY key;
-- the view and the window
SELECT count(*) > 20 AS rows FROM otp_link.stats;
SELECT otp_link.otp_link_stats('1 microsecond')->'links_generated' AS none_in_window;
-- Prometheus text format: HELP, TYPE and a sample per figure
SELECT line FROM regexp_split_to_table(otp_link.otp_link_metrics(), E'\n') AS line
 WHERE line LIKE '%links_verified%' OR line LIKE '%deliveries_queued%';
SELECT count(*) FILTER (WHERE line ~ '^otp_link_[a-z0-9_]+ -?[0-9.]+$') AS samples,
       count(*) FILTER (WHERE line LIKE '# TYPE % gauge') AS types
  FROM regexp_split_to_table(otp_link.otp_link_metrics(), E'\n') AS line;
RESET otp_link.debug_codes;
DROP EXTENSION otp_link;
