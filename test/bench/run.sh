#!/usr/bin/env bash
#
# test/bench/run.sh: every benchmark of otp_link, in one command.
#
#   test/bench/run.sh                  full mode: 10 million stored links
#   BENCH_SCALE=small test/bench/run.sh    1 million stored links (~12 min; full ~16 min)
#
# Installs what is missing (scripts/setup: nginx-light, wrk, valgrind,
# curl), builds and installs the extension (make && make install), starts a
# throw-away cluster and a local nginx ("return 200;") and receiver
# (receiver.py) on 127.0.0.1, runs the benchmarks of docs/performance.md,
# prints a table and appends the machine, date, command and table to the
# results log test/bench/results.md.  Everything it starts is stopped at
# the end.
#
# Settings (environment):
#   BENCH_SCALE=full|small  links stored for the scale test (10M | 1M)
#   BENCH_T=15              seconds per pgbench throughput run
#   BENCH_PROFILE=1         profile generate/consume with callgrind (0: skip)
#   BENCH_PHASES=1          profile the worker during a 20,000 burst (perf) and
#                           split a delivery's µs by phase (0: skip)
#   BENCH_FLOW_RATE=500     logins/s of the whole-flow benchmark
#   BENCH_FLOW_SECONDS=60   its duration
#   BENCH_DOC=test/bench/results.md   where results are appended ("" : nowhere)
#   BENCH_SKIP_BUILD=1      use the extension already installed
#   BENCH_KEEP=1            keep the work directory (cluster, logs, profiles)
#   BENCH_EXPLAIN=1         diagnosis: load pg_stat_statements and auto_explain
#                           (plans of statements over 50 ms, nested ones
#                           included, in the server log); not for the figures
#   PG_CONFIG               the pg_config of the PostgreSQL 15 to use
#
# As root the cluster runs as OTP_LINK_TEST_USER (default postgres).
#
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$(pwd)
. scripts/lib.sh

BENCH_SCALE=${BENCH_SCALE:-full}
BENCH_T=${BENCH_T:-15}
BENCH_PROFILE=${BENCH_PROFILE:-1}
BENCH_PHASES=${BENCH_PHASES:-1}
BENCH_DOC=${BENCH_DOC-test/bench/results.md}
export PG_CONFIG=${PG_CONFIG:-pg_config}
case "$BENCH_SCALE" in
	full) big=10000000 ;;
	small) big=1000000 ;;
	*) echo "run.sh: BENCH_SCALE must be full or small" >&2; exit 2 ;;
esac
command_line="env BENCH_SCALE=$BENCH_SCALE BENCH_T=$BENCH_T${BENCH_FLOW_RATE:+ BENCH_FLOW_RATE=$BENCH_FLOW_RATE}${BENCH_FLOW_SECONDS:+ BENCH_FLOW_SECONDS=$BENCH_FLOW_SECONDS} test/bench/run.sh"

t_start=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# processes already busy on the machine (they share the CPUs with the benchmarks)
busy_before=$(top -b -n 2 -d 1 -o %CPU 2>/dev/null |
	awk '/^top -/ {n++; h = 0} /^ *PID / {h = 1; next} n == 2 && h && $9 + 0 > 20 {printf "%s%s (pid %s, %s%% CPU)", (k++ ? ", " : ""), $12, $1, $9}')
say() { printf '[%4ds] %s\n' "$(( $(date +%s) - t_start ))" "$*" >&2; }

# ---------------------------------------------------------------- setup
say "installing what is missing (scripts/setup nginx-light wrk valgrind curl)"
scripts/setup nginx-light wrk valgrind curl
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
	say "building and installing otp_link (make && make install)"
	build_and_install "$top"
fi
bindir=$("$PG_CONFIG" --bindir)
libdir=$("$PG_CONFIG" --pkglibdir)
so_sum=$(md5sum "$libdir/otp_link.so" | cut -d' ' -f1)

w=$(mktemp -d /tmp/otp_link-bench.XXXXXX)
chmod 755 "$w"
[ "$(id -u)" -eq 0 ] && chown "$OTP_LINK_TEST_USER" "$w"
results="$w/results.md"
: >"$results"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pgport=$(free_port)
nport=$(free_port)
rport=$(free_port)

pg_started=0
nginx_started=0
rpid=""
worker_stopped=""
bg_pids=()

cleanup() {
	set +e
	[ -n "$worker_stopped" ] && kill -CONT "$worker_stopped" 2>/dev/null
	for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
	[ -n "$rpid" ] && kill "$rpid" 2>/dev/null
	if [ "$nginx_started" = 1 ] && [ -f "$w/nginx/nginx.pid" ]; then
		kill -QUIT "$(cat "$w/nginx/nginx.pid")" 2>/dev/null
	fi
	if [ "$pg_started" = 1 ]; then
		"${AS_USER[@]}" "$bindir/pg_ctl" -D "$w/data" -m immediate stop >/dev/null 2>&1
	fi
	wait 2>/dev/null
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "run.sh: work directory kept: $w" >&2
	else
		rm -rf "$w"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- cluster
ram_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
sb_mb=$(( ram_kb / 4 / 1024 ))
[ "$sb_mb" -gt 8192 ] && sb_mb=8192
[ "$sb_mb" -lt 128 ] && sb_mb=128

explain_libs=""
[ "${BENCH_EXPLAIN:-0}" = 1 ] && explain_libs=", pg_stat_statements, auto_explain"
say "starting a throw-away cluster in $w (port $pgport, shared_buffers ${sb_mb}MB)"
"${AS_USER[@]}" "$bindir/initdb" -D "$w/data" -A trust -U postgres >/dev/null
cat >>"$w/data/postgresql.conf" <<CONF
# ---- test/bench/run.sh
port = $pgport
listen_addresses = ''
unix_socket_directories = '$w'
max_connections = 50
shared_buffers = ${sb_mb}MB
huge_pages = try
work_mem = 16MB
maintenance_work_mem = 1GB
effective_cache_size = $(( ram_kb / 2 / 1024 ))MB
wal_buffers = 64MB
wal_compression = lz4
max_wal_size = 20GB
min_wal_size = 1GB
checkpoint_timeout = 30min
checkpoint_completion_target = 0.9
synchronous_commit = on
random_page_cost = 1.1
jit = off
log_min_messages = warning
log_checkpoints = on
log_autovacuum_min_duration = 0
autovacuum_vacuum_cost_limit = 2000
shared_preload_libraries = 'otp_link$explain_libs'
otp_link.database = 'bench'
otp_link.allow_http = on
otp_link.allow_private_networks = on
otp_link.sweep_interval = '1h'	# the sweep benchmark calls otp_link_expire itself
CONF
if [ "$explain_libs" != "" ]; then
	cat >>"$w/data/postgresql.conf" <<CONF
pg_stat_statements.track = all
auto_explain.log_min_duration = '50ms'
auto_explain.log_nested_statements = on
CONF
fi
"${AS_USER[@]}" "$bindir/pg_ctl" -D "$w/data" -l "$w/postgres.log" -w start >/dev/null
pg_started=1

q() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$w" -p "$pgport" -U postgres -d bench "$@"; }
pgbench() { "$bindir/pgbench" -h "$w" -p "$pgport" -U postgres "$@" bench; }

psql -X -q -h "$w" -p "$pgport" -U postgres -d postgres -c "CREATE DATABASE bench"
q -c "CREATE EXTENSION otp_link"
nurl="http://127.0.0.1:$nport"
rurl="http://127.0.0.1:$rport"
inst=$(q -c "SELECT otp_link.otp_link_instance_create('+20 155 373 0661', 'Bench',
	jsonb_build_object('reply_endpoint', jsonb_build_object('type', 'http', 'url', '$nurl/reply'))) ->> 'uuid'")
q -v inst="$inst" -v cb="$nurl" -f test/bench/setup.sql
callback="{\"success\": \"$nurl/cb/success\", \"failed\": \"$nurl/cb/failed\"}"

worker_pid() {
	q -c "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE '%otp_link%' LIMIT 1"
}
wpid=""
for _ in $(seq 1 100); do
	wpid=$(worker_pid)
	[ -n "$wpid" ] && break
	sleep 0.2
done
[ -n "$wpid" ] || { echo "run.sh: the otp_link worker did not start; see the log:" >&2; tail -20 "$w/postgres.log" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# worker sanity: an idle worker must sleep
c0=$(cpu_ticks "$wpid"); sleep 2; c1=$(cpu_ticks "$wpid")
idle_pct=$(( (c1 - c0) * 100 / (2 * hz) ))
worker_note=""
if [ "$idle_pct" -gt 20 ]; then
	worker_note="the idle worker used ${idle_pct}% CPU (busy loop?)"
	say "WARNING: $worker_note"
fi
say "otp_link worker pid $wpid (idle CPU ${idle_pct}%)"

log_errors() {	# distinct ERROR messages of the server log, at most 3
	{ grep -E 'ERROR:' "$w/postgres.log" || true; } | sed -E 's/^.*ERROR: +//' | sort | uniq -c | sort -rn | head -3 |
		awk '{c=$1; $1=""; printf "%s%dx%s", (NR>1?"; ":""), c, $0}'
}

# ---------------------------------------------------------------- results
fmt() { awk -v x="$1" 'BEGIN { if (x == "") print "—"; else if (x >= 100) printf "%\047.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.2f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print ""; else printf "%.2f", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a >= b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a <= b) }'; }
# row BENCHMARK MEASURED REFERENCE RATIO GOAL RESULT NOTES
row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@" >>"$results"; }
verdict() { if "$@"; then echo "met"; else echo "**MISSED**"; fi; }

wal_now() { q -F' ' -c "SELECT wal_fpi, wal_bytes FROM pg_stat_wal"; }
# wal_per NAME FPI0 BYTES0 N: full-page images and WAL bytes per transaction since
wal_per() {
	local f b
	sleep 0.6	# backends report WAL statistics at most once a second
	read -r f b < <(wal_now)
	wal[$1]=$(awk -v f0="$2" -v b0="$3" -v f="$f" -v b="$b" -v n="$4" \
		'BEGIN { if (n > 0) printf "%.1f FPI, %.1f kB WAL per transaction", (f - f0) / n, (b - b0) / n / 1024 }')
	fpi[$1]=$(awk -v f0="$2" -v f="$f" -v n="$4" 'BEGIN { if (n > 0) printf "%.2f", (f - f0) / n }')
}
declare -A wal fpi
# run_tps NAME SCRIPT CLIENTS SECONDS [pgbench options]: sets ${tps[NAME]}
# and ${wal[NAME]} (WAL per transaction); the output in $w/pgbench.out
declare -A tps
run_tps() {
	local name=$1 script=$2 c=$3 t=$4 f0 b0 n
	shift 4
	read -r f0 b0 < <(wal_now)
	pgbench -n -M prepared -c "$c" -j "$c" -T "$t" -D inst="$inst" -D callback="$callback" \
		-f "test/bench/$script" "$@" >"$w/pgbench.out" 2>&1 || {
		cat "$w/pgbench.out" >&2
		echo "run.sh: pgbench $script failed" >&2
		return 1
	}
	n=$(awk '/^number of transactions actually processed:/ {print $NF}' "$w/pgbench.out")
	wal_per "$name" "$f0" "$b0" "$n"
	tps[$name]=$(awk '/^tps = / {print $3}' "$w/pgbench.out")
}

# pause_worker: SIGSTOP the worker between two of its transactions (never
# inside one: it would hold row locks while stopped)
pause_worker() {
	local i
	for i in $(seq 1 200); do
		kill -STOP "$wpid"
		worker_stopped=$wpid
		[ "$(q -c "SELECT backend_xid IS NULL AND backend_xmin IS NULL FROM pg_stat_activity WHERE pid = $wpid")" = t ] && return 0
		kill -CONT "$wpid"
		worker_stopped=""
		sleep 0.05
	done
	echo "run.sh: the worker was never found between transactions" >&2
	return 1
}
resume_worker() { kill -CONT "$wpid"; worker_stopped=""; }

rss_of() {	# VmRSS and RssAnon of the worker, kB
	awk '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} /^RssShmem:/ {s=$2} END {print r, a, s}' "/proc/$wpid/status"
}

# ---------------------------------------------------------------- receivers
say "starting nginx on 127.0.0.1:$nport and receiver.py on 127.0.0.1:$rport"
mkdir -p "$w/nginx/tmp"
cat >"$w/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $w/nginx/nginx.pid;
error_log $w/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $w/nginx/tmp/body;
	proxy_temp_path $w/nginx/tmp/proxy;
	fastcgi_temp_path $w/nginx/tmp/fastcgi;
	uwsgi_temp_path $w/nginx/tmp/uwsgi;
	scgi_temp_path $w/nginx/tmp/scgi;
	keepalive_requests 1000000;
	keepalive_timeout 120s;
	server {
		listen 127.0.0.1:$nport backlog=4096;
		location / { return 200; }
	}
}
CONF
nginx -p "$w/nginx" -c "$w/nginx/nginx.conf" -e "$w/nginx/error.log"
nginx_started=1
python3 test/bench/receiver.py "$rport" &
rpid=$!
for _ in $(seq 1 50); do
	curl -sf -o /dev/null "$nurl/" && curl -sf -o /dev/null "$rurl/__reset" && break
	sleep 0.1
done

say "receiver capacity: wrk -t1 -c64 -d5s POST against nginx, -c8 -d3s against receiver.py"
wrk -t1 -c64 -d5s -s test/bench/post.lua "$nurl/cb/success" >"$w/wrk-nginx.out" 2>&1
nginx_rps=$(awk '/^Requests\/sec:/ {print $2}' "$w/wrk-nginx.out")
wrk -t1 -c8 -d3s -s test/bench/post.lua "$rurl/wrk" >"$w/wrk-receiver.out" 2>&1
recv_rps=$(awk '/^Requests\/sec:/ {print $2}' "$w/wrk-receiver.out")
curl -sf -o /dev/null "$rurl/__reset"
say "nginx: $nginx_rps requests/s; receiver.py: $recv_rps requests/s"

# ---------------------------------------------------------------- deliveries
payload_sql="jsonb_build_object('type', 'otp_link.verified', 'timestamp', now(),
	'data', jsonb_build_object('uuid', gen_random_uuid(), 'status', 'verified', 'otp_type', 'link',
		'chat_id', '201553730661@c.us', 'verified_chat_id', '201000000001@c.us', 'name', 'Bench',
		'created_at', now(), 'expires_at', now(), 'finished_at', now(), 'metadata', NULL,
		'sender', '201000000001@c.us'))"

# queue TAG N: N callbacks to nginx committed in one transaction; prints
# the epoch of the commit
queue() {
	q -c "INSERT INTO otp_link.deliveries (webhook_id, instance_id, kind, event, destination, payload)
		SELECT '$1_' || g, '$inst', 'callback', 'otp_link.verified', '$nurl/cb/success', $payload_sql
		  FROM generate_series(1, $2) g" \
	  -c "SELECT extract(epoch FROM clock_timestamp())"
}
# wait_done TAG N SECONDS: wait until the N deliveries TAG_* are delivered
# or dead; prints "delivered dead"
wait_done() {
	local deadline=$(( $(date +%s) + $3 )) r
	while :; do
		r=$(q -F' ' -c "SELECT count(*) FILTER (WHERE status = 'delivered'), count(*) FILTER (WHERE status = 'dead')
			FROM otp_link.deliveries WHERE webhook_id LIKE '$1\_%'")
		set -- "$1" "$2" "$3" $r
		if [ $(( $4 + $5 )) -ge "$2" ] || [ "$(date +%s)" -ge "$deadline" ]; then
			echo "$4 $5"
			return
		fi
		sleep 0.2
	done
}

say "deliveries: 1,000 callbacks to nginx (warm-up)"
queue warm 1000 >/dev/null
read -r warm_ok warm_dead < <(wait_done warm 1000 120)
read -r rss1 anon1 shm1 < <(rss_of)
say "  delivered $warm_ok, dead $warm_dead; worker VmRSS ${rss1} kB (RssAnon ${anon1} kB)"

# burst TAG: 20,000 callbacks committed at once, until all are delivered;
# sets ${bst[rate.TAG]} (deliveries/s from COMMIT to the last delivered_at),
# ${bst[ok.TAG]}, ${bst[dead.TAG]}, ${bst[cpu.TAG]} (worker CPU seconds)
declare -A bst
burst() {
	local tag=$1 c0 c1 t span
	c0=$(cpu_ticks "$wpid")
	t=$(queue "$tag" 20000)
	read -r bst[ok.$tag] bst[dead.$tag] < <(wait_done "$tag" 20000 180)
	c1=$(cpu_ticks "$wpid")
	span=$(q -c "SELECT extract(epoch FROM max(delivered_at)) - $t FROM otp_link.deliveries WHERE webhook_id LIKE '$tag\_%' AND status = 'delivered'")
	bst[rate.$tag]=$(awk -v n="${bst[ok.$tag]}" -v s="$span" 'BEGIN { if (s > 0) printf "%.0f", n / s }')
	bst[cpu.$tag]=$(awk -v c=$(( c1 - c0 )) -v hz="$hz" 'BEGIN { printf "%.1f", c / hz }')
	say "  ${bst[ok.$tag]} delivered (${bst[dead.$tag]} dead) in ${span}s: ${bst[rate.$tag]}/s; worker CPU ${bst[cpu.$tag]}s"
}
say "deliveries: 20,000 callbacks committed at once"
burst burst
phase_table=""
if [ "$BENCH_PHASES" = 1 ]; then
	say "deliveries: 20,000 more, the worker under perf record -e cpu-clock -g (µs per delivery by phase)"
	. test/bench/phases.sh
	phase_burst
fi

say "deliveries: 79,000 more (worker memory after 100,000)"
queue more 79000 >/dev/null
read -r more_ok more_dead < <(wait_done more 79000 400)
read -r rss2 anon2 shm2 < <(rss_of)
sleep 1	# table statistics are reported at most once a second
deliv_stats=$(q -c "SELECT format('otp_link.deliveries: %s for %s rows, %s of %s updates HOT',
		pg_size_pretty(pg_table_size('otp_link.deliveries')), (SELECT count(*) FROM otp_link.deliveries),
		n_tup_hot_upd, n_tup_upd)
	FROM pg_stat_user_tables WHERE relid = 'otp_link.deliveries'::regclass")
say "  delivered $more_ok, dead $more_dead; worker VmRSS ${rss2} kB (RssAnon ${anon2} kB, RssShmem ${shm2} kB)"

# latency TAG: 100 callbacks/s for 20 s to receiver.py; sets lat_* of TAG
declare -A lat
latency() {
	local tag=$1 n ok dead
	curl -sf -o /dev/null "$rurl/__reset"
	q -c "SELECT setval('bench.lat_seq', 1, false)" >/dev/null
	q -c "DELETE FROM otp_link.deliveries WHERE webhook_id LIKE 'lat\_%'" >/dev/null
	rm -f "$w"/lat.*
	pgbench -n -M prepared -c 1 -j 1 -R 100 -T 20 -D inst="$inst" -D url="$rurl/lat" \
		-f test/bench/latency.sql -l --log-prefix="$w/lat" >"$w/pgbench-lat-$tag.out" 2>&1
	n=$(q -c "SELECT last_value FROM bench.lat_seq")
	read -r ok dead < <(wait_done lat "$n" 60)
	curl -sf -o /dev/null "$rurl/__dump?$w/arrivals-$tag.tsv"
	cat "$w"/lat.* >"$w/lat-$tag.txt"
	read -r lat[p50.$tag] lat[p99.$tag] lat[min.$tag] lat[max.$tag] lat[cnt.$tag] lat[commit.$tag] lat[arrived.$tag] < <(q -F' ' <<SQL
CREATE TEMP TABLE txlog (client int, tx int, us bigint, script int, epoch bigint, epoch_us bigint, lag bigint);
\\copy txlog FROM '$w/lat-$tag.txt' WITH (DELIMITER ' ')
CREATE TEMP TABLE arrivals (t float8, wid text, path text);
\\copy arrivals FROM '$w/arrivals-$tag.tsv'
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
	   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
	   round(min(ms)::numeric, 2), round(max(ms)::numeric, 2), count(*), round(avg(us) / 1000, 2),
	   (SELECT count(DISTINCT wid) FROM arrivals WHERE wid LIKE 'lat\\_%')
  FROM (SELECT (a.t - (x.epoch + x.epoch_us / 1e6)) * 1000 AS ms, x.us
		  FROM txlog x	-- pgbench numbers transactions from 1: transaction k inserted lat_k
		  JOIN (SELECT wid, min(t) AS t FROM arrivals GROUP BY wid) a ON a.wid = 'lat_' || x.tx) s;
SQL
)
	lat[n.$tag]=$n
	say "  ${lat[arrived.$tag]} of $n arrived, ${lat[cnt.$tag]} timed: p50 ${lat[p50.$tag]} ms, p99 ${lat[p99.$tag]} ms, max ${lat[max.$tag]} ms (COMMIT itself ${lat[commit.$tag]} ms)"
}
say "latency: 100 callbacks/s for 20 s to receiver.py (pgbench -R 100, one commit each), synchronous_commit on"
cpu0=$(cpu_ticks "$wpid")
latency on
cpu1=$(cpu_ticks "$wpid")
lat_cpu=$(awk -v c=$(( cpu1 - cpu0 )) -v hz="$hz" -v n="${lat[n.on]}" 'BEGIN { printf "%.2f", 1000 * c / hz / n }')
say "  worker CPU per delivery: $lat_cpu ms"

# from here on client commits do not wait for the WAL flush (see docs/performance.md)
q -c "ALTER SYSTEM SET synchronous_commit = off" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
say "deliveries: 20,000 callbacks committed at once, synchronous_commit off"
burst burstoff
# (one receiver: its share, otp_link.destination_concurrency, 16 by default,
# is raised with the total, or it would be the limit)
say "deliveries: the same with otp_link.max_concurrency = 256 (and destination_concurrency 256)"
q -c "ALTER SYSTEM SET otp_link.max_concurrency = 256" \
  -c "ALTER SYSTEM SET otp_link.destination_concurrency = 256" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
burst burst256
q -c "ALTER SYSTEM RESET otp_link.max_concurrency" \
  -c "ALTER SYSTEM RESET otp_link.destination_concurrency" -c "SELECT pg_reload_conf()" >/dev/null

say "latency: the same with synchronous_commit off"
latency off

# ---------------------------------------------------------------- throughput
say "throughput: 10,000 stored links in otp_link.links and in the baseline table"
q -c "SELECT bench.fill('otp_link.links', 10000)" -c "SELECT bench.fill('bench.links_plain', 10000)" >/dev/null
q -c "VACUUM ANALYZE" -c "CHECKPOINT"

for c in 2 8; do
	for s in generate generate_plain; do
		say "$s, $c clients, ${BENCH_T}s"
		run_tps "$s.$c" "$s.sql" "$c" "$BENCH_T"
		say "  ${tps[$s.$c]} TPS"
	done
done

# consume: a pool of pending links with known codes; the worker is paused
# (SIGSTOP) so that the runs measure the transaction, not the deliveries
pool=0
need_pool() {	# need_pool N: make sure N more codes are available to both sequences
	local used
	used=$(q -c "SELECT greatest((SELECT last_value FROM bench.ext_seq), (SELECT last_value FROM bench.plain_seq))")
	if [ $(( pool - used )) -lt "$1" ]; then
		pool=$(q -c "SELECT bench.add_pool($(( $1 - pool + used )))")
	fi
}
pool_used() { q -c "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM bench.$1"; }
est=$(awk -v a="${tps[generate.2]}" -v t="$BENCH_T" 'BEGIN { printf "%d", a * t * 1.5 + 20000 }')
say "consume: a pool of $est known codes in both tables"
need_pool "$est"
q -c "VACUUM ANALYZE" -c "CHECKPOINT"
pause_worker
t_consume=$(q -c "SELECT now()")
consume_note=""
for c in 2 8; do
	for s in consume consume_plain; do
		seq=ext_seq; [ "$s" = consume_plain ] && seq=plain_seq
		need_pool $(awk -v a="${tps[$s.2]:-${tps[generate.$c]}}" -v t="$BENCH_T" 'BEGIN { printf "%d", a * t * 1.5 + 20000 }')
		before=$(pool_used "$seq")
		say "$s, $c clients, ${BENCH_T}s (pool $pool, used $before)"
		run_tps "$s.$c" "$s.sql" "$c" "$BENCH_T"
		after=$(pool_used "$seq")
		if [ "$after" -gt "$pool" ]; then
			consume_note="pool of codes exhausted: TPS invalid"
		fi
		say "  ${tps[$s.$c]} TPS ($(( after - before )) codes)"
	done
done
verified=$(q -c "SELECT count(*) FROM otp_link.links l JOIN bench.codes c ON l.code_hash = sha256(convert_to(c.code, 'UTF8')) WHERE l.status = 'verified'")
ext_used=$(pool_used ext_seq)
queued=$(q -c "SELECT count(*) FROM otp_link.deliveries WHERE created_at >= '$t_consume'")
say "  $verified links verified for $ext_used codes sent; $queued deliveries queued"
[ "$verified" -ne "$ext_used" ] && consume_note="${consume_note:+$consume_note; }$verified verified of $ext_used sent"
q -c "DELETE FROM otp_link.deliveries WHERE status = 'queued'" >/dev/null
resume_worker

say "consume, 2 clients, ${BENCH_T}s, with the worker delivering to nginx meanwhile"
need_pool $(awk -v a="${tps[consume.2]}" -v t="$BENCH_T" 'BEGIN { printf "%d", a * t * 1.5 + 20000 }')
cpu0=$(cpu_ticks "$wpid")
run_tps consume_live.2 consume.sql 2 "$BENCH_T"
cpu1=$(cpu_ticks "$wpid")
live_cpu=$(awk -v c=$(( cpu1 - cpu0 )) -v hz="$hz" -v t="$BENCH_T" 'BEGIN { printf "%.0f", 100 * c / hz / t }')
live_done=$(q -c "SELECT count(*) FROM otp_link.deliveries WHERE status = 'delivered' AND created_at >= '$t_consume'")
say "  ${tps[consume_live.2]} TPS; worker CPU ${live_cpu}%, $live_done delivered meanwhile"
pause_worker
q -c "DELETE FROM otp_link.deliveries WHERE status = 'queued'" >/dev/null
resume_worker

# ---------------------------------------------------------------- scale
scale_t=$(( BENCH_T * 2 / 3 ))
[ "$scale_t" -lt 5 ] && scale_t=5
scale_run() {	# scale_run LABEL: generate and consume, 2 clients, worker paused
	need_pool $(awk -v a="${tps[consume.2]}" -v t="$scale_t" 'BEGIN { printf "%d", a * t * 3 + 20000 }')
	q -c "VACUUM ANALYZE otp_link.links" -c "CHECKPOINT"
	stored[$1]=$(q -c "SELECT count(*) FROM otp_link.links")
	pause_worker
	say "scale ($1: ${stored[$1]} links stored): generate and consume, 2 clients, ${scale_t}s each"
	run_tps "scale_gen.$1" generate.sql 2 "$scale_t"
	run_tps "scale_con.$1" consume.sql 2 "$scale_t"
	# again, in the same checkpoint cycle: fewer first touches of a page
	run_tps "scale_gen2.$1" generate.sql 2 "$scale_t"
	run_tps "scale_con2.$1" consume.sql 2 "$scale_t"
	[ "$(pool_used ext_seq)" -gt "$pool" ] && consume_note="pool of codes exhausted: TPS invalid"
	q -c "DELETE FROM otp_link.deliveries WHERE status = 'queued'" >/dev/null
	resume_worker
	say "  after the CHECKPOINT: generate ${tps[scale_gen.$1]} TPS, consume ${tps[scale_con.$1]} TPS"
	say "  second runs: generate ${tps[scale_gen2.$1]} TPS, consume ${tps[scale_con2.$1]} TPS"
}
declare -A stored
say "scale: starting again from 10,000 stored links"
q -c "TRUNCATE otp_link.links, otp_link.deliveries, otp_link.messages_seen, otp_link.senders,
		bench.links_plain, bench.deliveries_plain, bench.codes" \
  -c "SELECT setval('bench.ext_seq', 1, false), setval('bench.plain_seq', 1, false)" >/dev/null
pool=0
q -c "SELECT bench.fill('otp_link.links', 10000)" >/dev/null
scale_run small
say "scale: filling otp_link.links with $big links (INSERT ... SELECT, 2 sessions)"
t0=$(date +%s)
for part in 0 1; do
	q -c "SELECT bench.fill('otp_link.links', $big, $part, 2)" >/dev/null &
	bg_pids+=($!)
done
wait "${bg_pids[@]}"
bg_pids=()
say "  filled in $(( $(date +%s) - t0 ))s"
scale_run big

# ---------------------------------------------------------------- scrape
say "scrape: otp_link_prometheus() 21 times with ${stored[big]} links stored"
for _ in $(seq 21); do echo "SELECT length(otp_link.otp_link_prometheus());"; done |
	psql -X -q -h "$w" -p "$pgport" -U postgres -d bench -o /dev/null -c '\timing on' -f - 2>&1 |
	sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | sort -n >"$w/scrape.txt"
read -r scrape_n scrape_p50 scrape_p95 scrape_max < <(awk '{ a[NR] = $1 } END { printf "%d %s %s %s\n", NR, a[int((NR + 1) / 2)], a[int(NR * 0.95 + 0.5)], a[NR] }' "$w/scrape.txt")
scrape_rows=$(q -c "SELECT format('%s pending links, %s queued deliveries', (SELECT count(*) FROM otp_link.links WHERE status = 'pending'),
	(SELECT count(*) FROM otp_link.deliveries WHERE status = 'queued'))")
say "  median $scrape_p50 ms, 95th percentile $scrape_p95 ms, max $scrape_max ms ($scrape_n runs; $scrape_rows)"

# ---------------------------------------------------------------- flow
. test/bench/flow.sh
# The scale runs deleted the deliveries they queued with the worker paused:
# until a VACUUM removes their entries from the queue index, every round of
# the worker steps over them (docs/worker.md), which is the cost of that
# bulk delete, not of the flow.  VACUUM as autovacuum would shortly.
say "flow: VACUUM otp_link.deliveries (the entries of the deliveries the benchmarks above deleted)"
q -c "VACUUM otp_link.deliveries"
say "flow: $BENCH_FLOW_RATE logins/s for ${BENCH_FLOW_SECONDS}s (generate; consume 1-5 s later; callback to receiver.py), ${stored[big]} links stored"
flow_run

# ---------------------------------------------------------------- sweep
say "sweep: 1,000,000 overdue links (no callbacks), on top of the ${stored[big]} stored"
t0=$(date +%s)
for part in 0 1; do
	q -c "SELECT bench.overdue(1000000, $part, 2)" >/dev/null &
	bg_pids+=($!)
done
wait "${bg_pids[@]}"
bg_pids=()
q -c "ANALYZE otp_link.links" -c "CHECKPOINT"
say "  inserted in $(( $(date +%s) - t0 ))s"
# p99 of generate latency (ms) from a pgbench log; optional epoch window
p99_of() {
	q -F' ' <<SQL
CREATE TEMP TABLE txlog (client int, tx int, us bigint, script int, epoch bigint, epoch_us bigint, lag bigint);
\copy txlog FROM '$1' WITH (DELIMITER ' ')
SELECT round((percentile_cont(0.99) WITHIN GROUP (ORDER BY us) / 1000)::numeric, 2), count(*)
  FROM txlog WHERE epoch + epoch_us / 1e6 BETWEEN ${2:-0} AND ${3:-1e12};
SQL
}
say "sweep: generate latency without sweep (1 client, 200/s, 10s)"
pgbench -n -M prepared -c 1 -j 1 -R 200 -T 10 -D inst="$inst" -D callback="$callback" \
	-f test/bench/generate.sql -l --log-prefix="$w/gen-idle" >"$w/pgbench-idle.out" 2>&1
cat "$w"/gen-idle.* >"$w/gen-idle.txt"
read -r p99_idle n_idle < <(p99_of "$w/gen-idle.txt")
say "  p99 $p99_idle ms ($n_idle transactions)"
say "sweep: otp_link_expire(10000) until it returns 0, generate at 200/s meanwhile"
q -c "CREATE TABLE bench.sweep (t0 float8, t1 float8, expired bigint, batches int)"
q <<'SQL' &
DO $$
DECLARE
	t0 float8 := extract(epoch FROM clock_timestamp());
	n integer;
	total bigint := 0;
	i integer := 0;
BEGIN
	LOOP
		n := otp_link.otp_link_expire(10000);
		COMMIT;
		total := total + n;
		i := i + 1;
		EXIT WHEN n = 0 OR i >= 2000;
	END LOOP;
	INSERT INTO bench.sweep VALUES (t0, extract(epoch FROM clock_timestamp()), total, i);
END
$$;
SQL
sweep_pid=$!
read -r sw_f0 sw_b0 < <(wal_now)
bg_pids+=("$sweep_pid")
pgbench -n -M prepared -c 1 -j 1 -R 200 -T 20 -D inst="$inst" -D callback="$callback" \
	-f test/bench/generate.sql -l --log-prefix="$w/gen-sweep" >"$w/pgbench-sweep.out" 2>&1
wait "$sweep_pid"
bg_pids=()
read -r sw0 sw1 sw_n sw_batches < <(q -F' ' -c "SELECT t0, t1, expired, batches FROM bench.sweep")
wal_per sweep "$sw_f0" "$sw_b0" "$sw_n"
wal[sweep]=${wal[sweep]/ per transaction/}
sweep_rate=$(awk -v n="$sw_n" -v a="$sw0" -v b="$sw1" 'BEGIN { printf "%.0f", n / (b - a) }')
cat "$w"/gen-sweep.* >"$w/gen-sweep.txt"
read -r p99_sweep n_sweep < <(p99_of "$w/gen-sweep.txt" "$sw0" "$sw1")
say "  expired $sw_n in $(awk -v a="$sw0" -v b="$sw1" 'BEGIN { printf "%.1f", b - a }')s ($sweep_rate/s, $sw_batches batches); generate p99 $p99_sweep ms ($n_sweep transactions during the sweep)"

# ---------------------------------------------------------------- table
T=$BENCH_T
max_conc=$(q -c 'SHOW otp_link.max_concurrency')
errors=$(log_errors)
consume_note=${consume_note:+$consume_note; }
{
	row "nginx \`return 200;\` capacity (wrk -t1 -c64 POST)" "$(fmt "$nginx_rps") req/s" "" "" "" "reference" ""
	row "receiver.py capacity (wrk -t1 -c8 POST)" "$(fmt "$recv_rps") req/s" "" "" "" "reference" ""
	for c in 2 8; do
		r=$(ratio "${tps[generate.$c]}" "${tps[generate_plain.$c]}")
		row "otp_link_generate TPS, $c clients (${T}s)" "$(fmt "${tps[generate.$c]}")" \
			"$(fmt "${tps[generate_plain.$c]}") (bare INSERT … RETURNING)" "$r" "≥ 0.90" "$(verdict ge "$r" 0.90)" \
			"generate: ${wal[generate.$c]}; baseline: ${wal[generate_plain.$c]}"
	done
	for c in 2 8; do
		r=$(ratio "${tps[consume.$c]}" "${tps[consume_plain.$c]}")
		row "otp_link_consume_message TPS (verified, reply + callback queued), $c clients (${T}s, worker paused)" \
			"$(fmt "${tps[consume.$c]}")" "$(fmt "${tps[consume_plain.$c]}") (bare UPDATE + 2 INSERTs)" "$r" "≥ 0.90" \
			"$(verdict ge "$r" 0.90)" "${consume_note}consume: ${wal[consume.$c]}; baseline: ${wal[consume_plain.$c]}"
	done
	r=$(ratio "${tps[consume_live.2]}" "${tps[consume_plain.2]}")
	row "otp_link_consume_message TPS, 2 clients, worker delivering meanwhile" "$(fmt "${tps[consume_live.2]}")" \
		"$(fmt "${tps[consume_plain.2]}") (as above)" "$r" "" "information" \
		"worker used ${live_cpu}% of a core; $live_done delivered during the run"
	for tag in burst burstoff burst256; do
		case $tag in
			burst) what="deliveries/s, 20,000 callbacks committed at once → all 'delivered' (nginx), synchronous_commit on" ;;
			burstoff) what="deliveries/s, the same with synchronous_commit off" ;;
			burst256) what="deliveries/s, synchronous_commit off and otp_link.max_concurrency 256 (default 64)" ;;
		esac
		note="${bst[ok.$tag]} delivered, ${bst[dead.$tag]} dead; worker CPU ${bst[cpu.$tag]} s"
		[ "${bst[ok.$tag]}" -lt 20000 ] && note="$note; NOT all delivered within 180 s${errors:+; log: $errors}"
		row "$what" "$(fmt "${bst[rate.$tag]}")/s" "$(fmt "$nginx_rps") req/s (nginx alone)" \
			"$(ratio "${bst[rate.$tag]}" "$nginx_rps")" "≥ 20,000/s" "$(verdict ge "${bst[rate.$tag]}" 20000)" "$note"
	done
	if [ -n "${bst[ok.burstprof]:-}" ]; then
		row "deliveries/s, the same burst again with the worker under \`perf record -g\` (synchronous_commit on)" \
			"$(fmt "${bst[rate.burstprof]}")/s" "$(fmt "$nginx_rps") req/s (nginx alone)" \
			"$(ratio "${bst[rate.burstprof]}" "$nginx_rps")" "" "information" \
			"${bst[ok.burstprof]} delivered, ${bst[dead.burstprof]} dead; worker CPU ${bst[cpu.burstprof]} s = ${phase_us_total:-?} µs per delivery; split by phase below"
	fi
	for sc in on off; do
		note="${lat[arrived.$sc]} of ${lat[n.$sc]} arrived, ${lat[cnt.$sc]} timed; COMMIT itself took ${lat[commit.$sc]} ms on average"
		[ "$sc" = on ] && note="$note; worker CPU $lat_cpu ms per delivery"
		[ "${lat[arrived.$sc]}" -lt "${lat[n.$sc]}" ] && note="$note; NOT all arrived"
		row "COMMIT → arrival p50, 100 callbacks/s for 20 s (receiver.py), synchronous_commit $sc" \
			"$(fmt "${lat[p50.$sc]}") ms" "" "" "≤ 5 ms" "$(verdict le "${lat[p50.$sc]}" 5)" "$note"
		row "COMMIT → arrival p99, synchronous_commit $sc" "$(fmt "${lat[p99.$sc]}") ms" \
			"min $(fmt "${lat[min.$sc]}") ms, max $(fmt "${lat[max.$sc]}") ms" "" "≤ 25 ms" "$(verdict le "${lat[p99.$sc]}" 25)" \
			"$(awk -v m="${lat[min.$sc]}" 'BEGIN { if (m < 0) print "negative: the callback arrived before pgbench had read the answer to its COMMIT (client scheduling)" }')"
	done
	for k in gen con gen2 con2; do
		case $k in
			gen*) what="otp_link_generate TPS" ;;
			con*) what="otp_link_consume_message TPS" ;;
		esac
		case $k in
			*2) when="second run in the same checkpoint cycle" ;;
			*) when="right after a CHECKPOINT" ;;
		esac
		r=$(ratio "${tps[scale_$k.big]}" "${tps[scale_$k.small]}")
		note="BENCH_SCALE=$BENCH_SCALE; ${stored[big]} stored: ${wal[scale_$k.big]}; ${stored[small]} stored: ${wal[scale_$k.small]}"
		[ "${k#con}" != "$k" ] && note="$consume_note$note"
		row "$what, ${stored[big]} vs ${stored[small]} links stored (2 clients, ${scale_t}s, $when)" \
			"$(fmt "${tps[scale_$k.big]}")" "$(fmt "${tps[scale_$k.small]}")" "$r" "≥ 0.90 (within 10 %)" \
			"$(verdict ge "$r" 0.90)" "$note"
	done
	for k in gen con; do
		case $k in
			gen) what="otp_link_generate" ;;
			con) what="otp_link_consume_message" ;;
		esac
		row "full-page images per $what transaction right after a CHECKPOINT, ${stored[big]} vs ${stored[small]} stored" \
			"${fpi[scale_$k.big]:-—}" "${fpi[scale_$k.small]:-—}" "$(ratio "${fpi[scale_$k.big]}" "${fpi[scale_$k.small]}")" "" "information" \
			"pg_stat_wal.wal_fpi per transaction; second run in the same checkpoint cycle: ${fpi[scale_${k}2.big]:-—} vs ${fpi[scale_${k}2.small]:-—}"
	done
	row "otp_link_prometheus() with ${stored[big]} links stored: median of $scrape_n" "$(fmt "$scrape_p50") ms" \
		"95th percentile $(fmt "$scrape_p95") ms, max $(fmt "$scrape_max") ms" "" "< 5 ms" "$(verdict le "$scrape_p50" 4.9999)" \
		"psql \\timing, one session, right after the scale runs (BENCH_SCALE=$BENCH_SCALE); 21 runs: the 95th percentile stands for the p99; $scrape_rows (the gauges count pending links and queued deliveries: the cost follows those, not the links stored; the scale runs leave their generated links and unused codes pending)"
	flow_what="the whole flow, $BENCH_FLOW_RATE logins/s for ${BENCH_FLOW_SECONDS}s, ${stored[big]} stored, synchronous_commit off, after VACUUM otp_link.deliveries"
	flow_notes="$flow_made generated, $flow_con_n consumed 1–5 s later ($flow_outcomes, $flow_polls empty polls), $flow_arr_n callbacks timed; transaction times exclude pgbench's schedule lag (p99 lag: generate $flow_gen_lag99 ms, consume $flow_con_lag99 ms); worker CPU ${flow_cpu}%"
	row "$flow_what: otp_link_generate p99 (4 clients, -R $BENCH_FLOW_RATE)" "$(fmt "$flow_gen_p99") ms" "p50 $(fmt "$flow_gen_p50") ms" "" \
		"≤ 10 ms" "$(verdict le "$flow_gen_p99" 10)" "$flow_notes"
	row "… otp_link_consume_message p99 (the oldest due code, 4 clients)" "$(fmt "$flow_con_p99") ms" "p50 $(fmt "$flow_con_p50") ms" "" \
		"≤ 10 ms" "$(verdict le "$flow_con_p99" 10)" "includes picking the code from bench.flow (FOR UPDATE SKIP LOCKED) and noting the outcome, in the same statement"
	row "… consume COMMIT → callback arrival at receiver.py p99" "$(fmt "$flow_arr_p99") ms" \
		"p50 $(fmt "$flow_arr_p50") ms, max $(fmt "$flow_arr_max") ms" "" "≤ 10 ms" "$(verdict le "$flow_arr_p99" 10)" \
		"$flow_arr_n of $flow_verified verified timed (webhook-id → otp_link.deliveries.link_id → bench.flow → pgbench log)"
	flow_tol=$(( 2 * BENCH_FLOW_RATE ))
	row "… queued deliveries: at the end vs at the start" "$flow_qend" "$flow_q0 at the start, at most $flow_qmax" "" \
		"no growth (end ≤ start + $flow_tol, 1 s of deliveries)" "$(verdict le "$flow_qend" $(( flow_q0 + flow_tol )))" \
		"at the end = when the generator stopped (the consumer still running); the maximum from a sample each second; ${flow_deliv:-}"
	row "expiry sweep, 1,000,000 overdue links (otp_link_expire(10000) in a loop)" "$(fmt "$sweep_rate") links/s" \
		"" "" "≥ 100,000/s" "$(verdict ge "$sweep_rate" 100000)" "$sw_n expired in $sw_batches batches; ${wal[sweep]:-} (per link)"
	r=$(ratio "$p99_sweep" "$p99_idle")
	row "generate p99 latency during the sweep vs without (1 client, 200/s)" "$(fmt "$p99_sweep") ms" \
		"$(fmt "$p99_idle") ms" "$r" "≤ 1.5×" "$(verdict le "$r" 1.5)" "$n_sweep transactions during the sweep"
	r=$(ratio "$rss2" "$rss1")
	ra=$(ratio "$anon2" "$anon1")
	res=$(verdict le "$r" 1.10)
	note="RssAnon (private) $(( anon1 / 1024 )) → $(( anon2 / 1024 )) MiB (${ra}×), RssShmem $(( shm1 / 1024 )) → $(( shm2 / 1024 )) MiB"
	if ! le "$r" 1.10 && le "$ra" 1.10; then
		note="$note: the growth is shared_buffers pages the worker touched, not its own memory"
	fi
	note="$note; $deliv_stats"
	row "worker VmRSS after 100,000 deliveries vs after 1,000" "$(( rss2 / 1024 )) MiB" "$(( rss1 / 1024 )) MiB" "$r" \
		"≤ 1.10 (within 10 %)" "$res" "$note"
}
[ -n "$worker_note" ] && row "worker idle CPU" "${idle_pct}%" "" "" "" "warning" "$worker_note"

table="| Benchmark | Measured | Baseline / reference | Ratio | Goal | Result | Notes |
|---|---|---|---|---|---|---|
$(cat "$results")"

# ---------------------------------------------------------------- profile
profile=""
if [ "$BENCH_PROFILE" = 1 ] && [ -f test/bench/profile.sh ]; then
	. test/bench/profile.sh
fi

# ---------------------------------------------------------------- report
now_so=$(md5sum "$libdir/otp_link.so" | cut -d' ' -f1)
[ "$now_so" != "$so_sum" ] && say "WARNING: $libdir/otp_link.so changed during the run (another make install?)"
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
machine="$(nproc) CPUs ($cpu_model), $(( ram_kb / 1024 / 1024 )) GiB RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), $("$bindir/postgres" --version)"
rev="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo '+dirty src')"
report="### $(date -u '+%Y-%m-%d %H:%M UTC') — BENCH_SCALE=$BENCH_SCALE

- machine: $machine
- load average before the run: $load_before; processes already busy: ${busy_before:-none}
- command: \`$command_line\` (commit $rev, $(( $(date +%s) - t_start )) s)
- cluster: shared_buffers ${sb_mb}MB, max_wal_size 20GB, jit off; synchronous_commit on for the delivery benchmarks, off from the second latency run on; otp_link.max_concurrency $max_conc, otp_link.sweep_interval 1h

$table
${phase_table:+
$phase_table}
${profile:+
$profile}"

echo
echo "$report"
if [ -n "$BENCH_DOC" ]; then
	printf '\n%s\n' "$report" >>"$BENCH_DOC"
	say "appended to $BENCH_DOC"
fi
