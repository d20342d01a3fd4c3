# Copyright: otp_link developers
#
# 070_prometheus.pl: the counters reach Prometheus (issue #14, item 5).
# Starts prometheus-postgres-exporter with contrib/prometheus/queries.yaml,
# as a role that is only in pg_monitor, and Prometheus scraping it every
# second, both on loopback ports; generates and consumes a link whose
# success callback the worker delivers to a local receiver; then asks
# Prometheus' HTTP API until the counters (links, messages, deliveries,
# HTTP attempts, the time-to-verify histogram) have moved.  Stops every
# process it started.  Skips when the Debian packages prometheus and
# prometheus-postgres-exporter are not installed (scripts/test installs
# them).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use OtpWorkerTest;

my $exporter_bin = '/usr/bin/prometheus-postgres-exporter';
my $prometheus_bin = '/usr/bin/prometheus';
plan skip_all => 'prometheus and prometheus-postgres-exporter are not installed '
  . '(Debian packages of those names; scripts/test installs them)'
  unless -x $exporter_bin && -x $prometheus_bin;

my $queries = "$FindBin::RealBin/../../contrib/prometheus/queries.yaml";
my $rcv = start_receiver();
my $node = worker_node('prom');
my @pids;

# spawn($log, @argv): start a process with its output in $log; its pid
sub spawn
{
	my ($log, @argv) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>', $log) or die "open $log: $!";
		open(STDERR, '>&', \*STDOUT) or die "dup: $!";
		exec(@argv) or die "exec $argv[0]: $!";
	}
	push @pids, $pid;
	return $pid;
}

sub stop_all
{
	kill 'TERM', @pids;
	waitpid($_, 0) for @pids;
	@pids = ();
}
END { stop_all(); }

$node->safe_psql('postgres', 'CREATE ROLE otp_scrape LOGIN IN ROLE pg_monitor');
my $inst = $node->safe_psql('postgres', qq{
	SELECT otp_link.otp_link_instance_create('201553730681', 'Prom',
	  '{"callback": {"success": "$rcv->{url}/ok/verified"}}')->>'uuid'});

my $dir = PostgreSQL::Test::Utils::tempdir();
my $eport = PostgreSQL::Test::Cluster::get_free_port();
my $pport = PostgreSQL::Test::Cluster::get_free_port();
{
	local $ENV{DATA_SOURCE_NAME} = 'host=' . $node->host . ' port=' . $node->port
	  . ' user=otp_scrape dbname=postgres sslmode=disable';
	spawn("$dir/exporter.log", $exporter_bin, '--disable-default-metrics',
		'--disable-settings-metrics', "--extend.query-path=$queries",
		"--web.listen-address=127.0.0.1:$eport");
}
open(my $fh, '>', "$dir/prometheus.yml") or die;
print $fh <<"EOC";
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: otp_link
    static_configs:
      - targets: ['127.0.0.1:$eport']
EOC
close($fh);
spawn("$dir/prometheus.log", $prometheus_bin, "--config.file=$dir/prometheus.yml",
	"--storage.tsdb.path=$dir/tsdb", "--web.listen-address=127.0.0.1:$pport");

my $http = HTTP::Tiny->new(timeout => 5);

# the exporter's own page: counters typed counter, the histogram a histogram
my $page = wait_until(sub {
		my $r = $http->get("http://127.0.0.1:$eport/metrics");
		$r->{success} && $r->{content} =~ /otp_link_time_to_verify_seconds_count/ ? $r->{content} : '';
	}, 20);
like($page, qr/^# TYPE otp_link_links_generated_total counter$/m, 'exporter: links_generated_total is a counter');
like($page, qr/^# TYPE otp_link_messages_total counter$/m, 'exporter: messages_total is a counter');
like($page, qr/^# TYPE otp_link_time_to_verify_seconds histogram$/m, 'exporter: time to verify is a histogram');
# (the exporter adds a label "server" to every series)
like($page, qr/^otp_link_time_to_verify_seconds_bucket\{[^}]*le="1800"[^}]*\} 0$/m,
	'exporter: its buckets carry le');
like($page, qr/^otp_link_time_to_verify_seconds_bucket\{[^}]*le="\+Inf"[^}]*\} 0$/m,
	'exporter: and the +Inf bucket');
like($page, qr/^otp_link_preloaded\{[^}]*\} 1$/m, 'exporter: gauges from otp_link_gauges()');

# query($promql): the value of its first series in Prometheus, or undef
sub query
{
	my ($q) = @_;
	my $r = $http->get("http://127.0.0.1:$pport/api/v1/query?query=" . $q =~ s/([^A-Za-z0-9_])/sprintf('%%%02X', ord($1))/ger);
	return undef unless $r->{success};
	my $res = decode_json($r->{content})->{data}{result};
	return @$res ? $res->[0]{value}[1] : undef;
}

my $before = wait_until(sub { query('otp_link_links_generated_total') }, 20);
is($before, '0', 'Prometheus scraped the exporter: no link generated yet');

my $code = decode_json($node->safe_psql('postgres',
	"SELECT otp_link.otp_link_generate('$inst')"))->{code};
is(decode_json($node->safe_psql('postgres',
	"SELECT otp_link.otp_link_consume_message('447700900999', '[$code]', instance => '$inst')"))->{outcome},
	'verified', 'a link generated and consumed');

my %want = (
	'otp_link_links_generated_total' => 1,
	'otp_link_links_verified_total' => 1,
	'otp_link_messages_total{outcome="verified"}' => 1,
	'otp_link_time_to_verify_seconds_count' => 1,
	'otp_link_time_to_verify_seconds_bucket{le="+Inf"}' => 1,
	'otp_link_deliveries_total{result="delivered"}' => 1,
	'otp_link_http_attempts_total{class="2xx"}' => 1,);
for my $q (sort keys %want)
{
	my $v = wait_until(sub { my $x = query($q); defined $x && $x >= $want{$q} ? $x : 0 }, 20);
	is($v, $want{$q}, "Prometheus: $q moved to $want{$q}");
}

stop_all();
is(scalar(@pids), 0, 'exporter and Prometheus stopped');
stop_receiver($rcv);
$node->stop;
done_testing();
