# Copyright: otp_link developers
#
# 023_worker_lifecycle.pl: the worker's surroundings.  Not preloaded: SQL
# works and deliveries wait.  Preloaded before CREATE EXTENSION: the worker
# idles, then delivers.  DROP EXTENSION while requests are in flight and
# re-CREATE.  The expiry sweep and the retention purge.  A database that does
# not exist yet is reported once, then served when created, and dropped
# WITH (FORCE).  A standby runs no worker until promoted.

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

sub status_of
{
	my ($node, $id, $db) = @_;
	return $node->safe_psql($db // 'postgres', "SELECT status FROM otp_link.deliveries WHERE id = $id");
}

# --- not preloaded ------------------------------------------------------------
my $node = worker_node('lifecycle', preload => 0, init => { allows_streaming => 1 });
my ($inst) = add_instance($node);
my $id = add_delivery($node, $inst, "$url/ok/not-preloaded");
is(worker_pid($node), '', 'not preloaded: no worker');
sleep(1);
is(status_of($node, $id), 'queued', 'not preloaded: the delivery waits');
like(slurp_file($node->logfile), qr/otp_link is not in shared_preload_libraries: deliveries stay queued/,
	'not preloaded: said once in the server log');

# preload and restart: the waiting delivery goes
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'otp_link'\notp_link.sweep_interval = '300ms'\n");
$node->restart;
ok(wait_until(sub { status_of($node, $id) eq 'delivered' }, 10), 'after preloading: delivered');

# --- DROP EXTENSION with a request in flight, then CREATE again --------------
my $pid = worker_pid($node);
$id = add_delivery($node, $inst, "$url/slow/1500/dropped");
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT locked_until IS NOT NULL FROM otp_link.deliveries WHERE id = $id") eq 't'
}, 5), 'a request in flight');
$node->safe_psql('postgres', 'DROP EXTENSION otp_link');
sleep(2.5);    # the request finishes, its result has no table to go to
is(worker_pid($node), $pid, 'the worker survives DROP EXTENSION');
$node->safe_psql('postgres', 'CREATE EXTENSION otp_link');
($inst) = add_instance($node);
$id = add_delivery($node, $inst, "$url/ok/recreated");
ok(wait_until(sub { status_of($node, $id) eq 'delivered' }, 10), 'delivered after CREATE EXTENSION again');
is(worker_pid($node), $pid, 'still the same worker');

# --- expiry sweep and retention purge ------------------------------------
$node->safe_psql('postgres', "ALTER SYSTEM SET otp_link.retention = '1s'");
$node->reload;
my $has_expire = $node->safe_psql('postgres',
	"SELECT to_regprocedure('otp_link.otp_link_expire(integer)') IS NOT NULL OR to_regprocedure('otp_link.otp_link_expire()') IS NOT NULL");
if ($has_expire eq 't')
{
	$node->safe_psql('postgres', qq{
		INSERT INTO otp_link.links (id, instance_id, code_hash, messages, callbacks, created_at, expires_at)
		VALUES (gen_random_uuid(), '$inst', '\\x01', '{}', '{}', now() - interval '1 hour', now() - interval '1 minute')});
	ok(wait_until(sub {
		$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.links WHERE status = 'expired'") == 1
	}, 10), 'the sweep expires an overdue link');
}
else
{
	# otp_link_expire() is not in this tree: a stand-in proves it is called
	$node->safe_psql('postgres', q{
		CREATE TABLE public.expire_calls (at timestamptz);
		CREATE FUNCTION otp_link.otp_link_expire(batch integer DEFAULT 1000) RETURNS integer
		LANGUAGE sql AS $$ INSERT INTO public.expire_calls VALUES (now()); SELECT 0 $$});
	ok(wait_until(sub {
		$node->safe_psql('postgres', 'SELECT count(*) FROM public.expire_calls') >= 2
	}, 10), 'the sweep calls otp_link_expire() every sweep_interval');
}
my $old = add_delivery($node, $inst, "$url/ok/old");
ok(wait_until(sub { status_of($node, $old) eq 'delivered' }, 10), 'delivered');
$node->safe_psql('postgres', q{
	INSERT INTO otp_link.messages_seen (message_id, outcome, seen_at)
	VALUES ('wamid.old', 'verified', now() - interval '8 days'), ('wamid.new', 'verified', now())});
$node->safe_psql('postgres',
	"INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload, status) VALUES ('msg_q', '$inst', 'reply', 'x', '1', '{}', 'held')");
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE id = $old") == 0
}, 10), 'a delivered delivery older than otp_link.retention is purged');
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT string_agg(message_id, ',') FROM otp_link.messages_seen") eq 'wamid.new'
}, 10), 'message ids older than otp_link.message_retention are purged');
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM otp_link.deliveries WHERE webhook_id = 'msg_q'") == 0
}, 10), 'held replies older than otp_link.retention are purged');

# finished links go a day after the retention (the longest TTL); pending stay
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.links (id, instance_id, code_hash, status, messages, callbacks, created_at, expires_at)
	VALUES ('00000000-0000-0000-0000-00000000aaaa', '$inst', '\\x0a', 'verified', '{}', '{}',
	        now() - interval '2 days', now() - interval '2 days' + interval '30 minutes'),
	       ('00000000-0000-0000-0000-00000000bbbb', '$inst', '\\x0b', 'pending', '{}', '{}',
	        now() - interval '2 days', now() + interval '1 hour'),
	       ('00000000-0000-0000-0000-00000000cccc', '$inst', '\\x0c', 'failed', '{}', '{}',
	        now() - interval '1 hour', now() - interval '30 minutes');
	INSERT INTO otp_link.senders (chat_id, window_start, unknown_codes, blocked_until)
	VALUES ('old\@c.us', now() - interval '8 days', 3, NULL),
	       ('blocked\@c.us', now() - interval '8 days', 3, now() + interval '1 hour')});
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.links WHERE id = '00000000-0000-0000-0000-00000000aaaa'") == 0
}, 10), 'a finished link older than otp_link.retention + 1 day is purged');
is($node->safe_psql('postgres',
	"SELECT string_agg(right(id::text, 4), ',' ORDER BY id) FROM otp_link.links WHERE id::text LIKE '00000000-%'"),
	'bbbb,cccc', 'pending links and recent finished links are kept');
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT string_agg(chat_id, ',') FROM otp_link.senders") eq 'blocked@c.us'
}, 10), 'idle sender counters are purged, blocks are kept');

# a finished link someone holds locked (an application's redeem left open)
# does not stall the purge: it is skipped, and the other purges go on
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.links (id, instance_id, code_hash, status, messages, callbacks, created_at, expires_at)
	VALUES ('00000000-0000-0000-0000-00000000dddd', '$inst', '\\x0d', 'verified', '{}', '{}',
	        now() - interval '2 days', now() - interval '2 days' + interval '30 minutes'),
	       ('00000000-0000-0000-0000-00000000eeee', '$inst', '\\x0e', 'verified', '{}', '{}',
	        now() - interval '2 days', now() - interval '2 days' + interval '30 minutes')});
my $holder = $node->background_psql('postgres', on_error_stop => 0);
$holder->query_safe("BEGIN; SELECT id FROM otp_link.links WHERE id = '00000000-0000-0000-0000-00000000dddd' FOR UPDATE");
$node->safe_psql('postgres', q{
	INSERT INTO otp_link.messages_seen (message_id, outcome, seen_at)
	VALUES ('wamid.old2', 'verified', now() - interval '8 days')});
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.links WHERE id = '00000000-0000-0000-0000-00000000eeee'") == 0
	&& $node->safe_psql('postgres', "SELECT count(*) FROM otp_link.messages_seen WHERE message_id = 'wamid.old2'") == 0
}, 10), 'a locked finished link is skipped; the other purges go on');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM otp_link.links WHERE id = '00000000-0000-0000-0000-00000000dddd'"),
	'1', 'the locked link waits for the next sweep');
$holder->query_safe('COMMIT');
$holder->quit;
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.links WHERE id = '00000000-0000-0000-0000-00000000dddd'") == 0
}, 10), 'and goes once released');

my @errors = grep { /\[$pid\] (ERROR|WARNING|FATAL)/ } split(/\n/, slurp_file($node->logfile));
is(scalar(@errors), 0, 'the worker logged no error') or diag(join("\n", @errors));

# --- a standby runs no worker until promoted -----------------------------
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
sleep(0.5);
is(worker_pid($standby), '', 'standby: no worker');
$standby->promote;
ok(wait_until(sub { worker_pid($standby) ne '' }, 10), 'promoted: the worker starts');
$standby->stop;
$node->stop;

# --- the worker's database does not exist yet, then is dropped -----------
my $n2 = worker_node('nodb', create => 0, conf => "otp_link.database = 'otpdb'\nrestart_after_crash = on\n");
sleep(7);    # the worker tries at least twice (every 5 s)
my @missing = (slurp_file($n2->logfile) =~ /database "otpdb" does not exist/g);
is(scalar(@missing), 1, 'a missing database is reported once');
$n2->safe_psql('postgres', 'CREATE DATABASE otpdb');
ok(wait_until(sub {
	$n2->safe_psql('postgres',
		"SELECT datname FROM pg_stat_activity WHERE backend_type = 'otp_link worker'") eq 'otpdb'
}, 15), 'the worker connects once the database exists');
$n2->safe_psql('otpdb', 'CREATE EXTENSION otp_link');
my $i2 = $n2->safe_psql('otpdb',
	"INSERT INTO otp_link.instances (phone, secret) VALUES ('15550001111', 'whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA') RETURNING id");
$id = $n2->safe_psql('otpdb', qq{
	INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload)
	VALUES ('msg_otpdb', '$i2', 'callback', 'success', '$url/ok/otpdb', '{}') RETURNING id});
ok(wait_until(sub { status_of($n2, $id, 'otpdb') eq 'delivered' }, 10), 'delivered from otpdb');
$n2->safe_psql('postgres', 'DROP DATABASE otpdb WITH (FORCE)');
sleep(1);
ok($n2->safe_psql('postgres', 'SELECT 1') eq '1', 'the server is fine after DROP DATABASE WITH (FORCE)');
$n2->stop;

stop_receiver($rcv);
done_testing();
