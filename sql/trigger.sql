--
-- otp_link_consume_trigger: an inbox table whose rows are consumed
--
CREATE EXTENSION otp_link;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

\i :abs_srcdir/sql/include/counts.sql

-- links(): every link's label, status and verified chat id
CREATE FUNCTION pg_temp.links()
RETURNS TABLE (t text, status text, verified_chat_id text, messages_received int)
LANGUAGE sql AS $$
    SELECT metadata->>'t', status, chat_id, messages_received FROM otp_link.links ORDER BY 1
$$;

SELECT otp_link.otp_link_instance_create('201553730661', 'Shop')->>'uuid' AS inst \gset
SELECT otp_link.otp_link_instance_create('447700900001', 'Other')->>'uuid' AS inst2 \gset
SET otp_link.debug_codes = 'INBOXAAA,INBOXBBB,INBOXCCC,INBOXDDD,COPYAAAA,BEFOREAA';
SELECT count(*) AS links FROM (
    SELECT otp_link.otp_link_generate(:'inst', metadata => jsonb_build_object('t', t),
               callback => '{"success": "https://app.example/cb/ok"}')
      FROM unnest(ARRAY['a', 'b', 'c', 'd', 'copy', 'before']) t) s;

--
-- AFTER INSERT, the usual way
--
CREATE TABLE inbox (
    id          serial PRIMARY KEY,
    chat_id     text,
    body        text,
    message_id  text,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER inbox_consume AFTER INSERT ON inbox
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id');

-- a row carrying a code verifies its link
INSERT INTO inbox (chat_id, body, message_id)
VALUES ('447700900123@c.us', 'Give me link to login at Shop [INBOXAAA] - DO NOT CHANGE THIS MESSAGE', 'wamid.t1');
SELECT * FROM pg_temp.links() WHERE t = 'a';
SELECT d.kind, d.event, d.destination, d.status
  FROM otp_link.deliveries d JOIN otp_link.links l ON l.id = d.link_id
 WHERE l.metadata->>'t' = 'a' ORDER BY d.id;
SELECT message_id, outcome FROM otp_link.messages_seen ORDER BY 1;

-- rows without a code are stored and leave otp_link alone
SELECT pg_temp.counts() AS before \gset
INSERT INTO inbox (chat_id, body, message_id) VALUES
    ('447700900123@c.us', 'thanks!', 'wamid.t2'),
    ('447700900123@c.us', NULL, 'wamid.t3'),
    (NULL, '[INBOXBBB]', 'wamid.t4'),
    ('120363025246125486@g.us', '[INBOXBBB] in a group', 'wamid.t5'),
    ('not a phone', 'hello', 'wamid.t6');
SELECT pg_temp.counts() = :'before' AS nothing_written;
SELECT chat_id, body, message_id FROM inbox ORDER BY id;

-- the same message id twice: the second row is stored, nothing else
INSERT INTO inbox (chat_id, body, message_id) VALUES ('447700900123@c.us', '[INBOXAAA]', 'wamid.t1');
SELECT pg_temp.counts() = :'before' AS nothing_written;
SELECT count(*) AS rows FROM inbox WHERE message_id = 'wamid.t1';

-- several rows in one statement; no message id column value
INSERT INTO inbox (chat_id, body) VALUES
    ('+44 7700 900124', '[inboxbbb]'),
    ('447700900125', 'first [ INBOXCCC ] then [INBOXDDD]'),
    ('447700900126@c.us', '[INBOXCCC]');
SELECT * FROM pg_temp.links() WHERE t IN ('a', 'b', 'c', 'd');

-- COPY fires it too
COPY inbox (chat_id, body, message_id) FROM stdin;
447700900127@c.us	[COPYAAAA]	wamid.copy1
447700900127@c.us	[COPYAAAA]	wamid.copy1
\.
SELECT * FROM pg_temp.links() WHERE t = 'copy';
SELECT message_id, outcome FROM otp_link.messages_seen WHERE message_id LIKE 'wamid.copy%';

-- a sender id that is no phone number is ignored: the inbox row is kept
SELECT count(*) AS rows FROM inbox \gset
SELECT pg_temp.err($$INSERT INTO inbox (chat_id, body) VALUES ('not a phone', '[INBOXDDD]')$$);
SELECT count(*) = :rows + 1 AS row_stored FROM inbox;

-- a ROLLBACK undoes the row and the verification
SET otp_link.debug_codes = 'ROLLBACK';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "rollback"}')->>'code' AS code;
SELECT pg_temp.counts() AS before \gset
BEGIN;
INSERT INTO inbox (chat_id, body, message_id) VALUES ('447700900128@c.us', '[ROLLBACK]', 'wamid.rb');
SELECT * FROM pg_temp.links() WHERE t = 'rollback';
ROLLBACK;
SELECT pg_temp.counts() = :'before' AS nothing_written;
SELECT * FROM pg_temp.links() WHERE t = 'rollback';

--
-- BEFORE INSERT: the row is returned unchanged
--
CREATE TABLE inbox_before (
    id          integer PRIMARY KEY,
    chat_id     text,
    body        text,
    message_id  text,
    extra       jsonb,
    received_at timestamptz DEFAULT '2024-01-02 03:04:05+00'
);
CREATE TRIGGER inbox_before_consume BEFORE INSERT ON inbox_before
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id');
INSERT INTO inbox_before (id, chat_id, body, message_id, extra) VALUES
    (1, '447700900129@c.us', E'Hi \u00e9 😀 [BEFOREAA]', 'wamid.b1', '{"k": [1, 2]}'),
    (2, '447700900129@c.us', 'no code', NULL, NULL),
    (3, NULL, NULL, NULL, '{}')
RETURNING *;
SELECT * FROM inbox_before ORDER BY id;
SELECT (id, chat_id, body, message_id, extra) IS NOT DISTINCT FROM
       (1, '447700900129@c.us', E'Hi \u00e9 😀 [BEFOREAA]', 'wamid.b1', '{"k": [1, 2]}'::jsonb) AS row_unchanged
  FROM inbox_before WHERE id = 1;
SELECT * FROM pg_temp.links() WHERE t = 'before';

--
-- column types other than text; quoted column names; a 4th argument
-- naming the instance
--
SET otp_link.debug_codes = 'TYPEDAAA,TYPEDBBB,OTHERAAA';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "typed1"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "typed2"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst2', metadata => '{"t": "other"}')->>'code' AS code;
CREATE TABLE inbox_typed (
    "From"      bigint,
    "Text Body" varchar(5000),
    msg         bigint
);
SELECT pg_temp.err(format($$CREATE TRIGGER inbox_typed_consume AFTER INSERT ON inbox_typed
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('From', 'Text Body', 'msg', %L)$$, :'inst'));
INSERT INTO inbox_typed VALUES (447700900130, '[TYPEDAAA]', 9001);
SELECT * FROM pg_temp.links() WHERE t = 'typed1';
SELECT message_id, outcome FROM otp_link.messages_seen WHERE message_id = '9001';
INSERT INTO inbox_typed VALUES (447700900130, '[TYPEDAAA]', 9001);
SELECT message_id, outcome FROM otp_link.messages_seen WHERE message_id = '9001';
-- the instance given: another instance's code is unknown here
INSERT INTO inbox_typed VALUES (447700900131, '[OTHERAAA]', 9002);
SELECT * FROM pg_temp.links() WHERE t = 'other';
SELECT message_id, outcome FROM otp_link.messages_seen WHERE message_id = '9002';
-- no message id column ('') but an instance
CREATE TABLE inbox_nomid (sender text, txt text);
SELECT pg_temp.err(format($$CREATE TRIGGER inbox_nomid_consume AFTER INSERT ON inbox_nomid
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('sender', 'txt', '', %L)$$, :'inst2'));
INSERT INTO inbox_nomid VALUES ('447700900131', '[OTHERAAA]'), ('447700900132', '[TYPEDBBB]');
SELECT * FROM pg_temp.links() WHERE t IN ('other', 'typed2');
-- two arguments: no message id at all
CREATE TABLE inbox_two (sender text, txt text);
CREATE TRIGGER inbox_two_consume AFTER INSERT ON inbox_two
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('sender', 'txt');
INSERT INTO inbox_two VALUES ('447700900132', '[TYPEDBBB]');
SELECT * FROM pg_temp.links() WHERE t = 'typed2';
DROP TABLE inbox_two, inbox_nomid, inbox_typed;

--
-- misuse: wrong column names, argument counts, events, levels
--
CREATE TABLE inbox_bad (chat_id text, body text, message_id text);
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat', 'body', 'message_id');
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'Body', 'message_id');
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'msg_id');
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('ctid', 'body');
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger();
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id');
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id',
        '00000000-0000-0000-0000-000000000000', 'extra');
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id', 'not-a-uuid');
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id',
        '00000000-0000-0000-0000-000000000000');
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', '[NOSUCHAA]', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT OR UPDATE ON inbox_bad
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id');
INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1');
SELECT pg_temp.err($$UPDATE inbox_bad SET body = 'edited'$$);
DROP TRIGGER bad ON inbox_bad;
CREATE TRIGGER bad AFTER INSERT ON inbox_bad
    FOR EACH STATEMENT EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id');
SELECT pg_temp.err($$INSERT INTO inbox_bad VALUES ('447700900123', 'no code', 'm1')$$);
DROP TRIGGER bad ON inbox_bad;
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_trigger()$$);
DROP TABLE inbox_bad;

--
-- roles: an inbox role puts the trigger on its own table; any role that
-- may insert into the table then verifies links through it
--
CREATE ROLE regress_otp_trigger_inbox IN ROLE otp_link_inbox;
CREATE ROLE regress_otp_trigger_stranger;
CREATE ROLE regress_otp_trigger_provider;
SET otp_link.debug_codes = 'ROLEAAAA';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "role"}')->>'code' AS code;
CREATE TABLE inbox_role (chat_id text, body text, message_id text);
ALTER TABLE inbox_role OWNER TO regress_otp_trigger_inbox;
CREATE TABLE inbox_stranger (chat_id text, body text);
ALTER TABLE inbox_stranger OWNER TO regress_otp_trigger_stranger;
SET ROLE regress_otp_trigger_stranger;
SELECT pg_temp.err($$CREATE TRIGGER t AFTER INSERT ON inbox_stranger
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body')$$);
SET ROLE regress_otp_trigger_inbox;
CREATE TRIGGER inbox_role_consume AFTER INSERT ON inbox_role
    FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id');
GRANT INSERT ON inbox_role TO regress_otp_trigger_provider;
SET ROLE regress_otp_trigger_provider;
INSERT INTO inbox_role VALUES ('447700900133@c.us', '[ROLEAAAA]', 'wamid.role');
RESET ROLE;
SELECT * FROM pg_temp.links() WHERE t = 'role';
DROP TABLE inbox_role, inbox_stranger;
DROP ROLE regress_otp_trigger_inbox, regress_otp_trigger_stranger, regress_otp_trigger_provider;

DROP TABLE inbox, inbox_before;
RESET otp_link.debug_codes;
DROP EXTENSION otp_link;
