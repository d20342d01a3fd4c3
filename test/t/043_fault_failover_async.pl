# Copyright: otp_link developers
#
# 043_fault_failover_async.pl: what asynchronous replication means for
# callbacks, and how synchronous replication avoids it.
#
# Asynchronous (the PostgreSQL default): a verification committed on the
# primary and not yet received by the standby is lost at failover, although
# the worker has already delivered its success callback.  On the promoted
# standby the link is pending again; the user's next message (even the same
# message id) verifies it a second time and a second success callback, with
# a NEW webhook-id, goes out.  The receiver cannot deduplicate that one.
# This test pins the behaviour down; docs/reliability.md explains it.
#
# Synchronous (synchronous_standby_names set, synchronous_commit on): the
# consume's COMMIT waits for the standby, and the worker cannot see (so
# cannot send) the callback before the standby has it; after a failover
# the link is verified on the new primary and no second verification or
# second webhook-id is possible.

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

my $rcv = start_receiver();
my $url = $rcv->{url};

# pair($name, $sync): a primary with the worker and a streaming standby;
# synchronous replication (once the standby is there) when $sync
sub pair
{
	my ($name, $sync) = @_;
	my $primary = worker_node("${name}_primary", init => { allows_streaming => 1 });
	$primary->backup('b');
	my $standby = PostgreSQL::Test::Cluster->new("${name}_standby");
	$standby->init_from_backup($primary, 'b', has_streaming => 1);
	$standby->start;
	$primary->wait_for_catchup($standby);
	if ($sync)
	{
		$primary->append_conf('postgresql.conf',
			"synchronous_standby_names = '*'\nsynchronous_commit = on\n");
		$primary->reload;
		ok(wait_until(sub {
			$primary->safe_psql('postgres', 'SELECT sync_state FROM pg_stat_replication') eq 'sync'
		}, 10), "$name: the standby is synchronous");
	}
	return ($primary, $standby);
}

sub success_wids
{
	my ($path, $uuid) = @_;
	my %w;
	for my $r (@{ received($rcv, qr{^\Q$path\E}) })
	{
		$w{ $r->{headers}{'webhook-id'} } = 1
		  if decode_json($r->{body})->{data}{uuid} eq $uuid;
	}
	return [ sort keys %w ];
}

# --- asynchronous replication -----------------------------------------------
{
	my ($primary, $standby) = pair('async');
	my $inst = make_instance($primary, '+1 555 000 4044', undef);
	my $l = make_link($primary, $inst->{uuid}, "$url/ok/async");
	$primary->wait_for_catchup($standby);

	# the standby falls behind (here: it is down)
	$standby->stop;
	is(consume($primary, $l->{code}, 'wamid.async1')->{outcome}, 'verified', 'async: verified on the primary');
	ok(wait_until(sub { @{ success_wids('/ok/async/success', $l->{uuid}) } == 1 }, 10),
		'async: its success callback was delivered by the primary');
	$primary->stop('immediate');
	$standby->start;
	$standby->promote;
	ok(wait_until(sub { worker_pid($standby) ne '' }, 15), 'async: promoted, worker runs');
	is($standby->safe_psql('postgres', "SELECT status FROM otp_link.links WHERE id = '$l->{uuid}'"),
		'pending', 'async: the verification is lost on the new primary (link pending again)');
	is(consume($standby, $l->{code}, 'wamid.async1')->{outcome}, 'verified',
		'async: the same message, re-delivered, verifies the link a second time');
	ok(wait_until(sub { @{ success_wids('/ok/async/success', $l->{uuid}) } == 2 }, 10),
		'async: a second success callback arrives, with a different webhook-id (documented)');
	$standby->stop;
}

# --- synchronous replication ------------------------------------------------
{
	my ($primary, $standby) = pair('sync', 1);
	my $inst = make_instance($primary, '+1 555 000 4045', undef);
	my $l = make_link($primary, $inst->{uuid}, "$url/ok/sync");
	$primary->wait_for_catchup($standby);

	$standby->stop;
	# the consume's COMMIT waits for the standby
	my $s = $primary->background_psql('postgres', on_error_stop => 0);
	my $spid = $s->query_safe('SELECT pg_backend_pid()');
	$s->{stdin} .= "SELECT otp_link.otp_link_consume_message('447700900123\@c.us', 'login [$l->{code}] please', 'wamid.sync1');\n";
	$s->{run}->pump_nb;
	ok(wait_until(sub {
		$primary->safe_psql('postgres', "SELECT wait_event FROM pg_stat_activity WHERE pid = $spid") eq 'SyncRep'
	}, 10), 'sync: the COMMIT waits for the standby');
	sleep(1.5);
	is(scalar(@{ received($rcv, qr{^/ok/sync/}) }), 0,
		'sync: nothing is sent while the standby has not confirmed');
	is($primary->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE link_id = '$l->{uuid}'"),
		'0', 'sync: the delivery is not visible to the worker yet');

	$standby->start;
	ok(wait_until(sub { @{ success_wids('/ok/sync/success', $l->{uuid}) } == 1 }, 15),
		'sync: once the standby confirms, the callback is delivered');
	eval { $s->quit; };
	$primary->stop('immediate');
	$standby->promote;
	ok(wait_until(sub { worker_pid($standby) ne '' }, 15), 'sync: promoted, worker runs');
	is($standby->safe_psql('postgres', "SELECT status FROM otp_link.links WHERE id = '$l->{uuid}'"),
		'verified', 'sync: the link is verified on the new primary');
	is(consume($standby, $l->{code}, 'wamid.sync1')->{outcome}, 'duplicate',
		'sync: the re-delivered message is a duplicate');
	is(consume($standby, $l->{code}, 'wamid.sync2')->{outcome}, 'already_verified',
		'sync: a new message: already_verified');
	ok(wait_until(sub {
		$standby->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status = 'queued'") == 0
	}, 15), 'sync: nothing left queued on the new primary');
	is(scalar(@{ success_wids('/ok/sync/success', $l->{uuid}) }), 1,
		'sync: one webhook-id for the success callback (a re-send, if any, keeps it)');
	$standby->stop;
}

stop_receiver($rcv);
done_testing();
