# Copyright: otp_link developers
#
# 048_worker_plans.pl: the worker's statements keep reading a few pages
# per round however much otp_link.deliveries grows between two ANALYZEs
# (issue #16, goal 5).
#
# The worker plans its claim, record and next-due statements on first
# use, typically while the table is nearly empty, and keeps the plans.  On
# 32869c2 the claim's plan made then hash-joined the chosen rows with a
# sequential scan of the whole table, and kept doing so every round until
# autovacuum analyzed the table: in the whole-flow benchmark (500 logins
# a second) each claim read the ~20,000 rows delivered so far, the worker
# fell behind and callbacks waited up to 10 s.  Here the table is analyzed
# while nearly empty, autovacuum is off for it, 100,000 delivered rows are
# added after the worker planned its statements, and pg_stat_statements counts the pages each of the
# worker's statements reads per call while 200 more callbacks go out.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OtpWorkerTest;

my $rcv = start_receiver();
my $url = $rcv->{url};
my $node = worker_node('plans',
	conf => "shared_preload_libraries = 'otp_link, pg_stat_statements'\n"
	  . "pg_stat_statements.track = all\n"
	  . "random_page_cost = 1.1\n");		# as on SSDs, and in test/bench
$node->safe_psql('postgres', 'CREATE EXTENSION pg_stat_statements');
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');
my ($inst) = add_instance($node);
# no ANALYZE will tell the planner that the table grew
$node->safe_psql('postgres',
	'ALTER TABLE otp_link.deliveries SET (autovacuum_enabled = off)');

sub delivered
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '$url/$prefix%' AND status = 'delivered'");
}

# the worker plans its statements on a nearly empty table, analyzed (as
# autovacuum does soon after the first rows)
(my $url2 = $url) =~ s/127\.0\.0\.1/localhost/;	# a second destination
add_delivery($node, $inst, "$url/first/", n => 20);
add_delivery($node, $inst, "$url2/first/", n => 20);
ok(wait_until(sub { delivered('first/') == 20 }, 20), 'the first deliveries go out');
$node->safe_psql('postgres', 'ANALYZE otp_link.deliveries');
for my $round (1 .. 10)
{
	add_delivery($node, $inst, "$url/second/", n => 2);
	add_delivery($node, $inst, "$url2/second/", n => 2);
	select(undef, undef, undef, 0.05);
}
ok(wait_until(sub { delivered('second/') == 20 }, 20), 'and more, in several rounds');

$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination,
		payload, status, attempts, delivered_at)
	SELECT 'msg_old_' || g, '$inst', 'callback', 'success', '$url/old/' || g,
		   '{"type": "otp_link.verified"}', 'delivered', 1, now()
	  FROM generate_series(1, 100000) g});
my $pages = $node->safe_psql('postgres',
	"SELECT pg_relation_size('otp_link.deliveries') / current_setting('block_size')::int");
note("otp_link.deliveries: $pages pages, not analyzed since it was nearly empty");
$node->safe_psql('postgres', 'SELECT pg_stat_statements_reset()');

for my $batch (1 .. 20)
{
	add_delivery($node, $inst, "$url/later/$batch/", n => 10);
	select(undef, undef, undef, 0.05);
}
ok(wait_until(sub { delivered('later/') == 200 }, 30), '200 more deliveries go out');

my %stmt = (
	claim => q{query LIKE '%SET locked_until%'},
	record => q{query LIKE '%FOR UPDATE SKIP LOCKED) x), u AS (UPDATE%'},
	'next due' => q{query LIKE '%pg_catalog.min(x.t)%'});
for my $name (sort keys %stmt)
{
	my ($calls, $per_call) = split /\|/, $node->safe_psql('postgres', qq{
		SELECT sum(calls), round(sum(shared_blks_hit + shared_blks_read) / greatest(sum(calls), 1))
		  FROM pg_stat_statements WHERE $stmt{$name}});
	note("$name: $calls calls, $per_call pages per call");
	cmp_ok($calls, '>', 0, "the worker ran its $name statement");
	# a full scan reads every page of the table or of one of its indexes
	cmp_ok($per_call, '<', $pages / 10,
		"its $name statement reads a few pages per call, not the table");
}

$node->stop;
stop_receiver($rcv);
done_testing();
