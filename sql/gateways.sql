--
-- otp_link_consume_webhook(payload, format): gateway payload formats as data
-- (otp_link.webhook_formats).  Each built-in format verifies a link from
-- its gateway's documented example payload (sources in docs/gateways.md),
-- adapted to this test's numbers and codes; so does a format added with
-- one INSERT.
--
CREATE EXTENSION otp_link;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

\i :abs_srcdir/sql/include/counts.sql

-- gw(payload, format): the results (link uuids replaced by the links'
-- labels) and the skipped messages, one row each
CREATE FUNCTION pg_temp.gw(payload jsonb, format text)
RETURNS TABLE (kind text, outcome text, link text, chat_id text, message_id text)
LANGUAGE sql AS $$
    WITH w AS (SELECT otp_link.otp_link_consume_webhook(payload, format) AS w)
    SELECT 'result', e->>'outcome',
           (SELECT metadata->>'t' FROM otp_link.links WHERE id = (e->>'uuid')::uuid),
           e->>'chat_id', e->>'message_id'
      FROM w, jsonb_array_elements(w->'results') e
    UNION ALL
    SELECT 'skipped', e->>'reason', format('batch %s index %s', e->>'batch', e->>'index'),
           NULL, e->>'message_id'
      FROM w, jsonb_array_elements(w->'skipped') e
$$;

SELECT name, builtin, address_prefix FROM otp_link.webhook_formats ORDER BY name;
-- the one-argument form (1.0) is still there, and a call without format is not ambiguous
SELECT p.oid::regprocedure FROM pg_proc p
 WHERE p.proname = 'otp_link_consume_webhook' ORDER BY 1::text;
SELECT otp_link.otp_link_consume_webhook('{"entry": []}');
SELECT otp_link.otp_link_consume_webhook(payload => '{"entry": []}');

-- the receiving numbers of the documented examples
SELECT otp_link.otp_link_instance_create('15550783881', 'cloud')->>'uuid' AS cloud \gset
SELECT otp_link.otp_link_instance_create('14155238886', 'twilio')->>'uuid' AS twilio \gset
SELECT otp_link.otp_link_instance_create('71111111111', 'waha')->>'uuid' AS waha \gset
SELECT otp_link.otp_link_instance_create('11001234567', 'green')->>'uuid' AS green \gset
SELECT otp_link.otp_link_instance_create('15550001111', 'custom')->>'uuid' AS custom \gset

SET otp_link.debug_codes = 'CLOUDAAA,TWILIOAA,WAHAAAAA,GREENAAA,GREENBBB,GUPSHUPA,CLOUDBBB,TWILIOBB';
SELECT otp_link.otp_link_generate(:'cloud', metadata => '{"t": "cloud"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'twilio', metadata => '{"t": "twilio"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'waha', metadata => '{"t": "waha"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'green', metadata => '{"t": "green"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'green', metadata => '{"t": "green_ext"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'custom', metadata => '{"t": "gupshup"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'cloud', metadata => '{"t": "cloud2"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'twilio', metadata => '{"t": "twilio2"}')->>'code' AS code;

--
-- whatsapp_cloud: Meta's messages webhook reference example (a text
-- message), the body replaced by the code
--
SELECT * FROM pg_temp.gw($json$
{
  "object": "whatsapp_business_account",
  "entry": [{
    "id": "102290129340398",
    "changes": [{
      "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
        "messages": [{
          "from": "16505551234",
          "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
          "timestamp": "1749416383",
          "type": "text",
          "text": {"body": "Give me link to login [CLOUDAAA] - DO NOT CHANGE THIS MESSAGE"}
        }]
      },
      "field": "messages"
    }]
  }]
}$json$, 'whatsapp_cloud');

--
-- twilio: the incoming message webhook's form parameters, as PostgREST
-- turns a form body into a JSON object; WhatsApp numbers are "whatsapp:+..."
--
SELECT * FROM pg_temp.gw('{
  "MessageSid": "SM11111111111111111111111111111111",
  "SmsSid": "SM11111111111111111111111111111111",
  "From": "whatsapp:+447700900201",
  "To": "whatsapp:+14155238886",
  "Body": "Give me link to login [TWILIOAA] - DO NOT CHANGE THIS MESSAGE",
  "NumMedia": "0"
}', 'twilio');
-- a status callback posted to the same URL has no Body: not ours, nothing reported
SELECT otp_link.otp_link_consume_webhook('{"MessageSid": "SM2", "MessageStatus": "delivered",
  "From": "whatsapp:+14155238886", "To": "whatsapp:+447700900201"}', 'twilio');
-- an SMS to a Twilio number whose SMS webhook is this one: From has no
-- "whatsapp:" (and SMS senders are easily spoofed); not ours, nothing
-- reported, the link stays pending
SET otp_link.debug_codes = 'TWILIOSM';
SELECT otp_link.otp_link_generate(:'twilio', metadata => '{"t": "twilio_sms"}')->>'code' AS code;
RESET otp_link.debug_codes;
SELECT otp_link.otp_link_consume_webhook('{"MessageSid": "SM3", "From": "+447700900209",
  "To": "+14155238886", "Body": "[TWILIOSM]"}', 'twilio');
SELECT otp_link.otp_link_consume_webhook('{"MessageSid": "SM4", "From": "sms:+447700900209",
  "To": "whatsapp:+14155238886", "Body": "[TWILIOSM]"}', 'twilio');
SELECT status FROM otp_link.links WHERE metadata->>'t' = 'twilio_sms';

--
-- waha: the "message" event of WAHA's Events page (there fromMe is true,
-- the example being a message of one's own; an incoming one has false)
--
SELECT * FROM pg_temp.gw('{
  "event": "message",
  "session": "default",
  "engine": "WEBJS",
  "me": {"id": "71111111111@c.us", "pushName": "~"},
  "payload": {
    "id": "false_11111111111@c.us_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "timestamp": 1667561485,
    "from": "11111111111@c.us",
    "fromMe": false,
    "to": "71111111111@c.us",
    "body": "Give me link to login [WAHAAAAA] - DO NOT CHANGE THIS MESSAGE",
    "hasMedia": false,
    "ack": 1,
    "vCards": [],
    "_data": {}
  }
}', 'waha');
-- the documented example as it is (fromMe true), message.any, media: not consumed
SELECT otp_link.otp_link_consume_webhook('{"event": "message", "session": "default", "engine": "WEBJS",
  "payload": {"id": "true_11111111111@c.us_B", "from": "11111111111@c.us", "fromMe": true,
              "to": "11111111111@c.us", "body": "Hi there! [WAHAAAAA]", "hasMedia": false}}', 'waha');
SELECT otp_link.otp_link_consume_webhook('{"event": "message.any", "payload": {"id": "x1",
  "from": "11111111111@c.us", "fromMe": false, "body": "[WAHAAAAA]", "hasMedia": false}}', 'waha');
SELECT otp_link.otp_link_consume_webhook('{"event": "message", "payload": {"id": "x2",
  "from": "11111111111@c.us", "fromMe": false, "body": "[WAHAAAAA]", "hasMedia": true}}', 'waha');
-- a group's message: from is the group, ignored
SELECT * FROM pg_temp.gw('{"event": "message", "payload": {"id": "x3", "from": "120363000000000000@g.us",
  "participant": "11111111112@c.us", "fromMe": false, "body": "[WAHAAAAA]", "hasMedia": false}}', 'waha');

--
-- green_api: GREEN-API's incoming text message example, and an extended
-- text message (text with a URL)
--
SELECT * FROM pg_temp.gw('{
  "typeWebhook": "incomingMessageReceived",
  "instanceData": {"idInstance": 1234, "wid": "11001234567@c.us", "typeInstance": "whatsapp"},
  "timestamp": 1588091580,
  "idMessage": "F7AEC1B7086ECDC7E6E45923F5EDB825",
  "senderData": {"chatId": "79001234568@c.us", "sender": "79001234568@c.us",
                 "chatName": "GREEN-API", "senderName": "GREEN-API", "senderContactName": "GREEN-API"},
  "messageData": {"typeMessage": "textMessage",
                  "textMessageData": {"textMessage": "Give me link to login [GREENAAA] - DO NOT CHANGE THIS MESSAGE"}}
}', 'green_api');
SELECT * FROM pg_temp.gw('{
  "typeWebhook": "incomingMessageReceived",
  "instanceData": {"idInstance": 1234, "wid": "11001234567@c.us", "typeInstance": "whatsapp"},
  "timestamp": 1705898347,
  "idMessage": "BACB52BE2EDD30CAD9",
  "senderData": {"chatId": "79001234569@c.us", "sender": "79001234569@c.us",
                 "chatName": "Green API user", "senderName": "Green API"},
  "messageData": {"typeMessage": "extendedTextMessage",
                  "extendedTextMessageData": {"text": "https://shop.example/login [GREENBBB]",
                                              "description": "", "title": "", "previewType": "None",
                                              "jpegThumbnail": "", "forwardingScore": 0, "isForwarded": false}}
}', 'green_api');
-- an outgoing message (typeWebhook outgoingMessageReceived) is not consumed
SELECT otp_link.otp_link_consume_webhook('{"typeWebhook": "outgoingMessageReceived",
  "instanceData": {"wid": "11001234567@c.us"}, "idMessage": "OUT1",
  "senderData": {"chatId": "79001234568@c.us", "sender": "11001234567@c.us"},
  "messageData": {"typeMessage": "textMessage", "textMessageData": {"textMessage": "[GREENAAA]"}}}', 'green_api');

SELECT metadata->>'t' AS t, status, chat_id FROM otp_link.links ORDER BY 1;

--
-- a gateway added with one INSERT, by an administrator: Gupshup's inbound
-- "message" event (docs.gupshup.io, "Types of payloads": a text message)
--
CREATE ROLE regress_gw_admin IN ROLE otp_link_admin;
CREATE ROLE regress_gw_app IN ROLE otp_link_app;
CREATE ROLE regress_gw_inbox IN ROLE otp_link_inbox;
SET ROLE regress_gw_admin;
INSERT INTO otp_link.webhook_formats (name, batches, messages, sender, text, message_id, text_filter, description)
VALUES ('gupshup', '$ ? (@.type == "message")', '$.payload', '$.sender.phone', '$.payload.text', '$.id',
        '$.type == "text"', 'Gupshup inbound message events');
RESET ROLE;
SET ROLE regress_gw_inbox;
SELECT otp_link.otp_link_consume_webhook('{
  "app": "DemoApp",
  "timestamp": 1580227766370,
  "version": 2,
  "type": "message",
  "payload": {
    "id": "ABEGkYaYVSEEAhAL3SLAWwHKeKrt6s3FKB0c",
    "source": "918098002114",
    "type": "text",
    "payload": {"text": "Give me link to login [GUPSHUPA] - DO NOT CHANGE THIS MESSAGE"},
    "sender": {"phone": "918098002114", "name": "Andy", "country_code": "91", "dial_code": "8098002114"}
  }
}', 'gupshup')->'results'->0->>'outcome' AS outcome;
RESET ROLE;
SELECT metadata->>'t' AS t, status, chat_id FROM otp_link.links WHERE metadata->>'t' = 'gupshup';

--
-- a malformed message is skipped and listed; the others are consumed
--
SELECT pg_temp.counts() AS before \gset
SELECT * FROM pg_temp.gw('{"entry": [{"changes": [{"value": {
    "metadata": {"display_phone_number": "15550783881"},
    "messages": [
      {"from": 447700900210, "id": "wamid.M1", "type": "text", "text": {"body": "[CLOUDBBB]"}},
      {"id": "wamid.M2", "type": "text", "text": {"body": "[CLOUDBBB]"}},
      {"from": "447700900210", "id": "wamid.M3", "type": "text", "text": {"body": ["[CLOUDBBB]"]}},
      {"from": "447700900210", "id": "wamid.M4", "type": "text"},
      {"from": "447700900210", "id": 42, "type": "text", "text": {"body": "[CLOUDBBB]"}},
      "not a message",
      {"from": "447700900210", "id": "wamid.M5", "type": "text", "text": {"body": "[CLOUDBBB]"}}]}}]},
  {"changes": [{"value": {"metadata": {"display_phone_number": 15550783881},
    "messages": [{"from": "447700900211", "id": "wamid.M6", "type": "text", "text": {"body": "hi"}}]}}]}]}',
  'whatsapp_cloud');
SELECT metadata->>'t' AS t, status, chat_id FROM otp_link.links WHERE metadata->>'t' = 'cloud2';
SELECT message_id, outcome FROM otp_link.messages_seen WHERE message_id LIKE 'wamid.M%' ORDER BY 1;
-- a payload the format does not match: nothing found, nothing written
SELECT pg_temp.counts() AS before \gset
SELECT otp_link.otp_link_consume_webhook('[1, "x", null]', 'twilio');
SELECT otp_link.otp_link_consume_webhook('"text"', 'waha');
SELECT otp_link.otp_link_consume_webhook('{"entry": {}}', 'whatsapp_cloud');
SELECT pg_temp.counts() = :'before' AS nothing_written;
-- redelivered: a duplicate
SELECT * FROM pg_temp.gw('{"MessageSid": "SM11111111111111111111111111111111", "From": "whatsapp:+447700900201",
  "To": "whatsapp:+14155238886", "Body": "[TWILIOAA]"}', 'twilio');
-- the receiving number chooses the instance: twilio2's code sent to the Cloud number is unknown there
SELECT * FROM pg_temp.gw('{"MessageSid": "SM3", "From": "whatsapp:+447700900212",
  "To": "whatsapp:+15550783881", "Body": "[TWILIOBB]"}', 'twilio');

--
-- the Cloud API through the table gives what the 1.0 walker gives
--
SET otp_link.debug_codes = 'SAMEAAAA';
SELECT otp_link.otp_link_generate(:'cloud', metadata => '{"t": "same"}')->>'code' AS code;
SELECT $json$ {"object": "whatsapp_business_account", "entry": [
  {"id": "1", "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
    "metadata": {"display_phone_number": "+1 555-078-3881", "phone_number_id": "1001"},
    "messages": [
      {"from": "447700900220", "id": "wamid.S1", "type": "image", "image": {"caption": "[SAMEAAAA]"}},
      {"from": "447700900220", "id": "wamid.S2", "type": "text", "text": {"body": "[SAMEAAAA]"}},
      {"from": "447700900221", "id": "wamid.S3", "type": "text", "text": {"body": "[SAMEAAAA]"}},
      {"from": "447700900222", "id": "wamid.S4", "type": "text", "text": {"body": "[NOSUCHAA]"}},
      {"from": "447700900222", "id": "wamid.S2", "type": "text", "text": {"body": "[SAMEAAAA]"}}]}},
   {"field": "messages", "value": {"statuses": [{"id": "wamid.X", "status": "read"}]}}]}]} $json$ AS same \gset
BEGIN;
SELECT otp_link.otp_link_consume_webhook(:'same') AS one \gset
ROLLBACK;
SELECT otp_link.otp_link_consume_webhook(:'same', 'whatsapp_cloud') AS two \gset
SELECT (:'one'::jsonb)->'results' = (:'two'::jsonb)->'results' AS same_results,
       (:'two'::jsonb)->'messages' AS messages, (:'two'::jsonb)->'skipped' AS skipped;

--
-- errors
--
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('{}', 'nosuch')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('{}', NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook(NULL, 'twilio')$$);

--
-- formats are checked when written
--
-- ins(col, val): insert a format "bad" whose column col is val (the
-- others valid), then remove it again; the error if any
CREATE FUNCTION pg_temp.ins(col text, val text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    r := pg_temp.err(format(
        'INSERT INTO otp_link.webhook_formats SELECT * FROM jsonb_populate_record(NULL::otp_link.webhook_formats, %L)',
        jsonb_build_object('name', 'bad', 'batches', '$', 'messages', '$', 'sender', '$.from',
                           'text', '$.text', 'builtin', false) || jsonb_build_object(col, val)));
    DELETE FROM otp_link.webhook_formats WHERE name = 'bad';
    RETURN r;
END $$;
SET ROLE regress_gw_admin;
SELECT pg_temp.ins('text_filter', '$.type');
SELECT pg_temp.ins('text_filter', '$.a ? (@ == 1)');
SELECT pg_temp.ins('text_filter', '$.type == $t');
SELECT pg_temp.ins('text_filter', '$.t like_regex "x$"');
SELECT pg_temp.ins('sender', '$.from == "x"');
SELECT pg_temp.ins('message_id', '$.id ? (@ == $"var")');
SELECT pg_temp.ins('receiver', '$.to.');
-- datetime methods: a comparison of a date with a timestamptz raises even
-- in silent mode and would refuse whole payloads
SELECT pg_temp.ins('text_filter', '$.ts.datetime() > "2020-01-01".datetime()');
SELECT pg_temp.ins('sender', '$.from ? (@.datetime("YYYY") != "x")');
SELECT pg_temp.ins('text', '$.text.datetime()');
-- a key or a string named so is fine
SELECT pg_temp.ins('text_filter', '$.datetime == ".datetime()" && $."date" == "time("');
SELECT pg_temp.ins('address_prefix', '');
SELECT pg_temp.ins('description', 'fine');
INSERT INTO otp_link.webhook_formats (name, messages, sender, text) VALUES ('bad', '$', '$.from', '$.text');
SELECT pg_temp.err($$INSERT INTO otp_link.webhook_formats (name, messages, sender, text) VALUES ('Bad Name', '$', '$.a', '$.b')$$);
SELECT pg_temp.err($$UPDATE otp_link.webhook_formats SET sender = '$.x' WHERE name = 'bad'$$);
-- built-in formats cannot be changed, deleted or made
SELECT pg_temp.err($$UPDATE otp_link.webhook_formats SET sender = '$.x' WHERE name = 'twilio'$$);
SELECT pg_temp.err($$DELETE FROM otp_link.webhook_formats WHERE name = 'waha'$$);
SELECT pg_temp.err($$UPDATE otp_link.webhook_formats SET builtin = true WHERE name = 'bad'$$);
SELECT pg_temp.err($$INSERT INTO otp_link.webhook_formats (name, messages, sender, text, builtin) VALUES ('mine', '$', '$.a', '$.b', true)$$);
DELETE FROM otp_link.webhook_formats WHERE name = 'bad';
RESET ROLE;
-- only administrators write formats; the inbox and the application cannot
SET ROLE regress_gw_inbox;
SELECT pg_temp.err($$INSERT INTO otp_link.webhook_formats (name, messages, sender, text) VALUES ('x', '$', '$.a', '$.b')$$);
SELECT pg_temp.err($$SELECT count(*) FROM otp_link.webhook_formats$$);
SET ROLE regress_gw_app;
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('{}', 'twilio')$$);
SELECT pg_temp.err($$INSERT INTO otp_link.webhook_formats (name, messages, sender, text) VALUES ('x', '$', '$.a', '$.b')$$);
RESET ROLE;
-- pg_dump keeps the rows administrators added, not the built-in ones
SELECT c.relname, x.cond
  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(oid, cond)
  JOIN pg_class c ON c.oid = x.oid
 WHERE e.extname = 'otp_link' AND c.relname = 'webhook_formats';

RESET otp_link.debug_codes;
DROP ROLE regress_gw_admin, regress_gw_app, regress_gw_inbox;
DROP EXTENSION otp_link;
