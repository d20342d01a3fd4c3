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
-- IPv4 documentation ranges (TEST-NET-1, -2, -3), also inside IPv4-mapped and 6to4,
-- and their public neighbours
SELECT a AS address, otp_link.otp_link_destination_allowed(a::inet) AS allowed
  FROM unnest(ARRAY[
    '192.0.2.1', '198.51.100.7', '203.0.113.255', '::ffff:192.0.2.1', '2002:c633:6401::1',
    '192.0.1.255', '192.0.3.1', '198.51.99.1', '198.51.101.1', '203.0.112.255', '203.0.114.1'
  ]) AS a;
-- IPv6 outside global unicast 2000::/3: IPv4-translated ::ffff:0:a.b.c.d (RFC 2765) whatever
-- IPv4 address it carries, the rest of ::/8, 100::/8, 4000::/2; benchmarking 2001:2::/48 and
-- documentation 3fff::/20; then public neighbours
SELECT a AS address, otp_link.otp_link_destination_allowed(a::inet) AS allowed
  FROM unnest(ARRAY[
    '::ffff:0:127.0.0.1', '::ffff:0:10.0.0.1', '::ffff:0:8.8.8.8', '::1:0:0:0:1', '::ffff:1:7f00:1',
    '100:0:0:1::1', '4000::1', 'e000::1', '2001:2::1', '2001:2:0:ffff::1', '3fff::1', '3fff:fff::1',
    '2001:3::1', '3fff:1000::1', '3ffe::1', '2a00:1450::1'
  ]) AS a;
SELECT otp_link.otp_link_destination_allowed(NULL) IS NULL AS strict;
DROP EXTENSION otp_link;
