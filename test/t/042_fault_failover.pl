# Copyright: otp_link developers
#
# 042_fault_failover.pl: a primary with a streaming standby.  Deliveries
# are delivered on the primary (phase 1), then a backlog is queued with some
# requests in flight at a slow receiver (phase 2) and the primary is stopped
# immediately; no worker runs on the standby and nothing is sent until it is
# promoted; the promoted standby's worker delivers the backlog.
#
# What is checked: phase 1 (acknowledged and replicated before the switch)
# is never sent again; every phase-2 delivery is delivered by the new
# primary; a delivery sent twice keeps its webhook-id and was in flight at
# the switch (at-least-once, documented in docs/worker.md and
# docs/reliability.md); links verified on the new primary are delivered too.

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
my $primary = worker_node('primary', init => { allows_streaming => 1 },
	conf => "otp_link.max_concurrency = 3\notp_link.sweep_interval = '300ms'\n");
ok(wait_until(sub { worker_pid($primary) ne '' }, 10), 'primary: worker runs');
my $inst = make_instance($primary, '+1 555 000 4042', "$url/ok/reply");

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
is(worker_pid($standby), '', 'standby: no worker');

# --- phase 1: verified and delivered on the primary, replicated ------------
my @p1;
for my $i (1 .. 5)
{
	my $l = make_link($primary, $inst->{uuid}, "$url/ok/p1");
	is(consume($primary, $l->{code}, "wamid.p1.$i", "4477009002$i")->{outcome}, 'verified', "phase 1 link $i verified");
	push @p1, $l;
}
ok(wait_until(sub {
	$primary->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status = 'delivered'") == 10
}, 10), 'phase 1: 5 callbacks and 5 replies delivered by the primary');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status = 'delivered'"),
	'10', 'the standby knows they are delivered');

# --- phase 2: a backlog, three requests in flight at the switch ------------
# (an instance whose replies are held: only the four slow callbacks compete
# for the three slots)
my $held = make_instance($primary, '+1 555 000 4043', undef);
my @p2;
for my $i (1 .. 4)
{
	my $l = make_link($primary, $held->{uuid}, "$url/slow/3000/p2");
	is(consume($primary, $l->{code}, "wamid.p2.$i", "4477009003$i")->{outcome}, 'verified', "phase 2 link $i verified");
	push @p2, $l;
}
# an unverified link that the user answers after the failover
my $later = make_link($primary, $inst->{uuid}, "$url/ok/later");
ok(wait_until(sub {
	$primary->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE locked_until IS NOT NULL) = 3
		   AND count(*) FILTER (WHERE status = 'queued' AND locked_until IS NULL) = 1
		  FROM otp_link.deliveries}) eq 't'
}, 10), 'three slow callbacks in flight (max_concurrency 3), one queued');
$primary->wait_for_catchup($standby);
my $at_switch = $standby->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'delivered') || ' delivered, '
	    || count(*) FILTER (WHERE status = 'queued' AND locked_until IS NOT NULL) || ' in flight, '
	    || count(*) FILTER (WHERE status = 'queued' AND locked_until IS NULL) || ' queued'
	  FROM otp_link.deliveries});
note("standby's view at the switch: $at_switch");
my %inflight_ids = map { $_ => 1 } split(/\n/, $standby->safe_psql('postgres',
	"SELECT webhook_id FROM otp_link.deliveries WHERE status = 'queued' AND locked_until IS NOT NULL"));
my %acked_before = map { $_ => 1 } split(/\n/, $standby->safe_psql('postgres',
	"SELECT webhook_id FROM otp_link.deliveries WHERE status = 'delivered'"));

my $t_switch = time();
$primary->stop('immediate');
sleep(1);
is(worker_pid($standby), '', 'standby still runs no worker before promotion');
my $t_promote = time();
$standby->promote;
ok(wait_until(sub { worker_pid($standby) ne '' }, 15), 'promoted: the worker starts');
like(slurp_file($standby->logfile), qr/released \d+ stale delivery leases/,
	'the new worker released the leases of the requests in flight at the switch');

ok(wait_until(sub {
	$standby->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status NOT IN ('delivered', 'held')") == 0
}, 30), 'the new primary delivered the whole backlog');
note(sprintf('switch to all delivered: %.1f s', time() - $t_switch));

# the user answers on the new primary
is(consume($standby, $later->{code}, 'wamid.later', '447700900400')->{outcome}, 'verified',
	'a link is verified on the new primary');
ok(wait_until(sub { @{ received($rcv, qr{^/ok/later/success}) } == 1 }, 10),
	"its callback is delivered by the new primary's worker");
ok(wait_until(sub {
	$standby->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status NOT IN ('delivered', 'held')") == 0
}, 10), 'and its reply');

# --- what the receiver saw ---------------------------------------------------
my %sent = map { $_ => 1 } split(/\n/, $standby->safe_psql('postgres', "SELECT webhook_id FROM otp_link.deliveries WHERE status <> 'held'"));
my $got = by_webhook_id(received($rcv));
is_deeply([ sort keys %$got ], [ sort keys %sent ], 'every webhook-id received, none invented');
# (receiver.py logs a slow request when it answers, with its arrival time)
is(scalar(grep { $_->{t} > $t_switch + 0.1 && $_->{t} < $t_promote } @{ received($rcv) }),
	0, 'nothing was sent between the primary stop and the promotion');
my @again_p1 = grep { $acked_before{$_} && $got->{$_} > 1 } keys %$got;
is(scalar(@again_p1), 0, 'nothing acknowledged and replicated before the switch was sent again');
my @twice = grep { $got->{$_} > 1 } keys %$got;
my @twice_not_inflight = grep { !$inflight_ids{$_} } @twice;
is(scalar(@twice_not_inflight), 0,
	'only deliveries in flight at the switch were sent twice (same webhook-id)');
note(sprintf('sent twice across the failover: %d of %d in flight at the switch (same webhook-id)',
	scalar(@twice), scalar(keys %inflight_ids)));
my %per_link;
for my $r (@{ received($rcv, qr{/success$}) })
{
	my $b = decode_json($r->{body});
	$per_link{ $b->{data}{uuid} }{ $r->{headers}{'webhook-id'} } = 1;
}
is(scalar(grep { keys %$_ > 1 } values %per_link), 0,
	'no link had two different webhook-ids for its success callback');
is(scalar(keys %per_link), 10, 'ten links, one success callback each');

my @errors = grep { /otp_link worker (ERROR|WARNING|PANIC)/ } split(/\n/, slurp_file($standby->logfile));
is(scalar(@errors), 0, "the new primary's worker logged no error") or diag(join("\n", @errors));

$standby->stop;
stop_receiver($rcv);
done_testing();
