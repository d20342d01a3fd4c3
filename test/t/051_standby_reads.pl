# Copyright: otp_link developers
#
# 051_standby_reads.pl: reads on a streaming hot standby.
#
# A primary with the worker and a hot standby made from its base backup
# (the library preloaded on both: the standby's postgresql.conf comes from
# the backup).  Links are made on the primary, some before the backup and
# some while the standby streams: pending, verified, redeemed, cancelled,
# and one past its expiry that no sweep has marked.
#
# On the standby: otp_link_status answers exactly what the primary answers
# for each of them (also as otp_link_app), the overdue link already
# reports "expired"; otp_link_whatsapp_url answers and equals the
# primary's whatsapp_link; a message without a code is "ignored" without
# touching a table.  Every function that writes fails cleanly with
# SQLSTATE 25006 (read-only transaction), the inbox trigger included, and
# the standby still answers afterwards.  No worker runs there and its log
# has no otp_link worker line (no error loop).  After promotion the worker
# starts, delivers a callback that was queued on the primary and still
# due, and the callback of a link verified on the new primary.

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
	conf => "otp_link.sweep_interval = '1h'\n");
ok(wait_until(sub { worker_pid($primary) ne '' }, 10), 'primary: worker runs');
$primary->safe_psql('postgres', q{
	CREATE TABLE public.inbox (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		chat_id text NOT NULL, body text, message_id text UNIQUE);
	CREATE TRIGGER inbox_otp_link AFTER INSERT ON public.inbox
		FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id');
	CREATE ROLE app LOGIN IN ROLE otp_link_app;
});

my $inst = make_instance($primary, '+1 555 000 5051', undef);
$primary->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_instance_update('$inst->{uuid}', name => 'Standby Test',
		options => '{"link_url": "https://app.example/login?token={token}"}')});

my %l;
$l{pending} = make_link($primary, $inst->{uuid}, "$url/ok/pending");
$l{verified} = make_link($primary, $inst->{uuid}, "$url/ok/verified");
is(consume($primary, $l{verified}{code}, 'wamid.v', '447700905051')->{outcome}, 'verified', 'a link verified on the primary');
$l{overdue} = make_link($primary, $inst->{uuid}, "$url/ok/overdue", expires => 1);

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;

# made while the standby streams
$l{cancelled} = make_link($primary, $inst->{uuid}, "$url/ok/cancelled");
$primary->safe_psql('postgres', "SELECT otp_link.otp_link_cancel('$l{cancelled}{uuid}')");
$l{redeemed} = make_link($primary, $inst->{uuid}, "$url/ok/redeemed");
is(consume($primary, $l{redeemed}{code}, 'wamid.r', '447700905052')->{outcome}, 'verified', 'another verified');
my $token = $primary->safe_psql('postgres', qq{
	SELECT substring(r->>'body' from 'token=([A-Za-z0-9_-]+)\$')
	  FROM jsonb_array_elements(otp_link.otp_link_replies_take('$inst->{uuid}')->'replies') r
	 WHERE r->>'link' = '$l{redeemed}{uuid}'});
is(decode_json($primary->safe_psql('postgres', "SELECT otp_link.otp_link_redeem('$token')"))->{result},
	'redeemed', 'and redeemed on the primary');
$l{later} = make_link($primary, $inst->{uuid}, "$url/ok/later");

# a callback queued on the primary, due only after the promotion below
my $due_later = $primary->safe_psql('postgres', qq{
	INSERT INTO otp_link.deliveries (instance_id, kind, event, destination, payload, next_attempt_at)
	VALUES ('$inst->{uuid}', 'callback', 'success', '$url/ok/due-later',
	        '{"type": "otp_link.verified", "data": {"status": "verified"}}', now() + interval '1 hour')
	RETURNING id});

sleep(1.2);    # the overdue link is past expires_at; no sweep runs (1h)
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
is($standby->safe_psql('postgres', 'SHOW shared_preload_libraries'), 'otp_link', 'the library is preloaded on the standby');
is($standby->safe_psql('postgres', 'SHOW default_transaction_read_only') . $standby->safe_psql('postgres', 'SHOW transaction_read_only'),
	'offon', 'transactions on the standby are read-only');

# --- reads -------------------------------------------------------------------
for my $k (sort keys %l)
{
	my $sql = "SELECT otp_link.otp_link_status('$l{$k}{uuid}')";
	my $p = decode_json($primary->safe_psql('postgres', $sql));
	my $s = decode_json($standby->safe_psql('postgres', $sql));
	is_deeply($s, $p, "standby: otp_link_status of the $k link equals the primary's ($s->{status})");
}
is(decode_json($standby->safe_psql('postgres', "SELECT otp_link.otp_link_status('$l{overdue}{uuid}')"))->{status},
	'expired', 'standby: a pending link past expires_at reports expired (nothing written)');
is($standby->safe_psql('postgres', "SELECT status FROM otp_link.links WHERE id = '$l{overdue}{uuid}'"),
	'pending', '(its row is still pending)');
is(decode_json($standby->safe_psql('postgres', "SELECT otp_link.otp_link_status('$l{redeemed}{uuid}')"))->{redeemed},
	JSON::PP::true, 'standby: the redeemed link reports redeemed');
is($standby->safe_psql('postgres',
	"SET ROLE app; SELECT otp_link.otp_link_status('$l{verified}{uuid}')->>'status'"),
	'verified', 'standby: otp_link_status as otp_link_app');
my ($ret, $out, $err) = $standby->psql('postgres', "SELECT otp_link.otp_link_status('00000000-0000-4000-8000-000000000000')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/PT404/, 'standby: an unknown link is PT404, as on the primary');

my $wa = $standby->safe_psql('postgres',
	"SELECT otp_link.otp_link_whatsapp_url('15550005051', 'Give me link to login at Standby Test', '$l{later}{code}')");
is($wa, $l{later}{whatsapp_link}, "standby: otp_link_whatsapp_url equals the primary's whatsapp_link");
is($standby->safe_psql('postgres',
	"SET ROLE app; SELECT otp_link.otp_link_whatsapp_url('+20 155 373 0661', 'Give me link to login at 7enkesh', 'RDYFQUBX')"),
	'https://wa.me/201553730661?text=Give+me+link+to+login+at+7enkesh+%5BRDYFQUBX%5D+-+DO+NOT+CHANGE+THIS+MESSAGE',
	'standby: otp_link_whatsapp_url, the documented example, as otp_link_app');
is(decode_json($standby->safe_psql('postgres',
	"SELECT otp_link.otp_link_consume_message('447700905059\@c.us', 'hello, no code here', 'wamid.nocode')"))->{outcome},
	'ignored', 'standby: a message without a code is ignored (no table touched)');

# --- writes fail with 25006 ---------------------------------------------------
my %writes = (
	'otp_link_generate' => "SELECT otp_link.otp_link_generate('$inst->{uuid}')",
	'otp_link_generate with rate_key' => "SELECT otp_link.otp_link_generate('$inst->{uuid}', rate_key => 'ip:1')",
	'otp_link_consume_message (pending link)' =>
	  "SELECT otp_link.otp_link_consume_message('447700905053\@c.us', 'x [$l{later}{code}]', 'wamid.s1')",
	'otp_link_consume_message (no message id)' =>
	  "SELECT otp_link.otp_link_consume_message('447700905053\@c.us', 'x [$l{later}{code}]')",
	'otp_link_consume_message (already verified)' =>
	  "SELECT otp_link.otp_link_consume_message('447700905051\@c.us', 'x [$l{verified}{code}]')",
	'otp_link_consume_message (unknown code)' =>
	  "SELECT otp_link.otp_link_consume_message('447700905053\@c.us', 'x [ZZZZZZZZ]')",
	'otp_link_consume_message (duplicate message id)' =>
	  "SELECT otp_link.otp_link_consume_message('447700905051\@c.us', 'x [$l{verified}{code}]', 'wamid.v')",
	'INSERT into the inbox (trigger)' =>
	  "INSERT INTO public.inbox (chat_id, body, message_id) VALUES ('447700905053\@c.us', 'x [$l{later}{code}]', 'wamid.s2')",
	'otp_link_consume_webhook' => q{SELECT otp_link.otp_link_consume_webhook('{"entry": [{"changes": [{"value": {"messages": [{"from": "447700905053", "id": "wamid.s3", "type": "text", "text": {"body": "x [ABCDEFGH]"}}]}}]}]}')},
	'otp_link_redeem' => "SELECT otp_link.otp_link_redeem('$token')",
	'otp_link_cancel' => "SELECT otp_link.otp_link_cancel('$l{pending}{uuid}')",
	'otp_link_replies_take' => 'SELECT otp_link.otp_link_replies_take()',
	'otp_link_expire' => 'SELECT otp_link.otp_link_expire()',
	'otp_link_instance_create' => "SELECT otp_link.otp_link_instance_create('+1 555 000 5099')",
	'otp_link_instance_update' => "SELECT otp_link.otp_link_instance_update('$inst->{uuid}', name => 'x')",
	'otp_link_delivery_requeue' => "SELECT otp_link.otp_link_delivery_requeue($due_later)");
for my $what (sort keys %writes)
{
	($ret, $out, $err) = $standby->psql('postgres', $writes{$what},
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/\bERROR:  25006: /, "standby: $what fails with 25006")
	  or diag("stdout: $out");
}
is($standby->safe_psql('postgres', "SELECT otp_link.otp_link_status('$l{later}{uuid}')->>'status'"),
	'pending', 'the standby still answers, and nothing changed');

# --- no worker on the standby, no error loop -----------------------------------
sleep(2);
is(worker_pid($standby), '', 'standby: no otp_link worker');
my @wlines = grep { /otp_link worker/ && !/ LOG:  statement: / } split(/\n/, slurp_file($standby->logfile));
is(scalar(@wlines), 0, 'standby log: no line from or about the otp_link worker') or diag(join("\n", @wlines));
my @crash = grep { /PANIC|TRAP|terminated by signal/ } split(/\n/, slurp_file($standby->logfile));
is(scalar(@crash), 0, 'standby log: no crash');

# --- promotion ------------------------------------------------------------------
$primary->safe_psql('postgres',
	"UPDATE otp_link.deliveries SET next_attempt_at = now() + interval '3 seconds' WHERE id = $due_later");
$primary->wait_for_catchup($standby);
$primary->stop('fast');
is(scalar(@{ received($rcv, qr{^/ok/due-later}) }), 0, 'the queued callback was not due on the primary');
$standby->promote;
ok(wait_until(sub { worker_pid($standby) ne '' }, 15), 'promoted: the worker starts');
ok(wait_until(sub { @{ received($rcv, qr{^/ok/due-later}) } == 1 }, 15),
	'the callback queued on the primary is delivered by the new primary');
is(consume($standby, $l{later}{code}, 'wamid.after', '447700905054')->{outcome}, 'verified',
	'a link made on the old primary is verified on the new one');
ok(wait_until(sub { @{ received($rcv, qr{^/ok/later/success}) } == 1 }, 10), 'and its callback is delivered');
ok(verify_signature($inst->{secret}, received($rcv, qr{^/ok/later/success})->[0]), 'signed with the instance secret');
my @errors = grep { /otp_link worker.*(ERROR|WARNING|FATAL)/ } split(/\n/, slurp_file($standby->logfile));
is(scalar(@errors), 0, "the new primary's worker logged no error") or diag(join("\n", @errors));

$standby->stop;
stop_receiver($rcv);
done_testing();
