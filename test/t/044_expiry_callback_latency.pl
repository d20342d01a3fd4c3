# Copyright: otp_link developers
#
# 044_expiry_callback_latency.pl: how soon the expiry callback of a link
# expired by the worker's own sweep is sent.  Found by the soak: such
# callbacks used to wait for the worker's next scheduled claim, up to
# otp_link.sweep_interval, whereas deliveries queued by a backend are sent
# at once (the wake-up at COMMIT).  The cause was in claim_and_send(): its
# "min(next_attempt_at)" query ran read-only on the transaction's first
# snapshot, so it still saw the rows the claim had just leased as due and
# unclaimed, and set next_claim = now + 1 s; the periodic claim slipped by
# 1 s after each claim.  Now the sweep resets next_claim and the query takes
# a fresh snapshot: a sweep's callbacks go out in the same round.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use OtpWorkerTest;
use OtpFaultTest;

my $rcv = start_receiver();
my $url = $rcv->{url};
my $interval = 3;
my $node = worker_node('explat', conf => "otp_link.sweep_interval = '${interval}s'\n");
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');
my $inst = make_instance($node, '+1 555 000 4046', undef);

my @delays;
for my $i (1 .. 4)
{
	my $l = make_link($node, $inst->{uuid}, "$url/ok/exp$i", expires => 1);
	ok(wait_until(sub { @{ received($rcv, qr{^/ok/exp$i/}) } == 1 }, $interval * 2 + 5),
		"expiry callback $i arrives");
	my $fin = $node->safe_psql('postgres',
		"SELECT extract(epoch FROM finished_at) FROM otp_link.links WHERE id = '$l->{uuid}'");
	my $r = received($rcv, qr{^/ok/exp$i/})->[0];
	push @delays, $r ? $r->{t} - $fin : 99;
}
note('sweep expiry -> callback at the receiver: ' . join(', ', map { sprintf('%.2f s', $_) } @delays));
cmp_ok((sort { $b <=> $a } @delays)[0], '<', $interval + 0.5, 'every expiry callback within sweep_interval');

is(scalar(grep { $_ >= 0.5 } @delays), 0, 'every expiry callback sent within 0.5 s of the sweep');

# for comparison: expired by a user message, queued by a backend
my $l = make_link($node, $inst->{uuid}, "$url/ok/bymsg", expires => 1);
sleep(1.1);
my $t0 = time();
is(consume($node, $l->{code}, 'wamid.late')->{outcome}, 'expired', 'a late message expires the link');
ok(wait_until(sub { @{ received($rcv, qr{^/ok/bymsg/}) } == 1 }, 5), 'its callback arrives');
cmp_ok(received($rcv, qr{^/ok/bymsg/})->[0]{t} - $t0, '<', 0.5, 'at once (wake-up at COMMIT)');

$node->stop;
stop_receiver($rcv);
done_testing();
