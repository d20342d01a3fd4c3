# Copyright: otp_link developers
#
# 050_pgbouncer.pl: otp_link behind PgBouncer in transaction pooling mode.
#
# A real pgbouncer (Debian package pgbouncer) listens on 127.0.0.1 with
# pool_mode = transaction and default_pool_size = 2, in front of a cluster
# with the worker.  Every client logs in as the same NOINHERIT role "web"
# and takes a role per transaction with SET LOCAL ROLE, as applications
# behind a pooler do.
#
# Part 1: six clients, each with its own instance (link_url, replies held,
# generate_limit 6), run concurrently, round after round: generate (with a
# rate_key) -> consume (the function, or an INSERT into an inbox table with
# otp_link_consume_trigger, by turns) -> status -> otp_link_replies_take
# (the {link} token read from the reply body, as the application would) ->
# redeem twice.  Every outcome is checked; the seventh generate of each
# client is rate limited (the count holds across server connections); every
# success callback reaches the receiver signed with its instance's secret;
# the six clients were served by at most two server connections, each of
# which served several clients.
#
# Part 2: two clients on a pool of ONE server connection (database alias
# "seq"), so that they provably share a backend between transactions.
# The per-backend state of otp_link (the instance-row location hints of
# otp_link_generate, the SPI plans kept per backend) stays correct while
# the other client updates the instance, deletes it, re-creates it with
# the same uuid (after VACUUM, so that its old slot can be reused), and
# drops and re-creates the whole extension.
#
# Part 3: session state.  SET LOCAL ROLE does not leak into the next
# transaction on the same server connection; a role without the grants
# fails (42501) even right after another client's SET LOCAL ROLE there;
# otp_link.debug_codes is refused to "web"; and a superuser's plain SET
# (without LOCAL) does leak to the next client of that server connection
# -- which is why otp_link needs no session SET at all.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time sleep);
use OtpWorkerTest;
use OtpFaultTest;

my ($pgbouncer) = grep { -x $_ }
  ((map { "$_/pgbouncer" } split(/:/, $ENV{PATH} // '')), '/usr/sbin/pgbouncer');
plan skip_all => 'pgbouncer is not installed (Debian package "pgbouncer"; scripts/setup installs it)'
  unless $pgbouncer;

my $rcv = start_receiver();
my $url = $rcv->{url};
my $node = worker_node('bouncer', conf => "max_connections = 40\n");
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');

$node->safe_psql('postgres', q{
	CREATE ROLE web LOGIN NOINHERIT IN ROLE otp_link_app, otp_link_inbox, otp_link_admin;
	CREATE ROLE inbox_writer NOLOGIN;
	GRANT inbox_writer TO web;
	CREATE TABLE public.inbox (
		id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		chat_id     text NOT NULL,
		body        text,
		message_id  text UNIQUE,
		received_at timestamptz NOT NULL DEFAULT now());
	GRANT INSERT ON public.inbox TO inbox_writer;
	CREATE TRIGGER inbox_otp_link AFTER INSERT ON public.inbox
		FOR EACH ROW EXECUTE FUNCTION otp_link.otp_link_consume_trigger('chat_id', 'body', 'message_id');
});

# --- pgbouncer ----------------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir();
my $bport = free_port();
my $pghost = $node->host;
my $pgport = $node->port;
PostgreSQL::Test::Utils::append_to_file("$dir/userlist.txt", qq{"web" ""\n"postgres" ""\n});
PostgreSQL::Test::Utils::append_to_file("$dir/pgbouncer.ini", <<"EOF");
[databases]
postgres = host=$pghost port=$pgport dbname=postgres
seq = host=$pghost port=$pgport dbname=postgres pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 100
server_reset_query = DISCARD ALL
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
my ($bout, $berr) = ('', '');
my $bouncer = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ], '>', \$bout, '2>', \$berr);
ok(wait_until(sub {
	IPC::Run::run([ 'psql', '-X', '-A', '-t', '-h', '127.0.0.1', '-p', $bport, '-U', 'web',
		'-d', 'postgres', '-c', 'SELECT 1' ], '>', \my $o, '2>', \my $e);
	return defined $o && $o =~ /^1$/m;
}, 15), "pgbouncer accepts connections on 127.0.0.1:$bport")
  or BAIL_OUT("pgbouncer did not start: $berr " . (-e "$dir/pgbouncer.log" ? slurp_file("$dir/pgbouncer.log") : ''));

# --- psql sessions through pgbouncer ------------------------------------------
my $tagn = 0;

sub session
{
	my ($user, $db) = @_;
	my $s = { in => '', out => '', err => '', user => $user };
	$s->{h} = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-q', '-h', '127.0.0.1', '-p', $bport, '-U', $user, '-d', $db ],
		'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err});
	$s->{in} .= "\\set VERBOSITY verbose\n";
	return $s;
}

# send($s, $sql): queue statements; collect($s) waits for their output
sub send_sql
{
	my ($s, $sql) = @_;
	$s->{tag} = '__done_' . ++$tagn . '__';
	$s->{out} = '';
	$s->{err} = '';
	$s->{in} .= "$sql\n\\echo $s->{tag}\n\\warn $s->{tag}\n";
}

sub done
{
	my ($s) = @_;
	return $s->{out} =~ /\Q$s->{tag}\E\n/ && $s->{err} =~ /\Q$s->{tag}\E\n/;
}

# run_all(@sessions): pump every session until each has answered
sub run_all
{
	my @s = @_;
	my $deadline = time() + 60;
	while (grep { !done($_) } @s)
	{
		die 'timeout waiting for psql' if time() > $deadline;
		$_->{h}->pump_nb for @s;
		sleep(0.002);
	}
	for (@s)
	{
		($_->{res} = $_->{out}) =~ s/\Q$_->{tag}\E\n//;
		chomp $_->{res};
		($_->{error} = $_->{err}) =~ s/\Q$_->{tag}\E\n//;
	}
	return;
}

sub q1
{
	my ($s, $sql) = @_;
	send_sql($s, $sql);
	run_all($s);
	return wantarray ? ($s->{res}, $s->{error}) : $s->{res};
}

sub close_session
{
	my ($s) = @_;
	$s->{in} .= "\\q\n";
	$s->{h}->finish;
}

# ==============================================================================
# Part 1: six concurrent clients
# ==============================================================================
my $nclients = 6;
my $iters = 6;
my (@clients, %inst);
for my $c (1 .. $nclients)
{
	$inst{$c} = make_instance($node, "+1 555 010 00$c" . '0', undef);
	$node->safe_psql('postgres', qq{
		SELECT otp_link.otp_link_instance_update('$inst{$c}{uuid}', options => '{
			"link_url": "https://app.example/login?token={token}",
			"messages": {"success": "Welcome back, open {link}"},
			"limits": {"generate_limit": $iters}}')});
	push @clients, session('web', 'postgres');
}

my (%pids_of_client, %clients_of_pid, @bad, %links);
my $checks = 0;
sub expect
{
	my ($cond, $what) = @_;
	$checks++;
	push @bad, $what unless $cond;
}

for my $i (1 .. $iters)
{
	# generate
	for my $c (1 .. $nclients)
	{
		send_sql($clients[ $c - 1 ], qq{BEGIN; SET LOCAL ROLE otp_link_app;
SELECT pg_backend_pid() || '|' || current_user || '|' || (g->>'uuid') || '|' || (g->>'code') || '|' || (g->>'whatsapp_link')
  FROM (SELECT otp_link.otp_link_generate(instance => '$inst{$c}{uuid}', expires => 600,
        callback => '{"success": "$url/ok/c$c/i$i/success", "failed": "$url/ok/c$c/i$i/failed"}',
        rate_key => 'user:$c', metadata => '{"client": $c, "iter": $i}') AS g) s;
COMMIT;});
	}
	run_all(@clients);
	for my $c (1 .. $nclients)
	{
		my $s = $clients[ $c - 1 ];
		my ($pid, $role, $uuid, $code, $wa) = split(/\|/, $s->{res});
		expect($s->{error} eq '' && $role eq 'otp_link_app' && $code =~ /^[A-Z]{8}$/
			  && $wa =~ /%5B$code%5D/, "c$c i$i generate: $s->{res} $s->{error}");
		$links{"$c.$i"} = { uuid => $uuid, code => $code };
		$pids_of_client{$c}{$pid}++;
		$clients_of_pid{$pid}{$c}++;
	}

	# consume: the function (odd rounds, with a duplicate) or the inbox trigger
	for my $c (1 .. $nclients)
	{
		my $l = $links{"$c.$i"};
		my $sender = "4477009$c$i" . '0000';
		my $body = "Give me link to login [$l->{code}] - DO NOT CHANGE THIS MESSAGE";
		send_sql($clients[ $c - 1 ], $i % 2
			? qq{BEGIN; SET LOCAL ROLE otp_link_inbox;
SELECT pg_backend_pid() || '|' || (otp_link.otp_link_consume_message('$sender\@c.us', '$body', 'wamid.c$c.i$i')->>'outcome');
COMMIT;
BEGIN; SET LOCAL ROLE otp_link_inbox;
SELECT pg_backend_pid() || '|' || (otp_link.otp_link_consume_message('$sender\@c.us', '$body', 'wamid.c$c.i$i')->>'outcome');
COMMIT;}
			: qq{BEGIN; SET LOCAL ROLE inbox_writer;
INSERT INTO public.inbox (chat_id, body, message_id) VALUES ('$sender\@c.us', '$body', 'wamid.c$c.i$i')
  RETURNING pg_backend_pid() || '|trigger';
COMMIT;});
	}
	run_all(@clients);
	for my $c (1 .. $nclients)
	{
		my $s = $clients[ $c - 1 ];
		my @lines = split(/\n/, $s->{res});
		my @outcomes = map { (split(/\|/, $_))[1] } @lines;
		my $want = $i % 2 ? 'verified duplicate' : 'trigger';
		expect($s->{error} eq '' && "@outcomes" eq $want, "c$c i$i consume: @outcomes (want $want) $s->{error}");
		for (@lines)
		{
			my ($pid) = split(/\|/, $_);
			$pids_of_client{$c}{$pid}++;
			$clients_of_pid{$pid}{$c}++;
		}
	}

	# status, then who we are after the transaction
	for my $c (1 .. $nclients)
	{
		my $l = $links{"$c.$i"};
		send_sql($clients[ $c - 1 ], qq{BEGIN; SET LOCAL ROLE otp_link_app;
SELECT pg_backend_pid() || '|' || (s->>'status') || '|' || (s->>'verified_chat_id') || '|' || (s->>'messages_received')
       || '|' || (s->'metadata'->>'client') || '.' || (s->'metadata'->>'iter') || '|' || (s->>'redeemed')
  FROM otp_link.otp_link_status('$l->{uuid}') s;
COMMIT;
SELECT current_user || '|' || session_user;});
	}
	run_all(@clients);
	for my $c (1 .. $nclients)
	{
		my $s = $clients[ $c - 1 ];
		my $sender = "4477009$c$i" . '0000';
		my ($st, $who) = split(/\n/, $s->{res});
		my ($pid, @f) = split(/\|/, $st // '');
		expect($s->{error} eq '' && join('|', @f) eq "verified|$sender\@c.us|1|$c.$i|false",
			"c$c i$i status: $st $s->{error}");
		expect(($who // '') eq 'web|web', "c$c i$i: back to role web after COMMIT ($who)");
		$pids_of_client{$c}{$pid}++ if $pid;
		$clients_of_pid{$pid}{$c}++ if $pid;
	}

	# the held reply carries the {link}: take it, read the token
	for my $c (1 .. $nclients)
	{
		send_sql($clients[ $c - 1 ], qq{BEGIN; SET LOCAL ROLE otp_link_app;
SELECT (r->>'link') || '|' || (r->>'event') || '|' || (r->>'to') || '|' || substring(r->>'body' from 'token=([A-Za-z0-9_-]+)\$')
  FROM jsonb_array_elements(otp_link.otp_link_replies_take(instance => '$inst{$c}{uuid}')->'replies') r;
COMMIT;});
	}
	run_all(@clients);
	my %token;
	for my $c (1 .. $nclients)
	{
		my $s = $clients[ $c - 1 ];
		my $l = $links{"$c.$i"};
		my $sender = "4477009$c$i" . '0000';
		my ($link, $event, $to, $token) = split(/\|/, $s->{res});
		expect($s->{error} eq '' && $s->{res} !~ /\n/ && $link eq $l->{uuid} && $event eq 'reply.success'
			  && $to eq $sender && length($token // '') == 43, "c$c i$i replies_take: $s->{res} $s->{error}");
		$token{$c} = $token // 'none';
	}

	# redeem, twice
	for my $c (1 .. $nclients)
	{
		send_sql($clients[ $c - 1 ], qq{BEGIN; SET LOCAL ROLE otp_link_app;
SELECT (r->>'result') || '|' || coalesce(r->>'uuid', '') FROM otp_link.otp_link_redeem('$token{$c}') r;
COMMIT;
BEGIN; SET LOCAL ROLE otp_link_app;
SELECT (r->>'result') || '|' || coalesce(r->>'uuid', '') FROM otp_link.otp_link_redeem('$token{$c}') r;
COMMIT;});
	}
	run_all(@clients);
	for my $c (1 .. $nclients)
	{
		my $s = $clients[ $c - 1 ];
		my $l = $links{"$c.$i"};
		expect($s->{error} eq '' && $s->{res} eq "redeemed|$l->{uuid}\nalready_redeemed|",
			"c$c i$i redeem: $s->{res} $s->{error}");
	}
}
# the rate limit counted every generate, whichever server connection ran it
for my $c (1 .. $nclients)
{
	send_sql($clients[ $c - 1 ], qq{BEGIN; SET LOCAL ROLE otp_link_app;
SELECT otp_link.otp_link_generate(instance => '$inst{$c}{uuid}', rate_key => 'user:$c');
COMMIT;});
}
run_all(@clients);
for my $c (1 .. $nclients)
{
	expect($clients[ $c - 1 ]{error} =~ /PT429/, "c$c: generate number " . ($iters + 1) . " is rate limited: $clients[$c - 1]{error}");
	q1($clients[ $c - 1 ], 'ROLLBACK;');
}
is(scalar(@bad), 0, "part 1: $checks checks of $nclients clients x $iters rounds through pgbouncer")
  or diag(join("\n", @bad));

my @server_pids = keys %clients_of_pid;
cmp_ok(scalar(@server_pids), '<=', 2, 'six clients were served by at most two server connections (' . scalar(@server_pids) . ')');
is(scalar(grep { keys %{ $clients_of_pid{$_} } >= 2 } @server_pids), scalar(@server_pids),
	'every server connection served several clients');
ok((grep { keys %{ $pids_of_client{$_} } >= 2 } keys %pids_of_client) >= 1,
	'clients moved between server connections from one transaction to the next');
is($node->safe_psql('postgres',
	"SELECT count(*) <= 2 FROM pg_stat_activity WHERE usename = 'web' AND backend_type = 'client backend'"),
	't', 'pg_stat_activity: at most two backends for the pooled role');

# every success callback, signed with its instance's secret
my $nlinks = $nclients * $iters;
ok(wait_until(sub { @{ received($rcv, qr{^/ok/c\d+/i\d+/success$}) } >= $nlinks }, 20),
	"the worker delivered the $nlinks success callbacks");
my %seen;
my @cb_bad;
for my $r (@{ received($rcv, qr{^/ok/c\d+/i\d+/}) })
{
	my ($c, $i) = $r->{path} =~ m{^/ok/c(\d+)/i(\d+)/success$};
	my $b = decode_json($r->{body});
	push @cb_bad, "$r->{path}: bad signature" unless verify_signature($inst{$c}{secret}, $r);
	push @cb_bad, "$r->{path}: uuid $b->{data}{uuid}" unless $b->{data}{uuid} eq $links{"$c.$i"}{uuid};
	$seen{"$c.$i"}++;
}
is(scalar(@cb_bad), 0, 'each callback is signed by its instance and names its link') or diag(join("\n", @cb_bad));
is(scalar(keys %seen), $nlinks, 'one callback per link');
is($node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE status = 'delivered') || '/' || count(*) FROM otp_link.deliveries"),
	(2 * $nlinks) . '/' . (2 * $nlinks), 'every callback and every taken reply is delivered');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.inbox'), $nclients * int($iters / 2),
	'the inbox kept its rows');
close_session($_) for @clients;

# ==============================================================================
# Part 2: per-backend caches, two clients on one server connection
# ==============================================================================
my $A = session('web', 'seq');
my $B = session('web', 'seq');
my $X = '6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f';
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.instances (id, phone, name, secret, options)
	VALUES ('$X', '15550200000', 'Alpha', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0', '{}')});

my $gen_sql = qq{BEGIN; SET LOCAL ROLE otp_link_app;
SELECT pg_backend_pid() || '|' || (otp_link.otp_link_generate(instance => '$X', expires => 600)->>'whatsapp_link');
COMMIT;};
sub gen_on
{
	my ($s) = @_;
	my ($res, $err) = q1($s, $gen_sql);
	my ($pid, $wa) = split(/\|/, $res // '', 2);
	return ($pid // '', $wa // '', $err);
}
sub admin_on
{
	my ($s, $sql) = @_;
	my ($res, $err) = q1($s, "BEGIN; SET LOCAL ROLE otp_link_admin;\nSELECT pg_backend_pid() || '|' || ($sql);\nCOMMIT;");
	my ($pid, $v) = split(/\|/, $res // '', 2);
	return ($pid // '', $v // '', $err);
}

my ($pa, $wa, $err) = gen_on($A);
like($wa, qr/text=Give\+me\+link\+to\+login\+at\+Alpha\+%5B/, 'A: generate with the name Alpha');
my ($pb, $v);
($pb, $v, $err) = admin_on($B, qq{otp_link.otp_link_instance_update('$X', name => 'Beta',
	options => '{"messages": {"prompt": "Sign in to {name}"}}')->>'name'});
is("$v$err", 'Beta', 'B: instance renamed and given a prompt');
is($pb, $pa, 'A and B share one server connection (the same backend pid)');
($pa, $wa, $err) = gen_on($A);
like($wa, qr/text=Sign\+in\+to\+Beta\+%5B/, 'A: generate sees the update at once (same backend, cached row location)');
is($pa, $pb, 'still the same backend');

# many updates in a row move the row around the page
for my $n (1 .. 30)
{
	admin_on($B, qq{otp_link.otp_link_instance_update('$X', name => 'Beta$n')->>'name'});
}
($pa, $wa, $err) = gen_on($A);
like($wa, qr/text=Sign\+in\+to\+Beta30\+%5B/, 'A: after 30 updates by B, the latest name');

($pb, $v, $err) = admin_on($B, "otp_link.otp_link_instance_delete('$X')::text");
is("$v$err", 'true', 'B: instance deleted');
($pa, $wa, $err) = gen_on($A);
like($err, qr/PT404/, 'A: generate for the deleted instance fails with PT404');
q1($A, 'ROLLBACK;');

# re-created with the same uuid and a new name, after VACUUM freed the old slot
$node->safe_psql('postgres', 'VACUUM otp_link.instances');
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.instances (id, phone, name, secret, options)
	VALUES ('$X', '15550200000', 'Gamma', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0', '{}')});
($pa, $wa, $err) = gen_on($A);
like($wa, qr/text=Give\+me\+link\+to\+login\+at\+Gamma\+%5B/, 'A: re-created instance (same uuid) seen with its new row');
is($pa, $pb, 'on the same backend');

# another instance takes the freed slot of X's old row (the location A's
# backend remembers for X)
my $old_ctid = $node->safe_psql('postgres', "SELECT ctid FROM otp_link.instances WHERE id = '$X'");
$node->safe_psql('postgres', qq{
	DELETE FROM otp_link.instances WHERE id = '$X';
	VACUUM otp_link.instances;
	INSERT INTO otp_link.instances (phone, name, secret) VALUES ('15550200001', 'Intruder', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0');
});
is($node->safe_psql('postgres', "SELECT ctid FROM otp_link.instances WHERE name = 'Intruder'"), $old_ctid,
	"the other instance's row is where X's row was ($old_ctid)");
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.instances (id, phone, name, secret, options)
	VALUES ('$X', '15550200000', 'Delta', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0', '{}')});
($pa, $wa, $err) = gen_on($A);
like($wa, qr/text=Give\+me\+link\+to\+login\+at\+Delta\+%5B/,
	"A: another instance in the old row's place is not taken for X");

# the extension dropped and re-created under the kept plans
my ($st1) = q1($A, qq{BEGIN; SET LOCAL ROLE otp_link_inbox;
SELECT otp_link.otp_link_consume_message('447700900999\@c.us', 'hi [AAAAAAAA]', 'wamid.before-drop')->>'outcome';
COMMIT;});
is($st1, 'unknown_code', 'A: consume before the extension is re-created');
$node->safe_psql('postgres', qq{
	DROP EXTENSION otp_link CASCADE;
	CREATE EXTENSION otp_link;
	INSERT INTO otp_link.instances (id, phone, name, secret, options)
	VALUES ('$X', '15550200000', 'Epsilon', 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0', '{}')});
($pa, $wa, $err) = gen_on($A);
like($wa, qr/text=Give\+me\+link\+to\+login\+at\+Epsilon\+%5B/, 'A: generate after DROP/CREATE EXTENSION (same backend)')
  or diag($err);
is($pa, $pb, 'on the same backend');
my ($code) = $wa =~ /%5B([A-Z]{8})%5D/;
my ($res2, $err2) = q1($A, qq{BEGIN; SET LOCAL ROLE otp_link_inbox;
SELECT otp_link.otp_link_consume_message('447700900999\@c.us', 'hi [$code]', 'wamid.before-drop')->>'outcome';
COMMIT;});
is("$res2$err2", 'verified',
	'A: consume after the re-create (kept plans re-planned; message ids start afresh)');
my ($res3, $err3) = q1($B, qq{BEGIN; SET LOCAL ROLE otp_link_admin;
SELECT count(*) FROM otp_link.links WHERE status = 'verified';
COMMIT;});
is("$res3$err3", '1', 'B: the new tables hold that one link');

# ==============================================================================
# Part 3: session state
# ==============================================================================
my ($r, $e) = q1($A, "BEGIN; SET LOCAL ROLE otp_link_app; SELECT current_user; COMMIT;");
($r, $e) = q1($B, "SELECT current_user || '|' || pg_backend_pid(); SELECT otp_link.otp_link_status('$X');");
like($r, qr/^web\|$pb$/, "B right after A's SET LOCAL ROLE on the same backend: current_user is web");
like($e, qr/42501/, 'B without SET ROLE cannot call otp_link functions (42501): no role leaked');
($r, $e) = q1($A, "SET otp_link.debug_codes = 'LEAKLEAK';");
like($e, qr/42501.*otp_link\.debug_codes/s, 'web cannot set otp_link.debug_codes (superuser only)');
($r, $e) = q1($A, "SHOW search_path; SHOW otp_link.token_ttl;");
is($r, "\"\$user\", public\n10min", 'the pooled backend runs with default settings');
close_session($_) for ($A, $B);

# a superuser's plain SET stays on the server connection for its next client
my $S1 = session('postgres', 'seq');
my $S2 = session('postgres', 'seq');
($r, $e) = q1($S1, "BEGIN; SET LOCAL otp_link.debug_codes = 'LOCALONE';
SELECT otp_link.otp_link_generate('$X')->>'code'; COMMIT;");
is($r, 'LOCALONE', 'SET LOCAL otp_link.debug_codes applies inside the transaction');
($r, $e) = q1($S2, "SELECT otp_link.otp_link_generate('$X')->>'code';");
isnt($r, 'LOCALONE', 'and not to the next client of that server connection');
($r, $e) = q1($S1, "SET otp_link.debug_codes = 'LEAKLEAK';");
($r, $e) = q1($S2, "SELECT otp_link.otp_link_generate('$X')->>'code';");
is($r, 'LEAKLEAK',
	"a session SET (without LOCAL) leaks to the next client of the server connection: otp_link needs none");
q1($S1, 'RESET otp_link.debug_codes;');
close_session($_) for ($S1, $S2);

my $log = slurp_file($node->logfile);
my @errors = grep { /otp_link worker.*(ERROR|WARNING|PANIC)|(PANIC|TRAP|server process .* was terminated)/ } split(/\n/, $log);
is(scalar(@errors), 0, 'no worker error, no backend crash') or diag(join("\n", @errors));

$bouncer->signal('INT');
$bouncer->finish;
$node->stop;
stop_receiver($rcv);
done_testing();
