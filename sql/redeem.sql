--
-- otp_link_redeem: the one-time {link} token issued at verification
--
CREATE EXTENSION otp_link;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- token(label): the token of the link's success reply
CREATE FUNCTION pg_temp.token(label text) RETURNS text LANGUAGE sql AS $$
    SELECT substring(d.payload->>'body' FROM '[A-Za-z0-9_-]{43}')
      FROM otp_link.deliveries d JOIN otp_link.links l ON l.id = d.link_id
     WHERE l.metadata->>'t' = label AND d.kind = 'reply' AND d.event = 'reply.success'
$$;

-- mask(r): a redeem result with the uuid, instance and time masked
CREATE FUNCTION pg_temp.mask(r jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT r
        || CASE WHEN r ? 'uuid' THEN jsonb_build_object('uuid',
                '<' || (SELECT metadata->>'t' FROM otp_link.links WHERE id = (r->>'uuid')::uuid) || '>')
           ELSE '{}' END
        || CASE WHEN r ? 'instance' THEN jsonb_build_object('instance',
                coalesce((SELECT CASE name WHEN 'Shop' THEN '<instance>' ELSE '<' || name || '>' END
                            FROM otp_link.instances WHERE id = (r->>'instance')::uuid), '<?>'))
           ELSE '{}' END
        || CASE WHEN r ? 'verified_at' THEN jsonb_build_object('verified_at',
                CASE WHEN r->>'verified_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$' THEN '<iso>' ELSE r->>'verified_at' END)
           ELSE '{}' END
$$;

-- redeem(...): otp_link_redeem(token, binding), masked
CREATE FUNCTION pg_temp.redeem(token text, binding text DEFAULT NULL) RETURNS jsonb LANGUAGE sql AS $$
    SELECT pg_temp.mask(otp_link.otp_link_redeem(token, binding))
$$;

SELECT otp_link.otp_link_instance_create('201553730661', 'Shop',
    '{"link_url": "https://app.example/login?token={token}"}')->>'uuid' AS inst \gset

-- links: bound to a browser, unbound, bound to a phone, without link URL
SET otp_link.debug_codes = 'BOUNDAAA,PLAINAAA,PHONEAAA,NOURLAAA,EXPIREAA,REUSEAAA';
SELECT otp_link.otp_link_generate(:'inst', binding => 'browser-secret-0123456789',
    metadata => '{"t": "bound", "user": 42}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "plain"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', phone => '+44 7700 900123',
    link_url => 'https://other.example/magic/{token}?x=1',
    metadata => '{"t": "phone"}')->>'code' AS code;
UPDATE otp_link.instances SET options = '{}';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "nourl"}')->>'code' AS code;
UPDATE otp_link.instances SET options = '{"link_url": "https://app.example/login?token={token}"}';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "expire"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', binding => 'another-browser-secret',
    metadata => '{"t": "reuse"}')->>'code' AS code;

-- no token before verification
SELECT metadata->>'t' AS t, token_hash IS NULL AS no_token FROM otp_link.links ORDER BY created_at, 1;

SELECT otp_link.otp_link_consume_message('447700900123@c.us', '[BOUNDAAA]')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('447700900124@c.us', '[PLAINAAA]')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('+44 7700 900123', '[PHONEAAA]')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('447700900125@c.us', '[NOURLAAA]')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('447700900126@c.us', '[EXPIREAA]')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('447700900127@c.us', '[REUSEAAA]')->>'outcome' AS outcome;

-- tokens: 43 base64url characters (256 bits), stored only as SHA-256 digests,
-- valid otp_link.token_ttl (600 s) from verification
SELECT l.metadata->>'t' AS t,
       regexp_replace(d.payload->>'body', '[A-Za-z0-9_-]{43}', '<token>', 'g') AS body,
       pg_temp.token(l.metadata->>'t') ~ '^[A-Za-z0-9_-]{43}$' AS token_ok,
       l.token_hash = sha256(convert_to(pg_temp.token(l.metadata->>'t'), 'UTF8')) AS digest_ok,
       l.token_expires_at - l.finished_at AS ttl
  FROM otp_link.links l JOIN otp_link.deliveries d ON d.link_id = l.id AND d.kind = 'reply'
 ORDER BY l.created_at, 1;
SELECT count(*) AS rows_with_plain_token
  FROM otp_link.links l WHERE l::text LIKE '%' || pg_temp.token('bound') || '%';
SELECT count(DISTINCT token_hash) AS distinct_tokens FROM otp_link.links WHERE token_hash IS NOT NULL;
-- the phone link's URL puts the token in the path
SELECT substring(payload->>'body' FROM 'magic/([A-Za-z0-9_-]+)\?x=1') IS NOT NULL AS token_in_path
  FROM otp_link.deliveries WHERE kind = 'reply'
   AND link_id = (SELECT id FROM otp_link.links WHERE metadata->>'t' = 'phone');

-- a browser-bound link: a wrong or a missing binding does not use it up
SELECT pg_temp.token('bound') AS bound_token \gset
SELECT pg_temp.redeem(:'bound_token', 'some-other-browser-secret');
SELECT pg_temp.redeem(:'bound_token');
SELECT pg_temp.redeem(:'bound_token', '');
SELECT redeemed_at IS NULL AS not_redeemed FROM otp_link.links WHERE metadata->>'t' = 'bound';
SELECT pg_temp.redeem(:'bound_token', 'browser-secret-0123456789');
-- once only
SELECT pg_temp.redeem(:'bound_token', 'browser-secret-0123456789');
SELECT pg_temp.redeem(:'bound_token', 'wrong-binding-0123456789');
SELECT otp_link.otp_link_status(id)->'redeemed' AS redeemed FROM otp_link.links WHERE metadata->>'t' = 'bound';

-- an unbound link: any binding (or none) will do
SELECT pg_temp.redeem(pg_temp.token('plain'), 'whatever-the-browser-says');
SELECT pg_temp.redeem(pg_temp.token('plain'));

-- a phone-bound link reports the phone
SELECT pg_temp.redeem(pg_temp.token('phone'));

-- an expired token
UPDATE otp_link.links SET token_expires_at = now() - interval '1 second' WHERE metadata->>'t' = 'expire';
SELECT pg_temp.redeem(pg_temp.token('expire'));
SELECT redeemed_at IS NULL AS not_redeemed FROM otp_link.links WHERE metadata->>'t' = 'expire';
-- redeemed first, expired later: already_redeemed
SELECT pg_temp.token('reuse') AS reuse_token \gset
SELECT pg_temp.redeem(:'reuse_token', 'another-browser-secret')->>'result' AS result;
UPDATE otp_link.links SET token_expires_at = now() - interval '1 second' WHERE metadata->>'t' = 'reuse';
SELECT pg_temp.redeem(:'reuse_token', 'another-browser-secret');
-- expiry wins over a binding mismatch
SET otp_link.debug_codes = 'EXPBOUND';
SELECT otp_link.otp_link_generate(:'inst', binding => 'expired-browser-secret',
    metadata => '{"t": "expbound"}')->>'code' AS code;
SELECT otp_link.otp_link_consume_message('447700900128@c.us', '[EXPBOUND]')->>'outcome' AS outcome;
UPDATE otp_link.links SET token_expires_at = now() - interval '1 second' WHERE metadata->>'t' = 'expbound';
SELECT pg_temp.redeem(pg_temp.token('expbound'), 'not-the-right-one-at-all');

-- unknown tokens
SELECT pg_temp.redeem('no-such-token');
SELECT pg_temp.redeem('');
SELECT pg_temp.redeem(repeat('A', 43));
SELECT pg_temp.redeem(repeat('A', 100000));
-- the token is case-sensitive
SELECT pg_temp.redeem(upper(pg_temp.token('expire')));

-- bad input
SELECT pg_temp.err($$SELECT otp_link.otp_link_redeem(NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_redeem(NULL, 'browser-secret-0123456789')$$);

-- a ROLLBACK gives the token back
SET otp_link.debug_codes = 'ROLLBACK';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "rollback"}')->>'code' AS code;
SELECT otp_link.otp_link_consume_message('447700900129@c.us', '[ROLLBACK]')->>'outcome' AS outcome;
BEGIN;
SELECT pg_temp.redeem(pg_temp.token('rollback'))->>'result' AS result;
ROLLBACK;
SELECT pg_temp.redeem(pg_temp.token('rollback'))->>'result' AS result;

-- roles: the application redeems; the inbox cannot
CREATE ROLE regress_otp_redeem_app IN ROLE otp_link_app;
CREATE ROLE regress_otp_redeem_inbox IN ROLE otp_link_inbox;
SET otp_link.debug_codes = 'ROLEAAAA';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "role"}')->>'code' AS code;
SELECT otp_link.otp_link_consume_message('447700900130@c.us', '[ROLEAAAA]')->>'outcome' AS outcome;
SELECT pg_temp.token('role') AS role_token \gset
SET ROLE regress_otp_redeem_inbox;
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_redeem(%L)$$, :'role_token'));
SET ROLE regress_otp_redeem_app;
SELECT otp_link.otp_link_redeem(:'role_token')->>'result' AS result;
SELECT otp_link.otp_link_redeem(:'role_token')->>'result' AS result;
SELECT otp_link.otp_link_redeem('no-such-token')->>'result' AS result;
RESET ROLE;
DROP ROLE regress_otp_redeem_app, regress_otp_redeem_inbox;

-- the scoped form: otp_link_redeem(token, instance, binding, require_binding, purpose)
-- accepts only the links of one instance (and purpose, and bound ones); any
-- other link answers invalid_token, exactly like an unknown token, and stays usable
SELECT p.oid::regprocedure AS signature, pg_get_function_arguments(p.oid) AS arguments
  FROM pg_proc p WHERE p.proname = 'otp_link_redeem' ORDER BY 2;
SELECT otp_link.otp_link_instance_create('201553730662', 'Other',
    '{"link_url": "https://other.example/login?token={token}"}')->>'uuid' AS other \gset
SET otp_link.debug_codes = 'SCOPEDAA,FOREIGNA,NEWSLETA,UNBOUNDA,NOPURPOS,FOREIGNB';
SELECT otp_link.otp_link_generate(:'inst', binding => 'scoped-browser-secret',
    metadata => '{"t": "scoped", "purpose": "login"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'other', binding => 'scoped-browser-secret',
    metadata => '{"t": "foreign", "purpose": "login"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', binding => 'scoped-browser-secret',
    metadata => '{"t": "newsletter", "purpose": "newsletter_optin"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst',
    metadata => '{"t": "unbound", "purpose": "login"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'inst', binding => 'scoped-browser-secret',
    metadata => '{"t": "nopurpose"}')->>'code' AS code;
SELECT otp_link.otp_link_generate(:'other', binding => 'scoped-browser-secret',
    metadata => '{"t": "foreign2", "purpose": "login"}')->>'code' AS code;
SELECT otp_link.otp_link_consume_message('447700900131@c.us', '[SCOPEDAA]', instance => :'inst')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('447700900132@c.us', '[FOREIGNA]', instance => :'other')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('447700900133@c.us', '[NEWSLETA]', instance => :'inst')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('447700900134@c.us', '[UNBOUNDA]', instance => :'inst')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('447700900135@c.us', '[NOPURPOS]', instance => :'inst')->>'outcome' AS outcome;
SELECT otp_link.otp_link_consume_message('447700900136@c.us', '[FOREIGNB]', instance => :'other')->>'outcome' AS outcome;
-- redeem_in(token, instance, ...): the scoped form, masked
CREATE FUNCTION pg_temp.redeem_in(token text, instance uuid, binding text DEFAULT 'scoped-browser-secret',
                                  require_binding boolean DEFAULT true, purpose text DEFAULT 'login')
RETURNS jsonb LANGUAGE sql AS $$
    SELECT pg_temp.mask(otp_link.otp_link_redeem(token => token, instance => instance, binding => binding,
                                                 require_binding => require_binding, purpose => purpose))
$$;
-- another instance, another purpose, an unbound link when a binding is
-- required, no purpose when one is asked for, an instance that does not
-- exist: all invalid_token, and nothing used up
SELECT pg_temp.redeem_in(pg_temp.token('foreign'), :'inst');
SELECT pg_temp.redeem_in(pg_temp.token('newsletter'), :'inst');
SELECT pg_temp.redeem_in(pg_temp.token('unbound'), :'inst');
SELECT pg_temp.redeem_in(pg_temp.token('nopurpose'), :'inst');
SELECT pg_temp.redeem_in(pg_temp.token('scoped'), gen_random_uuid());
SELECT metadata->>'t' AS t, redeemed_at IS NULL AS not_redeemed
  FROM otp_link.links WHERE metadata->>'t' IN ('foreign', 'newsletter', 'unbound', 'nopurpose', 'scoped')
 ORDER BY 1;
-- in scope: a wrong or missing binding is binding_mismatch (not used up), then the right one redeems, once
SELECT pg_temp.redeem_in(pg_temp.token('scoped'), :'inst', 'some-other-browser-secret');
SELECT pg_temp.redeem_in(pg_temp.token('scoped'), :'inst', NULL);
SELECT pg_temp.redeem_in(pg_temp.token('scoped'), :'inst');
SELECT pg_temp.redeem_in(pg_temp.token('scoped'), :'inst');
-- used up or expired, but out of scope: still invalid_token (nothing told about other flows)
SELECT pg_temp.redeem_in(pg_temp.token('scoped'), :'other');
UPDATE otp_link.links SET token_expires_at = now() - interval '1 second' WHERE metadata->>'t' = 'foreign2';
SELECT pg_temp.redeem_in(pg_temp.token('foreign2'), :'inst');
SELECT pg_temp.redeem_in(pg_temp.token('foreign2'), :'other');
-- each of the others in its own scope: its own instance; any purpose (NULL);
-- require_binding false takes the unbound link
SELECT pg_temp.redeem_in(pg_temp.token('foreign'), :'other');
SELECT pg_temp.redeem_in(pg_temp.token('newsletter'), :'inst', purpose => 'newsletter_optin')->>'result' AS result;
SELECT pg_temp.redeem_in(pg_temp.token('unbound'), :'inst', NULL, false)->>'result' AS result;
SELECT pg_temp.redeem_in(pg_temp.token('nopurpose'), :'inst', purpose => NULL)->>'result' AS result;
-- unknown tokens
SELECT pg_temp.redeem_in('no-such-token', :'inst');
SELECT pg_temp.redeem_in('', :'inst', NULL, false, NULL);
-- bad input
SELECT pg_temp.err($$SELECT otp_link.otp_link_redeem(token => NULL, instance => gen_random_uuid())$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_redeem(token => 'x', instance => NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_redeem(token => 'x', instance => gen_random_uuid(), require_binding => NULL)$$);
SELECT pg_temp.err($$SELECT otp_link.otp_link_redeem(token => 'x', instance => 'not-a-uuid')$$);
-- the 1.0 calls still reach the 2-argument form: one argument, named, and
-- positional even with a uuid literal second (it is the binding: this
-- unbound link of the Shop instance is redeemed although "Other" is given)
SELECT otp_link.otp_link_redeem('x')->>'result' AS one_arg,
       otp_link.otp_link_redeem(token => 'x', binding => NULL)->>'result' AS named;
SET otp_link.debug_codes = 'POSITION';
SELECT otp_link.otp_link_generate(:'inst', metadata => '{"t": "positional"}')->>'code' AS code;
SELECT otp_link.otp_link_consume_message('447700900137@c.us', '[POSITION]')->>'outcome' AS outcome;
SELECT pg_temp.mask(otp_link.otp_link_redeem(pg_temp.token('positional'), :'other'))->>'result' AS result;
-- roles: the application may call the scoped form; the inbox may not
CREATE ROLE regress_otp_redeem_app IN ROLE otp_link_app;
CREATE ROLE regress_otp_redeem_inbox IN ROLE otp_link_inbox;
SET ROLE regress_otp_redeem_inbox;
SELECT pg_temp.err(format($$SELECT otp_link.otp_link_redeem(token => 'x', instance => %L)$$, :'inst'));
SET ROLE regress_otp_redeem_app;
SELECT otp_link.otp_link_redeem(token => 'x', instance => :'inst', binding => 'y',
                                require_binding => true, purpose => 'login')->>'result' AS result;
RESET ROLE;
DROP ROLE regress_otp_redeem_app, regress_otp_redeem_inbox;

RESET otp_link.debug_codes;
DROP EXTENSION otp_link;
