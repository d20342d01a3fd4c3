--
-- Attacks an independent review reproduced on 1.0 (issue 11); each query
-- here showed the defect before the fix.
--

-- err(query): SQLSTATE and message of the error query raises
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN st || ': ' || msg;
END $$;

--
-- 1. A role with CREATE on the database creates schema otp_link before
-- CREATE EXTENSION: the extension refuses to adopt it.
--
-- (DROP EXTENSION leaves the schema CREATE EXTENSION made; earlier tests did)
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS otp_link;
RESET client_min_messages;
CREATE ROLE regress_otp_mallory;
SELECT current_database() AS db \gset
GRANT CREATE ON DATABASE :"db" TO regress_otp_mallory;
SET ROLE regress_otp_mallory;
CREATE SCHEMA otp_link;
RESET ROLE;
SELECT pg_temp.err('CREATE EXTENSION otp_link');
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'otp_link';
DROP SCHEMA otp_link;
-- a superuser's schema that lets another role create in it: refused too
CREATE SCHEMA otp_link;
GRANT CREATE ON SCHEMA otp_link TO regress_otp_mallory;
SELECT pg_temp.err('CREATE EXTENSION otp_link');
REVOKE CREATE ON SCHEMA otp_link FROM regress_otp_mallory;
GRANT CREATE ON SCHEMA otp_link TO PUBLIC;
SELECT pg_temp.err('CREATE EXTENSION otp_link');
REVOKE CREATE ON SCHEMA otp_link FROM PUBLIC;
-- ... or that already holds objects
CREATE TABLE otp_link.links (id int);
SELECT pg_temp.err('CREATE EXTENSION otp_link');
DROP TABLE otp_link.links;
-- an empty schema of a superuser that no one else can create in is fine
CREATE EXTENSION otp_link;
SELECT r.rolsuper AS schema_owner_is_superuser
  FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'otp_link';
DROP EXTENSION otp_link;
DROP SCHEMA otp_link;
-- the usual case: CREATE EXTENSION makes the schema itself
CREATE EXTENSION otp_link;
REVOKE CREATE ON DATABASE :"db" FROM regress_otp_mallory;

SELECT otp_link.otp_link_instance_create('201553730661', 'A')->>'uuid' AS inst \gset
SELECT otp_link.otp_link_instance_create('201553730662', 'B',
       '{"limits": {"unknown_code_window": 1}}')->>'uuid' AS short_window \gset

--
-- 5. The unknown-code count cannot be restarted through an instance with a
-- shorter window: the window only grows while a count runs.
--
-- instance A: 3 unknown codes per 3600 s (set here), then blocked
SELECT otp_link.otp_link_instance_update(:'inst',
       options => '{"limits": {"unknown_code_limit": 3, "unknown_code_window": 3600}}') IS NOT NULL AS updated;
SELECT otp_link.otp_link_consume_message('447700900301', '[NOSUCHAA]', 'wamid.a1', :'inst')->>'outcome' AS o;
SELECT otp_link.otp_link_consume_message('447700900301', '[NOSUCHAB]', 'wamid.a2', :'inst')->>'outcome' AS o;
-- two seconds later (as if), a guess at the instance with a 1 s window
UPDATE otp_link.senders SET window_start = window_start - interval '2 seconds'
 WHERE chat_id = '447700900301@c.us';
SELECT otp_link.otp_link_consume_message('447700900301', '[NOSUCHBA]', 'wamid.b1', :'short_window')->>'outcome' AS o;
SELECT unknown_codes, window_s FROM otp_link.senders WHERE chat_id = '447700900301@c.us';
-- the count went on: this guess reaches A's limit and blocks the sender
-- (1.0 restarted the count at 1 and never blocked)
SELECT otp_link.otp_link_consume_message('447700900301', '[NOSUCHAC]', 'wamid.a3', :'inst')->>'outcome' AS o;
SELECT otp_link.otp_link_consume_message('447700900301', '[NOSUCHAD]', 'wamid.a4', :'short_window')->>'outcome' AS o;
-- after the longest window the count does restart
UPDATE otp_link.senders SET window_start = now() - interval '3601 seconds', blocked_until = NULL
 WHERE chat_id = '447700900301@c.us';
SELECT otp_link.otp_link_consume_message('447700900301', '[NOSUCHAE]', 'wamid.a5', :'short_window')->>'outcome' AS o;
SELECT unknown_codes, window_s FROM otp_link.senders WHERE chat_id = '447700900301@c.us';

--
-- 2. (second review) A link made late in a long transaction counts from
-- when it was made: 1.0 stamped it with the transaction's start, so it fell
-- out of the rate window early and the limit let more links through.
--
SELECT otp_link.otp_link_instance_create('201553730664', 'L',
       '{"limits": {"generate_limit": 1, "generate_window": 2}}')->>'uuid' AS lim \gset
BEGIN;
SELECT pg_sleep(2.2);
SELECT otp_link.otp_link_generate(:'lim', rate_key => 'old-tx') ? 'uuid' AS made_late_in_old_tx;
COMMIT;
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_generate(%L, rate_key => 'old-tx')$$, :'lim'));
SELECT count(*) AS links_for_key FROM otp_link.links WHERE rate_key = 'old-tx';

--
-- 3. (second review) Guesses rolled back are still counted: the inbox role
-- guessed codes inside subtransactions it aborted, so the per-sender
-- counters (table rows) never saw them.  The server's budget of unknown
-- codes (otp_link.unknown_code_rate per minute) is kept in shared memory;
-- once spent, no code is looked up until it refills.
--
CREATE FUNCTION pg_temp.guess(n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    outs text[] := '{}';
BEGIN
    FOR i IN 1..n LOOP
        BEGIN
            outs := outs || (otp_link.otp_link_consume_message('4477009005' || lpad(i::text, 2, '0'),
                             '[GUESS' || chr(64 + i) || 'ZZ]')->>'outcome');
            RAISE EXCEPTION 'roll the guess back';
        EXCEPTION WHEN raise_exception THEN NULL;
        END;
    END LOOP;
    RETURN array_to_string(outs, ',');
END $$;
SET otp_link.unknown_code_rate = 5;
SET otp_link.debug_codes = 'REALCODE';
SELECT otp_link.otp_link_generate(:'inst') ? 'uuid' AS real_link;
RESET otp_link.debug_codes;
SELECT pg_temp.guess(8) AS outcomes;
SELECT count(*) AS counted_in_table FROM otp_link.senders WHERE chat_id LIKE '4477009005%';
-- while the budget is spent even the right code is not looked up
SELECT r->>'outcome' AS outcome, r->>'blocked_until' IS NOT NULL AS says_until
  FROM otp_link.otp_link_consume_message('447700900599', '[REALCODE]') r;
-- it refills with time (here: a huge rate for a moment)
SET otp_link.unknown_code_rate = 1000000;
SELECT pg_sleep(0.05);
SELECT otp_link.otp_link_consume_message('447700900599', '[REALCODE]')->>'outcome' AS outcome;
RESET otp_link.unknown_code_rate;

--
-- 6. An empty message id is no id: two senders' messages with '' are both
-- decided, neither is a duplicate of the other.
--
SET otp_link.debug_codes = 'EMPTYIDA,EMPTYIDB';
SELECT otp_link.otp_link_generate(:'inst')->>'code' AS code_a;
SELECT otp_link.otp_link_generate(:'inst')->>'code' AS code_b;
RESET otp_link.debug_codes;
SELECT r->>'outcome' AS outcome, r->>'message_id' AS message_id
  FROM otp_link.otp_link_consume_message('447700900311', 'login [EMPTYIDA]', '') r;
SELECT r->>'outcome' AS outcome, r->>'original_outcome' AS original
  FROM otp_link.otp_link_consume_message('447700900312', 'login [EMPTYIDB]', '') r;
SELECT count(*) AS empty_ids_seen FROM otp_link.messages_seen WHERE message_id = '';
-- through the trigger and a webhook payload too
SET otp_link.debug_codes = 'EMPTYIDC,EMPTYIDD,EMPTYIDE';
SELECT otp_link.otp_link_generate(:'inst')->>'code' AS code_c;
SELECT otp_link.otp_link_generate(:'inst')->>'code' AS code_d;
SELECT otp_link.otp_link_generate(:'inst')->>'code' AS code_e;
RESET otp_link.debug_codes;
CREATE TABLE inbox (chat_id text, body text, message_id text);
CREATE TRIGGER consume AFTER INSERT ON inbox
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id');
INSERT INTO inbox VALUES ('447700900313', '[EMPTYIDC]', ''), ('447700900314', '[EMPTYIDD]', '');
-- (second review) an over-long message id is skipped in the trigger and the
-- webhook instead of failing the whole batch, which the provider would retry
-- for ever; a direct call still gets the error
INSERT INTO inbox VALUES ('447700900316', '[NOSUCHXX]', repeat('x', 300)), ('447700900317', 'hello', 'wamid.ok');
SELECT count(*) AS inbox_rows FROM inbox;
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_message('447700900316', '[NOSUCHXX]', repeat('x', 300))$$);
SELECT w->'results'->0->>'outcome' AS webhook_outcome
  FROM otp_link.otp_link_consume_webhook(jsonb_build_object('object', 'whatsapp_business_account',
       'entry', jsonb_build_array(jsonb_build_object('changes', jsonb_build_array(jsonb_build_object(
         'field', 'messages', 'value', jsonb_build_object(
           'messages', jsonb_build_array(jsonb_build_object('from', '447700900315', 'id', '',
                        'type', 'text', 'text', jsonb_build_object('body', '[EMPTYIDE]')))))))))) w;
SELECT count(*) FILTER (WHERE status = 'verified') AS verified, count(*) AS links
  FROM otp_link.links WHERE chat_id IN ('447700900311@c.us', '447700900312@c.us', '447700900313@c.us',
                                        '447700900314@c.us', '447700900315@c.us');

--
-- 7. Header injection: a reply token with CR/LF (or any control
-- character) is refused at the door.
--
SELECT pg_temp.err($q$SELECT otp_link.otp_link_instance_create('201553730663', 'T',
       jsonb_build_object('reply_endpoint', jsonb_build_object('type', 'whatsapp_cloud',
         'url', 'https://graph.facebook.com/v20.0/1/messages',
         'token', E'abc\r\nX-Injected: 1\r\n\r\nGET /smuggled HTTP/1.1')))$q$);
SELECT pg_temp.err($q$SELECT otp_link.otp_link_instance_update('$q$ || :'inst' || $q$',
       options => jsonb_build_object('reply_endpoint', jsonb_build_object('type', 'http',
         'url', 'https://example.com/r', 'token', E'tab\there')))$q$);
SELECT pg_temp.err($q$SELECT otp_link.otp_link_instance_create('201553730663', 'T',
       jsonb_build_object('reply_endpoint', jsonb_build_object('type', 'http',
         'url', 'https://example.com/r', 'token', repeat('x', 4097))))$q$);
SELECT pg_temp.err($q$SELECT otp_link.otp_link_instance_create('201553730663', 'T',
       jsonb_build_object('callback', jsonb_build_object('success', E'https://example.com/a\r\nX: 1')))$q$);
SELECT count(*) AS instances FROM otp_link.instances;

--
-- 8. An empty app secret never verifies anything: it is an error (this
-- signature is the HMAC of the body with the empty key).
--
SELECT pg_temp.err($q$SELECT otp_link.otp_link_verify_meta_signature('{"a":1}',
       'sha256=e0baad27ae5335a93e2979e6693e7630de7d66b4d5bfd687cdbf1f0018f79cb8', '')$q$);
SELECT pg_temp.err($q$SELECT otp_link.otp_link_verify_meta_signature('{"a":1}', 'sha256=00', NULL)$q$);

DROP TABLE inbox;
DROP EXTENSION otp_link;
DROP ROLE regress_otp_mallory;
