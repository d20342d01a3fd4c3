-- pgbench script of the whole-flow benchmark (test/bench/flow.sh): one
-- otp_link_generate, as generate.sql, its callbacks to :flowcb; the link,
-- its code, a phone of its own and when it is to be consumed (1 to 5 s
-- later) are kept in bench.flow in the same transaction.
\set delay random(1000, 5000)
WITH g AS (
	SELECT nextval('bench.flow_seq') AS n,
		   otp_link.otp_link_generate(instance => :inst, expires => 1800, name => 'Bench',
			message => '{"prompt": "Give me link to login at {name}", "success": "Here is your login link: {link}", "failed": "Login failed, please try again later.", "expired": "The link has been expired, please try another one."}',
			callback => :flowcb, link_url => 'https://app.example/login?token={token}') AS j)
INSERT INTO bench.flow (n, link, code, phone, generated_at, due_at)
SELECT n, (j ->> 'uuid')::uuid, j ->> 'code', '2012' || lpad(n::text, 8, '0') || '@c.us',
	   clock_timestamp(), clock_timestamp() + :delay * interval '1 ms'
  FROM g;
