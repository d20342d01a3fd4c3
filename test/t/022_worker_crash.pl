# Copyright: otp_link developers
#
# 022_worker_crash.pl: at-least-once delivery.  kill -9 of the worker while
# requests are in flight, and an immediate shutdown, lose no delivery; a
# delivery sent again keeps its webhook-id.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use OtpWorkerTest;

my $rcv = start_receiver();
my $url = $rcv->{url};
my $node = worker_node('crash',
	conf => "otp_link.max_concurrency = 4\nrestart_after_crash = on\n");
my ($inst) = add_instance($node);

# every delivery in the table was received at least once, with its own
# webhook-id, and all are delivered
sub check_all_delivered
{
	my ($path, $n, $what) = @_;
	ok(wait_until(sub {
		$node->safe_psql('postgres',
			"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '%$path%' AND status = 'delivered'") == $n
	}, 30), "$what: all $n delivered");
	my %sent = map { $_ => 1 } split(/\n/, $node->safe_psql('postgres',
		"SELECT webhook_id FROM otp_link.deliveries WHERE destination LIKE '%$path%'"));
	my %got;
	$got{ $_->{headers}{'webhook-id'} }++ for @{ received($rcv, qr{\Q$path\E}) };
	is_deeply([ sort keys %got ], [ sort keys %sent ], "$what: every webhook-id received, none invented");
	return \%got;
}

# --- kill -9 of the worker mid-batch -----------------------------------------
add_delivery($node, $inst, "$url/slow/1500/kill", n => 12);
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE locked_until IS NOT NULL") == 4
}, 10), 'four deliveries in flight');
my $pid = worker_pid($node);
kill 'KILL', $pid;
# the postmaster restarts the cluster after a crash of a process attached to
# shared memory; wait for it to come back with a new worker
ok(wait_until(sub {
	my ($ret, $out) = $node->psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'otp_link worker'");
	$ret == 0 && $out ne '' && $out ne $pid;
}, 30), 'a new worker runs after kill -9');
my $got = check_all_delivered('/kill', 12, 'kill -9');
ok(scalar(grep { $got->{$_} > 1 } keys %$got) <= 4,
	'at most the in-flight ones were sent twice');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM otp_link.deliveries WHERE locked_until IS NOT NULL"), '0', 'no lease left');

# --- immediate shutdown with requests in flight, then restart --------------
add_delivery($node, $inst, "$url/slow/1000/immediate", n => 6);
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE locked_until IS NOT NULL") > 0
}, 10), 'in flight before the immediate shutdown');
$node->stop('immediate');
# queued while the server is down: nothing; after the restart everything goes
$node->start;
check_all_delivered('/immediate', 6, 'immediate shutdown');

# --- a fast shutdown and restart with a backlog -----------------------------
$node->safe_psql('postgres', "ALTER SYSTEM SET otp_link.max_concurrency = 1");
$node->reload;
add_delivery($node, $inst, "$url/slow/300/fast", n => 5);
sleep(0.4);
$node->restart;
check_all_delivered('/fast', 5, 'restart with a backlog');

$node->stop;
stop_receiver($rcv);
done_testing();
