--
-- Reply endpoints through the gateways (issue #14, item 3): twilio, waha
-- and green_api are checked at the door (22023, nothing written), and their
-- replies are queued for the worker, not held.  The requests themselves are
-- checked in test/t/060_gateway_replies.pl.
--
CREATE EXTENSION otp_link;
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
CREATE FUNCTION pg_temp.create(ep text) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.err(format('SELECT otp_link.otp_link_instance_create(%L, options => %L)',
                              '447700900999', jsonb_build_object('reply_endpoint', ep::jsonb)))
$$;

-- twilio
SELECT pg_temp.create('{"type": "twilio"}');
SELECT pg_temp.create('{"type": "twilio", "account_sid": "AC123", "auth_token": "t"}');
SELECT pg_temp.create('{"type": "twilio", "account_sid": "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}');
SELECT pg_temp.create('{"type": "twilio", "account_sid": "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "auth_token": "a\r\nX-Evil: 1"}');
SELECT pg_temp.create('{"type": "twilio", "account_sid": "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "auth_token": "t", "from": "0155"}');
SELECT pg_temp.create('{"type": "twilio", "account_sid": "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "auth_token": "t", "url": "https://api.twilio.com/x?y=1"}');
SELECT pg_temp.create('{"type": "twilio", "account_sid": "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "auth_token": "t", "token": "x"}');
-- waha
SELECT pg_temp.create('{"type": "waha", "api_key": "k"}');
SELECT pg_temp.create('{"type": "waha", "url": "https://waha.example"}');
SELECT pg_temp.create('{"type": "waha", "url": "https://waha.example", "api_key": "k\n"}');
SELECT pg_temp.create('{"type": "waha", "url": "https://waha.example\r\n", "api_key": "k"}');
SELECT pg_temp.create('{"type": "waha", "url": "https://waha.example", "api_key": "k", "session": "a/b"}');
-- green_api
SELECT pg_temp.create('{"type": "green_api", "api_token_instance": "abc"}');
SELECT pg_temp.create('{"type": "green_api", "id_instance": "7105187566"}');
SELECT pg_temp.create('{"type": "green_api", "id_instance": "71x", "api_token_instance": "abc"}');
SELECT pg_temp.create('{"type": "green_api", "id_instance": "7105187566", "api_token_instance": "abc/../x"}');
SELECT pg_temp.create('{"type": "green_api", "id_instance": "7105187566", "api_token_instance": "abc\r\n"}');
SELECT pg_temp.create('{"type": "green_api", "id_instance": "7105187566", "api_token_instance": "abc", "url": "javascript:alert(1)"}');
SELECT pg_temp.create('{"type": "sms"}');
-- credentials in a URL (user:password@host) would go out as basic auth
-- and be echoed unredacted: refused for every type that sends
SELECT pg_temp.create('{"type": "twilio", "account_sid": "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "auth_token": "t", "url": "http://usr:PASS@127.0.0.1:9/"}');
SELECT pg_temp.create('{"type": "waha", "url": "https://usr:PASS@waha.example:3000", "api_key": "k"}');
SELECT pg_temp.create('{"type": "green_api", "id_instance": "7105187566", "api_token_instance": "abc", "url": "https://PASS@api.green-api.com"}');
SELECT pg_temp.create('{"type": "http", "url": "https://usr:PASS@app.example/replies"}');
SELECT pg_temp.create('{"type": "whatsapp_cloud", "url": "https://usr:PASS@graph.facebook.com/v21.0/1/messages", "token": "t"}');
SELECT count(*) AS instances_written FROM otp_link.instances;

-- good ones; update refuses the same way and leaves the options as they were
SELECT otp_link.otp_link_instance_create('447700900001', 'T', '{"reply_endpoint": {"type": "twilio",
    "account_sid": "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "auth_token": "tok", "from": "whatsapp:+14155238886"}}')->>'uuid' AS t \gset
SELECT otp_link.otp_link_instance_create('447700900002', 'W', '{"reply_endpoint": {"type": "waha",
    "url": "https://waha.example:3000/", "api_key": "key", "session": "default"}}')->>'uuid' AS w \gset
SELECT otp_link.otp_link_instance_create('447700900003', 'G', '{"reply_endpoint": {"type": "green_api",
    "id_instance": "7105187566", "api_token_instance": "d4e5276df1017c259611ee08befc536022b441126d517a233d"}}')->>'uuid' AS g \gset
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_update('$$ || :'w' || $$', options => '{"reply_endpoint": {"type": "waha", "url": "https://waha.example"}}')$$);
SELECT options->'reply_endpoint'->>'api_key' AS api_key_kept FROM otp_link.instances WHERE id = :'w';

-- their replies are queued for the worker
SET otp_link.debug_codes = 'GATEWAYA,GATEWAYB,GATEWAYC';
SELECT count(otp_link.otp_link_generate(i)) FROM unnest(ARRAY[:'t', :'w', :'g']::uuid[]) i;
RESET otp_link.debug_codes;
SELECT otp_link.otp_link_consume_message('447700900123', '[GATEWAYA]', instance => :'t')->>'outcome' AS t,
       otp_link.otp_link_consume_message('447700900124', '[GATEWAYB]', instance => :'w')->>'outcome' AS w,
       otp_link.otp_link_consume_message('447700900125', '[GATEWAYC]', instance => :'g')->>'outcome' AS g;
SELECT i.name, d.status FROM otp_link.deliveries d JOIN otp_link.instances i ON i.id = d.instance_id
 WHERE d.kind = 'reply' ORDER BY 1;
DROP EXTENSION otp_link;
