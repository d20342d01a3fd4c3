-- pgbench script: the next unused code of the pool (bench.ext_seq), sent
-- by client :client_id's phone, verifies its link; the reply (instance
-- reply_endpoint http) and the success callback are queued.
SELECT otp_link.otp_link_consume_message(chat_id => '2010' || lpad(:client_id::text, 8, '0') || '@c.us',
	body => 'Give me link to login at Bench [' || c.code || '] - DO NOT CHANGE THIS MESSAGE')
  FROM bench.codes c WHERE c.n = (SELECT nextval('bench.ext_seq'));
