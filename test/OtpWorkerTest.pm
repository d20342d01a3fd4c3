# Copyright: otp_link developers
#
# OtpWorkerTest.pm: helpers shared by the worker TAP tests (test/t/02x_*.pl):
# a cluster with the worker, the local HTTP receiver (test/receiver.py),
# test instances and deliveries inserted directly, polling with a deadline,
# and Standard Webhooks signature verification.

package OtpWorkerTest;

use strict;
use warnings;
use Exporter 'import';
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use JSON::PP;
use MIME::Base64 qw(encode_base64 decode_base64);
use Digest::SHA qw(hmac_sha256_base64);
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our @EXPORT = qw(worker_node start_receiver stop_receiver received
  add_instance add_delivery wait_until verify_signature worker_pid);

my $testdir = dirname(abs_path(__FILE__));

# worker_node(name, preload => 1, conf => "...", create => 1, init => {}): a started
# cluster with the test settings (http and loopback allowed, fast retries).
sub worker_node
{
	my ($name, %opt) = @_;
	my $preload = exists $opt{preload} ? $opt{preload} : 1;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opt{init} // {} });
	my $conf = '';
	$conf .= "shared_preload_libraries = 'otp_link'\n" if $preload;
	$conf .= "otp_link.allow_http = on\notp_link.allow_private_networks = on\n"
	  unless $opt{safe_defaults};
	$conf .= "otp_link.retry_schedule = '0, 200ms, 400ms'\n";
	$conf .= "otp_link.timeout = '5s'\notp_link.connect_timeout = '2s'\n";
	$conf .= "log_min_messages = debug1\n" if $opt{debug};
	$conf .= $opt{conf} if $opt{conf};
	$node->append_conf('postgresql.conf', $conf);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION otp_link')
	  unless exists $opt{create} && !$opt{create};
	return $node;
}

# start_receiver(): starts test/receiver.py; returns a hash with port, url,
# log and pid.
sub start_receiver
{
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $r = { log => "$dir/requests.jsonl", portfile => "$dir/port" };
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		exec('python3', "$testdir/receiver.py", '--port-file', $r->{portfile},
			'--log', $r->{log})
		  or die "exec: $!";
	}
	$r->{pid} = $pid;
	for (1 .. 200)
	{
		last if -s $r->{portfile};
		sleep(0.05);
	}
	die "receiver did not start" unless -s $r->{portfile};
	$r->{port} = PostgreSQL::Test::Utils::slurp_file($r->{portfile});
	$r->{url} = "http://127.0.0.1:$r->{port}";
	return $r;
}

sub stop_receiver
{
	my ($r) = @_;
	kill 'TERM', $r->{pid};
	waitpid($r->{pid}, 0);
}

# received($r, $path_regex): the requests logged so far (array of hashes),
# optionally only those whose path matches.
sub received
{
	my ($r, $re) = @_;
	my @out;
	return \@out unless -e $r->{log};
	open(my $fh, '<', $r->{log}) or die "open $r->{log}: $!";
	while (my $line = <$fh>)
	{
		next unless $line =~ /\n\z/;    # a line being written
		my $rec = decode_json($line);
		push @out, $rec if !defined $re || $rec->{path} =~ $re;
	}
	close $fh;
	return \@out;
}

# add_instance($node, options_json): inserts an instance directly; returns
# (id, secret).
sub add_instance
{
	my ($node, $options, $phone) = @_;
	$options //= '{}';
	$phone //= '15550001111';
	my $secret = 'whsec_' . encode_base64(join('', map { chr(int(rand(256))) } 1 .. 24), '');
	my $id = $node->safe_psql('postgres',
		"INSERT INTO otp_link.instances (phone, secret, options) VALUES ('$phone', '$secret', '$options') RETURNING id");
	return ($id, $secret);
}

# add_delivery($node, instance, destination, %opt): inserts a queued
# delivery directly; returns its id.  kind => 'reply' for replies.
sub add_delivery
{
	my ($node, $inst, $dest, %opt) = @_;
	my $kind = $opt{kind} // 'callback';
	my $n = $opt{n} // 1;
	my $payload = $opt{payload}
	  // '{"type": "otp_link.verified", "timestamp": "2025-12-29T17:44:55+00:00", "data": {"uuid": "a0b5e14e-95da-4bd4-9e2a-071661244bef", "status": "verified"}}';
	return $node->safe_psql('postgres', qq{
		INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload)
		SELECT 'msg_' || md5(random()::text || g), '$inst', '$kind', 'success', '$dest', '$payload'::jsonb
		  FROM generate_series(1, $n) g
		RETURNING id});
}

# wait_until(sub, timeout_s): polls sub every 50 ms until it returns true or
# the deadline passes; returns the last value.
sub wait_until
{
	my ($cond, $timeout) = @_;
	$timeout //= 20;
	my $deadline = time() + $timeout;
	my $v;
	while (1)
	{
		$v = $cond->();
		return $v if $v || time() > $deadline;
		sleep(0.05);
	}
}

# verify_signature($secret, $request): whether the webhook-signature header
# is the Standard Webhooks v1 signature of id.timestamp.body.
sub verify_signature
{
	my ($secret, $req) = @_;
	my $h = $req->{headers};
	return 0 unless $h->{'webhook-id'} && $h->{'webhook-timestamp'} && $h->{'webhook-signature'};
	(my $b64 = $secret) =~ s/^whsec_//;
	my $key = decode_base64($b64);
	my $sig = hmac_sha256_base64("$h->{'webhook-id'}.$h->{'webhook-timestamp'}.$req->{body}", $key);
	$sig .= '=' while length($sig) % 4;
	return grep { $_ eq "v1,$sig" } split(/ /, $h->{'webhook-signature'});
}

# worker_pid($node): pid of the otp_link worker, or '' when none runs.
sub worker_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'otp_link worker'");
}

1;
