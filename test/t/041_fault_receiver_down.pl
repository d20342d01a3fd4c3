# Copyright: otp_link developers
#
# 041_fault_receiver_down.pl: the application's receiver is down (nothing
# listens: connection refused) while links are verified and expire; the
# worker retries on its schedule without giving up early and without a busy
# loop; the receiver comes back on the same address; everything is then
# delivered, signed, once per webhook-id, and nothing is dead.

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
use OtpFaultTest;

my $port = free_port();
my $base = "http://127.0.0.1:$port";
# 10 attempts spread over ~14 s: enough for a 6 s outage
my $schedule = '0, 200ms, 500ms, 1s, 1s, 2s, 2s, 2s, 3s, 3s';
# (the circuit breaker, which would pause the receiver after 5 failures, is
# set aside here: 045_delivery_isolation.pl tests it; this test is about the
# retry schedule)
my $node = worker_node('rdown', conf => "otp_link.retry_schedule = '$schedule'\n"
	  . "otp_link.connect_timeout = '1s'\notp_link.sweep_interval = '300ms'\n"
	  . "otp_link.breaker_failures = 1000\n");
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');

my $inst = make_instance($node, '+1 555 000 4041', "$base/t/ok/reply");

# while the receiver is down: 6 links verified, 3 left to expire
my $t_down = time();
my @links;
for my $i (1 .. 6)
{
	my $l = make_link($node, $inst->{uuid}, "$base/t/ok/cb");
	is(consume($node, $l->{code}, "wamid.down$i", "4477009001$i")->{outcome}, 'verified', "link $i verified while the receiver is down");
	push @links, $l;
}
for my $i (1 .. 3)
{
	push @links, make_link($node, $inst->{uuid}, "$base/t/ok/cb", expires => 1);
}
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.links WHERE status = 'expired'") == 3
}, 10), 'three links expired by the sweep while the receiver is down');
my $total = $node->safe_psql('postgres', 'SELECT count(*) FROM otp_link.deliveries');
is($total, 6 * 2 + 3, '15 deliveries queued (6 callbacks, 6 replies, 3 expiry callbacks)');

# the worker retries: connection refused, retried, none dead
ok(wait_until(sub {
	$node->safe_psql('postgres', 'SELECT min(attempts) FROM otp_link.deliveries') >= 3
}, 15), 'every delivery was attempted at least 3 times');
like($node->safe_psql('postgres', 'SELECT last_error FROM otp_link.deliveries ORDER BY id LIMIT 1'),
	qr/onnect/i, 'the error kept is the connection failure');
is($node->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status <> 'queued'"),
	'0', 'nothing dead or delivered while the receiver is down');
is($node->safe_psql('postgres', 'SELECT count(*) FROM otp_link.deliveries WHERE last_http_status IS NOT NULL'),
	'0', 'no HTTP status recorded (nothing reached anything)');

# no busy loop: with this schedule 6 s of outage allow at most 6 attempts each
sleep(6 - (time() - $t_down)) if time() - $t_down < 6;
my $max_att = $node->safe_psql('postgres', 'SELECT max(attempts) FROM otp_link.deliveries');
cmp_ok($max_att, '<=', 7, "attempts follow the schedule during the outage (max $max_att after ~6 s)");
is($node->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status = 'dead'"),
	'0', 'none dead after ~6 s of outage');

# --- the receiver comes back on the same address -----------------------------
my $rcv = start_flaky(port => $port, secrets => { t => $inst->{secret} });
is($rcv->{port}, $port, 'receiver back on the same port');
my $t_up = time();
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status = 'delivered'") == $total
}, 20), 'every delivery is delivered once the receiver is back');
my $catchup = time() - $t_up;
note(sprintf('outage %.1f s; all delivered %.1f s after the receiver came back', $t_up - $t_down, $catchup));
is($node->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status = 'dead'"),
	'0', 'nothing dead');

my $reqs = flaky_received($rcv->{log});
my %sent = map { $_ => 1 } split(/\n/, $node->safe_psql('postgres', 'SELECT webhook_id FROM otp_link.deliveries'));
my $got = by_webhook_id($reqs);
is_deeply([ sort keys %$got ], [ sort keys %sent ], 'every webhook-id received, none invented');
is(scalar(grep { $_ > 1 } values %$got), 0, 'each received exactly once (a refused connection sends nothing)');
is(scalar(grep { !$_->{sig} } @$reqs), 0, 'every request signed with the instance secret');
my %types;
$types{ $_->{type} }++ for @$reqs;
is_deeply(\%types, { 'otp_link.verified' => 6, 'reply.success' => 6, 'otp_link.expired' => 3 },
	'6 success callbacks, 6 replies, 3 expiry callbacks');
my %per_link;
$per_link{"$_->{uuid} $_->{type}"}++ for @$reqs;
is(scalar(grep { $_ > 1 } values %per_link), 0, 'one event of each type per link');
is($node->safe_psql('postgres', 'SELECT count(*) FROM otp_link.deliveries WHERE locked_until IS NOT NULL'),
	'0', 'no lease left');

my @errors = grep { /otp_link worker (ERROR|WARNING|PANIC)/ } split(/\n/, slurp_file($node->logfile));
is(scalar(@errors), 0, 'the worker logged no error') or diag(join("\n", @errors));

$node->stop;
stop_flaky($rcv);
done_testing();
