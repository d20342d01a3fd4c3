#!/usr/bin/env bash
#
# test/soak/run.sh: a bounded soak of otp_link's worker and SQL API.
# Not part of "make installcheck".
#
#   test/soak/run.sh [seconds]     load for that long (default 300)
#   test/soak/run.sh --smoke       20 s of load, the same checks
#
# Builds and installs the extension (as root, or through sudo), starts a
# throw-away cluster with the worker in /tmp (as $OTP_LINK_TEST_USER,
# default postgres, when run as root), a flaky receiver on 127.0.0.1
# (test/soak/flaky_receiver.py: 500s, 429 with Retry-After, timeouts longer
# than otp_link.timeout, late answers, dropped and reset connections) and
# pgbench clients calling the functions of test/soak/soak.sql: links
# generated, verified (also through the Cloud API webhook walker), the same
# message_id delivered twice, many senders at once on one code, unknown
# codes, answers after expiry, wrong senders on phone-bound links,
# cancellations, links left to expire.  The retry schedule is in
# milliseconds so that retries and dead deliveries happen within the run,
# and the circuit breaker pauses a destination for 250 ms (doubling up to
# 8 s) instead of 30 s: it trips on this receiver, whose failures come in runs.
#
# Then it stops the load, waits (at most SOAK_DRAIN_S, default 120 s) for the
# queue to drain and every overdue link to be expired, exports the tables and
# runs test/soak/check.py: a summary table, and exit status 1 on any
# violation.  Traffic goes to 127.0.0.1 only.
#
# Environment: SOAK_RATE (pgbench transactions/s, default 50), SOAK_CLIENTS
# (default 6), SOAK_DRAIN_S (default 120), SOAK_KEEP=1 keeps the work
# directory (it is kept anyway when a check fails), SOAK_SEED.
#
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$(pwd)
. scripts/lib.sh

duration=300
case "${1:-}" in
	--smoke) duration=20 ;;
	'') ;;
	*[!0-9]*) echo "usage: $0 [seconds | --smoke]" >&2; exit 2 ;;
	*) duration=$1 ;;
esac
[ "$duration" -ge 5 ] && [ "$duration" -le 3600 ] || { echo "$0: seconds must be 5..3600" >&2; exit 2; }
rate=${SOAK_RATE:-50}
clients=${SOAK_CLIENTS:-6}
drain_max=${SOAK_DRAIN_S:-120}
seed=${SOAK_SEED:-$RANDOM}

# the worker's settings for the run: six attempts, retries within seconds
schedule='0, 100ms, 250ms, 500ms, 1s, 2s'
attempts_max=6
timeout_ms=1000

say() { printf '%s soak: %s\n' "$(date +%T)" "$*"; }

say "building and installing otp_link"
build_and_install "$top"
# other trees may install theirs into the same PostgreSQL: note which
# library ran (checked again at the end)
lib="$(pg_config --pkglibdir)/otp_link.so"
lib_md5() { md5sum <"$1" | cut -d' ' -f1; }
lib_built=$(lib_md5 "$top/otp_link.so")
[ "$(lib_md5 "$lib")" = "$lib_built" ] || { echo "soak: $lib is not this tree's build" >&2; exit 1; }

bindir=$(pg_config --bindir)
work=$(mktemp -d /tmp/otp_link-soak.XXXXXX)
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown "$OTP_LINK_TEST_USER" "$work"
cp test/soak/flaky_receiver.py test/soak/soak.sql test/soak/check.py "$work/"
receiver=
keep=${SOAK_KEEP:-0}

cleanup() {
	set +e
	[ -n "$receiver" ] && kill "$receiver" 2>/dev/null && wait "$receiver" 2>/dev/null
	[ -f "$work/data/postmaster.pid" ] &&
		"${AS_USER[@]}" "$bindir/pg_ctl" -D "$work/data" -m fast -t 30 stop >/dev/null 2>&1
	if [ "$keep" = 1 ]; then
		echo "soak: work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'keep=1; exit 1' INT TERM HUP

say "cluster in $work (seed $seed)"
"${AS_USER[@]}" "$bindir/initdb" -D "$work/data" -A trust -U postgres >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >>"$work/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
max_connections = 40
shared_buffers = 128MB
synchronous_commit = on
log_line_prefix = '%m [%p] %b '
shared_preload_libraries = 'otp_link'
otp_link.database = 'postgres'
otp_link.allow_http = on
otp_link.allow_private_networks = on
otp_link.retry_schedule = '$schedule'
otp_link.timeout = '${timeout_ms}ms'
otp_link.connect_timeout = '500ms'
otp_link.sweep_interval = '1s'
otp_link.breaker_pause = '250ms'
CONF
"${AS_USER[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w -t 60 start >/dev/null

sql() { "${AS_USER[@]}" "$bindir/psql" -X -q -h "$work" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -At "$@"; }

# (as the calling user: it needs no privilege, and its pid is ours to stop)
python3 "$work/flaky_receiver.py" --port-file "$work/receiver.port" \
	--log "$work/receiver.jsonl" --secrets "$work/secrets.json" --seed "$seed" \
	--timeout-ms "$timeout_ms" --lifetime $((duration + drain_max + 600)) &
receiver=$!
for _ in $(seq 100); do [ -s "$work/receiver.port" ] && break; sleep 0.05; done
[ -s "$work/receiver.port" ] || { echo "soak: the receiver did not start" >&2; exit 1; }
rcv="http://127.0.0.1:$(cat "$work/receiver.port")"

sql -c "CREATE EXTENSION otp_link"
sql -v rcv="$rcv" -f "$work/soak.sql" >/dev/null
sql -c "SELECT jsonb_object_agg(tag, secret) FROM soak.instances" >"$work/secrets.json.tmp"
chmod 644 "$work/secrets.json.tmp"
mv "$work/secrets.json.tmp" "$work/secrets.json"	# the receiver re-reads it

for s in gen verify race dup unknown late wrong cancel; do
	echo "SELECT soak.$s();" >"$work/$s.pgbench"
done
chmod 644 "$work"/*.pgbench

say "load: $duration s, $clients clients, $rate tx/s; receiver $rcv; schedule '$schedule', timeout ${timeout_ms}ms"
t_load=$(date +%s.%N)
pgbench_rc=0
timeout $((duration + 120)) "${AS_USER[@]}" "$bindir/pgbench" -n -h "$work" -p "$port" -U postgres \
	-c "$clients" -j 2 -T "$duration" -R "$rate" -P 30 \
	-f "$work/gen.pgbench@10" -f "$work/verify.pgbench@8" -f "$work/race.pgbench@4" \
	-f "$work/dup.pgbench@3" -f "$work/unknown.pgbench@2" -f "$work/late.pgbench@2" \
	-f "$work/wrong.pgbench@1" -f "$work/cancel.pgbench@1" \
	postgres >"$work/pgbench.out" 2>&1 || pgbench_rc=$?
t_stop=$(date +%s.%N)
grep -E '^progress' "$work/pgbench.out" | sed 's/^/  /' || true

say "load stopped; waiting at most $drain_max s for the queue to drain"
drained=0
deadline=$(( $(date +%s) + drain_max ))
while [ "$(date +%s)" -lt "$deadline" ]; do
	left=$(sql -c "SELECT (SELECT count(*) FROM otp_link.deliveries WHERE status = 'queued')
	             + (SELECT count(*) FROM otp_link.links WHERE status = 'pending' AND expires_at <= now())")
	if [ "$left" = 0 ]; then drained=1; break; fi
	sleep 0.5
done
t_drained=$(date +%s.%N)
sleep 1	# answers still being written by the receiver (late faults)

wpid=$(sql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'otp_link worker'")
wcpu='?'
if [ -n "$wpid" ] && [ -r "/proc/$wpid/stat" ]; then
	wcpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f s", ($14 + $15) / hz}' "/proc/$wpid/stat")
fi

say "exporting"
x="$work/export"
mkdir -p "$x"; chmod 777 "$x"
sql <<SQL
\copy (SELECT d.id, d.webhook_id, d.link_id, d.kind, d.event, d.destination, d.status, d.attempts, d.last_http_status, left(regexp_replace(coalesce(d.last_error, ''), '\s+', ' ', 'g'), 120) AS last_error, i.tag, i.reply_mode, extract(epoch FROM d.created_at) AS created, extract(epoch FROM d.delivered_at) AS delivered, d.locked_until IS NOT NULL AS leased FROM otp_link.deliveries d JOIN soak.instances i ON i.id = d.instance_id ORDER BY d.id) TO '$x/deliveries.csv' CSV HEADER
\copy (SELECT l.id, l.status, l.reason, l.chat_id, s.cb_mode, s.flavour, s.tag, s.user_phone, (l.callbacks ? 'expired') AS has_expired_cb, l.link_url IS NOT NULL AS has_link_url, l.messages_received, extract(epoch FROM l.expires_at) AS expires, extract(epoch FROM l.finished_at) AS finished, (l.status = 'pending' AND l.expires_at <= now()) AS overdue FROM otp_link.links l JOIN soak.links s ON s.id = l.id ORDER BY s.n) TO '$x/links.csv' CSV HEADER
\copy (SELECT n, script, link, message_id, chat_id, outcome, uuid, result->>'original_outcome' AS original FROM soak.outcomes ORDER BY n) TO '$x/outcomes.csv' CSV HEADER
\copy (SELECT metric, value FROM otp_link.stats) TO '$x/stats.csv' CSV HEADER
SQL
sql -c "SELECT count(*) FROM otp_link.links l WHERE NOT EXISTS (SELECT 1 FROM soak.links s WHERE s.id = l.id)" >"$x/orphan_links"

grep -E 'otp_link worker (ERROR|WARNING|FATAL|PANIC)' "$work/server.log" >"$x/worker_errors.log" || true
grep -E 'PANIC|terminated by signal|server process .* was terminated' "$work/server.log" >"$x/crashes.log" || true
grep -E '^[0-9-]+ [0-9:.]+ \S+ \[[0-9]+\] client backend (ERROR|FATAL)' "$work/server.log" >"$x/client_errors.log" || true

lib_same=1
[ "$(lib_md5 "$lib")" = "$lib_built" ] || lib_same=0

cat >"$x/run.json" <<JSON
{"duration": $duration, "rate": $rate, "clients": $clients, "seed": "$seed",
 "schedule": "$schedule", "attempts_max": $attempts_max, "timeout_ms": $timeout_ms,
 "load_s": $(printf '%.3f' "$(echo "$t_stop - $t_load" | bc)"), "drain_s": $(printf '%.3f' "$(echo "$t_drained - $t_stop" | bc)"),
 "drained": $drained, "pgbench_rc": $pgbench_rc, "worker_cpu": "$wcpu", "library_unchanged": $lib_same,
 "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "pg": "$("$bindir/postgres" --version)",
 "commit": "$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')"}
JSON

say "checking"
status=0
python3 "$work/check.py" --export "$x" --receiver-log "$work/receiver.jsonl" \
	--pgbench "$work/pgbench.out" | tee "$work/summary.txt" || status=$?
if [ -n "${SOAK_SUMMARY:-}" ]; then
	cp "$work/summary.txt" "$SOAK_SUMMARY"
fi
[ "$status" -eq 0 ] || keep=1
exit "$status"
