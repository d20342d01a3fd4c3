# Copyright: otp_link developers
#
# 026_secret_rotation.pl: rotating an instance's signing secret with a grace
# period (issue 13, item 9).  During the grace period every callback carries
# two signatures in webhook-signature (Standard Webhooks allows several,
# space-separated): one with the new secret, one with the old, so receivers
# can switch secrets without dropping callbacks.  Checked with the
# standardwebhooks npm library (test/webhooks/verify.js), as a receiver
# would.  Without a grace period the cut-over is immediate, as in 1.0.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use File::Copy;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OtpWorkerTest;

# the verifier needs Node.js and npm (the host's; the PostgreSQL 17 and 18
# chroots of scripts/matrix have neither: the rotation is the same C there)
plan skip_all => 'node and npm are not installed'
  unless grep { -x "$_/npm" && -x "$_/node" } split(/:/, $ENV{PATH});

# the verifier, installed from the npm registry into a scratch folder
my $npmdir = PostgreSQL::Test::Utils::tempdir('webhooks');
copy("$FindBin::RealBin/../webhooks/$_", "$npmdir/$_") or die "copy $_: $!"
  for qw(package.json package-lock.json verify.js);
{
	local $ENV{npm_config_cache} = "$npmdir/.npm";
	local $ENV{HOME} = $npmdir;
	my ($out, $err);
	IPC::Run::run([ 'npm', 'ci', '--no-audit', '--no-fund', '--prefix', $npmdir ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(180))
	  or BAIL_OUT("npm ci for test/webhooks failed: $err");
}

# verify(secret, request): what standardwebhooks says of request with secret
sub verify
{
	my ($secret, $req) = @_;
	my $in = encode_json({ secret => $secret, headers => $req->{headers}, body => $req->{body} }) . "\n";
	my ($out, $err);
	IPC::Run::run([ 'node', "$npmdir/verify.js" ], '<', \$in, '>', \$out, '2>', \$err)
	  or die "node verify.js: $err";
	chomp $out;
	return $out;
}

my $rcv = start_receiver();
my $node = worker_node('rotation');
my $created = decode_json($node->safe_psql('postgres',
	"SELECT otp_link.otp_link_instance_create('201553730661', 'Rot')"));
my ($inst, $s1) = ($created->{uuid}, $created->{secret});

# send(path): queue a callback to path, return the request as received
sub send_one
{
	my ($path) = @_;
	add_delivery($node, $inst, "$rcv->{url}/ok/$path");
	wait_until(sub { @{ received($rcv, qr{^/ok/\Q$path\E$}) } == 1 }, 10)
	  or die "callback $path did not arrive";
	return received($rcv, qr{^/ok/\Q$path\E$})->[0];
}

my $r = send_one('before');
is(verify($s1, $r), 'ok', 'before rotation: the secret verifies');
unlike($r->{headers}{'webhook-signature'}, qr/ /, 'one signature');

# rotate with a grace period: both secrets verify
my $rot = decode_json($node->safe_psql('postgres',
	"SELECT otp_link.otp_link_instance_update('$inst', rotate_secret => true, grace => '1 hour')"));
my $s2 = $rot->{secret};
isnt($s2, $s1, 'a new secret');
ok(defined $rot->{previous_secret_valid_until}, 'the result says until when the old one is used');
$r = send_one('grace');
like($r->{headers}{'webhook-signature'}, qr/^v1,\S+ v1,\S+$/, 'two signatures during the grace period');
is(verify($s2, $r), 'ok', 'grace: the new secret verifies');
is(verify($s1, $r), 'ok', 'grace: the old secret still verifies');

# rotate without grace: only the newest verifies, at once
$rot = decode_json($node->safe_psql('postgres',
	"SELECT otp_link.otp_link_instance_update('$inst', rotate_secret => true)"));
my $s3 = $rot->{secret};
$r = send_one('cut');
is(verify($s3, $r), 'ok', 'no grace: the new secret verifies');
like(verify($s2, $r), qr/^fail/, 'no grace: the previous secret does not');
like(verify($s1, $r), qr/^fail/, 'no grace: the first secret does not');

# a grace period ends
$node->safe_psql('postgres',
	"SELECT otp_link.otp_link_instance_update('$inst', rotate_secret => true, grace => '1 second')");
my $s4 = decode_json($node->safe_psql('postgres',
	"SELECT json_build_object('s', secret) FROM otp_link.instances WHERE id = '$inst'"))->{s};
sleep(1.5);
$r = send_one('after');
is(verify($s4, $r), 'ok', 'after the grace period: the new secret verifies');
like(verify($s3, $r), qr/^fail/, 'after the grace period: the old one no longer does');

# bad grace values are refused at the door
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT otp_link.otp_link_instance_update('$inst', rotate_secret => true, grace => '-1 hour')");
like($err, qr/grace must be between 0 and 7 days/, 'a negative grace period is refused');
($ret, $out, $err) = $node->psql('postgres',
	"SELECT otp_link.otp_link_instance_update('$inst', grace => '1 hour')");
like($err, qr/grace applies only with rotate_secret/, 'grace without rotation is refused');

stop_receiver($rcv);
$node->stop;
done_testing();
