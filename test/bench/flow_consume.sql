-- pgbench script of the whole-flow benchmark (test/bench/flow.sh, -D k=0):
-- the oldest due link of bench.flow not yet consumed is consumed from its
-- phone (otp_link_consume_message; its reply and callback are queued); the
-- row notes the outcome, the pgbench client and k, this client's
-- transaction number + 1 (pgbench's log numbers them from 0).  When no
-- link is due the transaction does nothing (left out of the latencies).
\set k :k + 1
WITH p AS (
	SELECT n, code, phone FROM bench.flow
	 WHERE outcome IS NULL AND due_at <= clock_timestamp()
	 ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE bench.flow f
   SET outcome = otp_link.otp_link_consume_message(chat_id => p.phone,
			body => 'Give me link to login at Bench [' || p.code || '] - DO NOT CHANGE THIS MESSAGE') ->> 'outcome',
	   consumed_at = clock_timestamp(), client = :client_id, k = :k
  FROM p
 WHERE f.n = p.n;
