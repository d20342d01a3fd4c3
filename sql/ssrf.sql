--
-- The SSRF guard: which resolved addresses the worker refuses while
-- otp_link.allow_private_networks is off.  The same function the worker
-- calls on each address libcurl is about to connect to; no traffic here.
--
CREATE EXTENSION otp_link;
SELECT a AS address, otp_link.otp_link_destination_allowed(a::inet) AS allowed
  FROM unnest(ARRAY[
    -- IPv4: loopback, RFC 1918, link-local (cloud metadata), CGNAT, "this network",
    -- benchmarking, multicast, broadcast; then public addresses
    '127.0.0.1', '127.255.255.254', '10.0.0.1', '10.255.255.255', '172.16.0.1',
    '172.31.255.255', '192.168.1.1', '169.254.169.254', '100.64.0.1', '100.127.255.255',
    '0.0.0.0', '192.0.0.8', '198.18.0.1', '224.0.0.1', '239.255.255.250', '255.255.255.255',
    '172.15.255.255', '172.32.0.1', '100.63.255.255', '100.128.0.1', '8.8.8.8', '93.184.216.34',
    -- IPv6: loopback, unspecified, IPv4-mapped private and public, NAT64 private and public,
    -- 6to4 private, Teredo, documentation, unique local, link-local, multicast; public
    '::1', '::', '::ffff:127.0.0.1', '::ffff:10.0.0.1', '::ffff:169.254.169.254', '::ffff:8.8.8.8',
    '64:ff9b::7f00:1', '64:ff9b::808:808', '2002:a00:1::1', '2001::1', '2001:db8::1',
    'fc00::1', 'fd12:3456::1', 'fe80::1', 'fec0::1', 'ff02::1', '2606:4700:4700::1111'
  ]) AS a;
SELECT otp_link.otp_link_destination_allowed(NULL) IS NULL AS strict;
DROP EXTENSION otp_link;
