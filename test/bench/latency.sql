-- pgbench script (-c 1 -R 100): one callback committed per transaction;
-- its webhook-id "lat_<n>" is transaction n+1 of pgbench's log.
INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload)
VALUES ('lat_' || nextval('bench.lat_seq'), :inst, 'callback', 'otp_link.verified', :url,
	jsonb_build_object('type', 'otp_link.verified', 'timestamp', now(),
		'data', jsonb_build_object('uuid', gen_random_uuid(), 'status', 'verified', 'otp_type', 'link',
			'chat_id', '201553730661@c.us', 'verified_chat_id', '201000000001@c.us')));
