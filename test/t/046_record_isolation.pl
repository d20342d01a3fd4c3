# Copyright: otp_link developers
#
# 046_record_isolation.pl: a database hiccup while results are recorded
# neither stalls sending nor sends a delivery twice (issue #17, items 4
# and 9).
#
#  1. A row lock held elsewhere (SELECT ... FOR UPDATE on one delivery in
#     flight): the other results of the batch are recorded at once, the held
#     one when the lock goes; each delivery is sent once.
#  2. LOCK TABLE otp_link.deliveries IN EXCLUSIVE MODE for 4 s while
#     answers arrive: the worker keeps reading them (it waits for a lock
#     at most 100 ms), records them after the lock goes, and sends none
#     twice.
#  3. The worker stopped (SIGSTOP) for longer than otp_link.timeout while
#     its requests are answered: after SIGCONT it reads the answers before
#     timing anything out; none is sent twice.
#  4. Deliveries deleted while in flight: their results are done with once
#     the answers arrive (1.1.0 kept them as "held elsewhere" and ran the
#     recording statement every 0.1 s for the life of the worker).
#
# On de27b85: 1. the whole batch waited for the lock; 2. the worker sat in
# the lock wait while the answers waited, libcurl timed them out and they
# were sent again; 3. libcurl timed out the answered requests first.

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
my $node = worker_node('recordiso', conf => "otp_link.timeout = '3s'\n"
	  . "otp_link.retry_schedule = '0, 200ms, 200ms, 200ms'\n");
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');
my ($inst) = add_instance($node);

sub count_status
{
	my ($prefix, $status) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '$url/$prefix%' AND status = '$status'");
}

# each webhook-id that reached the receiver more than once under a prefix
sub duplicates
{
	my ($re) = @_;
	my %n;
	$n{ $_->{headers}{'webhook-id'} }++ for @{ received($rcv, $re) };
	return scalar grep { $n{$_} > 1 } keys %n;
}

# --- 1. a row lock held elsewhere ------------------------------------------------
add_delivery($node, $inst, "$url/slow/1500/rowlock/", n => 16);
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '$url/slow/1500/rowlock/%' AND locked_until IS NOT NULL") == 16
}, 10), '16 deliveries in flight');
my $held = $node->safe_psql('postgres',
	"SELECT min(id) FROM otp_link.deliveries WHERE destination LIKE '$url/slow/1500/rowlock/%'");
my $s = $node->background_psql('postgres');
$s->query_safe('BEGIN');
$s->query_safe("SELECT id FROM otp_link.deliveries WHERE id = $held FOR UPDATE");
my $t = time();
ok(wait_until(sub { count_status('slow/1500/rowlock/', 'delivered') == 15 }, 10),
	'the 15 rows nobody else holds are recorded');
my $took = time() - $t;
note(sprintf('15 of 16 recorded %.2f s after the row lock was taken (answers after ~1.5 s)', $took));
cmp_ok($took, '<', 2.5, 'without waiting for the row lock');
is($node->safe_psql('postgres', "SELECT status FROM otp_link.deliveries WHERE id = $held"),
	'queued', 'the held row waits, unrecorded');
sleep(1);
$s->query_safe('COMMIT');
ok(wait_until(sub { count_status('slow/1500/rowlock/', 'delivered') == 16 }, 5),
	'the held row is recorded once the lock is gone');
is($node->safe_psql('postgres',
	"SELECT max(attempts) FROM otp_link.deliveries WHERE destination LIKE '$url/slow/1500/rowlock/%'"),
	'1', 'each sent once (attempts)');
is(duplicates(qr{^/slow/1500/rowlock/}), 0, 'no webhook-id reached the receiver twice');

# --- 2. the table locked while answers arrive ------------------------------------------
add_delivery($node, $inst, "$url/slow/1000/tablelock/", n => 8);
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '$url/slow/1000/tablelock/%' AND locked_until IS NOT NULL") == 8
}, 10), '8 deliveries in flight');
$s->query_safe('BEGIN');
$s->query_safe('LOCK TABLE otp_link.deliveries IN EXCLUSIVE MODE');
$t = time();
sleep(4);		# answers come after 1 s; otp_link.timeout is 3 s
is(count_status('slow/1000/tablelock/', 'delivered'), '0', 'nothing recorded while the table is locked');
$s->query_safe('COMMIT');
ok(wait_until(sub { count_status('slow/1000/tablelock/', 'delivered') == 8 }, 10),
	'all 8 recorded once the table lock is gone');
sleep(1);
is($node->safe_psql('postgres',
	"SELECT max(attempts) FROM otp_link.deliveries WHERE destination LIKE '$url/slow/1000/tablelock/%'"),
	'1', 'none attempted twice');
is(duplicates(qr{^/slow/1000/tablelock/}), 0, 'no webhook-id reached the receiver twice');
$s->quit;

# --- 3. the worker stopped longer than otp_link.timeout -----------------------------
my $wpid = worker_pid($node);
add_delivery($node, $inst, "$url/slow/1000/sigstop/", n => 16);
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '$url/slow/1000/sigstop/%' AND locked_until IS NOT NULL") == 16
}, 10), '16 deliveries in flight');
sleep(0.3);		# on the wire; the receiver answers after 1 s
kill 'STOP', $wpid;
sleep(4);		# the answers arrive meanwhile; otp_link.timeout is 3 s
kill 'CONT', $wpid;
ok(wait_until(sub { count_status('slow/1000/sigstop/', 'delivered') == 16 }, 10),
	'all 16 recorded delivered after SIGCONT');
sleep(1);
is($node->safe_psql('postgres',
	"SELECT max(attempts) FROM otp_link.deliveries WHERE destination LIKE '$url/slow/1000/sigstop/%'"),
	'1', 'the answers were read, not timed out: none attempted twice');
is(duplicates(qr{^/slow/1000/sigstop/}), 0, 'no webhook-id reached the receiver twice');

# --- 4. deliveries deleted while in flight -----------------------------------------
add_delivery($node, $inst, "$url/slow/1000/deleted/", n => 8);
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '$url/slow/1000/deleted/%' AND locked_until IS NOT NULL") == 8
}, 10), '8 deliveries in flight');
$node->safe_psql('postgres',
	"DELETE FROM otp_link.deliveries WHERE destination LIKE '$url/slow/1000/deleted/%'");
sleep(2);		# the answers arrive; their rows are gone
my $commits = sub {
	$node->safe_psql('postgres',
		"SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'");
};
my $c0 = $commits->();
sleep(3);
my $c1 = $commits->();
note("transactions committed in 3 s after the answers to deleted rows: " . ($c1 - $c0));
cmp_ok($c1 - $c0, '<', 10,
	'results for deleted rows are done with, not tried again every 0.1 s');

$node->stop;
stop_receiver($rcv);
done_testing();
