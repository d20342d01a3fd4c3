--
-- otp_link_consume_webhook: WhatsApp Cloud API webhook payloads
--
CREATE EXTENSION otp_link;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

\i :abs_srcdir/sql/include/counts.sql

-- hook(payload): the webhook's results, one row each, link uuids replaced
-- by the links' labels (metadata.t)
CREATE FUNCTION pg_temp.hook(payload jsonb)
RETURNS TABLE (n bigint, outcome text, link text, chat_id text, message_id text, original text, messages int)
LANGUAGE sql AS $$
    SELECT e.n, e.r->>'outcome',
           (SELECT metadata->>'t' FROM otp_link.links WHERE id = (e.r->>'uuid')::uuid),
           e.r->>'chat_id', e.r->>'message_id', e.r->>'original_outcome',
           (w->>'messages')::int
      FROM otp_link.otp_link_consume_webhook(payload) w
      LEFT JOIN LATERAL jsonb_array_elements(w->'results') WITH ORDINALITY AS e(r, n) ON true
     ORDER BY e.n
$$;

SELECT otp_link.otp_link_instance_create('15550001111', 'Shop')->>'uuid' AS inst \gset
SELECT otp_link.otp_link_instance_create('15550002222', 'Other')->>'uuid' AS inst2 \gset
SET otp_link.debug_codes = 'HOOKAAAA,HOOKBBBB,HOOKCCCC,HOOKDDDD,HOOKEEEE';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "a"}',
    callback => '{"success": "https://app.example/cb/ok"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "b"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst2', metadata => '{"t": "c"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "d"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "e"}')->>'code' AS code;

-- a realistic delivery: two business accounts (numbers not registered
-- here, so any instance's code counts), several changes; text messages are
-- consumed, media, reactions and status updates are not
SELECT $json$
{
  "object": "whatsapp_business_account",
  "entry": [
    {
      "id": "102290129340398",
      "changes": [
        {
          "field": "messages",
          "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550009999", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": "16315551181"},
                         {"profile": {"name": "Sam"}, "wa_id": "16315551182"}],
            "messages": [
              {"from": "16315551181",
               "id": "wamid.HBgLMTYzMTU1NTExODEVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
               "timestamp": "1669233778",
               "text": {"body": "Give me link to login at Shop [HOOKAAAA] - DO NOT CHANGE THIS MESSAGE"},
               "type": "text"},
              {"from": "16315551181", "id": "wamid.IMAGE1", "timestamp": "1669233779", "type": "image",
               "image": {"caption": "[HOOKBBBB]", "mime_type": "image/jpeg",
                         "sha256": "abc", "id": "1003383421387256"}},
              {"from": "16315551182", "id": "wamid.REACT1", "timestamp": "1669233780", "type": "reaction",
               "reaction": {"message_id": "wamid.X", "emoji": "👍"}},
              {"from": "16315551182", "id": "wamid.TEXT2", "timestamp": "1669233781", "type": "text",
               "text": {"body": "hello, is anybody there?"}}
            ]
          }
        },
        {
          "field": "messages",
          "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550009999", "phone_number_id": "106540352242922"},
            "statuses": [{"id": "wamid.SENT1", "status": "delivered", "timestamp": "1669233782",
                          "recipient_id": "16315551181",
                          "conversation": {"id": "c1", "origin": {"type": "service"}},
                          "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"}}]
          }
        },
        {
          "field": "messages",
          "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550009999", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "447700900123"}],
            "messages": [
              {"from": "447700900123", "id": "wamid.TEXT3", "timestamp": "1669233783", "type": "text",
               "text": {"body": "😀 [hookbbbb]"}},
              {"from": "447700900124", "id": "wamid.TEXT4", "timestamp": "1669233784", "type": "text",
               "text": {"body": "[HOOKCCCC]"}}
            ]
          }
        }
      ]
    },
    {
      "id": "200000000000002",
      "changes": [
        {
          "field": "messages",
          "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "1 555-000-8888", "phone_number_id": "200000000000099"},
            "messages": [
              {"from": "447700900125", "id": "wamid.TEXT5", "timestamp": "1669233785", "type": "text",
               "text": {"body": "[HOOKCCCC]"}},
              {"from": "447700900126", "id": "wamid.TEXT6", "timestamp": "1669233786", "type": "text",
               "text": {"body": "[HOOKAAAA]", "preview_url": false}}
            ]
          }
        }
      ]
    }
  ]
}
$json$ AS payload \gset
SELECT * FROM pg_temp.hook(:'payload');
SELECT metadata->>'t' AS t, status, chat_id, messages_received FROM otp_link.links ORDER BY 1;
SELECT l.metadata->>'t' AS t, d.kind, d.event, d.destination, d.status
  FROM otp_link.deliveries d JOIN otp_link.links l ON l.id = d.link_id ORDER BY d.id;
SELECT message_id, outcome FROM otp_link.messages_seen ORDER BY 1;
SELECT chat_id, unknown_codes FROM otp_link.senders ORDER BY 1;

-- the provider delivers it again: every message is a duplicate, nothing is written
SELECT pg_temp.counts() AS before \gset
SELECT * FROM pg_temp.hook(:'payload');
SELECT pg_temp.counts() = :'before' AS nothing_written;
-- one message id twice in one payload
SELECT * FROM pg_temp.hook('{"entry": [{"changes": [{"value": {"messages": [
    {"from": "447700900127", "id": "wamid.TWICE", "type": "text", "text": {"body": "[HOOKDDDD]"}},
    {"from": "447700900127", "id": "wamid.TWICE", "type": "text", "text": {"body": "[HOOKDDDD]"}}]}}]}]}');
-- a message without an id is consumed, not remembered
SELECT * FROM pg_temp.hook('{"entry": [{"changes": [{"value": {"messages": [
    {"from": "447700900127", "type": "text", "text": {"body": "[HOOKDDDD]"}}]}}]}]}');
-- an unregistered business number: no instance filter
SELECT * FROM pg_temp.hook('{"entry": [{"changes": [{"value": {
    "metadata": {"display_phone_number": "19999999999"},
    "messages": [{"from": "447700900128", "id": "wamid.UNREG", "type": "text", "text": {"body": "[HOOKEEEE]"}}]}}]}]}');

-- nothing to consume
SELECT otp_link.otp_link_consume_webhook('{"object": "whatsapp_business_account", "entry": []}');
SELECT otp_link.otp_link_consume_webhook('{"entry": [{"id": "1"}, {"changes": []}, {"changes": [{"field": "x"}]},
    {"changes": [{"value": {"statuses": [{"id": "s"}]}}]}]}');

--
-- malformed payloads: 22023 and nothing consumed, not even the valid text
-- message that comes first
--
SET otp_link.debug_codes = 'MALFORMD';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "malformed"}')->>'code' AS code;
SELECT pg_temp.counts() AS before \gset
CREATE FUNCTION pg_temp.bad(tail text) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.err(format('SELECT otp_link.otp_link_consume_webhook(%L)',
        '{"entry": [{"changes": [{"value": {"messages": [{"from": "447700900129", "id": "wamid.OK", '
        '"type": "text", "text": {"body": "[MALFORMD]"}}]}}]}' || tail || ']}'))
$$;
-- (the valid payload alone would verify the link)
BEGIN;
SELECT pg_temp.bad('') AS valid_alone;
SELECT status FROM otp_link.links WHERE metadata->>'t' = 'malformed';
ROLLBACK;
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('[]')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('"text"')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('5')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('null')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook(NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('{}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('{"entry": {}}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('{"entry": null}')$$);
SELECT pg_temp.bad(', 5');
SELECT pg_temp.bad(', {"changes": {}}');
SELECT pg_temp.bad(', {"changes": [5]}');
SELECT pg_temp.bad(', {"changes": [{"value": []}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"metadata": "x", "messages": []}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"metadata": {"display_phone_number": 15550001111}, "messages": []}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": {}}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": ["hi"]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": "447700900130", "id": "m", "type": 1}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": 447700900130, "id": "m", "type": "text", "text": {"body": "hi"}}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": "447700900130", "id": 42, "type": "text", "text": {"body": "hi"}}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": "447700900130", "id": "m", "type": "text", "text": "hi"}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": "447700900130", "id": "m", "type": "text"}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": "447700900130", "id": "m", "type": "text", "text": {"body": 42}}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": "447700900130", "id": "m", "type": "text", "text": {"body": ["hi"]}}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": "447700900130", "id": "m", "type": "text", "text": {}}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": "447700900130", "id": "m", "type": "text", "text": {"body": null}}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"id": "m", "type": "text", "text": {"body": "hi"}}]}}]}');
SELECT pg_temp.bad(', {"changes": [{"value": {"messages": [{"from": null, "id": "m", "type": "text", "text": {"body": "hi"}}]}}]}');
SELECT pg_temp.counts() = :'before' AS nothing_written;
-- found while consuming: a message id too long.  Since 1.1 that message is
-- ignored and the rest of the batch consumed (a provider would retry a
-- rejected batch for ever)
SELECT * FROM pg_temp.hook(format('{"entry": [{"changes": [{"value": {"messages": [
    {"from": "447700900130", "id": "%s", "type": "text", "text": {"body": "[HOOKEEEE]"}},
    {"from": "447700900131", "id": "wamid.afterlong", "type": "text", "text": {"body": "hi"}}]}}]}]}', repeat('w', 257))::jsonb);
SELECT status FROM otp_link.links WHERE metadata->>'t' = 'malformed';
-- a sender id that is no phone number is ignored, the rest of the batch consumed
SELECT * FROM pg_temp.hook('{"entry": [{"changes": [{"value": {"messages": [
    {"from": "garbage", "id": "wamid.garbage", "type": "text", "text": {"body": "[HOOKEEEE]"}}]}}]}]}');
-- non-text messages are not checked for text
SELECT * FROM pg_temp.hook('{"entry": [{"changes": [{"value": {"messages": [
    {"type": "image", "image": {"id": "1"}},
    {"from": "447700900131", "type": "sticker", "text": 5}]}}]}]}');

--
-- roles: the inbox consumes webhooks, the application cannot
--
CREATE ROLE regress_otp_webhook_inbox IN ROLE otp_link_inbox;
CREATE ROLE regress_otp_webhook_app IN ROLE otp_link_app;
SET ROLE regress_otp_webhook_app;
SELECT pg_temp.err($$SELECT otp_link.otp_link_consume_webhook('{"entry": []}')$$);
SET ROLE regress_otp_webhook_inbox;
SELECT otp_link.otp_link_consume_webhook('{"entry": [{"changes": [{"value": {"messages": [
    {"from": "447700900129", "id": "wamid.ROLE", "type": "text", "text": {"body": "[MALFORMD]"}}]}}]}]}')->'results'->0->>'outcome' AS outcome;
RESET ROLE;
SELECT status, chat_id FROM otp_link.links WHERE metadata->>'t' = 'malformed';
DROP ROLE regress_otp_webhook_inbox, regress_otp_webhook_app;

--
-- a registered business number (value.metadata.display_phone_number)
-- selects the instance: only that instance's codes are known there
--
SET otp_link.debug_codes = 'SHOPAAAA,SHOPBBBB,OTHERAAA';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "shop1"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "shop2"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst2', metadata => '{"t": "other1"}')->>'code' AS code;
SELECT * FROM pg_temp.hook('{"object": "whatsapp_business_account", "entry": [
  {"id": "1", "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
    "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1001"},
    "messages": [
      {"from": "447700900140", "id": "wamid.REG1", "type": "text", "text": {"body": "[SHOPAAAA]"}},
      {"from": "447700900141", "id": "wamid.REG2", "type": "text", "text": {"body": "[OTHERAAA]"}}]}}]},
  {"id": "2", "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
    "metadata": {"display_phone_number": "+1 555-000-2222", "phone_number_id": "2002"},
    "messages": [
      {"from": "447700900142", "id": "wamid.REG3", "type": "text", "text": {"body": "[SHOPBBBB]"}},
      {"from": "447700900143", "id": "wamid.REG4", "type": "text", "text": {"body": "[OTHERAAA]"}}]}}]}]}');
SELECT metadata->>'t' AS t, status, chat_id FROM otp_link.links
 WHERE metadata->>'t' IN ('shop1', 'shop2', 'other1') ORDER BY 1;

RESET otp_link.debug_codes;
DROP EXTENSION otp_link;
