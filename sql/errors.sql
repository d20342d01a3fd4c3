--
-- Bad input: every error has a stable SQLSTATE and a hint, and nothing is
-- written.
--
CREATE EXTENSION otp_link;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

SELECT otp_link.otp_link_instance_create('201553730661', 'Test')->>'uuid' AS inst \gset
CREATE TEMP TABLE counts AS
  SELECT (SELECT count(*) FROM otp_link.links) AS links,
         (SELECT count(*) FROM otp_link.instances) AS instances;

-- instance_create
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create(NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('1234567')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('1234567890123456')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('+20 abc 373')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('+20 155 373 0661')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', repeat('n', 257))$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '[]')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"colour": "red"}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"messages": "hi"}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"messages": {"prompt": 5}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"callback": {"success": "/relative"}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"link_url": "https://app.example/login"}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"reply_endpoint": {"type": "carrier-pigeon"}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"reply_endpoint": {"type": "whatsapp_cloud", "url": "https://graph.facebook.com/v21.0/123/messages"}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"reply_endpoint": {"type": "http"}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"limits": {"generate_limit": 0}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"limits": {"generate_limit": "5"}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', NULL, '{"limits": {"speed": 5}}')$$);

-- generate: instance
SELECT pg_temp.err($$SELECT otp_link.otp_link_generate(NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_generate('00000000-0000-0000-0000-000000000000')$$);
-- generate: expires
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, expires => 0)$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, expires => -5)$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, expires => 86401)$$, :'inst'));
-- generate: message
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => '"text"')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => '[1, 2]')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => '{"promt": "typo"}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => '{"prompt": ["a"]}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => '{"failed": true}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => '{"prompt": "Open {link}"}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => '{"success": "Go: {link}"}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => '{"expired": "Again: {link}"}')$$, :'inst'));
-- generate: texts beyond WhatsApp's 4096 characters (counted in characters, not bytes)
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => jsonb_build_object('prompt', repeat('é', 4057)))$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => jsonb_build_object('prompt', repeat('é', 4056)))$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, message => jsonb_build_object('failed', repeat('x', 4097)))$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, name => repeat('n', 250), message => '{"failed": "{name}{name}{name}{name}{name}{name}{name}{name}{name}{name}{name}{name}{name}{name}{name}{name}{name}"}')$$, :'inst'));
-- a million {link}s of 2,048 characters: the count must not wrap and pass
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, link_url => 'https://app.example/' || repeat('a', 1985) || '{token}', message => jsonb_build_object('success', repeat('{link}', 1100000)))$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, name => repeat('n', 257))$$, :'inst'));
-- generate: callback
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => '"https://x.example"')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => '{"succes": "https://x.example"}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => '{"success": 42}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => '{"success": "ftp://x.example/cb"}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => '{"success": "//x.example/cb"}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => '{"success": "https:///cb"}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => '{"success": "https://x.example/a b"}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => '{"failed": "https://x.example:99999/cb"}')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => '{"failed": "https://x.exa$mple/cb"}')$$, :'inst'));
SELECT left(pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, callback => jsonb_build_object('failed', 'https://x.example/' || repeat('a', 2100)))$$, :'inst')), 80);
-- generate: link_url, phone, binding, rate_key, metadata
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, link_url => 'https://app.example/login')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, link_url => 'javascript:alert({token})')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, phone => '12345')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, phone => '+1 (555) 0100 x7')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, binding => 'short')$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, rate_key => repeat('k', 257))$$, :'inst'));
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, metadata => jsonb_build_object('blob', repeat('m', 20000)))$$, :'inst'));

-- whatsapp_url
SELECT pg_temp.err($$SELECT otp_link.otp_link_whatsapp_url('12', 'p', 'ABCDEFGH')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_whatsapp_url('201553730661', 'p', 'abcdefgh')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_whatsapp_url('201553730661', 'p', 'ABCDEFG')$$);
SELECT otp_link.otp_link_whatsapp_url(NULL, 'p', 'ABCDEFGH') IS NULL AS strict;

-- status and cancel
SELECT pg_temp.err($$SELECT otp_link.otp_link_status(NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_status('00000000-0000-0000-0000-000000000000')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_cancel(NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_cancel('00000000-0000-0000-0000-000000000000')$$);

-- nothing was written by any failing call (one boundary case succeeded)
SELECT (SELECT count(*) FROM otp_link.links) - links AS new_links,
       (SELECT count(*) FROM otp_link.instances) - instances AS new_instances
  FROM counts;

-- rate limit per (instance, rate_key): the instance allows 2 per window
SELECT otp_link.otp_link_instance_create('447700900002', NULL,
       '{"limits": {"generate_limit": 2, "generate_window": 3600}}')->>'uuid' AS lim \gset
SELECT otp_link.otp_link_generate(:'lim', rate_key => 'ip:203.0.113.5') IS NOT NULL AS first,
       otp_link.otp_link_generate(:'lim', rate_key => 'ip:203.0.113.5') IS NOT NULL AS second;
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, rate_key => 'ip:203.0.113.5')$$, :'lim'));
SELECT otp_link.otp_link_generate(:'lim', rate_key => 'ip:203.0.113.6') IS NOT NULL AS other_key_ok,
       otp_link.otp_link_generate(:'lim') IS NOT NULL AS no_key_ok;

-- a rate-limited call writes nothing either
SELECT count(*) AS links_of_limited_instance FROM otp_link.links WHERE instance_id = :'lim';

--
-- National numbers (issue 13): WhatsApp numbers are E.164 without '+'.
-- "00" in front and a "(0)" trunk prefix after the country code are
-- converted; any other leading 0 is refused with a hint.
--
SELECT otp_link.otp_link_whatsapp_url('00201553730661', 'Hi', 'ABCDEFGH') AS double_zero,
       otp_link.otp_link_whatsapp_url('+20 (0) 155 373 0661', 'Hi', 'ABCDEFGH') AS trunk_zero;
SELECT pg_temp.err($$SELECT otp_link.otp_link_whatsapp_url('0155 373 0661', 'Hi', 'ABCDEFGH')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('01553730661')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('+0201553730661')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message('0155 373 0661', '[ABCDEFGH]')$$);

--
-- Instance texts are checked with generate's rules when the instance is
-- made (issue 13): {link} only in the success text.
--
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('201553730699', 'T',
       '{"messages": {"prompt": "Open {link}"}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('201553730699', 'T',
       '{"messages": {"failed": "Try {link}"}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_update(
       (SELECT id FROM otp_link.instances LIMIT 1), options => '{"messages": {"expired": "See {link}"}}')$$);
-- a success text with {link} is fine without link_url: generate may pass one
SELECT otp_link.otp_link_instance_create('201553730699', 'T',
       '{"messages": {"success": "Open {link}"}}') ? 'uuid' AS created;


--
-- options.limits have the settings' bounds (issue 13): counts up to
-- 1000000, windows and durations up to 7 days; values stored by 1.0 above
-- them count as the maximum instead of failing every call.
--
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('201553730698', NULL,
       '{"limits": {"generate_window": 604801}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('201553730698', NULL,
       '{"limits": {"unknown_code_limit": 1000001}}')$$);
SELECT otp_link.otp_link_instance_create('201553730698', NULL,
       '{"limits": {"generate_window": 604800, "generate_limit": 1000000}}') ? 'uuid' AS at_the_bounds;
UPDATE otp_link.instances SET options = '{"limits": {"generate_window": 2147483647, "generate_limit": 2147483647}}'
 WHERE phone = '201553730698';
SELECT otp_link.otp_link_generate(id, rate_key => 'k') ? 'uuid' AS stored_by_1_0_still_works
  FROM otp_link.instances WHERE phone = '201553730698';


--
-- An empty name is no name (issue 13): no "login at  [CODE]"; and the hint
-- for options that are no object suggests a value that is accepted.
--
SELECT otp_link.otp_link_instance_create('201553730697', '')->>'name' IS NULL AS empty_name_is_null;
SELECT r->>'whatsapp_link' AS link
  FROM otp_link.otp_link_generate((SELECT id FROM otp_link.instances WHERE phone = '201553730697'), name => '') r \gset
SELECT :'link' LIKE '%?text=Give+me+link+to+login+%5B%' AS prompt_without_name;
SELECT otp_link.otp_link_instance_update((SELECT id FROM otp_link.instances WHERE phone = '201553730697'),
       name => 'Named')->>'name' AS named,
       otp_link.otp_link_instance_update((SELECT id FROM otp_link.instances WHERE phone = '201553730697'),
       name => '')->>'name' IS NULL AS cleared;
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('201553730696', NULL, '[]')$$);
SELECT otp_link.otp_link_instance_create('201553730696', NULL, '{"messages": {"prompt": "Log me in to {name}"}}') ? 'uuid' AS hinted_value_accepted;

DROP EXTENSION otp_link;
