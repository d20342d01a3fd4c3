-- test/soak/soak.sql: the soak's clients, as SQL functions that pgbench
-- scripts call (one statement each).  Loaded by test/soak/run.sh into the
-- throw-away cluster after CREATE EXTENSION otp_link, with psql variable
-- :rcv set to the flaky receiver's base URL (http://127.0.0.1:<port>).
--
-- soak.links keeps what the test needs to play the user (the code in
-- clear, the user's phone); soak.outcomes records, in the same transaction
-- as each consume, what otp_link answered.  Both are insert-only, so the
-- clients take no locks of their own besides otp_link's.

CREATE SCHEMA soak;

CREATE TABLE soak.config (rcv text NOT NULL);
INSERT INTO soak.config VALUES (:'rcv');

-- three instances: replies posted to a flaky endpoint (a), to a healthy
-- one (b), or held for the application (c)
CREATE TABLE soak.instances (tag text PRIMARY KEY, id uuid NOT NULL, phone text NOT NULL,
                             reply_mode text NOT NULL, secret text NOT NULL);
INSERT INTO soak.instances (tag, id, phone, reply_mode, secret)
SELECT tag, (r->>'uuid')::uuid, r->>'phone', mode, r->>'secret'
  FROM (VALUES ('a', '15550000001', 'f2'), ('b', '15550000002', 'ok'), ('c', '15550000003', 'held')) v(tag, phone, mode),
       LATERAL (SELECT otp_link.otp_link_instance_create(phone, 'soak-' || tag,
                 CASE WHEN mode = 'held' THEN '{}'::jsonb
                      ELSE jsonb_build_object('reply_endpoint',
                             jsonb_build_object('type', 'http', 'url', :'rcv' || '/' || tag || '/' || mode || '/reply'))
                 END) AS r) g;

CREATE TABLE soak.links (
	n			bigserial PRIMARY KEY,
	id			uuid NOT NULL UNIQUE,
	code		text NOT NULL,
	tag			text NOT NULL,			-- instance
	cb_mode		text NOT NULL,			-- receiver mode of its callbacks
	flavour		text NOT NULL,			-- normal | race | short | bound
	user_phone	text NOT NULL,			-- who will answer it
	expires_at	timestamptz NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ON soak.links (flavour, n);

CREATE TABLE soak.outcomes (
	n			bigserial PRIMARY KEY,
	t			timestamptz NOT NULL DEFAULT clock_timestamp(),
	script		text NOT NULL,
	link		uuid,					-- the link the client aimed at
	message_id	text,
	chat_id		text,
	body		text,
	outcome		text,
	uuid		uuid,					-- the link otp_link reported
	result		jsonb
);
CREATE INDEX ON soak.outcomes (script, n);

CREATE FUNCTION soak.phone(prefix text) RETURNS text LANGUAGE sql AS
$$ SELECT prefix || lpad((floor(random() * 1e7))::bigint::text, 7, '0') $$;

CREATE FUNCTION soak.body(code text) RETURNS text LANGUAGE sql AS $$
	SELECT CASE floor(random() * 3)::int
	       WHEN 0 THEN 'Give me link to login at soak [' || code || '] - DO NOT CHANGE THIS MESSAGE'
	       WHEN 1 THEN 'hi! [' || lower(code) || ']'
	       ELSE '[ ' || code || ' ] please' END $$;

-- generate one link with a random flavour, instance and callback behaviour
CREATE FUNCTION soak.gen() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	v_rcv text := (SELECT rcv FROM soak.config);
	r float8 := random();
	m float8 := random();
	flavour text;
	mode text;
	v_tag text := (ARRAY['a', 'b', 'c'])[1 + floor(random() * 3)::int];
	inst uuid;
	expires int := 600;
	userp text := soak.phone('1666');
	cb jsonb;
	g jsonb;
BEGIN
	flavour := CASE WHEN r < 0.50 THEN 'normal' WHEN r < 0.60 THEN 'race'
	                WHEN r < 0.85 THEN 'short' ELSE 'bound' END;
	IF flavour = 'short' THEN
		expires := 2 + floor(random() * 4)::int;
	END IF;
	mode := CASE WHEN m < 0.25 THEN 'ok' WHEN m < 0.45 THEN 'f1' WHEN m < 0.65 THEN 'f2'
	             WHEN m < 0.77 THEN 'f3' WHEN m < 0.85 THEN 'f4' WHEN m < 0.95 THEN 'dead'
	             ELSE 'gone' END;
	cb := jsonb_build_object('success', v_rcv || '/' || v_tag || '/' || mode || '/cb/success',
	                         'failed', v_rcv || '/' || v_tag || '/' || mode || '/cb/failed');
	IF random() < 0.5 THEN
		cb := cb || jsonb_build_object('expired', v_rcv || '/' || v_tag || '/' || mode || '/cb/expired');
	END IF;
	SELECT id INTO inst FROM soak.instances i WHERE i.tag = v_tag;
	g := otp_link.otp_link_generate(instance => inst, expires => expires, callback => cb,
	        phone => CASE WHEN flavour = 'bound' THEN userp END,
	        link_url => CASE WHEN random() < 0.5 THEN 'https://app.example/login?t={token}' END,
	        metadata => jsonb_build_object('soak', true));
	-- the exact expiry: the response's expires_at is to the second only
	INSERT INTO soak.links (id, code, tag, cb_mode, flavour, user_phone, expires_at)
	SELECT l.id, g->>'code', v_tag, mode, flavour, userp, l.expires_at
	  FROM otp_link.links l WHERE l.id = (g->>'uuid')::uuid;
END $$;

-- consume one message and record what otp_link answered; via the Cloud API
-- webhook walker when webhook is true
CREATE FUNCTION soak.consume(script text, link uuid, chat text, body text, mid text,
                             webhook bool DEFAULT false, inst_phone text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	res jsonb;
BEGIN
	IF webhook THEN
		res := otp_link.otp_link_consume_webhook(jsonb_build_object(
			'object', 'whatsapp_business_account',
			'entry', jsonb_build_array(jsonb_build_object('id', '1', 'changes', jsonb_build_array(
				jsonb_build_object('field', 'messages', 'value', jsonb_build_object(
					'messaging_product', 'whatsapp',
					'metadata', jsonb_build_object('display_phone_number', inst_phone, 'phone_number_id', '1'),
					'messages', jsonb_build_array(jsonb_build_object(
						'from', chat, 'id', mid, 'timestamp', '1', 'type', 'text',
						'text', jsonb_build_object('body', body))))))))));
		res := res->'results'->0;
	ELSE
		res := otp_link.otp_link_consume_message(chat_id => chat, body => body, message_id => mid);
	END IF;
	INSERT INTO soak.outcomes (script, link, message_id, chat_id, body, outcome, uuid, result)
	VALUES (script, link, mid, chat, body, res->>'outcome', (res->>'uuid')::uuid, res);
	RETURN res;
END $$;

CREATE FUNCTION soak.mid() RETURNS text LANGUAGE sql AS
$$ SELECT 'wamid.' || replace(gen_random_uuid()::text, '-', '') $$;

-- the user answers one of the 40 latest normal/bound/short links (some
-- already answered: already_verified; short ones may have expired)
CREATE FUNCTION soak.verify() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	l soak.links;
BEGIN
	SELECT * INTO l FROM (SELECT * FROM soak.links WHERE flavour IN ('normal', 'bound', 'short')
	                       ORDER BY n DESC LIMIT 40) x ORDER BY random() LIMIT 1;
	IF FOUND THEN
		PERFORM soak.consume('verify', l.id, l.user_phone || '@c.us', soak.body(l.code), soak.mid(),
		                     random() < 0.3, (SELECT phone FROM soak.instances WHERE tag = l.tag));
	END IF;
END $$;

-- many senders at once on the latest race link: each holds the link's row
-- lock for 30 ms after its consume, so the others queue behind it
CREATE FUNCTION soak.race() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	l soak.links;
BEGIN
	SELECT * INTO l FROM soak.links WHERE flavour = 'race' ORDER BY n DESC LIMIT 1;
	IF FOUND THEN
		PERFORM soak.consume('race', l.id, soak.phone('1777') || '@c.us', soak.body(l.code), soak.mid());
		PERFORM pg_sleep(0.03);
	END IF;
END $$;

-- the provider delivers a message it delivered before, same message id
CREATE FUNCTION soak.dup() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	o soak.outcomes;
BEGIN
	SELECT * INTO o FROM (SELECT * FROM soak.outcomes WHERE script IN ('verify', 'race', 'late', 'wrong')
	                       ORDER BY n DESC LIMIT 200) x ORDER BY random() LIMIT 1;
	IF FOUND THEN
		PERFORM soak.consume('dup', o.link, o.chat_id, o.body, o.message_id);
	END IF;
END $$;

-- a code nobody generated, from a random sender
CREATE FUNCTION soak.unknown() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM soak.consume('unknown', NULL, soak.phone('1999') || '@c.us',
		soak.body((SELECT string_agg(chr(65 + floor(random() * 26)::int), '') FROM generate_series(1, 8))),
		soak.mid());
END $$;

-- the user answers a short link after it expired
CREATE FUNCTION soak.late() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	l soak.links;
BEGIN
	SELECT * INTO l FROM (SELECT * FROM soak.links WHERE flavour = 'short' AND expires_at < now()
	                       ORDER BY n DESC LIMIT 30) x ORDER BY random() LIMIT 1;
	IF FOUND THEN
		PERFORM soak.consume('late', l.id, l.user_phone || '@c.us', soak.body(l.code), soak.mid());
	END IF;
END $$;

-- someone else answers a phone-bound link
CREATE FUNCTION soak.wrong() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	l soak.links;
BEGIN
	SELECT * INTO l FROM (SELECT * FROM soak.links WHERE flavour = 'bound'
	                       ORDER BY n DESC LIMIT 10) x ORDER BY random() LIMIT 1;
	IF FOUND THEN
		PERFORM soak.consume('wrong', l.id, soak.phone('1888') || '@c.us', soak.body(l.code), soak.mid());
	END IF;
END $$;

-- the application withdraws a link
CREATE FUNCTION soak.cancel() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	l soak.links;
	res jsonb;
BEGIN
	SELECT * INTO l FROM (SELECT * FROM soak.links WHERE flavour = 'normal'
	                       ORDER BY n DESC LIMIT 20) x ORDER BY random() LIMIT 1;
	IF FOUND THEN
		res := otp_link.otp_link_cancel(l.id);
		INSERT INTO soak.outcomes (script, link, outcome, uuid, result)
		VALUES ('cancel', l.id, CASE WHEN (res->>'cancelled')::bool THEN 'cancelled' ELSE 'not_cancelled' END,
		        l.id, res);
	END IF;
END $$;
