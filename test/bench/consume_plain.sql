-- pgbench script, baseline of consume.sql: the next code of the pool
-- (bench.plain_seq); a bare UPDATE by code digest of bench.links_plain to
-- verified (with a token digest), then two INSERTs into
-- bench.deliveries_plain: the reply and the callback, with payloads like
-- the extension's.  One statement, one round trip.
WITH c AS (
	SELECT code FROM bench.codes WHERE n = (SELECT nextval('bench.plain_seq'))),
t AS (
	SELECT translate(encode(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()), 'base64'), '+/=', '-_') AS token),
u AS (
	UPDATE bench.links_plain l
	   SET status = 'verified', chat_id = '2010' || lpad(:client_id::text, 8, '0') || '@c.us',
		   finished_at = now(), messages_received = messages_received + 1,
		   token_hash = sha256(convert_to(t.token, 'UTF8')), token_expires_at = now() + interval '600 s'
	  FROM c, t
	 WHERE l.code_hash = sha256(convert_to(c.code, 'UTF8')) AND l.status = 'pending'
	RETURNING l.*, t.token),
r AS (
	INSERT INTO bench.deliveries_plain (instance_id, link_id, kind, event, destination, payload)
	SELECT u.instance_id, u.id, 'reply', 'reply.success', '2010' || lpad(:client_id::text, 8, '0'),
		   jsonb_build_object('to', '2010' || lpad(:client_id::text, 8, '0'),
			   'body', replace(u.messages ->> 'success', '{link}', replace(u.link_url, '{token}', u.token)),
			   'event', 'reply.success', 'link', u.id)
	  FROM u),
k AS (
	INSERT INTO bench.deliveries_plain (instance_id, link_id, kind, event, destination, payload)
	SELECT u.instance_id, u.id, 'callback', 'otp_link.verified', u.callbacks ->> 'success',
		   jsonb_build_object('type', 'otp_link.verified', 'timestamp', now(),
			   'data', jsonb_build_object('uuid', u.id, 'status', 'verified', 'otp_type', 'link',
				   'chat_id', i.phone || '@c.us', 'verified_chat_id', u.chat_id, 'name', u.name,
				   'reason', u.reason, 'created_at', u.created_at, 'expires_at', u.expires_at,
				   'finished_at', u.finished_at, 'metadata', u.metadata, 'sender', u.chat_id))
	  FROM u JOIN otp_link.instances i ON i.id = u.instance_id)
SELECT u.id FROM u;
