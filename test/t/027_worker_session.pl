# Copyright: otp_link developers
#
# 027_worker_session.pl: the worker's session does not inherit cluster-wide
# defaults that would break it (issue 17, item 5).  With
# default_transaction_isolation = serializable and
# default_transaction_read_only = on in postgresql.conf, the worker still
# claims, sends and records deliveries: it pins read committed and
# read-write for its own transactions, as it pins search_path.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OtpWorkerTest;

my $rcv = start_receiver();
my $node = worker_node('session');
my ($inst) = add_instance($node);

# cluster-wide defaults an operator may set; ordinary sessions must opt out
# (PGOPTIONS) to write, the worker must not care
$node->append_conf('postgresql.conf', qq{
default_transaction_isolation = 'serializable'
default_transaction_read_only = on
});
$node->restart;
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');
is($node->safe_psql('postgres', 'SHOW default_transaction_read_only'), 'on',
	'ordinary sessions are read-only by default');

local $ENV{PGOPTIONS} = '-c default_transaction_read_only=off -c default_transaction_isolation=serializable';
my $ids = add_delivery($node, $inst, "$rcv->{url}/ok/pinned", n => 20);
my @ids = split /\n/, $ids;
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM otp_link.deliveries WHERE status = 'delivered' AND id IN (" . join(',', @ids) . ')') == 20
}, 15), 'all 20 deliveries recorded delivered');
is(scalar(@{ received($rcv, qr{^/ok/pinned}) }), 20, 'each sent once');
my @errors = grep { /otp_link worker.*(ERROR|WARNING)|read-only transaction|could not serialize/ }
  split(/\n/, slurp_file($node->logfile));
is(scalar(@errors), 0, 'no worker error in the log') or diag(join("\n", @errors));

stop_receiver($rcv);
$node->stop;
done_testing();
