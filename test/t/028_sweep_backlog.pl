# Copyright: otp_link developers
#
# 028_sweep_backlog.pl: a backlog of overdue links expires at the sweep's own
# rate, not one otp_link_expire() batch (10,000 links) per sweep_interval
# (issue 17, item 8: 1 M overdue links took 17 minutes of late expiry
# callbacks at the defaults).  25,000 overdue links with
# sweep_interval = 60s must all be expired within a few seconds of the
# worker's first sweep, and the purges still run afterwards.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OtpWorkerTest;

my $node = worker_node('backlog', conf => "otp_link.sweep_interval = '60s'\n");
my ($inst) = add_instance($node);
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.links (id, instance_id, code_hash, messages, callbacks, created_at, expires_at)
	SELECT gen_random_uuid(), '$inst', sha256(g::text::bytea), '{}', '{}',
	       now() - interval '1 hour', now() - interval '1 minute'
	  FROM generate_series(1, 25000) g});
$node->safe_psql('postgres', q{
	INSERT INTO otp_link.messages_seen (message_id, outcome, seen_at)
	VALUES ('wamid.old', 'verified', now() - interval '8 days')});

# the worker sweeps when it starts, then every 60 s
my $t0 = time();
$node->restart;
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.links WHERE status = 'pending'") == 0
}, 20), 'all 25,000 overdue links expired without waiting for the next sweep_interval');
my $took = time() - $t0;
cmp_ok($took, '<', 20, sprintf('within %.1f s of the restart', $took));
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.messages_seen WHERE message_id = 'wamid.old'") == 0
}, 10), 'the purges run once the backlog is done');

$node->stop;
done_testing();
