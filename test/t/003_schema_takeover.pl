# Copyright: otp_link developers
#
# 003_schema_takeover.pl: a role with CREATE on the database cannot become
# superuser through schema otp_link (issue 11, defect 1).
#
# Version 1.0's install script adopts a schema otp_link that a role created
# beforehand.  That role can later rename it and put a look-alike schema in
# its place, whose tables and functions the worker (a superuser) and the
# SECURITY DEFINER functions would use.  Here mallory does exactly that on a
# 1.0 install; the worker must refuse to serve the database (1.0 ran
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
$node->safe_psql('postgres', "CREATE EXTENSION otp_link VERSION '1.0'");
is($node->safe_psql('postgres',
	"SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'otp_link'"),
	'mallory', '1.0 adopted the schema mallory created');

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
}, extra_params => [ '-U', 'mallory' ]);

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
my ($ret, $out, $err) = $node->psql('postgres', "ALTER EXTENSION otp_link UPDATE TO '1.1'");
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
