--
-- Instance management: update, secret rotation, delete; held replies taken
-- by the application
--
CREATE EXTENSION otp_link;
\set VERBOSITY terse
SELECT otp_link.otp_link_instance_create('201553730661', 'Shop')->>'uuid' AS inst \gset
SELECT secret AS old_secret FROM otp_link.instances \gset
-- name only: options and secret stay
SELECT u->>'name' AS name, u ? 'secret' AS shows_secret
  FROM otp_link.otp_link_instance_update(:'inst', name => 'Shop 2') u;
SELECT name, options, secret = :'old_secret' AS same_secret FROM otp_link.instances;
-- options are replaced whole and checked like at creation
SELECT otp_link.otp_link_instance_update(:'inst', options => '{"bogus": 1}');
SELECT otp_link.otp_link_instance_update(:'inst', options => '{"callback": {"success": "ftp://x"}}');
SELECT otp_link.otp_link_instance_update(:'inst',
       options => '{"link_url": "https://shop.example/l?t={token}"}')->>'name' AS name;
SELECT name, options FROM otp_link.instances;
-- a new secret is returned once and stored
SELECT otp_link.otp_link_instance_update(:'inst', rotate_secret => true)->>'secret' AS new_secret \gset
SELECT :'new_secret' ~ '^whsec_' AS new_secret_shown, :'new_secret' <> :'old_secret' AS differs,
       (SELECT secret FROM otp_link.instances) = :'new_secret' AS stored;
SELECT otp_link.otp_link_instance_update(NULL);
SELECT otp_link.otp_link_instance_update('00000000-0000-0000-0000-000000000000', name => 'x');

-- held replies: taken once, in order, bounded
SET otp_link.debug_codes = 'AAAAAAAA,BBBBBBBB,CCCCCCCC';
SELECT count(otp_link.otp_link_generate(:'inst')) FROM generate_series(1, 3);
SELECT otp_link.otp_link_consume_message('447700900111', '[AAAAAAAA]')->>'outcome' AS a,
       otp_link.otp_link_consume_message('447700900112', '[BBBBBBBB]')->>'outcome' AS b,
       otp_link.otp_link_consume_message('447700900113', '[CCCCCCCC]')->>'outcome' AS c;
SELECT r->>'to' AS to, r->>'event' AS event, r->>'body' ~ '^Here is your login link: https://shop\.example/l\?t=[A-Za-z0-9_-]{43}$' AS body_ok
  FROM jsonb_array_elements(otp_link.otp_link_replies_take(max_replies => 2)->'replies') r;
SELECT jsonb_array_length(otp_link.otp_link_replies_take(:'inst')->'replies') AS rest,
       jsonb_array_length(otp_link.otp_link_replies_take()->'replies') AS again;
SELECT status, count(*) FROM otp_link.deliveries GROUP BY 1;
RESET otp_link.debug_codes;

-- generate reads the instance row as it is now: after an update, a rolled
-- back update, a VACUUM FULL (new file, rows moved), a VACUUM that
-- truncates the table, and a delete
SELECT otp_link.otp_link_instance_create('447700900201', 'Other')->>'uuid' AS other \gset
SELECT otp_link.otp_link_generate(:'other')->>'whatsapp_link' ~ 'at\+Other\+' AS named_other;
SELECT otp_link.otp_link_instance_update(:'other', name => 'Renamed')->>'name' AS name;
SELECT otp_link.otp_link_generate(:'other')->>'whatsapp_link' ~ 'at\+Renamed\+' AS renamed;
BEGIN;
SELECT otp_link.otp_link_instance_update(:'other', name => 'Uncommitted')->>'name' AS name;
SELECT otp_link.otp_link_generate(:'other')->>'whatsapp_link' ~ 'at\+Uncommitted\+' AS own_change_seen;
ROLLBACK;
SELECT otp_link.otp_link_generate(:'other')->>'whatsapp_link' ~ 'at\+Renamed\+' AS rollback_seen;
-- the calling statement's own change is seen, as by a SELECT run through SPI
UPDATE otp_link.instances SET name = 'SameStatement' WHERE id = :'other'
RETURNING otp_link.otp_link_generate(id)->>'whatsapp_link' ~ 'at\+SameStatement\+' AS own_statement_seen;
WITH u AS (UPDATE otp_link.instances SET name = 'InCte' WHERE id = :'other' RETURNING id)
SELECT otp_link.otp_link_generate(u.id)->>'whatsapp_link' ~ 'at\+InCte\+' AS cte_seen FROM u;
-- columns moved by ALTER TABLE in a session that has already generated
ALTER TABLE otp_link.instances DROP COLUMN name;
ALTER TABLE otp_link.instances ADD COLUMN name text;
UPDATE otp_link.instances SET name = 'Renamed' WHERE id = :'other';
SELECT otp_link.otp_link_generate(:'other')->>'whatsapp_link' ~ 'at\+Renamed\+' AS after_alter;
ALTER TABLE otp_link.instances RENAME COLUMN phone TO phone_gone;
SELECT otp_link.otp_link_generate(:'other');
ALTER TABLE otp_link.instances RENAME COLUMN phone_gone TO phone;
-- a row in a later block, then the rows before it gone and the table truncated
SELECT count(otp_link.otp_link_instance_create('4477008' || lpad(g::text, 5, '0'), 'Filler'))
  FROM generate_series(1, 300) g;
SELECT otp_link.otp_link_instance_create('447700999999', 'Last')->>'uuid' AS last \gset
SELECT otp_link.otp_link_generate(:'last')->>'whatsapp_link' ~ 'at\+Last\+' AS last_found;
DELETE FROM otp_link.instances WHERE name = 'Filler';
VACUUM FULL otp_link.instances;
SELECT otp_link.otp_link_generate(:'last')->>'whatsapp_link' ~ 'at\+Last\+' AS after_vacuum_full;
SELECT otp_link.otp_link_instance_delete(:'last') AS deleted;
VACUUM otp_link.instances;
\set VERBOSITY sqlstate
SELECT otp_link.otp_link_generate(:'last');
\set VERBOSITY terse
SELECT otp_link.otp_link_generate(:'other')->>'whatsapp_link' ~ 'at\+Renamed\+' AS other_still_found;
SELECT otp_link.otp_link_instance_delete(:'other') AS deleted;
\set VERBOSITY sqlstate
SELECT otp_link.otp_link_generate(:'other');
\set VERBOSITY terse

-- delete: links and deliveries go with it
SELECT otp_link.otp_link_instance_delete(:'inst') AS deleted,
       otp_link.otp_link_instance_delete(:'inst') AS again;
SELECT (SELECT count(*) FROM otp_link.links) AS links,
       (SELECT count(*) FROM otp_link.deliveries) AS deliveries;
DROP EXTENSION otp_link;
