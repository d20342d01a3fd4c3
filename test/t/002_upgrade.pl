# Copyright: otp_link developers
#
# 002_upgrade.pl: every upgrade path gives the same database as a fresh
# install.  For each script otp_link--A--B.sql in the tree, install A, run
# ALTER EXTENSION otp_link UPDATE TO 'B', and compare pg_dump --schema-only
# with a fresh CREATE EXTENSION otp_link VERSION 'B'.  Data created under
# A must survive the update.  With only otp_link--1.0.sql present it checks
# that the newest version installs and that the harness itself works.

use strict;
use warnings;
use File::Basename;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'otp_link'\n");
$node->start;

# the schema of otp_link in database $db, without comments on ordering noise
sub schema_of
{
	my ($db) = @_;
	my $out = $node->safe_psql($db, q{
		SELECT string_agg(d, E'\n' ORDER BY d) FROM (
			SELECT 'rel ' || c.relname || ' ' || c.relkind::text || ' ' ||
			       coalesce(array_to_string(c.relacl, ','), '') AS d
			  FROM pg_class c WHERE c.relnamespace = 'otp_link'::regnamespace
			UNION ALL
			SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
			       || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '')
			  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
			  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
			 WHERE c.relnamespace = 'otp_link'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
			UNION ALL
			SELECT 'idx ' || pg_get_indexdef(i.indexrelid)
			  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
			 WHERE c.relnamespace = 'otp_link'::regnamespace
			UNION ALL
			SELECT 'con ' || conname || ' ' || pg_get_constraintdef(oid)
			  FROM pg_constraint WHERE connamespace = 'otp_link'::regnamespace
			UNION ALL
			SELECT 'fun ' || p.oid::regprocedure || ' ' || pg_get_function_result(p.oid) || ' '
			       || p.prosecdef || ' ' || coalesce(array_to_string(p.proconfig, ','), '') || ' '
			       || coalesce(array_to_string(p.proacl, ','), '') || ' ' || p.provolatile::text
			  FROM pg_proc p WHERE p.pronamespace = 'otp_link'::regnamespace
		) s});
	return $out;
}

opendir(my $dh, '.') or die;
my @scripts = grep { /^otp_link--[0-9.]+\.sql$/ } readdir($dh);
closedir($dh);
opendir($dh, '.') or die;
my @updates = grep { /^otp_link--[0-9.]+--[0-9.]+\.sql$/ } readdir($dh);
closedir($dh);
ok(@scripts >= 1, 'at least one install script: ' . join(' ', sort @scripts));

my $default = `grep default_version otp_link.control`;
($default) = $default =~ /'([^']+)'/;
ok(-f "otp_link--$default.sql" || @updates, "default version $default is installable");

my $n = 0;
for my $u (sort @updates)
{
	my ($from, $to) = $u =~ /^otp_link--([0-9.]+)--([0-9.]+)\.sql$/;
	$n++;
	$node->safe_psql('postgres', "CREATE DATABASE up$n; CREATE DATABASE fresh$n");
	$node->safe_psql("up$n", "CREATE EXTENSION otp_link VERSION '$from'");
	# a row in every table: an instance, links pending and verified, a
	# processed message id, a sender's unknown-code count, queued and held
	# deliveries
	my $inst = $node->safe_psql("up$n",
		"SELECT otp_link.otp_link_instance_create('201553730661', 'Upgrade')->>'uuid'");
	my $gen = $node->safe_psql("up$n",
		"SELECT (r->>'uuid') || ' ' || (r->>'code') FROM otp_link.otp_link_generate('$inst',
		   callback => '{\"success\": \"https://app.example/cb\"}') r");
	my ($link, $code) = split / /, $gen;
	my $gen2 = $node->safe_psql("up$n",
		"SELECT (r->>'uuid') || ' ' || (r->>'code') FROM otp_link.otp_link_generate('$inst',
		   callback => '{\"success\": \"https://app.example/cb\"}') r");
	my ($link2, $code2) = split / /, $gen2;
	$node->safe_psql("up$n", qq{
		SELECT otp_link.otp_link_consume_message('447700900001', 'hi [$code2]', 'wamid.before');
		SELECT otp_link.otp_link_consume_message('447700900002', '[NOSUCHAA]', 'wamid.guess1');
	});
	# click-through (1.1): the library must not need the click columns of
	# links on the 1.0 schema; an instance's click_url waits for the update
	$node->safe_psql("up$n", "SELECT otp_link.otp_link_instance_update('$inst',
		options => '{\"click_url\": \"https://c.example/o/{uuid}\"}')");
	is($node->safe_psql("up$n", "SELECT otp_link.otp_link_generate('$inst') ? 'click_link'"),
		'f', "$from: generate works, without click link, before the update");
	my $counts_sql = q{SELECT format('%s %s %s %s %s',
		(SELECT count(*) FROM otp_link.instances), (SELECT count(*) FROM otp_link.links),
		(SELECT count(*) FROM otp_link.messages_seen), (SELECT count(*) FROM otp_link.senders),
		(SELECT count(*) FROM otp_link.deliveries WHERE status IN ('queued', 'held')))};
	my $before = $node->safe_psql("up$n", $counts_sql);
	like($before, qr/^1 3 2 1 [1-9]/, "$from: a row in every table ($before)");

	# a webhook format added by an administrator, where the table exists
	my $fmt_sql = q{INSERT INTO otp_link.webhook_formats (name, messages, sender, text, message_id)
		VALUES ('custom_gw', '$.msg', '$.from', '$.text', '$.id')};
	my $has_formats = $node->safe_psql("up$n",
		"SELECT to_regclass('otp_link.webhook_formats') IS NOT NULL") eq 't';
	$node->safe_psql("up$n", $fmt_sql) if $has_formats;

	$node->safe_psql("up$n", "ALTER EXTENSION otp_link UPDATE TO '$to'");
	$node->safe_psql("fresh$n", "CREATE EXTENSION otp_link VERSION '$to'");
	is(schema_of("up$n"), schema_of("fresh$n"), "$from -> $to equals a fresh $to");
	is($node->safe_psql("up$n", $counts_sql), $before, "every row survives the update to $to");
	is($node->safe_psql("up$n", "SELECT otp_link.otp_link_status('$link')->>'status'"),
		'pending', "a link made under $from survives the update to $to");
	is($node->safe_psql("up$n",
		"SELECT otp_link.otp_link_consume_message('447700900003', 'hi [$code]', 'wamid.after')->>'outcome'"),
		'verified', "a link made under $from verifies after the update");
	is($node->safe_psql("up$n",
		"SELECT otp_link.otp_link_consume_message('447700900001', 'hi [$code2]', 'wamid.before')->>'outcome'"),
		'duplicate', "a message id seen under $from is still a duplicate");
	is($node->safe_psql("up$n", q{
		SELECT otp_link.otp_link_consume_message('447700900002', '[NOSUCHAB]', 'wamid.guess2')->>'outcome';
		SELECT unknown_codes FROM otp_link.senders WHERE chat_id = '447700900002@c.us'}),
		"unknown_code\n2", "a sender's count from $from goes on");
	is($node->safe_psql("up$n",
		"SELECT count(*) FROM otp_link.deliveries WHERE status = 'queued' AND link_id = '$link'"),
		'1', "the new verification queued its callback");

	# the webhook formats: the built-in ones as in a fresh install, and one
	# added by an administrator verifies a link
	my $formats_sql = q{SELECT string_agg(format('%s %s %s %s %s %s %s %s %s %s', name, batches, messages,
		sender, text, message_id, receiver, text_filter, address_prefix, builtin), E'\n' ORDER BY name)
		FROM otp_link.webhook_formats WHERE builtin};
	is($node->safe_psql("up$n", $formats_sql), $node->safe_psql("fresh$n", $formats_sql),
		"the built-in webhook formats after the update to $to equal a fresh $to");
	$node->safe_psql("up$n", $fmt_sql) unless $has_formats;
	my $gen3 = $node->safe_psql("up$n",
		"SELECT otp_link.otp_link_generate('$inst')->>'code'");
	is($node->safe_psql("up$n", qq{SELECT otp_link.otp_link_consume_webhook(
		'{"msg": {"from": "447700900004", "text": "[$gen3]", "id": "gw.1"}}', 'custom_gw')->'results'->0->>'outcome'}),
		'verified', "a webhook format in the table after the update to $to verifies a link");
	my $click = $node->safe_psql("up$n",
		"SELECT (r->>'uuid') || ' ' || (r->>'click_link') || ' ' || (r->>'whatsapp_link')
		   FROM otp_link.otp_link_generate('$inst') r");
	my ($cl_uuid, $cl_link, $cl_wa) = split / /, $click;
	is($cl_link, "https://c.example/o/$cl_uuid", "after the update to $to generate returns the click link");
	is($node->safe_psql("up$n", "SELECT otp_link.otp_link_open('$cl_uuid')"), $cl_wa,
		'otp_link_open answers the whatsapp_link');
	is($node->safe_psql("up$n", "SELECT (otp_link.otp_link_stats()->>'links_clicked')"), '1',
		'the click is in the stats');
}
note("upgrade paths checked: $n");

# the harness itself: two fresh installs of the default version compare equal,
# and a changed schema is noticed
$node->safe_psql('postgres', 'CREATE DATABASE a; CREATE DATABASE b');
$node->safe_psql('a', 'CREATE EXTENSION otp_link');
$node->safe_psql('b', 'CREATE EXTENSION otp_link');
is(schema_of('a'), schema_of('b'), 'two fresh installs compare equal');
$node->safe_psql('b', 'ALTER TABLE otp_link.links ADD COLUMN extra int');
isnt(schema_of('a'), schema_of('b'), 'a schema difference is detected');

$node->stop;
done_testing();
