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

# --- entries of rows deleted in bulk: VACUUM removes them ---------------------
# PostgreSQL's VACUUM skips index cleanup when few heap pages hold dead
# rows; on a table with a long history the queue index then kept the
# entries of rows deleted (or delivered) in bulk until a later VACUUM, and
# every round of the worker stepped over them (in the whole-flow benchmark
# it was busy in SQL 90 % of the time for 37 s).  400 rows are well under 2 %
# of this table's pages: without vacuum_index_cleanup = on the VACUUM
# below skips the indexes.
$node->safe_psql('postgres', 'CREATE EXTENSION pageinspect');
# index entries in the queue index, dead or alive, leaf page by leaf page
# (the rows below have distinct keys: no posting lists)
my $entries = sub {
	$node->safe_psql('postgres', q{
		SELECT sum(s.live_items + s.dead_items)
		  FROM generate_series(1, pg_relation_size('otp_link.deliveries_dest_due_idx') / 8192 - 1) b,
			   LATERAL bt_page_stats('otp_link.deliveries_dest_due_idx', b::int) s
		 WHERE s.type = 'l'});
};
my $l0 = $entries->();
$node->safe_psql('postgres', qq{
	BEGIN;
	INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload,
		next_attempt_at)
	SELECT 'msg_gone_' || g, '$inst', 'callback', 'success', 'http://127.0.0.2:9/gone/' || g,
		   '{"type": "otp_link.verified"}', now() - g * interval '1 ms'
	  FROM generate_series(1, 400) g;
	DELETE FROM otp_link.deliveries WHERE webhook_id LIKE 'msg_gone_%';
	COMMIT;});
my $l1 = $entries->();
my ($vstdout, $vstderr);
$node->psql('postgres', 'VACUUM (VERBOSE) otp_link.deliveries',
	stdout => \$vstdout, stderr => \$vstderr);
note(join("\n", grep { /index scan|index scans/ } split /\n/, $vstderr));
my $l2 = $entries->();
note("queue index entries: $l0, $l1 with 400 deleted rows, $l2 after VACUUM");
cmp_ok($l1, '>=', 400, 'the deleted rows left entries in the queue index');
cmp_ok($l2, '<=', $l1 - 400, 'VACUUM removed them');

$node->stop;
stop_receiver($rcv);
done_testing();
