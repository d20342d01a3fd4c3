--
-- otp_link_consume_message: every outcome, the code finder, the deliveries
-- written in the same transaction, bad input.
--
CREATE EXTENSION otp_link;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- mask(result): the link uuid replaced by the link's label (metadata.t),
-- blocked_until by a marker
CREATE FUNCTION pg_temp.mask(r jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT CASE WHEN r ? 'blocked_until'
                THEN jsonb_set(m, '{blocked_until}',
                               to_jsonb(CASE WHEN (r->>'blocked_until')::timestamptz > now()
                                             THEN '<future>' ELSE '<past>' END))
                ELSE m END
      FROM (SELECT CASE WHEN r->>'uuid' IS NULL THEN r
                        ELSE jsonb_set(r, '{uuid}', to_jsonb(coalesce(
                               '<' || (SELECT metadata->>'t' FROM otp_link.links
                                        WHERE id = (r->>'uuid')::uuid) || '>', '<?>')))
                   END AS m) s
$$;

-- consume(...): otp_link_consume_message, masked
CREATE FUNCTION pg_temp.consume(chat text, body text, mid text DEFAULT NULL, inst uuid DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT pg_temp.mask(otp_link.otp_link_consume_message(chat, body, mid, inst))
$$;

\i :abs_srcdir/sql/include/counts.sql

-- link(label): the state of a link
CREATE FUNCTION pg_temp.link(label text)
RETURNS TABLE (status text, reason text, verified_chat_id text, messages_received int, finished boolean)
LANGUAGE sql AS $$
    SELECT status, reason, chat_id, messages_received, finished_at IS NOT NULL
      FROM otp_link.links WHERE metadata->>'t' = label
$$;

-- dl(label): the deliveries of a link, oldest first, tokens masked
CREATE FUNCTION pg_temp.dl(label text)
RETURNS TABLE (kind text, event text, destination text, status text, body text)
LANGUAGE sql AS $$
    SELECT d.kind, d.event, d.destination, d.status,
           regexp_replace(d.payload->>'body', '[A-Za-z0-9_-]{43}', '<token>', 'g')
      FROM otp_link.deliveries d JOIN otp_link.links l ON l.id = d.link_id
     WHERE l.metadata->>'t' = label ORDER BY d.id
$$;

-- an instance whose replies the application reads itself (held) and one
-- with a reply endpoint (queued)
SELECT otp_link.otp_link_instance_create('201553730661', 'Shop')->>'uuid' AS inst \gset
SELECT otp_link.otp_link_instance_create('447700900001', 'Relay',
    '{"reply_endpoint": {"type": "http", "url": "https://replies.example/send"},
      "limits": {"unknown_code_limit": 3, "unknown_code_window": 60, "block_duration": 60}}')->>'uuid' AS inst2 \gset

--
-- verified
--
SET otp_link.debug_codes = 'VERIFYAA';
SELECT otp_link.otp_link_generate(:'inst', name => 'Shop',
    message => '{"success": "Hi from {name}: {link} (code {code})"}',
    callback => '{"success": "https://app.example/cb/ok", "failed": "https://app.example/cb/ko"}',
    link_url => 'https://app.example/login?token={token}',
    metadata => '{"t": "v1", "user": 42}')->>'code' AS code;
SELECT pg_temp.consume('447700900123@c.us',
    'Give me link to login at Shop [VERIFYAA] - DO NOT CHANGE THIS MESSAGE', 'wamid.v1');
SELECT * FROM pg_temp.link('v1');
SELECT * FROM pg_temp.dl('v1');
-- the status object agrees
SELECT s->>'status' AS status, s->>'verified_chat_id' AS verified_chat_id,
       s->'messages_received' AS messages_received
  FROM otp_link.otp_link_status((SELECT id FROM otp_link.links WHERE metadata->>'t' = 'v1')) s;
-- the reply payload
SELECT jsonb_object_keys(payload) AS reply_keys
  FROM otp_link.deliveries WHERE kind = 'reply' AND link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'v1')
 ORDER BY 1;
SELECT payload->>'to' AS "to", payload->>'event' AS event,
       payload->>'link' = link_id::text AS link_ok
  FROM otp_link.deliveries WHERE kind = 'reply' AND link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'v1');
-- the callback payload: {"type", "timestamp", "data": {...}}
SELECT jsonb_object_keys(payload) AS callback_keys
  FROM otp_link.deliveries WHERE kind = 'callback' AND link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'v1')
 ORDER BY 1;
SELECT jsonb_object_keys(payload->'data') AS data_keys
  FROM otp_link.deliveries WHERE kind = 'callback' AND link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'v1')
 ORDER BY 1;
SELECT d.payload->>'type' AS type,
       d.payload->>'timestamp' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$' AS timestamp_iso,
       d.payload->'data'->>'uuid' = l.id::text AS uuid_ok,
       d.payload->'data'->>'status' AS status,
       d.payload->'data'->>'otp_type' AS otp_type,
       d.payload->'data'->>'chat_id' AS chat_id,
       d.payload->'data'->>'verified_chat_id' AS verified_chat_id,
       d.payload->'data'->>'sender' AS sender,
       d.payload->'data'->>'name' AS name,
       d.payload->'data'->'reason' AS reason,
       d.payload->'data'->'metadata' AS metadata,
       (d.payload->'data'->>'created_at')::timestamptz = date_trunc('second', l.created_at) AS created_at_ok,
       (d.payload->'data'->>'expires_at')::timestamptz = date_trunc('second', l.expires_at) AS expires_at_ok,
       (d.payload->'data'->>'finished_at')::timestamptz = date_trunc('second', l.finished_at) AS finished_at_ok
  FROM otp_link.deliveries d JOIN otp_link.links l ON l.id = d.link_id
 WHERE d.kind = 'callback' AND l.metadata->>'t' = 'v1';
SELECT outcome, link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'v1') AS link_ok
  FROM otp_link.messages_seen WHERE message_id = 'wamid.v1';

--
-- already_verified: another message with the code (same or another sender)
-- is counted and answered with nothing
--
SELECT pg_temp.counts() AS before \gset
SELECT pg_temp.consume('447700900123@c.us', '[VERIFYAA]', 'wamid.v2');
SELECT pg_temp.consume('+20 100 000 0000', '[VERIFYAA]', 'wamid.v3');
SELECT pg_temp.consume('447700900123', '[VERIFYAA]');
SELECT * FROM pg_temp.link('v1');
SELECT count(*) AS deliveries FROM pg_temp.dl('v1');
SELECT message_id, outcome FROM otp_link.messages_seen WHERE message_id IN ('wamid.v2', 'wamid.v3') ORDER BY 1;

--
-- duplicate: the same message id again writes nothing and reports the
-- first outcome
--
SELECT pg_temp.counts() AS before \gset
SELECT pg_temp.consume('447700900123@c.us', 'again [VERIFYAA]', 'wamid.v1');
SELECT pg_temp.consume('447700900123@c.us', 'a different body, same id [NOSUCHCD]', 'wamid.v1');
SELECT pg_temp.counts() = :'before' AS nothing_written;
-- a duplicate is recognised whatever the sender format
SELECT pg_temp.consume('+44 7700 900123', '[VERIFYAA]', 'wamid.v2');
SELECT pg_temp.counts() = :'before' AS nothing_written;

--
-- expired: a pending link past its expiry
--
SET otp_link.debug_codes = 'EXPIREAA';
SELECT otp_link.otp_link_generate(:'inst',
    message => '{"expired": "{name}: {code} is too old"}',
    callback => '{"success": "https://app.example/cb/ok", "failed": "https://app.example/cb/ko", "expired": "https://app.example/cb/exp"}',
    metadata => '{"t": "e1"}')->>'code' AS code;
UPDATE otp_link.links SET expires_at = now() - interval '1 second' WHERE metadata->>'t' = 'e1';
SELECT pg_temp.consume('447700900123@c.us', 'Give me link [EXPIREAA]', 'wamid.e1');
SELECT * FROM pg_temp.link('e1');
SELECT * FROM pg_temp.dl('e1');
SELECT jsonb_object_keys(payload) AS callback_keys
  FROM otp_link.deliveries WHERE kind = 'callback' AND link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'e1')
 ORDER BY 1;
SELECT payload->>'type' AS type, payload->'data'->>'status' AS status,
       payload->'data'->>'reason' AS reason, payload->'data'->>'sender' AS sender,
       payload->'data'->'verified_chat_id' AS verified_chat_id
  FROM otp_link.deliveries WHERE kind = 'callback' AND link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'e1');
-- a second message to the expired link: the expired reply again, no callback
SELECT pg_temp.consume('447700900123@c.us', '[EXPIREAA]', 'wamid.e2');
SELECT * FROM pg_temp.link('e1');
SELECT * FROM pg_temp.dl('e1');

-- without an expired callback URL the expired event goes to the failed one
SET otp_link.debug_codes = 'EXPIREBB';
SELECT otp_link.otp_link_generate(:'inst',
    callback => '{"failed": "https://app.example/cb/ko"}',
    metadata => '{"t": "e2"}')->>'code' AS code;
UPDATE otp_link.links SET expires_at = now() - interval '1 second' WHERE metadata->>'t' = 'e2';
SELECT pg_temp.consume('447700900123@c.us', '[EXPIREBB]', 'wamid.e3');
SELECT * FROM pg_temp.dl('e2');

-- expired: already expired by the sweep; the sender still hears it, the
-- application is not told twice
SET otp_link.debug_codes = 'EXPIRECC';
SELECT otp_link.otp_link_generate(:'inst',
    callback => '{"expired": "https://app.example/cb/exp"}',
    metadata => '{"t": "e3"}')->>'code' AS code;
UPDATE otp_link.links SET expires_at = now() - interval '1 second' WHERE metadata->>'t' = 'e3';
SELECT otp_link.otp_link_expire() AS expired_by_sweep;
SELECT * FROM pg_temp.link('e3');
SELECT pg_temp.consume('447700900123@c.us', '[EXPIRECC]', 'wamid.e4');
SELECT * FROM pg_temp.link('e3');
SELECT * FROM pg_temp.dl('e3');

--
-- failed: a phone-bound link verified from another number
--
SET otp_link.debug_codes = 'BOUNDAAA';
SELECT otp_link.otp_link_generate(:'inst', phone => '+44 7700 900123',
    message => '{"failed": "Not you, {name}? ({code})"}',
    callback => '{"success": "https://app.example/cb/ok", "failed": "https://app.example/cb/ko"}',
    metadata => '{"t": "f1"}')->>'code' AS code;
SELECT pg_temp.consume('447700900999@c.us', '[BOUNDAAA]', 'wamid.f1');
SELECT * FROM pg_temp.link('f1');
SELECT * FROM pg_temp.dl('f1');
SELECT payload->>'type' AS type, payload->'data'->>'status' AS status,
       payload->'data'->>'reason' AS reason, payload->'data'->>'sender' AS sender,
       payload->'data'->'verified_chat_id' AS verified_chat_id
  FROM otp_link.deliveries WHERE kind = 'callback' AND link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'f1');
-- the right number comes too late: failed, a failed reply, no second callback
SELECT pg_temp.consume('447700900123@c.us', '[BOUNDAAA]', 'wamid.f2');
SELECT * FROM pg_temp.link('f1');
SELECT kind, event, destination FROM pg_temp.dl('f1');
-- the bound number verifies, whatever form its chat id takes
SET otp_link.debug_codes = 'BOUNDBBB';
SELECT otp_link.otp_link_generate(:'inst', phone => '447700900123', metadata => '{"t": "f2"}')->>'code' AS code;
SELECT pg_temp.consume('+44 7700 900123', 'Give me link [boundbbb]', 'wamid.f3');
SELECT * FROM pg_temp.link('f2');
-- a cancelled link is failed for the sender
SET otp_link.debug_codes = 'CANCELAA';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "f3"}')->>'code' AS code;
SELECT otp_link.otp_link_cancel((SELECT id FROM otp_link.links WHERE metadata->>'t' = 'f3'))->>'status' AS status;
SELECT pg_temp.consume('447700900123@c.us', '[CANCELAA]', 'wamid.f4');
SELECT * FROM pg_temp.link('f3');
SELECT * FROM pg_temp.dl('f3');

--
-- chat id forms: WhatsApp id, international format, digits; all the same sender
--
SET otp_link.debug_codes = 'CHATIDAA,CHATIDBB,CHATIDCC';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "c1"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "c2"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "c3"}')->>'code' AS code;
SELECT pg_temp.consume('201234567890@c.us', '[CHATIDAA]');
SELECT pg_temp.consume('+20 123 456 7890', '[CHATIDBB]');
SELECT pg_temp.consume('201234567890', '[CHATIDCC]');
SELECT verified_chat_id FROM pg_temp.link('c1') UNION ALL
SELECT verified_chat_id FROM pg_temp.link('c2') UNION ALL
SELECT verified_chat_id FROM pg_temp.link('c3');
SELECT destination, payload->>'to' AS "to"
  FROM otp_link.deliveries WHERE link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'c2');

--
-- ignored: no code, a group, a broadcast or a channel; nothing is written
--
SELECT pg_temp.counts() AS before \gset
SELECT pg_temp.consume('447700900123@c.us', 'hello, how are you?', 'wamid.i1');
SELECT pg_temp.consume('447700900123@c.us', '', 'wamid.i2');
SELECT pg_temp.consume('447700900123@c.us', NULL, 'wamid.i3');
SELECT pg_temp.consume('447700900123@c.us', 'almost [ABCDEFG] a code', 'wamid.i4');
SELECT pg_temp.consume('447700900123@c.us', 'too long [ABCDEFGHI]', 'wamid.i5');
SELECT pg_temp.consume('447700900123@c.us', 'split [ABCD EFGH]', 'wamid.i6');
SELECT pg_temp.consume('447700900123@c.us', 'digits [ABCD1234]', 'wamid.i7');
SELECT pg_temp.consume('447700900123@c.us', 'unclosed [ABCDEFGH', 'wamid.i8');
SELECT pg_temp.consume('447700900123@c.us', 'no brackets ABCDEFGH', 'wamid.i9');
SELECT pg_temp.consume('447700900123@c.us', 'parentheses (ABCDEFGH) {ABCDEFGH}', 'wamid.i10');
SELECT pg_temp.consume('447700900123@c.us', 'full-width ［ABCDEFGH］', 'wamid.i11');
SELECT pg_temp.consume('447700900123@c.us', 'accented [ÀBCDEFGH]', 'wamid.i12');
SELECT pg_temp.consume('120363025246125486@g.us', '[CHATIDAA]', 'wamid.i13');
SELECT pg_temp.consume('status@broadcast', '[CHATIDAA]', 'wamid.i14');
SELECT pg_temp.consume('120363123456789012@newsletter', '[CHATIDAA]', 'wamid.i15');
-- no code: the sender is not even looked at
SELECT pg_temp.consume('not a phone', 'hello', 'wamid.i16');
SELECT pg_temp.counts() = :'before' AS nothing_written;
-- ignored messages are not remembered: the id can come back with a code
SELECT count(*) AS seen FROM otp_link.messages_seen WHERE message_id LIKE 'wamid.i%';

--
-- the code finder: anywhere in the body, any case, spaces inside the
-- brackets, the first complete code of several bracket groups
--
SET otp_link.debug_codes = 'FINDAAAA,FINDBBBB,FINDCCCC,FINDDDDD,FINDEEEE,FINDFFFF,FINDGGGG,FINDHHHH,FINDIIII,FINDJJJJ';
SELECT count(*) AS links FROM (
    SELECT otp_link.otp_link_generate(:'inst', metadata => jsonb_build_object('t', 'find' || i))
      FROM generate_series(1, 10) i) s;
SELECT pg_temp.consume('447700900123@c.us', '[FINDAAAA] at the start');
SELECT pg_temp.consume('447700900123@c.us', 'lower case [findbbbb]');
SELECT pg_temp.consume('447700900123@c.us', 'mixed case [FiNdCcCc] here');
SELECT pg_temp.consume('447700900123@c.us', 'spaces [  FINDDDDD   ] inside');
SELECT pg_temp.consume('447700900123@c.us', '[hello] [x] [ABCDEFG] [ FINDEEEE ] [FINDFFFF]');
SELECT pg_temp.consume('447700900123@c.us', 'nested [[FINDGGGG]]');
SELECT pg_temp.consume('447700900123@c.us', E'line\nbreaks\n[FINDHHHH]\n');
SELECT pg_temp.consume('447700900123@c.us', 'glued' || '[FINDIIII]' || 'text');
SELECT status, count(*) FROM otp_link.links WHERE metadata->>'t' LIKE 'find%' GROUP BY 1 ORDER BY 1;
SELECT metadata->>'t' AS t FROM otp_link.links WHERE metadata->>'t' LIKE 'find%' AND status = 'pending';

-- odd UTF-8 around the code: emoji, right-to-left text, combining marks,
-- zero-width characters
SET otp_link.debug_codes = 'UTFAAAAA,UTFBBBBB,UTFCCCCC,UTFDDDDD';
SELECT count(*) AS links FROM (
    SELECT otp_link.otp_link_generate(:'inst', metadata => jsonb_build_object('t', 'utf' || i))
      FROM generate_series(1, 4) i) s;
SELECT pg_temp.consume('447700900123@c.us', '😀👍🏽[UTFAAAAA]🇪🇬');
SELECT pg_temp.consume('447700900123@c.us', 'أعطني رابط تسجيل الدخول [UTFBBBBB] שלום');
SELECT pg_temp.consume('447700900123@c.us', E'e\u0301\u0327[UTFCCCCC]\u0301');
SELECT pg_temp.consume('447700900123@c.us', E'\u200b\u200f[\u200bUTFDDDDD]\u200d');
SELECT pg_temp.consume('447700900123@c.us', E'\u200f[UTFDDDDD]\u200e');
SELECT metadata->>'t' AS t, status FROM otp_link.links WHERE metadata->>'t' LIKE 'utf%' ORDER BY 1;

-- megabyte bodies
SET otp_link.debug_codes = 'MEGABYTE';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "mb"}')->>'code' AS code;
SELECT pg_temp.counts() AS before \gset
SELECT pg_temp.consume('447700900123@c.us', repeat('x', 1000000), 'wamid.mb0');
SELECT pg_temp.consume('447700900123@c.us', repeat('[ABCDEFG', 125000), 'wamid.mb1');
SELECT pg_temp.counts() = :'before' AS nothing_written;
SELECT pg_temp.consume('447700900123@c.us', repeat('x', 1000000) || ' [MEGABYTE]', 'wamid.mb2');
SELECT * FROM pg_temp.link('mb');

--
-- unknown_code and blocked
--
-- the instance's limits: 3 unknown codes per 60 s, then 60 s blocked
SELECT pg_temp.consume('447700900201@c.us', '[NOSUCHAA]', 'wamid.u1', :'inst2');
SELECT chat_id, unknown_codes, blocked_until IS NULL AS not_blocked FROM otp_link.senders WHERE chat_id = '447700900201@c.us';
SELECT pg_temp.consume('447700900201@c.us', '[NOSUCHAA]', 'wamid.u2', :'inst2');
-- a duplicate is not counted
SELECT pg_temp.consume('447700900201@c.us', '[NOSUCHAA]', 'wamid.u2', :'inst2');
SELECT unknown_codes FROM otp_link.senders WHERE chat_id = '447700900201@c.us';
-- the third unknown code blocks the sender
SELECT pg_temp.consume('447700900201', '[NOSUCHBB]', 'wamid.u3', :'inst2');
SELECT unknown_codes, blocked_until > now() + interval '50 seconds' AS blocked_for_60s
  FROM otp_link.senders WHERE chat_id = '447700900201@c.us';
-- blocked: even a good code gets nowhere, and the link stays pending
SET otp_link.debug_codes = 'BLOCKEDA';
SELECT otp_link.otp_link_generate(:'inst2', metadata => '{"t": "b1"}')->>'code' AS code;
SELECT pg_temp.counts() AS before \gset
SELECT pg_temp.consume('+44 7700 900201', '[BLOCKEDA]', 'wamid.u4', :'inst2');
SELECT pg_temp.consume('447700900201@c.us', '[BLOCKEDA]', NULL, :'inst2');
SELECT pg_temp.consume('447700900201@c.us', '[BLOCKEDA]');
SELECT * FROM pg_temp.link('b1');
SELECT message_id, outcome, link_id FROM otp_link.messages_seen WHERE message_id = 'wamid.u4';
-- a blocked message id is remembered like any other
SELECT pg_temp.consume('447700900201@c.us', '[BLOCKEDA]', 'wamid.u4', :'inst2');
-- other senders are not affected
SELECT pg_temp.consume('447700900202@c.us', '[BLOCKEDA]', 'wamid.u5', :'inst2');
SELECT * FROM pg_temp.link('b1');
SELECT * FROM pg_temp.dl('b1');
-- the block ends
UPDATE otp_link.senders SET blocked_until = now() - interval '1 second' WHERE chat_id = '447700900201@c.us';
SELECT pg_temp.consume('447700900201@c.us', '[BLOCKEDA]', 'wamid.u6', :'inst2');
-- the window restarts after unknown_code_window seconds
UPDATE otp_link.senders SET window_start = now() - interval '61 seconds', unknown_codes = 2,
       blocked_until = NULL WHERE chat_id = '447700900201@c.us';
SELECT pg_temp.consume('447700900201@c.us', '[NOSUCHCC]', 'wamid.u7', :'inst2');
SELECT unknown_codes, blocked_until IS NULL AS not_blocked FROM otp_link.senders WHERE chat_id = '447700900201@c.us';
-- a code of another instance is unknown to this one (and counted)
SET otp_link.debug_codes = 'OTHERINS';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "o1"}')->>'code' AS code;
SELECT pg_temp.consume('447700900203@c.us', '[OTHERINS]', 'wamid.u8', :'inst2');
SELECT unknown_codes FROM otp_link.senders WHERE chat_id = '447700900203@c.us';
SELECT * FROM pg_temp.link('o1');
SELECT pg_temp.consume('447700900203@c.us', '[OTHERINS]', 'wamid.u9', :'inst');
-- without an instance, the GUC limits apply
SET otp_link.unknown_code_limit = 2;
SELECT pg_temp.consume('447700900204@c.us', '[NOSUCHDD]');
SELECT pg_temp.consume('447700900204@c.us', '[NOSUCHDD]');
SELECT pg_temp.consume('447700900204@c.us', '[NOSUCHDD]');
SELECT unknown_codes, blocked_until > now() + interval '800 seconds' AS blocked_for_900s
  FROM otp_link.senders WHERE chat_id = '447700900204@c.us';
RESET otp_link.unknown_code_limit;
-- unknown codes and blocked messages write no delivery
SELECT count(*) AS deliveries_without_link FROM otp_link.deliveries WHERE link_id IS NULL;

--
-- reply status: held without a reply endpoint, queued with one
--
SET otp_link.debug_codes = 'QUEUEDAA';
SELECT otp_link.otp_link_generate(:'inst2', callback => '{"success": "https://app.example/cb/ok"}',
    metadata => '{"t": "q1"}')->>'code' AS code;
SELECT pg_temp.consume('447700900300@c.us', '[QUEUEDAA]', 'wamid.q1', :'inst2');
SELECT * FROM pg_temp.dl('q1');
SELECT DISTINCT status FROM otp_link.deliveries WHERE kind = 'reply' AND instance_id = :'inst' ORDER BY 1;

--
-- the success text: {link}, {name} and {code} rendered once; a name
-- holding placeholders stays literal
--
SET otp_link.debug_codes = 'RENDERAA,RENDERBB';
SELECT otp_link.otp_link_generate(:'inst', name => 'Evil {link} {code} {name}',
    message => '{"success": "[{name}] {code}: {link} {unknown} {{link}}"}',
    link_url => 'https://app.example/in/{token}/done',
    metadata => '{"t": "r1"}')->>'code' AS code;
SELECT pg_temp.consume('447700900123@c.us', '[RENDERAA]');
SELECT body FROM pg_temp.dl('r1');
-- no link URL: the built-in success text
SELECT otp_link.otp_link_generate(:'inst', name => NULL, metadata => '{"t": "r2"}')->>'code' AS code;
SELECT pg_temp.consume('447700900123@c.us', '[RENDERBB]');
SELECT body FROM pg_temp.dl('r2');

--
-- ROLLBACK after consume leaves nothing behind
--
SET otp_link.debug_codes = 'ROLLBACK';
SELECT otp_link.otp_link_generate(:'inst', callback => '{"success": "https://app.example/cb/ok"}',
    metadata => '{"t": "rb"}')->>'code' AS code;
SELECT pg_temp.counts() AS before \gset
BEGIN;
SELECT pg_temp.consume('447700900123@c.us', '[ROLLBACK]', 'wamid.rb');
SELECT count(*) AS deliveries_inside FROM pg_temp.dl('rb');
ROLLBACK;
SELECT pg_temp.counts() = :'before' AS nothing_written;
SELECT * FROM pg_temp.link('rb');
-- the message id was not used up
SELECT pg_temp.consume('447700900123@c.us', '[ROLLBACK]', 'wamid.rb');

--
-- bad input
--
SELECT pg_temp.counts() AS before \gset
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message(NULL, '[ROLLBACK]')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message(NULL, 'no code')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message('not a phone', '[ROLLBACK]')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message('1234567', '[ROLLBACK]')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message('1234567890123456@c.us', '[ROLLBACK]')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message('', '[ROLLBACK]')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message('447700900123@c.us', '[ROLLBACK]', repeat('m', 257))$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message('447700900123@c.us', '[ROLLBACK]', NULL, '00000000-0000-0000-0000-000000000000')$$);
-- a message id too long is no error when the body holds no code
SELECT pg_temp.consume('447700900123@c.us', 'no code', repeat('m', 257))->>'outcome' AS outcome;
SELECT pg_temp.counts() = :'before' AS nothing_written;
-- 256 bytes is the longest message id
SELECT pg_temp.consume('447700900123@c.us', '[NOSUCHEE]', repeat('m', 256))->>'outcome' AS outcome;
SELECT length(message_id), outcome FROM otp_link.messages_seen WHERE length(message_id) > 100;

--
-- roles: the inbox consumes, the application cannot
--
CREATE ROLE regress_otp_consume_inbox IN ROLE otp_link_inbox;
CREATE ROLE regress_otp_consume_app IN ROLE otp_link_app;
SET otp_link.debug_codes = 'INBOXAAA';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "role"}')->>'code' AS code;
SET ROLE regress_otp_consume_app;
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message('447700900123@c.us', '[INBOXAAA]')$$);
SET ROLE regress_otp_consume_inbox;
SELECT otp_link.otp_link_consume_message('447700900123@c.us', '[INBOXAAA]', 'wamid.role')->>'outcome' AS outcome;
SELECT pg_temp.err($$SELECT otp_link.otp_link_generate('00000000-0000-0000-0000-000000000000')$$);
SELECT pg_temp.err($$SELECT count(*) FROM otp_link.links$$);
RESET ROLE;
SELECT * FROM pg_temp.link('role');
DROP ROLE regress_otp_consume_inbox, regress_otp_consume_app;

RESET otp_link.debug_codes;
DROP EXTENSION otp_link;
