# Copyright: otp_link developers
#
# 030_secrets_not_logged.pl: at default log settings no code, {link} token,
# browser binding, webhook secret or reply-endpoint token reaches the server
# log, through the whole flow: generate, a wrong-sender failure, unknown
# codes up to a block, verification, a reply endpoint that fails and is
# retried, callbacks retried after 500s, redeem with a wrong and the right
# binding, the expiry sweep.

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
# PostgreSQL::Test::Cluster logs every statement; go back to the defaults
# (deliveries fail on purpose; the circuit breaker, tested in 045, is set aside)
my $node = worker_node('secrets', conf => "otp_link.sweep_interval = '200ms'\notp_link.breaker_failures = 1000\n"
	  . "log_statement = none\nlog_min_messages = warning\nlog_min_error_statement = error\n");

my $reply_token = 'EAAG-reply-endpoint-token-3b9f1c';
my $binding = 'browser-binding-secret-8d2e77a1c4';
my $inst = decode_json($node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_instance_create('+1 555 000 3333', 'secrets', '{
		"reply_endpoint": {"type": "whatsapp_cloud", "url": "$url/status/500/cloud", "token": "$reply_token"},
		"callback": {"success": "$url/flaky/2/cb", "failed": "$url/status/503/cb"},
		"link_url": "https://app.example/login?token={token}",
		"limits": {"unknown_code_limit": 2}}')}));
my ($secret_b64) = $inst->{secret} =~ /^whsec_(.+)$/;

my $gen = decode_json($node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_generate('$inst->{uuid}', binding => '$binding')}));
my $bound = decode_json($node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_generate('$inst->{uuid}', phone => '447700900111')}));

# a wrong sender fails the phone-bound link; unknown codes block a sender
$node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_consume_message('447700900222', '[$bound->{code}]', 'w1');
	SELECT otp_link.otp_link_consume_message('447700900333', '[QQQQQQQQ]', 'u1', '$inst->{uuid}');
	SELECT otp_link.otp_link_consume_message('447700900333', '[QQQQQQQZ]', 'u2', '$inst->{uuid}');
	SELECT otp_link.otp_link_consume_message('447700900333', '[$gen->{code}]', 'u3', '$inst->{uuid}');});
is($node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_consume_message('447700900444', 'hi [$gen->{code}]', 'v1')->>'outcome'}),
	'verified', 'verified');

my $reply = $node->safe_psql('postgres',
	"SELECT payload->>'body' FROM otp_link.deliveries WHERE kind = 'reply' AND event = 'reply.success'");
my ($token) = $reply =~ /token=([A-Za-z0-9_-]+)/;
ok(length($token // '') >= 40, 'a token was issued');
is($node->safe_psql('postgres', "SELECT otp_link.otp_link_redeem('$token', 'wrong-binding-0000000000')->>'result'"),
	'binding_mismatch', 'wrong binding');
is($node->safe_psql('postgres', "SELECT otp_link.otp_link_redeem('$token', '$binding')->>'result'"),
	'redeemed', 'redeemed');

# retries happen and fail (reply endpoint 500, failed callback 503)
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE status = 'delivered'") >= 1
	  && $node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE kind = 'reply' AND attempts >= 2") >= 1
}, 30), 'deliveries attempted, some retried');

# force a log line from the worker and from backends at WARNING or above
$node->safe_psql('postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'otp_link worker'");
sleep 1;
$node->stop('fast');

my $log = slurp_file($node->logfile);
ok(length($log) > 0, 'the server log is not empty');
my %secrets = (
	'code of the verified link' => $gen->{code},
	'code of the failed link' => $bound->{code},
	'{link} token' => $token,
	'browser binding' => $binding,
	'webhook secret' => $secret_b64,
	'reply endpoint token' => $reply_token,
);
for my $what (sort keys %secrets)
{
	ok(index($log, $secrets{$what}) < 0, "no $what in the server log");
}
# nor in last_error, which otp_link_admin can read
$node->start;
my $errors = $node->safe_psql('postgres', "SELECT string_agg(coalesce(last_error, ''), ' ') FROM otp_link.deliveries");
ok(index($errors, $reply_token) < 0 && index($errors, $secret_b64) < 0, 'no token or secret in last_error');

$node->stop;
stop_receiver($rcv);
done_testing();
