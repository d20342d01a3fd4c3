--
-- Without a worker serving this database, deliveries wait: say so where
-- the user is looking (issue 13): a WARNING at CREATE EXTENSION and once
-- per statement that queues a delivery, and worker_running = 0.  (The
-- test clusters' worker serves database "postgres", not this one.)
--
SET client_min_messages = warning;
CREATE EXTENSION otp_link;
SELECT otp_link.otp_link_worker() - 'pid' - 'last_round' AS worker;
SELECT (otp_link.otp_link_stats()->>'worker_running')::int AS worker_running;
SELECT otp_link.otp_link_instance_create('201553730661', 'W',
       '{"callback": {"success": "https://app.example/cb"}}')->>'uuid' AS inst \gset
SET otp_link.debug_codes = 'WARNCODE';
SELECT otp_link.otp_link_generate(:'inst') ? 'uuid' AS generated;   -- queues nothing
-- a verification queues a reply and a callback: one warning for the statement
SELECT otp_link.otp_link_consume_message('447700900701', '[WARNCODE]')->>'outcome' AS outcome;
RESET otp_link.debug_codes;
SELECT count(*) AS queued FROM otp_link.deliveries;
RESET client_min_messages;
DROP EXTENSION otp_link;
