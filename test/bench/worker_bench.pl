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
	conf => "log_statement = none\nlog_min_messages = warning\nsynchronous_commit = on\n");
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
diag(sprintf("burst: worker CPU %.2f s for %d deliveries", cpu_of($wpid) - $cpu0, $burst));
diag(sprintf("burst: last delivered_at %.3f s after commit", $db_span - $t1));
diag(sprintf("burst: %d callbacks; commit took %.3f s; first arrival %.3f s after commit; last arrival %.3f s after commit => %.0f deliveries/s; all recorded 'delivered' %.3f s after commit",
	$burst, $t1 - $t0, $first - $t1, $last - $t1, $burst / ($last - $t1), $t2 - $t1));

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

$node->stop;
stop_receiver($rcv);
done_testing();
