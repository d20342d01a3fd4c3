# Copyright: otp_link developers
#
# 025_http_guard.pl: the request-level guards of src/http.c, against a local
# receiver (test/receiver.py) on 127.0.0.1 only.
#
#  - Turning otp_link.allow_private_networks off (reload) refuses the next
#    request to a private address even when libcurl holds a kept-alive
#    connection to it (the check is on the connection's peer, not only when
#    a socket is opened), whatever the URL spelling (127.1, 0x7f000001,
#    userinfo, upper-case scheme).
#  - The response body is read up to 1 MiB and the transfer ends there: an
#    endless 200 is delivered, an endless 503 is retried as a 503.
#  - A URL or header value with control characters is never sent: the
#    delivery is dead with a clear last_error (no injected header, no
#    smuggled second request).
#  - A huge Retry-After waits at most one day instead of wrapping around.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use OtpWorkerTest;

my $rcv = start_receiver();
my $port = $rcv->{port};
my $url = $rcv->{url};
# http and private networks on (the test settings); short timeout, so that
# an endless body that is not cut off fails fast
# (every case here fails on purpose against one receiver: the circuit
# breaker, tested in 045, would pause it after 5 failures)
my $node = worker_node('guard', conf => "otp_link.timeout = '3s'\notp_link.breaker_failures = 1000\n");
my ($inst, $secret) = add_instance($node);

# final: status|attempts|last_http_status|last_error once not queued
sub final
{
	my ($id, $timeout) = @_;
	wait_until(sub {
		$node->safe_psql('postgres', "SELECT status FROM otp_link.deliveries WHERE id = $id") ne 'queued'
	}, $timeout // 30);
	return $node->safe_psql('postgres',
		"SELECT status || '|' || attempts || '|' || coalesce(last_http_status::text, '') || '|' || coalesce(last_error, '')"
		  . " FROM otp_link.deliveries WHERE id = $id");
}

sub set_private
{
	my ($v) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET otp_link.allow_private_networks = $v");
	$node->reload;
	sleep(1);    # the worker reads the file at its next round
}

# --- 1. tightening allow_private_networks applies to pooled connections ------
my $refusal = qr/^dead\|1\|\|destination address 127\.0\.0\.1 is not public and otp_link\.allow_private_networks is off$/;
my @forms = (
	[ "$url/ok/pool-plain",                       'plain' ],
	[ "http://127.1:$port/ok/pool-short",         '127.1' ],
	[ "http://0x7f000001:$port/ok/pool-hex",      '0x7f000001' ],
	[ "http://user\@127.0.0.1:$port/ok/pool-user", 'user@' ],
	[ "http://evil.com\@127.0.0.1:$port/ok/pool-at", 'evil.com@' ],
	[ "HTTP://127.0.0.1:$port/ok/pool-upper",     'HTTP://' ],
);
my $n = 0;
for my $f (@forms)
{
	my ($dest, $name) = @$f;
	$n++;
	set_private('on');
	like(final(add_delivery($node, $inst, "$url/ok/warm-$n")), qr/^delivered\|1\|200\|$/,
		"$name: a connection to 127.0.0.1 is warm");
	my $warm = received($rcv, qr{^/ok/warm-$n$})->[0]{peer_port};
	set_private('off');
	like(final(add_delivery($node, $inst, $dest)), $refusal,
		"$name: refused after allow_private_networks was turned off");
	my ($path) = $dest =~ m{:$port(/.*)$};
	my @got = @{ received($rcv, qr{^\Q$path\E$}) };
	is(scalar(@got), 0,
		"$name: nothing received" . (@got && $got[0]{peer_port} == $warm ? ' (it came on the kept-alive connection)' : ''));
}

# allow_http off applies to the pool as well (checked before libcurl)
set_private('on');
like(final(add_delivery($node, $inst, "$url/ok/warm-http")), qr/^delivered\|1\|200\|$/, 'http: warm');
$node->safe_psql('postgres', "ALTER SYSTEM SET otp_link.allow_http = off");
$node->reload;
sleep(1);
for my $dest ("$url/ok/http-lower", "HTTP://127.0.0.1:$port/ok/http-upper", "hTtP://127.0.0.1:$port/ok/http-mixed")
{
	like(final(add_delivery($node, $inst, $dest)),
		qr/^dead\|1\|\|destination url is not https:\/\/ and otp_link\.allow_http is off$/,
		"allow_http off: $dest refused");
}
is(scalar(@{ received($rcv, qr{^/ok/http-}) }), 0, 'allow_http off: nothing received');
$node->safe_psql('postgres', "ALTER SYSTEM SET otp_link.allow_http = on");
set_private('on');

# --- 2. the response body is cut off at 1 MiB; the status decides -----------
my $endless_ok = add_delivery($node, $inst, "$url/endless/200/a");
my $endless_503 = add_delivery($node, $inst, "$url/endless/503/b");
my $huge_ok = add_delivery($node, $inst, "$url/huge/200/c");
like(final($endless_ok, 40), qr/^delivered\|1\|200\|$/, 'endless chunked 200: delivered at the first attempt');
like(final($endless_503, 40), qr/^dead\|3\|503\|HTTP 503: x{100}/,
	'endless chunked 503: retried as a 503, body kept in last_error');
like(final($huge_ok, 40), qr/^delivered\|1\|200\|$/, '8 MiB Content-Length 200: delivered at the first attempt');
is(scalar(@{ received($rcv, qr{^/endless/200/}) }), 1, 'endless 200: sent once');

# --- 3. control characters in a URL or header value: never sent ---------------
my $id = $node->safe_psql('postgres', qq{
	INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload)
	VALUES (E'msg_inj\\r\\nX-Injected: 1', '$inst', 'callback', 'success', '$url/ok/inj-id', '{}')
	RETURNING id});
like(final($id), qr/^dead\|1\|\|the webhook-id header contains control characters; the request was not sent$/,
	'CR/LF in webhook-id: dead, not sent');

# a reply token that smuggles a second request
my $smuggle = 't0k\r\nContent-Length: 0\r\n\r\nPOST /smuggled HTTP/1.1\r\nHost: x\r\nX-Pad: ';
my ($sinst) = add_instance($node,
	qq({"reply_endpoint": {"type": "http", "url": "$url/ok/inj-token", "token": "$smuggle"}}),
	'15550009999');
$id = add_delivery($node, $sinst, '201553730661', kind => 'reply',
	payload => '{"to": "201553730661", "body": "hi"}');
like(final($id), qr/^dead\|1\|\|the Authorization header contains control characters; the request was not sent$/,
	'CR/LF in the reply token: dead, not sent');

$id = add_delivery($node, $inst, "$url/ok/inj-url\x7f");
like(final($id), qr/^dead\|1\|\|the destination url contains control characters; the request was not sent$/,
	'DEL in the URL: dead, not sent');
$id = $node->safe_psql('postgres', qq{
	INSERT INTO otp_link.deliveries (instance_id, kind, event, destination, payload)
	VALUES ('$inst', 'callback', 'success', E'$url/ok/inj-url2\\tx', '{}') RETURNING id});
like(final($id), qr/^dead\|1\|\|the destination url contains control characters; the request was not sent$/,
	'TAB in the URL: dead, not sent');

is(scalar(@{ received($rcv, qr{^/(ok/inj|smuggled)}) }), 0, 'nothing injected reached the receiver');
ok(!grep({ exists $_->{headers}{'x-injected'} } @{ received($rcv) }), 'no injected header anywhere');

# --- 4. Retry-After: a huge value is capped at one day, not wrapped -----------
# 18446744073709552 * 1000 wraps (mod 2^64) to 384 ms; 2^63 - 1 to -1000.
# libcurl 7.88 (Debian 12) hands the value through, which otp_link caps at a
# day; later versions (PostgreSQL 17's and 18's chroots) may shorten it
# themselves: either way the retry waits long, and no longer than a day.
for my $ra ('18446744073709552', '9223372036854775807')
{
	$id = add_delivery($node, $inst, "$url/retry-after/$ra/x");
	wait_until(sub {
		$node->safe_psql('postgres', "SELECT last_http_status IS NOT NULL FROM otp_link.deliveries WHERE id = $id") eq 't'
	}, 15);
	sleep(1);
	is($node->safe_psql('postgres',
		"SELECT status || '|' || attempts || '|' || last_http_status || '|' ||"
		  . " (next_attempt_at > now() + interval '1 minute' AND next_attempt_at < now() + interval '25 hours')"
		  . " FROM otp_link.deliveries WHERE id = $id"),
		'queued|1|429|true', "Retry-After: $ra waits long, at most one day, never a wrapped short delay");
}
# --- 5. A garbled status line is the server's fault: retried, not dead at once ----
# (issue 17, item 7: "HTTP/1.1 0 X" and "HTTP/1.1 199 X" failed as curl's
# "unsupported protocol", which the worker took for a bad URL)
for my $st ('0', '199')
{
	$id = add_delivery($node, $inst, "$url/garbled/$st/x");
	like(final($id), qr/^delivered\|3\|200\|/, "a garbled status line ($st) is retried, then delivered");
}

# larger than any int64: libcurl reports 0, i.e. no Retry-After; the schedule applies
$id = add_delivery($node, $inst, "$url/retry-after/99999999999999999999/x");
like(final($id), qr/^delivered\|2\|200\|/, 'Retry-After beyond int64: ignored, retried by the schedule');

$node->stop;
stop_receiver($rcv);
done_testing();
