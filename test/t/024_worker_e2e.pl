# Copyright: otp_link developers
#
# 024_worker_e2e.pl: the whole flow through the SQL API with the worker:
# otp_link_instance_create -> otp_link_generate -> otp_link_consume_message
# queues a success callback and a reply; the worker delivers the callback
# signed with the instance's secret and the reply through the WhatsApp Cloud
# API endpoint; an expired link's callback is delivered after the sweep.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use OtpWorkerTest;

my $rcv = start_receiver();
my $url = $rcv->{url};
my $node = worker_node('e2e', conf => "otp_link.sweep_interval = '200ms'\n");

my $token = 'EAAGe2eTOKEN';
my $inst = decode_json($node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_instance_create(phone => '+1 555 000 1111', name => 'e2e',
		options => '{"reply_endpoint": {"type": "whatsapp_cloud", "url": "$url/ok/cloud/123/messages", "token": "$token"}}')}));
like($inst->{secret}, qr/^whsec_/, 'instance secret');

my $gen = decode_json($node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_generate(instance => '$inst->{uuid}', expires => 600,
		callback => '{"success": "$url/ok/cb/success", "failed": "$url/ok/cb/failed"}',
		link_url => 'https://app.example/login?token={token}')}));
like($gen->{code}, qr/^[A-Z0-9]{8}$/, 'link generated');

my $res = decode_json($node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_consume_message(chat_id => '201553730661\@c.us',
		body => 'Give me link to login [$gen->{code}] - DO NOT CHANGE THIS MESSAGE',
		message_id => 'wamid.e2e1')}));
is($res->{outcome} // $res->{status}, 'verified', 'verified');

ok(wait_until(sub { @{ received($rcv, qr{^/ok/cb/success}) } == 1 }, 10), 'success callback arrived');
my $cb = received($rcv, qr{^/ok/cb/success})->[0];
ok(verify_signature($inst->{secret}, $cb), 'signed with the secret from otp_link_instance_create');
my $body = decode_json($cb->{body});
is($body->{type}, 'otp_link.verified', 'callback type');
is($body->{data}{uuid}, $gen->{uuid}, 'callback carries the link uuid');

ok(wait_until(sub { @{ received($rcv, qr{^/ok/cloud/123/messages}) } == 1 }, 10), 'reply arrived');
my $reply = received($rcv, qr{^/ok/cloud/123/messages})->[0];
is($reply->{headers}{authorization}, "Bearer $token", 'reply: bearer token');
my $rb = decode_json($reply->{body});
is($rb->{to}, '201553730661', 'reply to the sender');
like($rb->{text}{body}, qr{https://app\.example/login\?token=}, 'reply carries the {link} URL');
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status <> 'delivered'") == 0
}, 10), 'all deliveries delivered');

# expiry: the worker's sweep expires the link and its callback goes out
my $gen2 = decode_json($node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_generate(instance => '$inst->{uuid}', expires => 600,
		callback => '{"success": "$url/ok/cb2/success", "failed": "$url/ok/cb2/failed"}')}));
$node->safe_psql('postgres',
	"UPDATE otp_link.links SET expires_at = now() - interval '1 second' WHERE id = '$gen2->{uuid}'");
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT status FROM otp_link.links WHERE id = '$gen2->{uuid}'") eq 'expired'
}, 10), 'the sweep expired the link');
ok(wait_until(sub { @{ received($rcv, qr{^/ok/cb2/}) } >= 1 }, 10), 'expiry callback arrived');
my $ecb = received($rcv, qr{^/ok/cb2/})->[0];
ok(verify_signature($inst->{secret}, $ecb), 'expiry callback signed');
like(decode_json($ecb->{body})->{type}, qr/^otp_link\.(expired|failed)$/, 'expiry callback type');

$node->stop;
stop_receiver($rcv);
done_testing();
