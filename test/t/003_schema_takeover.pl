# Copyright: otp_link developers
#
# 003_schema_takeover.pl: a role with CREATE on the database cannot become
# superuser through schema otp_link (issue 11, defect 1).
#
# Version 1.0's install script adopts a schema otp_link that a role created
# beforehand.  That role can later rename it and put a look-alike schema in
# its place, whose tables and functions the worker (a superuser) and the
# SECURITY DEFINER functions would use.  Here mallory does exactly that on a
# 1.0 install (set up here as the released 1.0 script left it); the worker
# and the SECURITY DEFINER functions must refuse the swapped schema (1.0 ran
# mallory's trigger as superuser), and ALTER EXTENSION ... UPDATE must refuse
# until a superuser owns the schema again.  A fresh CREATE EXTENSION (1.1)
# refuses mallory's schema outright (sql/attacks.sql).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/..";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OtpWorkerTest;

my $node = worker_node('takeover', create => 0,
	conf => "otp_link.sweep_interval = '200ms'\n");
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	GRANT CREATE ON DATABASE postgres TO mallory;
});
$node->safe_psql('postgres', 'CREATE SCHEMA otp_link', extra_params => [ '-U', 'mallory' ]);
my ($ret, $out, $err) = $node->psql('postgres', "CREATE EXTENSION otp_link VERSION '1.0'");
isnt($ret, 0, "even 1.0's install script now refuses mallory's schema");
like($err, qr/schema "otp_link" is owned by role mallory, which is not a superuser/, 'and says why');

# an install made with the released 1.0 script adopted it: set that state up
$node->safe_psql('postgres', q{
	DROP SCHEMA otp_link;
	CREATE EXTENSION otp_link VERSION '1.0';
	ALTER SCHEMA otp_link OWNER TO mallory;
});
is($node->safe_psql('postgres',
	"SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'otp_link'"),
	'mallory', 'a 1.0 install whose schema mallory owns');

# mallory swaps the schema for her own, whose deliveries table has a trigger
# and whose otp_link_expire() makes her superuser when a superuser runs it
$node->safe_psql('postgres', q{
	ALTER SCHEMA otp_link RENAME TO otp_link_old;
	CREATE SCHEMA otp_link;
	CREATE FUNCTION otp_link.pwn() RETURNS trigger LANGUAGE plpgsql
		AS $$ BEGIN ALTER ROLE mallory SUPERUSER; RETURN NULL; END $$;
	CREATE TABLE otp_link.deliveries (id bigint, status text, locked_until timestamptz);
	CREATE TRIGGER pwn AFTER UPDATE ON otp_link.deliveries
		FOR EACH STATEMENT EXECUTE FUNCTION otp_link.pwn();
	CREATE FUNCTION otp_link.otp_link_expire() RETURNS integer LANGUAGE plpgsql
		AS $$ BEGIN ALTER ROLE mallory SUPERUSER; RETURN 0; END $$;
	CREATE TABLE otp_link.instances (id uuid PRIMARY KEY, phone text, name text, options jsonb);
	INSERT INTO otp_link.instances VALUES ('00000000-0000-0000-0000-000000000001', '201553730661', 'x', '{}');
	CREATE TABLE otp_link.links (id uuid);
	CREATE TRIGGER pwn AFTER INSERT ON otp_link.links
		FOR EACH STATEMENT EXECUTE FUNCTION otp_link.pwn();
	-- the application keeps calling otp_link.otp_link_generate: now mallory's
	-- wrapper around the real (SECURITY DEFINER) function
	CREATE FUNCTION otp_link.otp_link_generate(instance uuid) RETURNS jsonb LANGUAGE sql
		AS $$ SELECT otp_link_old.otp_link_generate(instance) $$;
}, extra_params => [ '-U', 'mallory' ]);

# the SECURITY DEFINER functions refuse to work in a schema a superuser
# does not own (1.0's functions inserted into mallory's links as superuser)
($ret, $out, $err) = $node->psql('postgres',
	"SELECT otp_link.otp_link_generate('00000000-0000-0000-0000-000000000001')");
isnt($ret, 0, 'generate refuses');
like($err, qr/schema "otp_link" is not owned by a superuser/, 'because of the schema owner');
($ret, $out, $err) = $node->psql('postgres',
	"SELECT otp_link_old.otp_link_consume_message('447700900001', '[ABCDEFGH]')");
like($err, qr/schema "otp_link" is not owned by a superuser/, 'so does consume');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"),
	'f', 'mallory is not superuser after the calls');

# a restarted worker looks at the extension afresh
$node->restart;
ok(wait_until(sub { worker_pid($node) ne '' }, 10), 'worker runs');
ok(wait_until(sub {
	slurp_file($node->logfile) =~ /otp_link worker does not serve database "postgres": schema "otp_link" is not the extension's schema/
}, 10), 'the worker refuses the look-alike schema, with a WARNING');
sleep(1);    # five more sweeps
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"),
	'f', 'mallory did not become superuser');

# the update to 1.1 refuses a schema a superuser does not own
($ret, $out, $err) = $node->psql('postgres', "ALTER EXTENSION otp_link UPDATE TO '1.1'");
isnt($ret, 0, 'ALTER EXTENSION UPDATE refuses');
like($err, qr/schema "otp_link" is owned by role mallory, which is not a superuser/, 'and says why');

# the DBA repairs it: mallory's schema goes, the real one comes back to a
# superuser; the update then works and the worker serves again
$node->safe_psql('postgres', q{
	DROP SCHEMA otp_link CASCADE;
	ALTER SCHEMA otp_link_old RENAME TO otp_link;
	ALTER SCHEMA otp_link OWNER TO CURRENT_USER;
	ALTER EXTENSION otp_link UPDATE TO '1.1';
});
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'otp_link'"),
	'1.1', 'updated once a superuser owns the schema');
my $rcv = start_receiver();
my ($inst) = add_instance($node);
my $id = add_delivery($node, $inst, "$rcv->{url}/ok/after");
ok(wait_until(sub { @{ received($rcv, qr{^/ok/after}) } == 1 }, 10),
	'the worker delivers again');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"),
	'f', 'mallory is still not superuser');

stop_receiver($rcv);
$node->stop;
done_testing();
