# Copyright: otp_link developers
#
# OtpFaultTest.pm: helpers of the fault TAP tests (test/t/04x_*.pl), on top
# of OtpWorkerTest.pm: a free loopback port, the flaky receiver
# (test/soak/flaky_receiver.py) started on a given port (so that it can be
# "down" and come back on the same address), its log, and links made
# through the SQL API.

package OtpFaultTest;

use strict;
use warnings;
use Exporter 'import';
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep);
use PostgreSQL::Test::Utils;

our @EXPORT = qw(free_port start_flaky stop_flaky flaky_received
  make_instance make_link consume by_webhook_id);

my $testdir = dirname(abs_path(__FILE__));

# free_port(): a TCP port on 127.0.0.1 nobody listens on (now)
sub free_port
{
	my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
		Proto => 'tcp', Listen => 1, ReuseAddr => 1)
	  or die "socket: $!";
	my $port = $s->sockport;
	close $s;
	return $port;
}

# start_flaky(port => P, secrets => {tag => secret}, timeout_ms => T):
# test/soak/flaky_receiver.py on 127.0.0.1:P (0: any); returns a hash with
# port, url, log, pid.  Paths are /<tag>/<mode>/..., see the receiver.
sub start_flaky
{
	my (%opt) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $r = { log => $opt{log} // "$dir/requests.jsonl", portfile => "$dir/port" };
	my @secrets;
	if ($opt{secrets})
	{
		$r->{secrets} = "$dir/secrets.json";
		open(my $fh, '>', $r->{secrets}) or die "open: $!";
		print $fh encode_json($opt{secrets});
		close $fh;
		@secrets = ('--secrets', $r->{secrets});
	}
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		exec('python3', "$testdir/soak/flaky_receiver.py",
			'--port', $opt{port} // 0, '--port-file', $r->{portfile},
			'--log', $r->{log}, '--timeout-ms', $opt{timeout_ms} // 1000,
			'--lifetime', 300, @secrets)
		  or die "exec: $!";
	}
	$r->{pid} = $pid;
	for (1 .. 200)
	{
		last if -s $r->{portfile};
		sleep(0.05);
	}
	die "flaky receiver did not start" unless -s $r->{portfile};
	$r->{port} = PostgreSQL::Test::Utils::slurp_file($r->{portfile});
	$r->{url} = "http://127.0.0.1:$r->{port}";
	return $r;
}

sub stop_flaky
{
	my ($r) = @_;
	kill 'TERM', $r->{pid};
	waitpid($r->{pid}, 0);
}

# flaky_received($log_path): the receiver's log lines (array of hashes)
sub flaky_received
{
	my ($log) = @_;
	my @out;
	return \@out unless -e $log;
	open(my $fh, '<', $log) or die "open $log: $!";
	while (my $line = <$fh>)
	{
		next unless $line =~ /\n\z/;
		push @out, decode_json($line);
	}
	close $fh;
	return \@out;
}

# by_webhook_id($requests): { webhook-id => number of requests }
sub by_webhook_id
{
	my ($reqs) = @_;
	my %n;
	$n{ $_->{wid} // $_->{headers}{'webhook-id'} // '' }++ for @$reqs;
	return \%n;
}

# make_instance($node, $phone, $reply_url_or_undef): an instance
# through otp_link_instance_create; replies posted to $reply_url when one
# is given, else held.  Returns the decoded result (uuid, secret, ...).
sub make_instance
{
	my ($node, $phone, $reply_url) = @_;
	my $opts = $reply_url
	  ? qq('{"reply_endpoint": {"type": "http", "url": "$reply_url"}}')
	  : q('{}');
	return decode_json($node->safe_psql('postgres',
		"SELECT otp_link.otp_link_instance_create('$phone', 'fault', $opts)"));
}

# make_link($node, $instance_uuid, $callback_base, expires => s): a link
# whose callbacks go to "$callback_base/success" and "/failed"; returns the
# generate result (uuid, code, ...).
sub make_link
{
	my ($node, $inst, $cb, %opt) = @_;
	my $expires = $opt{expires} // 600;
	return decode_json($node->safe_psql('postgres', qq{
		SELECT otp_link.otp_link_generate(instance => '$inst', expires => $expires,
			callback => '{"success": "$cb/success", "failed": "$cb/failed"}')}));
}

# consume($node, $code, $message_id, $sender): the outcome's JSON text
sub consume
{
	my ($node, $code, $mid, $sender) = @_;
	$sender //= '447700900123';
	return decode_json($node->safe_psql('postgres',
		"SELECT otp_link.otp_link_consume_message('$sender\@c.us', 'login [$code] please', '$mid')"));
}

1;
