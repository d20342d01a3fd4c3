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
