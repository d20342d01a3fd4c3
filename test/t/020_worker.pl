# Copyright: otp_link developers
#
# 020_worker.pl: the background worker delivers signed callbacks at COMMIT,
# retries 5xx on the schedule, stops on 410 and other 4xx, honours
# Retry-After, requeues dead deliveries, is not blocked by a slow receiver,
# sends replies through the instance's reply endpoint without leaking the
# token, and applies new settings on SIGHUP.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use OtpWorkerTest;

my $rcv = start_receiver();
my $url = $rcv->{url};
# a long sweep interval: only the wake-up at COMMIT can explain fast arrivals
my $node = worker_node('worker', conf => "otp_link.sweep_interval = '60s'\n");

ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'otp_link worker' AND datname = 'postgres'"),
	'1', 'worker shows in pg_stat_activity with backend_type "otp_link worker"');

# the worker's health, for otp_link_admin, who cannot see backend_type in
# pg_stat_activity (issue 13)
$node->safe_psql('postgres', 'CREATE ROLE health LOGIN IN ROLE otp_link_admin');
my $health = $node->safe_psql('postgres', q{
	SELECT s->>'worker_running', s->>'worker_pid', (s->>'worker_last_round_age_s')::numeric BETWEEN 0 AND 60
	  FROM otp_link.otp_link_stats() s}, extra_params => [ '-U', 'health' ]);
is($health, '1|' . worker_pid($node) . '|t',
	'otp_link_stats() as otp_link_admin: worker_running 1, its pid, a recent round');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'otp_link worker'",
	extra_params => [ '-U', 'health' ]), '0',
	'(pg_stat_activity hides the worker from that role, as operations.md used to suggest)');

my ($inst, $secret) = add_instance($node);

sub delivery
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		"SELECT status || '|' || attempts || '|' || coalesce(last_http_status::text, '') || '|' || coalesce(last_error, '') FROM otp_link.deliveries WHERE id = $id");
}

sub wait_status
{
	my ($id, $status, $timeout) = @_;
	return wait_until(sub { delivery($id) =~ /^\Q$status\E\|/ }, $timeout);
}

# --- a signed callback arrives at once -------------------------------------
sleep(0.5);    # let the worker finish its first round
my $t0 = time();
my $id = add_delivery($node, $inst, "$url/ok/first");
ok(wait_until(sub { @{ received($rcv, qr{^/ok/first}) } == 1 }, 10), 'callback arrived');
my $latency = time() - $t0;
cmp_ok($latency, '<', 2, "arrived without waiting for the sweep interval ($latency s)");
my $req = received($rcv, qr{^/ok/first})->[0];
ok(verify_signature($secret, $req), 'webhook-signature verifies');
my $row = $node->safe_psql('postgres',
	"SELECT webhook_id || '|' || payload::text FROM otp_link.deliveries WHERE id = $id");
my ($wid, $payload) = split(/\|/, $row, 2);
is($req->{headers}{'webhook-id'}, $wid, 'webhook-id is deliveries.webhook_id');
is($req->{body}, $payload, 'body is exactly payload::text');
like($req->{headers}{'webhook-timestamp'}, qr/^\d{10}$/, 'webhook-timestamp is unix seconds');
cmp_ok(abs($req->{headers}{'webhook-timestamp'} - time()), '<', 30, 'webhook-timestamp is now');
is($req->{headers}{'content-type'}, 'application/json', 'content-type');
is($req->{headers}{'user-agent'}, 'otp_link/1.1.0 (PostgreSQL extension)', 'user-agent');
ok(wait_status($id, 'delivered', 5), 'status delivered');
is($node->safe_psql('postgres',
	"SELECT attempts || ' ' || last_http_status || ' ' || (delivered_at IS NOT NULL) || ' ' || (locked_until IS NULL) FROM otp_link.deliveries WHERE id = $id"),
	'1 200 true true', 'attempts, last_http_status, delivered_at, lease released');

# --- 500s are retried on the schedule, with a stable webhook-id -------------
$id = add_delivery($node, $inst, "$url/flaky/2/a");
ok(wait_status($id, 'delivered', 10), 'flaky endpoint: delivered after retries');
my @r = @{ received($rcv, qr{^/flaky/2/a}) };
is(scalar(@r), 3, 'three attempts (500, 500, 200)');
is(scalar(keys %{ { map { $_->{headers}{'webhook-id'} => 1 } @r } }), 1, 'same webhook-id on every attempt');
ok((grep { verify_signature($secret, $_) } @r) == 3, 'every attempt is signed');
my $gap1 = $r[1]{t} - $r[0]{t};
my $gap2 = $r[2]{t} - $r[1]{t};
cmp_ok($gap1, '>=', 0.17, "second attempt after ~200ms ($gap1)");
cmp_ok($gap1, '<', 1.5, "second attempt not much later ($gap1)");
cmp_ok($gap2, '>=', 0.35, "third attempt after ~400ms ($gap2)");
like(delivery($id), qr/^delivered\|3\|200\|$/, 'attempts 3, last status 200');

# --- the last attempt fails: dead, with status and error kept ---------------
my $dead = add_delivery($node, $inst, "$url/status/503/b");
ok(wait_status($dead, 'dead', 10), '503 forever: dead');
like(delivery($dead), qr/^dead\|3\|503\|HTTP 503: status 503 from receiver$/, 'dead after 3 attempts with last status and error');
is(scalar(@{ received($rcv, qr{^/status/503/b}) }), 3, 'exactly 3 attempts');

# --- 410 stops at once; other 4xx are not retried -------------------------
$id = add_delivery($node, $inst, "$url/status/410/c");
ok(wait_status($id, 'dead', 10), '410: dead');
like(delivery($id), qr/^dead\|1\|410\|HTTP 410 \(gone/, '410: one attempt');
$id = add_delivery($node, $inst, "$url/status/400/d");
ok(wait_status($id, 'dead', 10), '400: dead');
like(delivery($id), qr/^dead\|1\|400\|/, '400: one attempt');
$id = add_delivery($node, $inst, "$url/status/429/e");
ok(wait_status($id, 'dead', 10), '429 forever: dead');
like(delivery($id), qr/^dead\|3\|429\|/, '429 is retried');

# --- Retry-After later than the schedule is honoured ------------------------
$id = add_delivery($node, $inst, "$url/retry-after/2/f");
ok(wait_status($id, 'delivered', 10), 'Retry-After: delivered');
@r = @{ received($rcv, qr{^/retry-after/2/f}) };
is(scalar(@r), 2, 'Retry-After: two attempts');
cmp_ok($r[1]{t} - $r[0]{t}, '>=', 1.9, 'Retry-After: 2 s honoured instead of 200 ms');

$id = add_delivery($node, $inst, "$url/retry-after-date/3/f2");
ok(wait_status($id, 'delivered', 10), 'Retry-After as an HTTP-date: delivered');
@r = @{ received($rcv, qr{^/retry-after-date/3/f2}) };
cmp_ok($r[1]{t} - $r[0]{t}, '>=', 1.9, 'Retry-After HTTP-date honoured (' . ($r[1]{t} - $r[0]{t}) . ' s)');

# --- requeue a dead delivery -------------------------------------------------
my $res = decode_json($node->safe_psql('postgres', "SELECT otp_link.otp_link_delivery_requeue($dead)"));
ok($res->{requeued}, 'requeue: requeued');
is($res->{status}, 'queued', 'requeue: queued');
ok(wait_until(sub { @{ received($rcv, qr{^/status/503/b}) } == 6 }, 10), 'requeued delivery is sent again (3 more attempts)');
ok(wait_status($dead, 'dead', 10), 'requeued delivery dead again');
$res = decode_json($node->safe_psql('postgres', "SELECT otp_link.otp_link_delivery_requeue($id)"));
ok(!$res->{requeued}, 'requeue of a delivered delivery does nothing');
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT otp_link.otp_link_delivery_requeue(-1)');
like($err, qr/delivery -1 does not exist/, 'requeue of a missing delivery: error');
is($node->safe_psql('postgres',
	"SELECT has_function_privilege('public', 'otp_link.otp_link_delivery_requeue(bigint)', 'EXECUTE')::text || has_function_privilege('otp_link_admin', 'otp_link.otp_link_delivery_requeue(bigint)', 'EXECUTE')::text"),
	'falsetrue', 'requeue: admin only');

# --- no head-of-line blocking -----------------------------------------------
my $slow = add_delivery($node, $inst, "$url/slow/3000/g");
sleep(0.3);
$t0 = time();
add_delivery($node, $inst, "$url/ok/after-slow", n => 5);
ok(wait_until(sub { @{ received($rcv, qr{^/ok/after-slow}) } == 5 }, 10), 'fast deliveries arrive');
cmp_ok(time() - $t0, '<', 2, 'fast deliveries are not held behind a slow one');
like(delivery($slow), qr/^queued\|1\|/, 'the slow one is still in flight');
ok(wait_status($slow, 'delivered', 10), 'slow one delivered');

# --- connections are reused ---------------------------------------------------
for my $i (1 .. 10)
{
	$id = add_delivery($node, $inst, "$url/ok/reuse");
	wait_status($id, 'delivered', 5);
}
my %ports = map { $_->{peer_port} => 1 } @{ received($rcv, qr{^/ok/reuse}) };
cmp_ok(scalar(keys %ports), '<=', 2, 'ten sequential deliveries used at most two connections (' . scalar(keys %ports) . ')');

# --- replies: WhatsApp Cloud API shape, bearer token, token never stored -----
my $token = 'EAAGsecretTOKEN123';
my ($cinst) = add_instance($node,
	qq({"reply_endpoint": {"type": "whatsapp_cloud", "url": "$url/ok/cloud/123456/messages", "token": "$token"}}),
	'15550002222');
my $reply_payload = '{"to": "201553730661", "body": "Here is your login link: https://app/x", "event": "success", "link": "a0b5e14e-95da-4bd4-9e2a-071661244bef"}';
$id = add_delivery($node, $cinst, '201553730661', kind => 'reply', payload => $reply_payload);
ok(wait_status($id, 'delivered', 10), 'cloud reply delivered');
$req = received($rcv, qr{^/ok/cloud})->[0];
is($req->{headers}{authorization}, "Bearer $token", 'bearer token sent');
is_deeply(decode_json($req->{body}),
	{ messaging_product => 'whatsapp', recipient_type => 'individual', to => '201553730661',
	  type => 'text', text => { body => 'Here is your login link: https://app/x' } },
	'WhatsApp Cloud API body');

my ($einst) = add_instance($node,
	qq({"reply_endpoint": {"type": "whatsapp_cloud", "url": "$url/echo-auth/1", "token": "$token"}}),
	'15550003333');
$id = add_delivery($node, $einst, '201553730661', kind => 'reply', payload => $reply_payload);
ok(wait_status($id, 'dead', 10), 'cloud reply refused with 401: dead');
my $d = delivery($id);
unlike($d, qr/\Q$token\E/, 'the token is not in last_error');
like($d, qr/\[redacted\]/, 'the echoed token is redacted');
# the test's own statements are logged (log_statement = all): look only at
# what the worker logged
my $wpid = worker_pid($node);
my $log = join("\n", grep { /\[$wpid\]/ } split(/\n/, slurp_file($node->logfile)));
like($log, qr/delivery \d+ is dead after 1 attempt/, 'the worker logs dead deliveries');
unlike($log, qr/\Q$token\E/, 'the token is not in the worker log');
unlike($log, qr/\Q$secret\E/, 'the secret is not in the worker log');

my ($hinst, $hsecret) = add_instance($node,
	qq({"reply_endpoint": {"type": "http", "url": "$url/ok/generic"}}), '15550004444');
$id = add_delivery($node, $hinst, '201553730661', kind => 'reply', payload => $reply_payload);
ok(wait_status($id, 'delivered', 10), 'generic http reply delivered');
$req = received($rcv, qr{^/ok/generic})->[0];
is_deeply(decode_json($req->{body}), decode_json($reply_payload), 'generic reply body is the payload');
ok(verify_signature($hsecret, $req), 'generic reply is signed');

# held rows are never touched
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload, status)
	VALUES ('msg_held', '$inst', 'reply', 'success', '201553730661', '$reply_payload', 'held')});

# --- SIGHUP: new settings apply without restart ------------------------------
my $pid = worker_pid($node);
$node->safe_psql('postgres', "ALTER SYSTEM SET otp_link.retry_schedule = '0'");
$node->reload;
sleep(0.5);
$id = add_delivery($node, $inst, "$url/status/500/h");
ok(wait_status($id, 'dead', 10), 'after reload: retry_schedule 0 means one attempt');
like(delivery($id), qr/^dead\|1\|500\|/, 'one attempt only');
$node->safe_psql('postgres', "ALTER SYSTEM SET otp_link.timeout = '500ms'");
$node->reload;
sleep(0.5);
$id = add_delivery($node, $inst, "$url/slow/2000/timeout");
ok(wait_status($id, 'dead', 10), 'after reload: a 500 ms timeout fails a 2 s receiver');
like(delivery($id), qr/^dead\|1\|\|.*[Tt]imeout was reached|^dead\|1\|\|.*timed out/, 'timeout error kept');
$node->safe_psql('postgres', "ALTER SYSTEM SET otp_link.allow_http = off");
$node->reload;
sleep(0.5);
$id = add_delivery($node, $inst, "$url/ok/after-reload");
ok(wait_status($id, 'dead', 10), 'after reload: allow_http off refuses http://');
like(delivery($id), qr/otp_link\.allow_http is off/, 'clear error');
is(worker_pid($node), $pid, 'same worker process');
($ret, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET otp_link.retry_schedule = '0, 5 parsecs'");
like($err, qr/invalid value for parameter "otp_link.retry_schedule"/, 'a bad retry_schedule is refused');

is($node->safe_psql('postgres', "SELECT status FROM otp_link.deliveries WHERE webhook_id = 'msg_held'"),
	'held', 'held reply untouched');
is(scalar(@{ received($rcv, qr{^/ok/after-reload}) }), 0, 'nothing sent over http after reload');

# idle: nothing due, so no transaction until the sweep (60 s here)
sleep(1);
my $sc1 = $node->safe_psql('postgres',
	"SELECT state || ' ' || state_change FROM pg_stat_activity WHERE backend_type = 'otp_link worker'");
sleep(2);
my $sc2 = $node->safe_psql('postgres',
	"SELECT state || ' ' || state_change FROM pg_stat_activity WHERE backend_type = 'otp_link worker'");
is($sc2, $sc1, 'an idle worker does not poll the database');

$wpid = worker_pid($node);
my @errors = grep { /\[$wpid\] (ERROR|WARNING|FATAL)/ } split(/\n/, slurp_file($node->logfile));
is(scalar(@errors), 0, 'the worker logged no error') or diag(join("\n", @errors));

$node->stop;
stop_receiver($rcv);
done_testing();
