--
-- Replies to a finished link are capped: a sender cannot make otp_link send
-- replies without end by repeating the code of an expired or failed link.
--
CREATE EXTENSION otp_link;
SELECT otp_link.otp_link_instance_create('201553730661', 'Replies')->>'uuid' AS inst \gset
SET otp_link.debug_codes = 'EXPIREDA,FAILEDBB';
SELECT otp_link.otp_link_generate(:'inst')->>'uuid' AS e \gset
SELECT otp_link.otp_link_generate(:'inst', phone => '447700900111')->>'uuid' AS f \gset
UPDATE otp_link.links SET expires_at = now() - interval '1 second' WHERE id = :'e';
SELECT otp_link.otp_link_expire() AS expired_by_sweep;
-- the failed link: the wrong sender fails it (reply 1), then keeps trying
SELECT n, otp_link.otp_link_consume_message('447700900222', '[FAILEDBB]', 'f' || n)->>'outcome' AS outcome
  FROM generate_series(1, 6) n;
SELECT n, otp_link.otp_link_consume_message('447700900222', '[EXPIREDA]', 'e' || n)->>'outcome' AS outcome
  FROM generate_series(1, 6) n;
SELECT link_id = :'e' AS expired_link, event, count(*) AS replies
  FROM otp_link.deliveries WHERE kind = 'reply' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT id = :'e' AS expired_link, messages_received FROM otp_link.links ORDER BY 1;
RESET otp_link.debug_codes;
DROP EXTENSION otp_link;

--
-- Held replies as a queue: otp_link_replies_lease leases, otp_link_replies_ack
-- confirms or releases; a reply whose lease ran out is leased again
-- (issue 13: an application that crashes before sending loses nothing).
--
CREATE EXTENSION otp_link;
SELECT otp_link.otp_link_instance_create('201553730661', 'Held')->>'uuid' AS inst \gset
SET otp_link.debug_codes = 'HELDAAAA,HELDBBBB,HELDCCCC';
SELECT count(otp_link.otp_link_generate(:'inst')) AS links FROM generate_series(1, 3);
RESET otp_link.debug_codes;
SELECT otp_link.otp_link_consume_message('447700900601', '[HELDAAAA]')->>'outcome' AS a,
       otp_link.otp_link_consume_message('447700900602', '[HELDBBBB]')->>'outcome' AS b,
       otp_link.otp_link_consume_message('447700900603', '[HELDCCCC]')->>'outcome' AS c;
-- lease two: they come back with ids, and the third is all another worker gets
SELECT jsonb_array_length(r->'replies') AS n, r->'replies'->0->>'to' AS first_to,
       (r->>'lease_expires_at')::timestamptz > now() AS lease_ahead
  FROM otp_link.otp_link_replies_lease(max_replies => 2, lease => '60 seconds') r;
SELECT jsonb_array_length(r->'replies') AS n, r->'replies'->0->>'to' AS to
  FROM otp_link.otp_link_replies_lease() r;
SELECT jsonb_array_length(otp_link.otp_link_replies_lease()->'replies') AS nothing_left;
SELECT jsonb_array_length(otp_link.otp_link_replies_take()->'replies') AS take_skips_leased;
-- the application sent the first, could not send the second: confirm one, release one
SELECT otp_link.otp_link_replies_ack(ARRAY[min(id)], true) ? 'delivered' AS confirmed,
       otp_link.otp_link_replies_ack(ARRAY[max(id)], false)->'released' = to_jsonb(ARRAY[max(id)]) AS released
  FROM otp_link.deliveries WHERE kind = 'reply' AND payload->>'to' IN ('447700900601', '447700900602');
SELECT payload->>'to' AS to, status, locked_until IS NOT NULL AS leased
  FROM otp_link.deliveries WHERE kind = 'reply' ORDER BY id;
-- a released reply is leased again; an expired lease too (the crash case)
UPDATE otp_link.deliveries SET locked_until = now() - interval '1 second'
 WHERE payload->>'to' = '447700900603';
SELECT r->>'to' AS to FROM jsonb_array_elements(otp_link.otp_link_replies_lease()->'replies') r ORDER BY 1;
-- acknowledging what is not leased (or twice) changes nothing
SELECT otp_link.otp_link_replies_ack(array_agg(id)) AS acked FROM otp_link.deliveries WHERE kind = 'reply';
SELECT otp_link.otp_link_replies_ack(array_agg(id)) AS again FROM otp_link.deliveries WHERE kind = 'reply';
SELECT status, count(*) FROM otp_link.deliveries WHERE kind = 'reply' GROUP BY 1;
-- bad arguments are refused, not read as something else
\set SHOW_CONTEXT never
SELECT otp_link.otp_link_replies_take(max_replies => NULL);
SELECT otp_link.otp_link_replies_take(max_replies => 0);
SELECT otp_link.otp_link_replies_lease(max_replies => 1001);
SELECT otp_link.otp_link_replies_lease(lease => '0 seconds');
SELECT otp_link.otp_link_replies_ack(NULL);
DROP EXTENSION otp_link;
\set SHOW_CONTEXT errors
