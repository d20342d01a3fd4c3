# Copyright: otp_link developers
#
# worker_bench.pl: rough delivery figures of the worker against the local
# receiver (not part of "make installcheck"; run it with
#   make installcheck PROVE_TESTS=test/bench/worker_bench.pl PROVE_FLAGS=-v
# as an unprivileged user).  Prints:
#   - burst: N callbacks committed in one transaction, time until the last
#     arrives, deliveries per second;
#   - trickle: single-row transactions every 50 ms, insert-to-arrival
#     latency (the insert time is in the payload) p50 / p95 / max.

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

my $burst = $ENV{BENCH_BURST} // 2000;
my $trickle = $ENV{BENCH_TRICKLE} // 100;

my $rcv = start_receiver();
my $url = $rcv->{url};
my $node = worker_node('bench',
	conf => "log_statement = none\nlog_min_messages = log\nsynchronous_commit = on\n"
	  . "otp_link.max_concurrency = " . ($ENV{BENCH_CONCURRENCY} // 64) . "\n");
my ($inst) = add_instance($node);
sleep(0.5);

# CPU seconds used so far by a process (utime + stime)
sub cpu_of
{
	my ($pid) = @_;
	my @f = split(/ /, slurp_file("/proc/$pid/stat"));
	return ($f[13] + $f[14]) / 100.0;
}
my $wpid = worker_pid($node);
my $cpu0 = cpu_of($wpid);
my $rcpu0 = cpu_of($rcv->{pid});

# --- burst ----------------------------------------------------------------
my $t0 = time();
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload)
	SELECT 'msg_b' || g, '$inst', 'callback', 'success', '$url/ok/burst',
	       jsonb_build_object('type', 'otp_link.verified', 'n', g,
	                          't', extract(epoch FROM clock_timestamp()))
	  FROM generate_series(1, $burst) g});
my $t1 = time();
ok(wait_until(sub { @{ received($rcv, qr{^/ok/burst}) } >= $burst }, 120), "burst: $burst arrived");
my @r = @{ received($rcv, qr{^/ok/burst}) };
my $last = (sort { $a <=> $b } map { $_->{t} } @r)[-1];
my $first = (sort { $a <=> $b } map { $_->{t} } @r)[0];
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status = 'delivered'") == $burst
}, 60), 'burst: all recorded delivered');
my $t2 = time();
my $db_span = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM max(delivered_at)) FROM otp_link.deliveries WHERE status = 'delivered'");
diag(sprintf("burst: worker CPU %.2f s, receiver CPU %.2f s for %d deliveries",
	cpu_of($wpid) - $cpu0, cpu_of($rcv->{pid}) - $rcpu0, $burst));
diag(sprintf("burst: last delivered_at %.3f s after commit", $db_span - $t1));
diag(sprintf("burst: %d callbacks; commit took %.3f s; first arrival %.3f s after commit; last arrival %.3f s after commit => %.0f deliveries/s; all recorded 'delivered' %.3f s after commit",
	$burst, $t1 - $t0, $first - $t1, $last - $t1, $burst / ($last - $t1), $t2 - $t1));

# memory of the worker after each phase (pg_log_backend_memory_contexts)
sub worker_memory
{
	my ($what) = @_;
	$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($wpid)");
	my $line;
	wait_until(sub {
		my @l = grep { /\[$wpid\].*Grand total/ } split(/\n/, slurp_file($node->logfile));
		$line = $l[-1] if @l > ($what eq 'after burst' ? 0 : 1);
		defined $line;
	}, 5);
	diag("worker memory $what: " . ($line // 'n/a') =~ s/.*(Grand total.*)/$1/r);
}
worker_memory('after burst');

# --- trickle -------------------------------------------------------------
my $psql = $node->background_psql('postgres');
for my $i (1 .. $trickle)
{
	$psql->query_safe(qq{
		INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload)
		VALUES ('msg_t$i', '$inst', 'callback', 'success', '$url/ok/trickle',
		        jsonb_build_object('t', extract(epoch FROM clock_timestamp())))});
	sleep(0.05);
}
$psql->quit;
ok(wait_until(sub { @{ received($rcv, qr{^/ok/trickle}) } >= $trickle }, 30), "trickle: $trickle arrived");
my @lat = sort { $a <=> $b } map { ($_->{t} - decode_json($_->{body})->{t}) * 1000 } @{ received($rcv, qr{^/ok/trickle}) };
diag(sprintf("trickle: %d single-row transactions every 50 ms; insert-to-arrival latency p50 %.1f ms, p95 %.1f ms, max %.1f ms",
	scalar(@lat), $lat[int(@lat * 0.5)], $lat[int(@lat * 0.95)], $lat[-1]));

worker_memory('after trickle');

# a second burst: memory must not grow with the number of deliveries
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload)
	SELECT 'msg_c' || g, '$inst', 'callback', 'success', '$url/ok/burst2', '{}'
	  FROM generate_series(1, $burst) g});
ok(wait_until(sub { @{ received($rcv, qr{^/ok/burst2}) } >= $burst }, 120), "second burst arrived");
sleep(1);
worker_memory('after second burst');

$node->stop;
stop_receiver($rcv);
done_testing();
