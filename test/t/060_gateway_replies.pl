# Copyright: otp_link developers
#
# 060_gateway_replies.pl: replies through the gateways (issue #14, item 3).
# For reply endpoints of type twilio, waha and green_api the worker sends
# exactly the request each gateway's documentation shows (docs/gateway-
# replies.md): method, path, Content-Type, the credentials' header and the
# body, to a local receiver standing in for the gateway.  A gateway that
# answers with the request echoed never gets its secret into last_error or
# the server log: not in any form the request carries it (raw, base64,
# decoded from basic auth, JSON-escaped), and not the start of one that the
# 4096-byte response cap cuts off.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use MIME::Base64;
use OtpWorkerTest;

my $rcv = start_receiver();
my $url = $rcv->{url};
# PostgreSQL::Test::Cluster logs every statement (ours hold the secrets)
my $node = worker_node('gateways', conf => "log_statement = none\n");

my $sid = 'AC0123456789abcdef0123456789abcdef';
my $twilio_token = 'twilioAuthTok3n';
my $waha_key = '00000000000000000000000000000000';
my $green_id = '7105187566';
my $green_token = 'd4e5276df1017c259611ee08befc536022b441126d517a233d';

# instance($phone, $name, \%reply_endpoint): its uuid
sub instance
{
	my ($phone, $name, $ep) = @_;
	my $opts = encode_json({ reply_endpoint => $ep });
	return $node->safe_psql('postgres', qq{
		SELECT otp_link.otp_link_instance_create('$phone', '$name', '$opts')->>'uuid'});
}

# verify($instance, $sender): generate a link and consume its code as sender
sub verify
{
	my ($inst, $sender) = @_;
	my $code = decode_json($node->safe_psql('postgres',
		"SELECT otp_link.otp_link_generate('$inst')"))->{code};
	return decode_json($node->safe_psql('postgres', qq{
		SELECT otp_link.otp_link_consume_message('$sender', '[$code]', instance => '$inst')}))->{outcome};
}

my %ep = (
	twilio => { type => 'twilio', url => "$url/ok/twilio/", account_sid => $sid,
		auth_token => $twilio_token, from => 'whatsapp:+14155238886' },
	twilio_default_from => { type => 'twilio', url => "$url/ok/twilio-own", account_sid => $sid,
		auth_token => $twilio_token },
	waha => { type => 'waha', url => "$url/ok/waha", api_key => $waha_key },
	green_api => { type => 'green_api', url => "$url/ok/green", id_instance => $green_id,
		api_token_instance => $green_token },
);
my %inst = (
	twilio => instance('447700900001', 'Twilio', $ep{twilio}),
	twilio_default_from => instance('447700900002', 'TwilioOwn', $ep{twilio_default_from}),
	waha => instance('447700900003', 'WAHA', $ep{waha}),
	green_api => instance('447700900004', 'Green', $ep{green_api}),
);
is(verify($inst{twilio}, '201553730661'), 'verified', 'twilio link verified');
is(verify($inst{twilio_default_from}, '201553730662'), 'verified', 'twilio (own number) link verified');
is(verify($inst{waha}, '201553730663'), 'verified', 'waha link verified');
is(verify($inst{green_api}, '201553730664'), 'verified', 'green_api link verified');

ok(wait_until(sub { @{ received($rcv, qr{^/ok/}) } == 4 }, 15), 'four replies arrived');
my $text = 'Your WhatsApp number is verified.';

# Twilio: form POST to the Messages resource, basic auth SID:token
my $t = received($rcv, qr{^/ok/twilio/})->[0];
is($t->{method}, 'POST', 'twilio: POST');
is($t->{path}, "/ok/twilio/2010-04-01/Accounts/$sid/Messages.json", 'twilio: Messages resource path');
is($t->{headers}{'content-type'}, 'application/x-www-form-urlencoded', 'twilio: form content type');
is($t->{headers}{authorization}, 'Basic ' . encode_base64("$sid:$twilio_token", ''),
	'twilio: basic auth with the Account SID and Auth Token');
is($t->{body}, 'To=whatsapp%3A%2B201553730661&From=whatsapp%3A%2B14155238886&Body=Your+WhatsApp+number+is+verified.',
	'twilio: To, From (whatsapp:+) and Body');
my $t2 = received($rcv, qr{^/ok/twilio-own/})->[0];
like($t2->{body}, qr/^To=whatsapp%3A%2B201553730662&From=whatsapp%3A%2B447700900002&Body=/,
	'twilio: From defaults to the instance\'s number');

# WAHA: POST /api/sendText, JSON, X-Api-Key
my $w = received($rcv, qr{^/ok/waha/})->[0];
is($w->{method}, 'POST', 'waha: POST');
is($w->{path}, '/ok/waha/api/sendText', 'waha: /api/sendText');
is($w->{headers}{'content-type'}, 'application/json', 'waha: JSON');
is($w->{headers}{'x-api-key'}, $waha_key, 'waha: X-Api-Key');
ok(!exists $w->{headers}{authorization}, 'waha: no Authorization header');
is_deeply(decode_json($w->{body}),
	{ session => 'default', chatId => '201553730663@c.us', text => $text },
	'waha: session, chatId <digits>@c.us, text');

# GREEN-API: POST {apiUrl}/waInstance{idInstance}/sendMessage/{apiTokenInstance}
my $g = received($rcv, qr{^/ok/green/})->[0];
is($g->{method}, 'POST', 'green_api: POST');
is($g->{path}, "/ok/green/waInstance$green_id/sendMessage/$green_token", 'green_api: sendMessage path');
is($g->{headers}{'content-type'}, 'application/json', 'green_api: JSON');
ok(!exists $g->{headers}{authorization} && !exists $g->{headers}{'x-api-key'},
	'green_api: no credential header');
is_deeply(decode_json($g->{body}), { chatId => '201553730664@c.us', message => $text },
	'green_api: chatId and message');

ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE kind = 'reply' AND status = 'delivered'") == 4
}, 10), 'the four replies are delivered');

# secrets: a gateway that echoes the request (path and headers) in a 401
for my $type (qw(twilio waha green_api))
{
	my %e = %{ $ep{$type} };
	$e{url} = "$url/echo-request/$type";
	my $opts = encode_json({ reply_endpoint => \%e });
	$node->safe_psql('postgres',
		"SELECT otp_link.otp_link_instance_update('$inst{$type}', options => '$opts')");
	verify($inst{$type}, '201553730699');
}
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE status = 'dead' AND last_error LIKE 'HTTP 401%'") == 3
}, 15), 'the echoing gateway\'s replies are dead after 401');
my $errors = $node->safe_psql('postgres',
	"SELECT string_agg(last_error, E'\\n') FROM otp_link.deliveries WHERE status = 'dead'");
like($errors, qr/unauthorized \/echo-request\/twilio/, 'the echoed request is in last_error');
is(() = $errors =~ /\[redacted\]/g, 3, 'each secret redacted');
my $basic = encode_base64("$sid:$twilio_token", '');
for my $secret ($basic, $twilio_token, $waha_key, $green_token)
{
	unlike($errors, qr/\Q$secret\E/, "last_error does not hold " . substr($secret, 0, 6) . '...');
}
my $log = slurp_file($node->logfile);
is(() = $log =~ /is dead after 1 attempt\(s\): HTTP 401: unauthorized/g, 3,
	'the worker logged the three dead replies');
for my $secret ($basic, $twilio_token, $waha_key, $green_token)
{
	unlike($log, qr/\Q$secret\E/, "the server log does not hold " . substr($secret, 0, 6) . '...');
}

# secrets cut by the response cap, and in every form: each case is a
# gateway answering 401 with <pad> "x" and then what it echoes; the cap
# keeps the first 4096 bytes, so the pad chooses how much of the secret is
# kept before the cut ($keep bytes)
my $waha_odd = 'k"e\\y-Wah4Secret';    # echoed JSON-escaped as k\"e\\y-...
my $waha_odd_json = substr(encode_json([$waha_odd]), 2, -2);
my $cap = 4096;
my @cases = (
	# name, type, echo, bytes before the secret in the echo, bytes of it kept
	[ 'tw_decoded_cut', 'twilio', 'basic', length("$sid:"), 6 ],
	[ 'tw_base64_cut', 'twilio', 'auth', length('Basic '), 20 ],
	[ 'tw_decoded', 'twilio', 'basic', 0, undef ],
	[ 'waha_cut', 'waha', 'key', 0, 9 ],
	[ 'waha_json', 'waha', 'headers', 0, undef ],
	[ 'green_cut', 'green_api', 'last', 0, 10 ],
	[ 'green_cut_4', 'green_api', 'last', 0, 4 ],
);
my $n = 0;
for my $c (@cases)
{
	my ($name, $type, $echo, $before, $keep) = @$c;
	my $pad = defined $keep ? $cap - $before - $keep : 0;
	my %e = %{ $ep{$type} };
	$e{url} = "$url/echo-pad/$pad/$echo";
	$e{api_key} = $waha_odd if $type eq 'waha';
	$n++;
	my $inst = instance("4477009001$n", $name, \%e);
	is(verify($inst, "2015537307$n"), 'verified', "$name: link verified");
}
ok(wait_until(sub {
	$node->safe_psql('postgres', q{
		SELECT count(*) FROM otp_link.deliveries d JOIN otp_link.instances i ON i.id = d.instance_id
		 WHERE d.status = 'dead' AND d.last_error LIKE 'HTTP 401: %' AND i.name LIKE '%\_%'}) == 7
}, 15), 'the seven echoing replies are dead after 401');
my %err = split /\|/, $node->safe_psql('postgres', q{
	SELECT string_agg(i.name || '|' || d.last_error, '|')
	  FROM otp_link.deliveries d JOIN otp_link.instances i ON i.id = d.instance_id
	 WHERE d.status = 'dead' AND i.name LIKE '%\_%'});
$log = slurp_file($node->logfile);
my @secrets = ($basic, $twilio_token, $waha_odd, $waha_odd_json, $green_token);

# leaks($text): the pieces of 4 bytes of a secret that $text holds
sub leaks
{
	my ($text) = @_;
	my @found;
	for my $s (@secrets)
	{
		for my $i (0 .. length($s) - 4)
		{
			my $piece = substr($s, $i, 4);
			push @found, $piece if index($text, $piece) >= 0;
		}
	}
	return join(' ', @found);
}
for my $c (@cases)
{
	my ($name, $type, $echo, $before, $keep) = @$c;
	my $e = $err{$name} // '';
	like($e, qr/\[redacted\]/, "$name: redacted");
	is(leaks($e), '', "$name: no piece of a secret in last_error");
}
like($err{tw_decoded}, qr/^HTTP 401: \[redacted\]$/, 'the decoded "sid:token" is redacted whole');
like($err{tw_decoded_cut}, qr/x\[redacted\]$/, 'a cut "sid:token" is redacted to its end');
like($err{waha_json}, qr/"X-Api-Key": "\[redacted\]"/, 'the JSON-escaped key is redacted');
my @dead_lines = grep { /is dead after 1 attempt\(s\): HTTP 401: [x{A\[]/ } split /\n/, $log;
is(scalar @dead_lines, 7, 'the worker logged the seven dead replies');
is(leaks(join("\n", @dead_lines)), '', 'no piece of a secret in the server log');

$node->stop;
stop_receiver($rcv);
done_testing();
