# Copyright: otp_link developers
#
# 001_install.pl: the extension installs in a fresh cluster, is already at
# its newest version after CREATE, survives pg_dump/restore with its data,
# and drops cleanly (leaving only the cluster-wide roles and the empty
# schema that CREATE EXTENSION made).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('install');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'otp_link'\n");
$node->start;

my $objects_before = $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_class WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)");

$node->safe_psql('postgres', 'CREATE EXTENSION otp_link');
is($node->safe_psql('postgres',
	"SELECT extversion FROM pg_extension WHERE extname = 'otp_link'"),
	'1.1', 'installed at version 1.1 (the default)');
is($node->safe_psql('postgres',
	"SELECT nspname FROM pg_namespace n JOIN pg_extension e ON e.extnamespace = n.oid WHERE extname = 'otp_link'"),
	'otp_link', 'lives in schema otp_link');

# ALTER EXTENSION UPDATE from the install script: nothing to do
my ($ret, $out, $err) = $node->psql('postgres', 'ALTER EXTENSION otp_link UPDATE');
is($ret, 0, 'ALTER EXTENSION UPDATE succeeds');
like($err, qr/already installed|version "1.0" of extension/, 'already at the newest version');

# relocating is refused
($ret, $out, $err) = $node->psql('postgres', 'CREATE SCHEMA elsewhere; ALTER EXTENSION otp_link SET SCHEMA elsewhere');
isnt($ret, 0, 'the extension is not relocatable');

# user data survives pg_dump / restore
my $inst = $node->safe_psql('postgres',
	"SELECT otp_link.otp_link_instance_create('201553730661', 'Dump')->>'uuid'");
$node->safe_psql('postgres', "SELECT otp_link.otp_link_generate('$inst')");
$node->safe_psql('postgres', q{INSERT INTO otp_link.webhook_formats (name, messages, sender, text)
	VALUES ('dumped_gw', '$.m', '$.from', '$.text')});
my $dump = $node->basedir . '/dump.sql';
$node->command_ok([ 'pg_dump', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-q', '-f', $dump, '-d', $node->connstr('restored') ],
	'restore into a new database');
is($node->safe_psql('restored',
	"SELECT (SELECT count(*) FROM otp_link.instances) || '/' || (SELECT count(*) FROM otp_link.links)"),
	'1/1', 'instances and links restored');
is($node->safe_psql('restored',
	"SELECT otp_link.otp_link_generate('$inst')->>'status'"),
	'pending', 'the restored copy generates links');
is($node->safe_psql('restored',
	"SELECT string_agg(name || ':' || builtin, ',' ORDER BY name) FROM otp_link.webhook_formats"),
	'dumped_gw:false,green_api:true,twilio:true,waha:true,whatsapp_cloud:true',
	'an added webhook format is restored, the built-in ones are made by CREATE EXTENSION');

# drop cleanly: no table, function, type or schema left behind
$node->safe_psql('postgres', 'DROP EXTENSION otp_link');
# CREATE EXTENSION made schema otp_link for us (the control file names it),
# so PostgreSQL does not count it as a member: it stays, empty
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_class WHERE relnamespace = 'otp_link'::regnamespace"), '0', 'schema otp_link left empty');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_proc WHERE proname LIKE 'otp_link%'"), '0', 'functions dropped');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_class WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)"),
	$objects_before, 'no relation left behind');
is($node->safe_psql('postgres',
	"SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname LIKE 'otp_link%'"),
	'otp_link_admin,otp_link_app,otp_link_inbox', 'roles stay (they are cluster-wide)');

# and installs again over the remaining roles and schema
$node->safe_psql('postgres', 'CREATE EXTENSION otp_link');
is($node->safe_psql('postgres', "SELECT otp_link.otp_link_whatsapp_url('201553730661', 'hi', 'ABCDEFGH')"),
	'https://wa.me/201553730661?text=hi+%5BABCDEFGH%5D+-+DO+NOT+CHANGE+THIS+MESSAGE',
	'reinstalled and working');

$node->stop;
done_testing();
