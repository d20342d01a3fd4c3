# Copyright: otp_link developers
#
# 040_fault_backend_kill.pl: kill -9 of a BACKEND in the middle of a
# consume.  Session A has verified a link inside an open transaction (it
# holds the link's row lock and has queued its reply and callback, not yet
# committed) and has generated another link in the same transaction;
# session B waits for the same link's lock; deliveries committed earlier
# are in flight at a slow receiver.  SIGKILL of A makes the postmaster
# restart every process (B and the worker too).  Afterwards: A's and B's
# work is gone entirely (the link is still pending, no message id, no
# delivery, no link row), the tables and indexes are consistent (amcheck),
# the worker comes back and delivers what was committed (same webhook-id
# when re-sent), and the link can still be verified exactly once.

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
my $node = worker_node('bkill',
	conf => "restart_after_crash = on\notp_link.sweep_interval = '500ms'\n");
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');

my $inst = make_instance($node, '+1 555 000 4040', "$url/ok/reply");

# committed before the crash: verified, its callback and reply still in
# flight at a slow receiver when the crash happens
my $committed = make_link($node, $inst->{uuid}, "$url/slow/2500/committed");
is(consume($node, $committed->{code}, 'wamid.committed')->{outcome}, 'verified',
	'a link verified and committed before the crash');
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE link_id = '$committed->{uuid}' AND kind = 'callback' AND locked_until IS NOT NULL") == 1
}, 10), 'its callback is in flight');

# the victim's link
my $victim = make_link($node, $inst->{uuid}, "$url/ok/victim");
my $body = "login [$victim->{code}] please";

my $a = $node->background_psql('postgres', on_error_stop => 0);
my $apid = $a->query_safe('SELECT pg_backend_pid()');
$a->query_safe('BEGIN');
my $res = decode_json($a->query_safe(
	"SELECT otp_link.otp_link_consume_message('447700900111\@c.us', '$body', 'wamid.A')"));
is($res->{outcome}, 'verified', 'session A verified the link (not committed)');
my $uncommitted = decode_json($a->query_safe(
	"SELECT otp_link.otp_link_generate(instance => '$inst->{uuid}', callback => '{\"success\": \"$url/ok/never\"}')"));
ok($uncommitted->{uuid}, 'session A generated another link (not committed)');

# session B waits for the link's row lock
my $b = $node->background_psql('postgres', on_error_stop => 0);
my $bpid = $b->query_safe('SELECT pg_backend_pid()');
$b->{stdin} .= "SELECT otp_link.otp_link_consume_message('447700900222\@c.us', '$body', 'wamid.B');\n";
$b->{run}->pump_nb;
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT wait_event_type FROM pg_stat_activity WHERE pid = $bpid") eq 'Lock'
}, 10), 'session B waits for the link row lock held by A');

# queued and committed just before the crash, not yet sent: a burst to a
# slow receiver
add_delivery($node, $inst->{uuid}, "$url/slow/1000/burst", n => 8);

my $old_worker = worker_pid($node);
my $t_kill = time();
kill 'KILL', $apid;
ok(wait_until(sub {
	my ($ret, $out) = $node->psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'otp_link worker'");
	$ret == 0 && $out ne '' && $out ne $old_worker;
}, 30), 'the postmaster restarted the cluster; a new worker runs');
like(slurp_file($node->logfile), qr/(?:server process|client backend) \(PID $apid\) was terminated by signal 9/,
	'the postmaster saw the backend killed');
# the sessions are gone
eval { $a->quit; };
eval { $b->quit; };

# --- A's and B's work is gone entirely -----------------------------------
is($node->safe_psql('postgres', "SELECT status FROM otp_link.links WHERE id = '$victim->{uuid}'"),
	'pending', 'the victim link is still pending');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM otp_link.messages_seen WHERE message_id IN ('wamid.A', 'wamid.B')"),
	'0', 'no message id of A or B was recorded');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM otp_link.deliveries WHERE link_id = '$victim->{uuid}'"),
	'0', 'no half-written delivery for the victim link');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM otp_link.links WHERE id = '$uncommitted->{uuid}'"),
	'0', 'the link A generated is gone');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM otp_link.deliveries d WHERE NOT EXISTS (SELECT 1 FROM otp_link.links l WHERE l.id = d.link_id) AND d.link_id IS NOT NULL"),
	'0', 'no delivery points to a missing link');
is($node->safe_psql('postgres', 'SELECT messages_received FROM otp_link.links WHERE id = ' . "'$victim->{uuid}'"),
	'0', 'messages_received unchanged');

# --- consistent tables and indexes (amcheck: heap, and indexes against heap)
$node->safe_psql('postgres', 'CREATE EXTENSION amcheck');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_class c, LATERAL verify_heapam(c.oid) v
	 WHERE c.relnamespace = 'otp_link'::regnamespace AND c.relkind = 'r'}),
	'0', 'verify_heapam: no corruption in otp_link tables');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT bt_index_check(i.indexrelid, true)
	  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
	 WHERE c.relnamespace = 'otp_link'::regnamespace AND c.relam = 403) x}),
	$node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
	 WHERE c.relnamespace = 'otp_link'::regnamespace AND c.relam = 403}),
	'bt_index_check(heapallindexed): every otp_link index matches its table');

# --- the worker delivers what was committed --------------------------------
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE status <> 'delivered'") == 0
}, 30), 'every committed delivery is delivered after the restart');
my %sent = map { $_ => 1 } split(/\n/, $node->safe_psql('postgres', 'SELECT webhook_id FROM otp_link.deliveries'));
my $got = by_webhook_id(received($rcv));
is_deeply([ sort keys %$got ], [ sort keys %sent ], 'every webhook-id received, none invented');
my @twice = grep { $got->{$_} > 1 } keys %$got;
my $inflight = $node->safe_psql('postgres', q{SELECT count(*) FROM otp_link.deliveries WHERE attempts > 1});
cmp_ok(scalar(@twice), '<=', $inflight, 'only deliveries attempted again were received twice (same webhook-id)');
note('received twice after the crash (in flight when the worker was killed): ' . scalar(@twice));
is($node->safe_psql('postgres', 'SELECT count(*) FROM otp_link.deliveries WHERE locked_until IS NOT NULL'),
	'0', 'no lease left');

# --- the provider re-delivers A's message: verified now, exactly once -----
$res = consume($node, $victim->{code}, 'wamid.A', '447700900111');
is($res->{outcome}, 'verified', 'the re-delivered message verifies the link');
$res = consume($node, $victim->{code}, 'wamid.B', '447700900222');
is($res->{outcome}, 'already_verified', "B's message, re-delivered: already_verified");
ok(wait_until(sub { @{ received($rcv, qr{^/ok/victim/success}) } >= 1 }, 10), 'its success callback arrives');
sleep(0.5);
is(scalar(keys %{ by_webhook_id(received($rcv, qr{^/ok/victim/})) }), 1,
	'one success callback webhook-id for the victim link');
is($node->safe_psql('postgres',
	"SELECT string_agg(kind || ':' || status, ',' ORDER BY kind) FROM otp_link.deliveries WHERE link_id = '$victim->{uuid}'"),
	'callback:delivered,reply:delivered', 'one callback and one reply, delivered');

my @errors = grep { /otp_link worker (ERROR|WARNING|PANIC)/ } split(/\n/, slurp_file($node->logfile));
is(scalar(@errors), 0, 'the worker logged no error') or diag(join("\n", @errors));
note(sprintf('kill to all delivered: %.1f s', time() - $t_kill));

$node->stop;
stop_receiver($rcv);
done_testing();
