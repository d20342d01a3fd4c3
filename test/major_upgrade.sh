#!/usr/bin/env bash
#
# test/major_upgrade.sh: move a database using otp_link from PostgreSQL 15
# to PostgreSQL 17 with pg_dump and pg_restore, with pending links and
# queued deliveries.
#
# pg_upgrade needs both majors' binaries side by side; here 15 is native
# (Debian 12) and 17 runs in the Debian trixie chroot of scripts/matrix, so
# the documented path, pg_dump/pg_restore, is what is tested
# (docs/packaging.md):
#
#  1. builds otp_link from the tree and installs it natively (make install);
#  2. starts a PostgreSQL 15 cluster as the postgres user in a temporary
#     folder (its own port on 127.0.0.1, its own socket folder) with
#     otp_link preloaded but otp_link.database naming another database, so
#     the worker does not deliver what the test database queues;
#  3. creates an instance whose links call back a receiver on 127.0.0.1
#     (test/receiver.py), generates three links and verifies the first:
#     its callback stays queued; the other two stay pending;
#  4. dumps the database with PostgreSQL 17's pg_dump (the newer pg_dump, as
#     PostgreSQL recommends) over TCP, from inside the trixie chroot
#     ($OTP_LINK_MATRIX_CACHE/trixie, made as scripts/matrix makes it), where
#     otp_link is built and installed for 17;
#  5. starts a PostgreSQL 17 cluster there with shared_preload_libraries =
#     'otp_link', otp_link.database = the database, allow_http and
#     allow_private_networks on, restores the dump as the superuser postgres;
#  6. checks: extversion 1.1, the queued callback of the first link arrives,
#     the two pending codes verify on 17 and their callbacks arrive.
#
# Runs as root.  Last line: "major-upgrade: N passed, M failed"; exits
# non-zero on a failure.  On exit stops both clusters and the receiver,
# kills what runs in the chroot, undoes the mounts, removes the temporary
# folder.
#
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
. test/chroot_lib.sh

if [ "$(id -u)" -ne 0 ]; then
	echo "test/major_upgrade.sh: needs root (make install, chroot, mount)" >&2
	echo "major-upgrade: 0 passed, 1 failed"
	exit 1
fi

old=15
new=17
suite=trixie
db=otp_app
pguser=postgres
oldbin=/usr/lib/postgresql/$old/bin
newbin=/usr/lib/postgresql/$new/bin
work=$(mktemp -d /tmp/otp_link-upgrade.XXXXXX)
chmod 755 "$work"
passed=0
failed=0
rcv_pid=""
old_started=0

finish() {
	if [ "$old_started" = 1 ]; then
		runuser -u "$pguser" -- "$oldbin/pg_ctl" -D "$work/pg$old" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	[ -z "$rcv_pid" ] || kill "$rcv_pid" 2>/dev/null || true
	chroot_cleanup	# the 17 cluster and anything else in the chroot
	rm -rf "$work"
	[ -z "${croot_src:-}" ] || rm -rf "$croot_src"
	[ -z "${cw_host:-}" ] || rm -rf "$cw_host"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }
check() {
	local name="$1"; shift
	if "$@"; then ok "$name"; else not_ok "$name"; fi
}
report() {
	echo "major-upgrade: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}
bail() { not_ok "$1"; report; exit 1; }
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_for SECONDS COMMAND...: until COMMAND succeeds
wait_for() {
	local end=$((SECONDS + $1)); shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.3
	done
}

# ---------------------------------------------------------------- 1. install on 15
copy_tree "$top" "$work/src"
if ! { make -s -C "$work/src" PG_CONFIG="$oldbin/pg_config" COPT=-Werror &&
	make -s -C "$work/src" PG_CONFIG="$oldbin/pg_config" install; } >"$work/build$old.log" 2>&1; then
	cat "$work/build$old.log"
	bail "build and install otp_link for PostgreSQL $old"
fi
ok "otp_link built and installed for PostgreSQL $old"

# ---------------------------------------------------------------- receiver
python3 "$top/test/receiver.py" --port-file "$work/rcv.port" --log "$work/rcv.log" &
rcv_pid=$!
wait_for 10 test -s "$work/rcv.port" || bail "receiver starts"
url="http://127.0.0.1:$(cat "$work/rcv.port")"
received() {	# received PATH-PREFIX: how many requests the receiver had
	python3 - "$work/rcv.log" "$1" <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1]):
    if json.loads(line)["path"].startswith(sys.argv[2]):
        n += 1
print(n)
PY
}

# ---------------------------------------------------------------- 2. cluster 15
port_old=$(free_port)
mkdir -p "$work/pg$old" "$work/sock$old"
chown "$pguser" "$work/pg$old" "$work/sock$old"
runuser -u "$pguser" -- "$oldbin/initdb" -D "$work/pg$old" -A trust -U postgres >"$work/initdb$old.log" 2>&1 ||
	{ cat "$work/initdb$old.log"; bail "initdb $old"; }
cat >>"$work/pg$old/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port_old
unix_socket_directories = '$work/sock$old'
shared_preload_libraries = 'otp_link'
# the worker serves another database: what $db queues stays queued
otp_link.database = 'postgres'
otp_link.allow_http = on
otp_link.allow_private_networks = on
CONF
old_started=1
runuser -u "$pguser" -- "$oldbin/pg_ctl" -D "$work/pg$old" -l "$work/sock$old/pg.log" -w start >/dev/null ||
	{ cat "$work/sock$old/pg.log" || true; bail "PostgreSQL $old starts"; }
sql_old() {
	runuser -u "$pguser" -- "$oldbin/psql" -h "$work/sock$old" -p "$port_old" -U postgres -d "$db" \
		-XAtq -v ON_ERROR_STOP=1 -c "$1"
}
runuser -u "$pguser" -- "$oldbin/createdb" -h "$work/sock$old" -p "$port_old" -U postgres "$db"

# ---------------------------------------------------------------- 3. links and queued deliveries
sql_old "CREATE EXTENSION otp_link" >/dev/null
inst=$(sql_old "SELECT otp_link.otp_link_instance_create('+44 7700 900123', 'upgrade')->>'uuid'")
codes=()
for i in 1 2 3; do
	codes+=("$(sql_old "SELECT otp_link.otp_link_generate(instance => '$inst', expires => 3600,
		callback => '{\"success\": \"$url/ok/cb$i/success\", \"failed\": \"$url/ok/cb$i/failed\"}')->>'code'")")
done
check "three links generated on $old (${codes[*]})" \
	test "$(sql_old "SELECT count(*) FROM otp_link.links WHERE status = 'pending'")" = 3
out=$(sql_old "SELECT otp_link.otp_link_consume_message('447700900123', 'hi [${codes[0]}]')->>'outcome'")
check "the first code verifies on $old (got '$out')" test "$out" = verified
queued=$(sql_old "SELECT count(*) FROM otp_link.deliveries WHERE status = 'queued' AND kind = 'callback'")
check "its callback is queued on $old ($queued)" test "$queued" -ge 1
sleep 2
check "nothing delivered on $old (the worker serves another database)" test "$(received /ok/)" = 0
# every delivery (a reply without a reply endpoint is "held") and its kind; the
# queued callbacks
webhook_ids=$(sql_old "SELECT string_agg(webhook_id || ':' || kind, ' ' ORDER BY id) FROM otp_link.deliveries")
queued_ids=$(sql_old "SELECT string_agg(webhook_id, ' ' ORDER BY id) FROM otp_link.deliveries WHERE status = 'queued' AND kind = 'callback'")

# ---------------------------------------------------------------- 4. the trixie chroot, otp_link for 17
mkdir -p "$cache"
exec 9>"$cache/$suite.lock"
if ! flock -n 9; then
	echo "major-upgrade: waiting for another run using $cache/$suite"
	flock 9
fi
dir="$cache/$suite"
chroot_debootstrap "$suite" "$dir" || bail "debootstrap $suite"
# the packages of scripts/matrix, so that its marker stays valid
pkgs="postgresql-$new postgresql-server-dev-$new libcurl4-openssl-dev pkg-config"
pkgs+=" libipc-run-perl python3 gcc make bc valgrind"
chroot_mount "$dir"
if [ "$(cat "$dir/.otp_link-packages" 2>/dev/null)" != "$pkgs" ]; then
	echo "major-upgrade: installing into $suite: $pkgs"
	chroot_quiet_postgres "$dir"
	echo "deb $(host_mirror) $suite main" >"$dir/etc/apt/sources.list"
	echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99otp-link"
	# shellcheck disable=SC2086
	{ in_chroot apt-get update -qq && in_chroot apt-get install -y -qq --no-install-recommends $pkgs; } \
		>"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log"; bail "packages in $suite"; }
	echo "$pkgs" >"$dir/.otp_link-packages"
fi
croot_src="$root/build/otp_link-upgrade.$$"
rm -rf "$croot_src"
copy_tree "$top" "$croot_src"
src="${croot_src#"$root"}"
if ! { in_chroot make -s -C "$src" PG_CONFIG="$newbin/pg_config" COPT=-Werror &&
	in_chroot make -s -C "$src" PG_CONFIG="$newbin/pg_config" install; } >"$work/build$new.log" 2>&1; then
	cat "$work/build$new.log"
	bail "build and install otp_link for PostgreSQL $new in $suite"
fi
ok "otp_link built and installed for PostgreSQL $new in $suite"

# pg_dump of 17 against the 15 server (same network namespace: 127.0.0.1)
cw=/tmp/otp_link-upgrade.$$
cw_host="$root$cw"
mkdir -p "$cw_host"
chmod 777 "$root$cw"
in_chroot runuser -u postgres -- "$newbin/pg_dump" -h 127.0.0.1 -p "$port_old" -U postgres \
	-Fc -f "$cw/$db.dump" "$db" 2>"$work/dump.log"
check "pg_dump ($new) of the $old database" test -s "$root$cw/$db.dump"
runuser -u "$pguser" -- "$oldbin/pg_ctl" -D "$work/pg$old" -m fast -w stop >/dev/null
old_started=0

# ---------------------------------------------------------------- 5. cluster 17, restore
port_new=$(free_port)
in_chroot runuser -u postgres -- "$newbin/initdb" -D "$cw/pg$new" -A trust -U postgres >"$work/initdb$new.log" 2>&1 ||
	{ cat "$work/initdb$new.log"; bail "initdb $new"; }
cat >>"$root$cw/pg$new/postgresql.conf" <<CONF
listen_addresses = ''
port = $port_new
unix_socket_directories = '$cw'
shared_preload_libraries = 'otp_link'
otp_link.database = '$db'
otp_link.allow_http = on
otp_link.allow_private_networks = on
CONF
in_chroot runuser -u postgres -- "$newbin/pg_ctl" -D "$cw/pg$new" -l "$cw/pg$new.log" -w start >/dev/null ||
	{ cat "$root$cw/pg$new.log" || true; bail "PostgreSQL $new starts"; }
sql_new() {
	in_chroot runuser -u postgres -- "$newbin/psql" -h "$cw" -p "$port_new" -U postgres -d "$db" \
		-XAtq -v ON_ERROR_STOP=1 -c "$1"
}
in_chroot runuser -u postgres -- "$newbin/createdb" -h "$cw" -p "$port_new" -U postgres "$db"
if in_chroot runuser -u postgres -- "$newbin/pg_restore" -h "$cw" -p "$port_new" -U postgres \
	--exit-on-error -d "$db" "$cw/$db.dump" >"$work/restore.log" 2>&1; then
	ok "pg_restore into PostgreSQL $new as the superuser postgres"
else
	cat "$work/restore.log"
	bail "pg_restore into PostgreSQL $new"
fi

# ---------------------------------------------------------------- 6. checks on 17
v=$(sql_new "SELECT extversion FROM pg_extension WHERE extname = 'otp_link'" || true)
check "extversion = 1.1 on $new (got '$v')" test "$v" = 1.1
check "the pending links came along" \
	test "$(sql_new "SELECT count(*) FROM otp_link.links WHERE status = 'pending'")" = 2
ids_new=$(sql_new "SELECT string_agg(webhook_id || ':' || kind, ' ' ORDER BY id) FROM otp_link.deliveries" || true)
check "the queued deliveries came along with their webhook-ids ($webhook_ids | $ids_new)" \
	test "$ids_new" = "$webhook_ids"
cb1_arrived() { [ "$(received /ok/cb1/success)" -ge 1 ]; }
if wait_for 30 cb1_arrived; then
	ok "the callback queued on $old is delivered by the worker on $new"
else
	tail -n 20 "$root$cw/pg$new.log"
	not_ok "the callback queued on $old is delivered by the worker on $new"
fi
check "it carries the webhook-id given on $old" python3 - "$work/rcv.log" "$queued_ids" <<'PY'
import json, sys
ids = set(sys.argv[2].split())
got = {json.loads(l)["headers"].get("webhook-id") for l in open(sys.argv[1])
       if json.loads(l)["path"].startswith("/ok/cb1/")}
sys.exit(0 if got and got <= ids else 1)
PY
for i in 1 2; do
	out=$(sql_new "SELECT otp_link.otp_link_consume_message('447700900123', 'hi [${codes[i]}]')->>'outcome'" || true)
	check "pending code $((i + 1)) from $old verifies on $new (got '$out')" test "$out" = verified
done
others_arrived() { [ $(($(received /ok/cb2/success) + $(received /ok/cb3/success))) -ge 2 ]; }
if wait_for 30 others_arrived; then
	ok "their callbacks are delivered on $new"
else
	tail -n 20 "$root$cw/pg$new.log"
	not_ok "their callbacks are delivered on $new"
fi
check "no delivery is left queued or dead on $new" \
	test "$(sql_new "SELECT count(*) FROM otp_link.deliveries WHERE kind = 'callback' AND status <> 'delivered'")" = 0

in_chroot runuser -u postgres -- "$newbin/pg_ctl" -D "$cw/pg$new" -m fast -w stop >/dev/null || true
report
