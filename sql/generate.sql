--
-- otp_link_instance_create, otp_link_generate, otp_link_whatsapp_url,
-- otp_link_status and otp_link_cancel: shapes and the hosted API's example
--
CREATE EXTENSION otp_link;
SET otp_link.debug_codes = '';

-- the hosted API's example link, byte for byte
SELECT otp_link.otp_link_whatsapp_url('201553730661', 'Give me link to login at 7enkesh', 'RDYFQUBX')
     = 'https://wa.me/201553730661?text=Give+me+link+to+login+at+7enkesh+%5BRDYFQUBX%5D+-+DO+NOT+CHANGE+THIS+MESSAGE'
  AS hosted_example_identical;
-- form encoding: UTF-8 bytes, space as +, unreserved -_.~ kept, the rest %XX
SELECT otp_link.otp_link_whatsapp_url('+20 155-373 0661', 'Café ☕ a-b_c.d~e+f&g=h/i?j#k%l "m" ''n'' <o> 😀', 'ABCDEFGH');
SELECT otp_link.otp_link_whatsapp_url('201553730661@c.us', '', 'ABCDEFGH');
SELECT otp_link.otp_link_whatsapp_url('201553730661', E'line1\nline2\ttab', 'ABCDEFGH');

-- an instance
SELECT otp_link.otp_link_instance_create('+20 155 373 0661', 'Hypersender') AS inst \gset
SELECT jsonb_object_keys(:'inst'::jsonb) ORDER BY 1;
SELECT :'inst'::jsonb->>'phone' AS phone, :'inst'::jsonb->>'chat_id' AS chat_id,
       :'inst'::jsonb->>'name' AS name,
       :'inst'::jsonb->>'secret' ~ '^whsec_[A-Za-z0-9+/]{32}$' AS secret_ok,
       (:'inst'::jsonb->>'uuid')::uuid IS NOT NULL AS uuid_ok;
SELECT :'inst'::jsonb->>'uuid' AS instance \gset

-- the hosted API's example request, as named arguments
SELECT otp_link.otp_link_generate(
    instance => :'instance',
    expires => 1800,
    name => 'Hypersender',
    message => '{"prompt": "Give me link to login at hypersender",
                 "success": "Here is your login link: {link}",
                 "failed": "Login failed, please try again later.",
                 "expired": "The link has been expired, please try another one."}',
    callback => '{"success": "https://yourdomain.com/callback/success",
                  "failed": "https://yourdomain.com/callback/failed"}',
    link_url => 'https://app.example/login?token={token}') AS r \gset
SELECT jsonb_object_keys(:'r'::jsonb) ORDER BY 1;
SELECT :'r'::jsonb->>'code' ~ '^[A-Z]{8}$' AS code_ok,
       :'r'::jsonb->>'chat_id' AS chat_id,
       :'r'::jsonb->>'status' AS status,
       :'r'::jsonb->>'otp_type' AS otp_type,
       :'r'::jsonb->>'created_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$' AS created_at_iso,
       ((:'r'::jsonb->>'expires_at')::timestamptz - (:'r'::jsonb->>'created_at')::timestamptz) AS ttl,
       :'r'::jsonb->>'whatsapp_link' =
         'https://wa.me/201553730661?text=Give+me+link+to+login+at+hypersender+%5B'
         || (:'r'::jsonb->>'code') || '%5D+-+DO+NOT+CHANGE+THIS+MESSAGE' AS link_ok;

-- the code is stored only as its digest
SELECT count(*) AS rows_with_plain_code
  FROM otp_link.links l
 WHERE l::text LIKE '%' || (:'r'::jsonb->>'code') || '%';
SELECT code_hash = sha256(convert_to(:'r'::jsonb->>'code', 'UTF8')) AS digest_ok,
       messages, callbacks, name, status
  FROM otp_link.links WHERE id = (:'r'::jsonb->>'uuid')::uuid;

-- the response describes the stored row: its id (a random version 4 uuid,
-- written as uuid_out writes it), created_at (the statement's time) and
-- expires_at
SELECT id::text = :'r'::jsonb->>'uuid' AS uuid_text_ok,
       substr(id::text, 15, 1) = '4' AND substr(id::text, 20, 1) IN ('8', '9', 'a', 'b') AS uuid_v4,
       to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"') = :'r'::jsonb->>'created_at' AS created_ok,
       to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"') = :'r'::jsonb->>'expires_at' AS expires_ok,
       expires_at - created_at AS stored_ttl
  FROM otp_link.links WHERE id = (:'r'::jsonb->>'uuid')::uuid;
SELECT otp_link.otp_link_generate(:'instance', expires => 90)->>'uuid' AS sid,
       statement_timestamp() AS sts \gset
SELECT created_at = :'sts'::timestamptz AS created_at_is_statement_time,
       expires_at = :'sts'::timestamptz + interval '90 seconds' AS expires_at_ok
  FROM otp_link.links WHERE id = :'sid';

-- defaults: 1800 s, the instance's name, built-in texts
SELECT otp_link.otp_link_generate(:'instance') AS d \gset
SELECT ((:'d'::jsonb->>'expires_at')::timestamptz - (:'d'::jsonb->>'created_at')::timestamptz) AS ttl,
       replace(:'d'::jsonb->>'whatsapp_link', :'d'::jsonb->>'code', 'XXXXXXXX') AS link;
SELECT messages FROM otp_link.links WHERE id = (:'d'::jsonb->>'uuid')::uuid;

-- placeholders in the prompt: {name} and {code}; values are not expanded again
SELECT otp_link.otp_link_generate(:'instance', name => 'Shop {code}',
       message => '{"prompt": "Log in to {name}, code {code}, {other}"}') AS p \gset
SELECT replace(:'p'::jsonb->>'whatsapp_link', :'p'::jsonb->>'code', 'XXXXXXXX') AS link;

-- instance defaults are used when the call gives none
SELECT otp_link.otp_link_instance_create('447700900123', NULL, '{
   "messages": {"prompt": "Sign in to Acme", "success": "Welcome back: {link}"},
   "callback": {"success": "https://acme.example/hooks/otp"},
   "link_url": "https://acme.example/login?t={token}",
   "reply_endpoint": {"type": "none"},
   "limits": {"generate_limit": 3, "generate_window": 60}}')->>'uuid' AS acme \gset
SELECT otp_link.otp_link_generate(:'acme', expires => 60,
       message => '{"failed": "Nope."}') AS a \gset
SELECT messages, callbacks, link_url
  FROM otp_link.links WHERE id = (:'a'::jsonb->>'uuid')::uuid;
SELECT replace(:'a'::jsonb->>'whatsapp_link', :'a'::jsonb->>'code', 'XXXXXXXX') AS link;

-- extras: phone binding, browser binding, rate_key, metadata
SELECT otp_link.otp_link_generate(:'acme', phone => '+44 7700 900999',
       binding => 'browser-secret-0123456789', rate_key => 'user:42',
       metadata => '{"user_id": 42}') AS e \gset
SELECT phone, binding_hash = sha256('browser-secret-0123456789'::bytea) AS binding_ok,
       rate_key, metadata
  FROM otp_link.links WHERE id = (:'e'::jsonb->>'uuid')::uuid;

-- status never shows the code
SELECT jsonb_object_keys(otp_link.otp_link_status((:'r'::jsonb->>'uuid')::uuid)) ORDER BY 1;
SELECT s->>'status' AS status, s->>'chat_id' AS chat_id, s->'metadata' AS metadata,
       s->'phone_bound' AS phone_bound, s->'redeemed' AS redeemed
  FROM otp_link.otp_link_status((:'e'::jsonb->>'uuid')::uuid) s;

-- cancel: pending -> failed (cancelled); a second cancel changes nothing
SELECT c->>'status' AS status, c->>'reason' AS reason, c->'cancelled' AS cancelled
  FROM otp_link.otp_link_cancel((:'d'::jsonb->>'uuid')::uuid) c;
SELECT c->>'status' AS status, c->>'reason' AS reason, c->'cancelled' AS cancelled
  FROM otp_link.otp_link_cancel((:'d'::jsonb->>'uuid')::uuid) c;

-- a link past its expiry reports expired even before the sweep
UPDATE otp_link.links SET expires_at = now() - interval '1 second'
 WHERE id = (:'p'::jsonb->>'uuid')::uuid;
SELECT otp_link.otp_link_status((:'p'::jsonb->>'uuid')::uuid)->>'status' AS status;

-- codes: 8 letters, every letter used, no two alike among many
SELECT count(*) AS links, count(DISTINCT c) AS distinct_codes,
       bool_and(c ~ '^[A-Z]{8}$') AS all_letters
  FROM (SELECT otp_link.otp_link_generate(:'instance')->>'code' AS c
          FROM generate_series(1, 2000)) s;
SELECT count(DISTINCT ch) AS letters_seen
  FROM (SELECT regexp_split_to_table(otp_link.otp_link_generate(:'instance')->>'code', '') AS ch
          FROM generate_series(1, 200)) s;

-- a taken code is skipped: the debug list hands out a used code first
SELECT otp_link.otp_link_generate(:'instance', expires => 5) IS NOT NULL AS ok
  FROM (SELECT set_config('otp_link.debug_codes', 'QQQQQQQQ', false)) s;
SELECT set_config('otp_link.debug_codes', 'QQQQQQQQ,ZZZZZZZZ', false) IS NOT NULL AS set;
SELECT otp_link.otp_link_generate(:'instance')->>'code' AS code_after_collision;
RESET otp_link.debug_codes;
DROP EXTENSION otp_link;
