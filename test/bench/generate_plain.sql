-- pgbench script, baseline of generate.sql: a bare INSERT ... RETURNING of
-- the same row (random uuid and code digest, the stored texts and
-- callbacks) into bench.links_plain (same indexes and foreign key)
INSERT INTO bench.links_plain (id, instance_id, code_hash, name, messages, callbacks,
	link_url, created_at, expires_at)
VALUES (gen_random_uuid(), :inst, sha256(uuid_send(gen_random_uuid())), 'Bench',
	'{"prompt": "Give me link to login at {name}", "success": "Here is your login link: {link}", "failed": "Login failed, please try again later.", "expired": "The link has been expired, please try another one."}',
	:callback, 'https://app.example/login?token={token}', now(), now() + make_interval(secs => 1800))
RETURNING id, created_at, expires_at;
