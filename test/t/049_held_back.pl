# Copyright: otp_link developers
#
# 049_held_back.pl: a destination that loses the larger share of a fast
# destination while it has more requests in flight than its own share is
# claimed for again as soon as they finish (issue #16).
#
# On 08c3453 the first slow answer made it "not fast"; the claim that
# answer triggered gave it nothing (it was above its share) and cleared
# nothing that would trigger another, and the worker, having left it out
# of its next-due time, waited for a commit or the sweep
# (otp_link.sweep_interval, here an hour) before claiming its other
# deliveries: in the benchmark 72,513 due callbacks waited 4 minutes.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OtpWorkerTest;

my $rcv = start_receiver();
my $url = $rcv->{url};
# share 2, fast destinations up to 8, the fast ones' extra 4: a fast
# destination is given 6 at once
my $node = worker_node('heldback',
	conf => "otp_link.destination_concurrency = 2\n"
	  . "otp_link.max_concurrency = 16\n"
	  . "otp_link.sweep_interval = '1h'\n");
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');
my ($inst) = add_instance($node);

sub delivered
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE destination LIKE '$url/$prefix%' AND status = 'delivered'");
}

# quick answers: the destination is fast
add_delivery($node, $inst, "$url/ok/warm/", n => 3);
ok(wait_until(sub { delivered('ok/warm/') == 3 }, 10), 'three quick answers');

# 20 at once, claimed oldest first: the first answers after 300 ms (and
# makes the destination slow), the next five after 1 s, the rest at once
my $t0 = time();
$node->safe_psql('postgres', qq{
	INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload,
		next_attempt_at)
	SELECT 'msg_hb_' || g, '$inst', 'callback', 'success',
		   CASE WHEN g = 1 THEN '$url/slow/300/hb/' WHEN g <= 6 THEN '$url/slow/1000/hb/'
				ELSE '$url/ok/hb/' END || g,
		   '{"type": "otp_link.verified"}', now() - (30 - g) * interval '1 ms'
	  FROM generate_series(1, 20) g});
my $done = wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE webhook_id LIKE 'msg\\_hb\\_%' AND status = 'delivered'") == 20
}, 15);
my $took = time() - $t0;
note(sprintf('20 delivered in %.2f s (the slowest answers after 1 s)', $took));
ok($done, 'all 20 delivered');
cmp_ok($took, '<', 5, 'without waiting for a commit or the sweep');

$node->stop;
stop_receiver($rcv);
done_testing();
