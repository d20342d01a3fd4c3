# shellcheck shell=bash
# examples/login/cluster.sh: a throw-away PostgreSQL cluster (sourced by run.sh
# and test.sh).
#
# cluster_start DIR   initdb in DIR/data, start it on a Unix socket in DIR
#                     (no TCP), load schema.sql; exports PGHOST, PGPORT,
#                     PGUSER and PGDATABASE for psql and the server.
# cluster_stop        stop it (fast; idempotent).
#
# PostgreSQL refuses to run as root, so as root the cluster runs as
# OTP_LINK_TEST_USER (default postgres).

OTP_LINK_TEST_USER="${OTP_LINK_TEST_USER:-postgres}"
if [ "$(id -u)" -eq 0 ]; then
	AS_USER=(runuser -u "$OTP_LINK_TEST_USER" --)
else
	AS_USER=()
fi
PG_BINDIR=$(pg_config --bindir)
CLUSTER_DIR=

cluster_start() {
	CLUSTER_DIR=$1
	local here
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	if [ ! -f "$(pg_config --sharedir)/extension/otp_link.control" ]; then
		echo "otp_link is not installed: run 'make && make install' at the top of the project first" >&2
		return 1
	fi
	[ "$(id -u)" -eq 0 ] && chown "$OTP_LINK_TEST_USER" "$CLUSTER_DIR"
	"${AS_USER[@]}" "$PG_BINDIR/initdb" -D "$CLUSTER_DIR/data" -A trust -U postgres \
		--no-sync >"$CLUSTER_DIR/initdb.log" 2>&1 ||
		{ cat "$CLUSTER_DIR/initdb.log" >&2; return 1; }
	cat >>"$CLUSTER_DIR/data/postgresql.conf" <<CONF
listen_addresses = ''
port = 5432
unix_socket_directories = '$CLUSTER_DIR'
shared_preload_libraries = 'otp_link'
otp_link.database = 'postgres'
fsync = off
CONF
	"${AS_USER[@]}" "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/postgres.log" \
		-w -t 30 start >/dev/null ||
		{ tail -n 30 "$CLUSTER_DIR/postgres.log" >&2; return 1; }
	export PGHOST="$CLUSTER_DIR" PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
	"$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -f "$here/schema.sql" >/dev/null
}

cluster_stop() {
	if [ -n "$CLUSTER_DIR" ] && [ -f "$CLUSTER_DIR/data/postmaster.pid" ]; then
		"${AS_USER[@]}" "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w -t 20 stop >/dev/null 2>&1 ||
			"${AS_USER[@]}" "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -m immediate stop >/dev/null 2>&1 || true
	fi
}
