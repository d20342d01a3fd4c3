# Copyright: otp_link developers
#
# 021_worker_safety.pl: with the default settings the worker sends only
# https:// and never to loopback, private, link-local, unique-local, CGNAT,
# multicast or unspecified addresses; the check is made on the address
# libcurl is about to connect to (after name resolution), including
# IPv4-mapped IPv6 addresses.  A refused destination is dead at once.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OtpWorkerTest;

my $rcv = start_receiver();
my $port = $rcv->{port};
my $node = worker_node('safety', safe_defaults => 1);
my ($inst) = add_instance($node);

is($node->safe_psql('postgres', 'SHOW otp_link.allow_http') . ' '
	 . $node->safe_psql('postgres', 'SHOW otp_link.allow_private_networks'),
	'off off', 'safe defaults');

sub outcome
{
	my ($dest) = @_;
	my $id = add_delivery($node, $inst, $dest);
	wait_until(sub {
		$node->safe_psql('postgres', "SELECT status FROM otp_link.deliveries WHERE id = $id") ne 'queued'
	}, 15);
	return $node->safe_psql('postgres',
		"SELECT status || '|' || attempts || '|' || coalesce(last_error, '') FROM otp_link.deliveries WHERE id = $id");
}

like(outcome("http://127.0.0.1:$port/ok/1"),
	qr/^dead\|1\|destination url is not https:\/\/ and otp_link\.allow_http is off$/,
	'plain http refused by default');
like(outcome("ftp://127.0.0.1:$port/x"), qr/^dead\|1\|destination url is not https/,
	'other schemes refused');

# Only destinations on this machine are tried here, so that nothing would
# leave it even if the guard were broken; the rules for every other range
# (RFC 1918, link-local and cloud metadata, CGNAT, multicast, NAT64, 6to4,
# unique-local ...) are tested without traffic in sql/ssrf.sql through
# otp_link_destination_allowed(), the same function.
my %refused = (
	"https://127.0.0.1:$port/ok/2" => '127.0.0.1',
	"https://localhost:$port/ok/3" => '(127\.0\.0\.1|::1)',
	"https://[::1]:$port/ok/4" => '::1',
	"https://[::ffff:127.0.0.1]:$port/ok/5" => '::ffff:127\.0\.0\.1',
	"https://127.8.9.10:$port/ok/8" => '127\.8\.9\.10',
	"https://0.0.0.0:$port/ok/9" => '0\.0\.0\.0',
	"https://[::]:$port/ok/10" => '::',
);
for my $dest (sort keys %refused)
{
	like(outcome($dest),
		qr/^dead\|1\|destination address $refused{$dest} is not public and otp_link\.allow_private_networks is off$/,
		"$dest refused");
}

# allow_http alone does not open private networks
$node->append_conf('postgresql.conf', "otp_link.allow_http = on\n");
$node->reload;
sleep(0.5);
like(outcome("http://127.0.0.1:$port/ok/6"),
	qr/^dead\|1\|destination address 127\.0\.0\.1 is not public/,
	'allow_http on: loopback still refused');

is(scalar(@{ received($rcv) }), 0, 'the receiver got nothing');

# and both on: delivered (the refusals above were the rules, not the network)
$node->append_conf('postgresql.conf', "otp_link.allow_private_networks = on\n");
$node->reload;
sleep(0.5);
like(outcome("http://127.0.0.1:$port/ok/7"), qr/^delivered\|1\|$/, 'both on: delivered');

$node->stop;
stop_receiver($rcv);
done_testing();
