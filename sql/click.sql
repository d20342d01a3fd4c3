--
-- Click-through (issue #14, item 4): a click URL makes generate return a
-- click_link; otp_link_open counts the click and answers the whatsapp_link
-- (a 302 for PostgREST); otp_link_stats counts clicked links.
--
CREATE EXTENSION otp_link;
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
SELECT otp_link.otp_link_instance_create('201553730661', 'Click',
    '{"click_url": "https://api.example/rpc/otp_link_open?uuid={uuid}"}')->>'uuid' AS inst \gset
SELECT otp_link.otp_link_instance_create('201553730662', 'Plain')->>'uuid' AS plain \gset

-- at the door: a click URL needs {uuid} and must be an http(s) URL; nothing written
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_create('447700900001', options => '{"click_url": "https://api.example/open"}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_instance_update('$$ || :'plain' || $$', options => '{"click_url": "ftp://x/{uuid}"}')$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_generate('$$ || :'plain' || $$', click_url => 'https://x.example/{uuid}' || chr(10))$$);
SELECT count(*) AS instances, count(*) FILTER (WHERE options ? 'click_url') AS with_click_url FROM otp_link.instances;
SELECT count(*) AS links FROM otp_link.links;

-- the instance's click URL, or generate's own
SET otp_link.debug_codes = 'CLICKAAA,CLICKBBB,CLICKCCC,CLICKDDD';
SELECT otp_link.otp_link_generate(:'inst') AS g \gset
SELECT :'g'::jsonb->>'click_link' = 'https://api.example/rpc/otp_link_open?uuid=' || (:'g'::jsonb->>'uuid') AS click_link_from_options;
SELECT otp_link.otp_link_generate(:'plain', click_url => 'https://go.example/c/{uuid}?x=1') AS h \gset
SELECT :'h'::jsonb->>'click_link' = 'https://go.example/c/' || (:'h'::jsonb->>'uuid') || '?x=1' AS click_link_from_argument;
SELECT otp_link.otp_link_generate(:'plain') AS p \gset
SELECT :'p'::jsonb ? 'click_link' AS plain_has_click_link;
SELECT otp_link.otp_link_generate(:'inst') AS q \gset
RESET otp_link.debug_codes;
SELECT id = (:'g'::jsonb->>'uuid')::uuid AS g, clicks, first_clicked_at IS NULL AS not_clicked,
       open_link = :'g'::jsonb->>'whatsapp_link' AS open_link_is_whatsapp_link
  FROM otp_link.links WHERE id IN ((:'g'::jsonb->>'uuid')::uuid, (:'p'::jsonb->>'uuid')::uuid) ORDER BY 1;

-- open: counts (first time and count), answers the whatsapp_link and a 302 for PostgREST
BEGIN;
SELECT otp_link.otp_link_open((:'g'::jsonb->>'uuid')::uuid) = :'g'::jsonb->>'whatsapp_link' AS opens_whatsapp_link;
SELECT current_setting('response.status') AS status,
       current_setting('response.headers')::jsonb->0->>'Location' = :'g'::jsonb->>'whatsapp_link' AS location,
       current_setting('response.headers')::jsonb->1 AS cache;
COMMIT;
SELECT clicks, first_clicked_at IS NOT NULL AS first_clicked FROM otp_link.links WHERE id = (:'g'::jsonb->>'uuid')::uuid;
SELECT first_clicked_at AS first FROM otp_link.links WHERE id = (:'g'::jsonb->>'uuid')::uuid \gset
SELECT pg_sleep(0.01);
-- as PostgREST runs a GET: in a READ ONLY transaction, the click is still counted
BEGIN READ ONLY;
SELECT otp_link.otp_link_open((:'g'::jsonb->>'uuid')::uuid) IS NOT NULL AS opened_read_only;
SELECT current_setting('transaction_read_only') AS still_read_only, pg_temp.err('UPDATE otp_link.instances SET name = name') AS other_writes;
COMMIT;
SELECT clicks, first_clicked_at = :'first' AS first_kept FROM otp_link.links WHERE id = (:'g'::jsonb->>'uuid')::uuid;
BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY;
SELECT pg_temp.err($$SELECT otp_link.otp_link_open('$$ || (:'g'::jsonb->>'uuid') || $$')$$);
ROLLBACK;

-- unknown uuid, a link without click link, null: PT404, PT404, 22004; nothing counted
SELECT pg_temp.err($$SELECT otp_link.otp_link_open('00000000-0000-4000-8000-000000000000')$$);
SELECT replace(pg_temp.err($$SELECT otp_link.otp_link_open('$$ || (:'p'::jsonb->>'uuid') || $$')$$), :'p'::jsonb->>'uuid', '<p>');
SELECT pg_temp.err('SELECT otp_link.otp_link_open(NULL)');
SELECT clicks FROM otp_link.links WHERE id = (:'p'::jsonb->>'uuid')::uuid;

-- a finished link: its wa.me link (with the code) is forgotten; open answers PT410
SELECT otp_link.otp_link_consume_message('447700900123', 'Give me link to login at Click [CLICKAAA] - DO NOT CHANGE THIS MESSAGE')->>'outcome' AS outcome;
SELECT status, clicks, open_link IS NULL AS open_link_forgotten FROM otp_link.links WHERE id = (:'g'::jsonb->>'uuid')::uuid;
SELECT replace(pg_temp.err($$SELECT otp_link.otp_link_open('$$ || (:'g'::jsonb->>'uuid') || $$')$$), :'g'::jsonb->>'uuid', '<g>');
SELECT clicks FROM otp_link.links WHERE id = (:'g'::jsonb->>'uuid')::uuid;

-- stats: 2 of the 3 links with a click link were clicked
SELECT otp_link.otp_link_open((:'h'::jsonb->>'uuid')::uuid) IS NOT NULL AS opened;
SELECT s->'links_generated' AS generated, s->'links_clicked' AS clicked, s->'click_through_rate' AS rate
  FROM otp_link.otp_link_stats() s;
SELECT count(*) AS metric_lines FROM regexp_matches(otp_link.otp_link_metrics(), '^otp_link_(links_clicked|click_through_rate) ', 'gn');

-- who may call it: not a stranger; a web role granted EXECUTE learns the
-- whatsapp_link of the uuid it knows, and nothing else
CREATE ROLE regress_otp_web;
GRANT USAGE ON SCHEMA otp_link TO regress_otp_web;
SET ROLE regress_otp_web;
SELECT pg_temp.err($$SELECT otp_link.otp_link_open('$$ || (:'q'::jsonb->>'uuid') || $$')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION otp_link.otp_link_open(uuid) TO regress_otp_web;
SET ROLE regress_otp_web;
SELECT otp_link.otp_link_open((:'q'::jsonb->>'uuid')::uuid) = :'q'::jsonb->>'whatsapp_link' AS web_opens;
SELECT pg_temp.err($$SELECT otp_link.otp_link_status('$$ || (:'q'::jsonb->>'uuid') || $$')$$);
SELECT pg_temp.err('SELECT count(*) FROM otp_link.links');
SELECT pg_temp.err($$SELECT otp_link.otp_link_open('00000000-0000-4000-8000-000000000001')$$);
RESET ROLE;
REVOKE ALL ON SCHEMA otp_link FROM regress_otp_web;
REVOKE ALL ON FUNCTION otp_link.otp_link_open(uuid) FROM regress_otp_web;
DROP ROLE regress_otp_web;
DROP EXTENSION otp_link;
