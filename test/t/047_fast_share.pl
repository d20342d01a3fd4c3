# Copyright: otp_link developers
#
# 047_fast_share.pl: the larger share of fast destinations (issue #16)
# never takes the slots a healthy receiver needs.
#
# A destination whose last answer came within 50 ms may have half of
# otp_link.max_concurrency in flight (32 of 64) instead of
# otp_link.destination_concurrency (16); the slots all fast destinations
# hold beyond 16 are at most a quarter of max_concurrency together.  Two
# receivers answer quickly, then stop answering (each request hangs longer
# than otp_link.timeout) with a backlog queued; a third, healthy receiver
# gets a delivery every 250 ms meanwhile.  Before the cap (an outside
# review of the first version) the two took 32 slots each, all 64, and every
# healthy delivery waited for the timeout (10 s in the review; 5 s here).
# Also: one receiver never gets more than half of the slots (that it gets
# more than 16 when its answers come within 50 ms is reported, not
# required: timing on a loaded machine decides it).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use OtpWorkerTest;

my @fast = map { start_receiver() } 1 .. 2;
my $ok = start_receiver();
my $node = worker_node('fastshare', conf => "otp_link.timeout = '5s'\n"
	  . "otp_link.breaker_failures = 1000\n");
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');
my ($inst) = add_instance($node);

# the healthy receiver and the two soon-to-hang ones answer quickly first
add_delivery($node, $inst, "$ok->{url}/ok/warmup/");
add_delivery($node, $inst, "$_->{url}/ok/warmup/", n => 200) for @fast;
ok(wait_until(sub {
	@{ received($ok, qr{^/ok/warmup/}) } == 1
	  && !grep { @{ received($_, qr{^/ok/warmup/}) } < 200 } @fast
}, 30), 'all three answered quickly');

# one fast receiver: more than 16 in flight (a loaded machine can make an
# answer take over 50 ms: up to three tries, each after quick answers)
my $most = 0;
for my $try (1 .. 3)
{
	add_delivery($node, $inst, "$fast[0]{url}/ok/try$try/", n => 20);
	wait_until(sub { @{ received($fast[0], qr{^/ok/try$try/}) } == 20 }, 20);
	add_delivery($node, $inst, "$fast[0]{url}/slow/1500/alone$try/", n => 40);
	wait_until(sub {
		my $n = $node->safe_psql('postgres',
			"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '%/slow/1500/alone$try/%' AND locked_until IS NOT NULL AND status = 'queued'");
		$most = $n if $n > $most;
		return $most > 16;
	}, 3);
	ok(wait_until(sub {
		$node->safe_psql('postgres',
			"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '%/slow/1500/alone$try/%' AND status = 'delivered'") == 40
	}, 20), "try $try: the 40 were delivered");
	last if $most > 16;
}
# more than 16 only when its answers came within 50 ms: a loaded machine
# (a Python receiver answering from a thread) can miss that, so this is
# reported, not required; the benchmark measures what the share buys
note("in flight to one receiver after quick answers: $most (more than 16 when they came within 50 ms)");
cmp_ok($most, '<=', 32, 'a receiver never gets more than half of max_concurrency');
# answers of 1.5 s made it slow: quick answers make it fast again
add_delivery($node, $inst, "$fast[0]{url}/ok/again/", n => 50);
ok(wait_until(sub { @{ received($fast[0], qr{^/ok/again/}) } == 50 }, 20), 'fast again');

# both fast receivers stop answering, with a backlog each
add_delivery($node, $inst, "$_->{url}/slow/20000/hang/", n => 500) for @fast;
sleep(0.5);
my %t0;
my $held = 0;
for my $i (1 .. 16)
{
	$t0{$i} = time();
	add_delivery($node, $inst, "$ok->{url}/ok/healthy$i/");
	my $n = $node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '%/slow/20000/hang/%' AND locked_until IS NOT NULL AND status = 'queued'");
	$held = $n if $n > $held;
	sleep(0.25);
}
ok(wait_until(sub { @{ received($ok, qr{^/ok/healthy\d+/}) } == 16 }, 30),
	'every healthy delivery arrived');
my @d = sort { $a <=> $b } map {
	my ($i) = $_->{path} =~ m{^/ok/healthy(\d+)/};
	$_->{t} - $t0{$i}
} @{ received($ok, qr{^/ok/healthy\d+/}) };
note(sprintf('healthy while two fast receivers hang: p50 %.1f ms, max %.1f ms',
		$d[ int($#d / 2) ] * 1000, $d[-1] * 1000));
cmp_ok($d[-1], '<', 2.0, 'no healthy delivery waits for the hanging ones\' timeout (5 s)');
note("most requests in flight to the two hanging receivers: $held");
cmp_ok($held, '>', 0, 'the hanging receivers were tried');
cmp_ok($held, '<=', 48, 'the two hanging receivers held at most 48 slots (32 + 16)');

$node->stop('immediate');
stop_receiver($_) for @fast, $ok;
done_testing();
