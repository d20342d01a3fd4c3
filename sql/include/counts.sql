-- sql/include/counts.sql: shared by the regression tests (\i :abs_srcdir/sql/include/counts.sql)
-- counts(): rows of every table consume may write
CREATE FUNCTION pg_temp.counts() RETURNS text LANGUAGE sql AS $$
    SELECT format('links %s/%s pending, deliveries %s, messages_seen %s, senders %s, messages_received %s',
                  (SELECT count(*) FROM otp_link.links),
                  (SELECT count(*) FROM otp_link.links WHERE status = 'pending'),
                  (SELECT count(*) FROM otp_link.deliveries),
                  (SELECT count(*) FROM otp_link.messages_seen),
                  (SELECT count(*) FROM otp_link.senders),
                  (SELECT coalesce(sum(messages_received), 0) FROM otp_link.links))
$$;
