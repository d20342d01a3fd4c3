# test/bench/profile.sh: the profiling step of test/bench/run.sh (sourced
# by it after the benchmarks, with the cluster running; it stops the
# cluster).  Sets $profile to a Markdown section for the report.
#
# 1. The delivery worker: perf record -e cpu-clock -g on its pid while
#    pgbench commits 100 callbacks/s for 10 s (the latency path).  perf's
#    hardware counters are often missing in VMs; the cpu-clock software
#    event is a timer and works where perf works at all.
# 2. otp_link_generate, otp_link_consume_message and their baselines:
#    valgrind --tool=callgrind on a single-user backend (postgres --single)
#    running each statement BENCH_PROFILE_N times (PREPARE once, then
#    EXECUTE), collecting only inside PortalRun and CommitTransactionCommand;
#    full_page_writes is off so that full-page images after the restart's
#    checkpoint do not land on whichever call first touches a page.
#    Reported: instructions per call (without single-user mode's printing
#    of results) and the functions with the largest inclusive cost.
#
# The Debian postgres binary is stripped: its static functions show as
# addresses and are left out; exported functions keep their names.

BENCH_PROFILE_N=${BENCH_PROFILE_N:-1000}
prof_n=$BENCH_PROFILE_N
declare -A ipc

# ---- the worker, with perf
worker_prof=""
if command -v perf >/dev/null && perf record -q -e cpu-clock -o "$w/perf-probe.data" -- true >/dev/null 2>&1; then
	say "profile: the worker with perf (cpu-clock) during 100 callbacks/s for 10 s"
	curl -sf -o /dev/null "$rurl/__reset"
	q -c "SELECT setval('bench.lat_seq', 1, false)" \
	  -c "DELETE FROM otp_link.deliveries WHERE webhook_id LIKE 'lat\_%'" >/dev/null
	perf record -q -e cpu-clock -F 2999 -g -p "$wpid" -o "$w/perf-worker.data" -- sleep 11 >/dev/null 2>&1 &
	perf_pid=$!
	bg_pids+=("$perf_pid")
	sleep 0.5
	pgbench -n -M prepared -c 1 -j 1 -R 100 -T 10 -D inst="$inst" -D url="$rurl/lat" \
		-f test/bench/latency.sql >"$w/pgbench-prof.out" 2>&1
	wait "$perf_pid" || true
	bg_pids=()
	worker_prof=$(perf report -i "$w/perf-worker.data" --children --stdio -g none --percent-limit 2 2>/dev/null |
		awk '$1 ~ /%$/ && $NF !~ /^0x/ && $NF !~ /^\[/ && $NF !~ /^(0000000000000000|__restore_rt|StartBackgroundWorker|__libc_start_call_main|__libc_start_main.*|PostmasterMain|main|entry_SYSCALL_64_after_hwframe)$/ {
			c = $1 + 0; if (c < 2 || c > 95) next
			if (seen[$NF]++) next
			printf "| `%s` | %s | %s |\n", $NF, $1, $2 }' | head -25)
else
	worker_prof="| (perf record does not work on this machine) | | |"
fi

# ---- generate and consume, with callgrind
cg_prof=""
cg_calls=""
if command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
	start=$(q -c "SELECT greatest((SELECT last_value FROM bench.ext_seq), (SELECT last_value FROM bench.plain_seq)) + 1")
	need_pool $(( prof_n + 10 ))
	q -c "SELECT bench.overdue(20000)" -c "CHECKPOINT" >/dev/null
	say "profile: stopping the cluster for single-user backends under callgrind ($prof_n calls each)"
	[ -n "$worker_stopped" ] && resume_worker
	"${AS_USER[@]}" "$bindir/pg_ctl" -D "$w/data" -m fast stop >/dev/null
	pg_started=0

	# one-line statement from a pgbench script, its variables replaced
	stmt_of() {
		grep -v '^[[:space:]]*--' "test/bench/$1" | tr '\n\t' '  ' |
			sed -e "s/:inst\b/'$inst'::uuid/g" -e "s|:callback\b|'$callback'::jsonb|g" \
				-e 's/:client_id\b/1/g' -e "s/(SELECT nextval('bench\.[a-z_]*'))/\$1/g"
	}
	for wl in generate generate_plain consume consume_plain expire; do
		f="$w/cg-$wl.sql"
		case "$wl" in
			generate*) { echo "PREPARE s AS $(stmt_of "$wl.sql")"
						 for _ in $(seq 1 "$prof_n"); do echo "EXECUTE s;"; done; } >"$f" ;;
			consume*) { echo "PREPARE s(bigint) AS $(stmt_of "$wl.sql")"
						seq "$start" $(( start + prof_n - 1 )) | sed 's/.*/EXECUTE s(&);/'; } >"$f" ;;
			expire) printf 'SELECT otp_link.otp_link_expire(10000);\nSELECT otp_link.otp_link_expire(10000);\n' >"$f" ;;
		esac
		chmod 644 "$f"
		say "  callgrind: $wl"
		"${AS_USER[@]}" valgrind --tool=callgrind --callgrind-out-file="$w/cg-$wl.out" \
			--toggle-collect=PortalRun --toggle-collect=CommitTransactionCommand \
			"$bindir/postgres" --single -D "$w/data" -c shared_buffers=512MB \
			-c full_page_writes=off -c log_min_messages=warning bench \
			<"$f" >"$w/cg-$wl.stdout" 2>"$w/cg-$wl.stderr" || true
		callgrind_annotate --inclusive=yes --threshold=100 "$w/cg-$wl.out" >"$w/cg-$wl.txt" 2>/dev/null || true
	done

	# instructions per call: total minus single-user mode's result printing
	ir_of() {	# ir_of WORKLOAD FUNCTION: inclusive Ir of FUNCTION (0 if absent)
		awk -v fn="$2" '{ x = $0; sub(/^ +/, "", x); split(x, a, " ");
			if (index(x, ":" fn " [") > 0) { gsub(",", "", a[1]); print a[1]; found = 1; exit } }
			END { if (!found) print 0 }' "$w/cg-$1.txt"
	}
	for wl in generate generate_plain consume consume_plain expire; do
		total=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$w/cg-$wl.txt")
		debug=$(ir_of "$wl" debugtup)
		n=$prof_n
		[ "$wl" = expire ] && n=20000
		ipc[$wl]=$(awk -v t="${total:-0}" -v d="$debug" -v n="$n" 'BEGIN { printf "%.0f", (t - d) / n }')
	done
	cg_calls="| statement | instructions per call | vs baseline |
|---|---|---|
| otp_link_generate | $(fmt "${ipc[generate]}") | $(ratio "${ipc[generate]}" "${ipc[generate_plain]}")× |
| baseline INSERT … RETURNING | $(fmt "${ipc[generate_plain]}") | |
| otp_link_consume_message (verified) | $(fmt "${ipc[consume]}") | $(ratio "${ipc[consume]}" "${ipc[consume_plain]}")× |
| baseline UPDATE + 2 INSERTs | $(fmt "${ipc[consume_plain]}") | |
| otp_link_expire(10000), per expired link | $(fmt "${ipc[expire]}") | |"

	# the named functions with the largest inclusive cost, per call and in %
	# recursive functions (shown as f'2 ...) have unreliable inclusive costs: left out
	top_of() {	# top_of WORKLOAD CALLS
		awk -v n="$2" -v total="$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$w/cg-$1.txt")" '
			NR == FNR { if (match($0, /:[A-Za-z_0-9]+\047[0-9]+ \[/)) { f = substr($0, RSTART + 1, RLENGTH - 1); sub(/\047.*/, "", f); rec[f] = 1 } next }
			/file:function/ { go = 1; next }
			go && NF >= 3 {
				ir = $1; gsub(",", "", ir); ir += 0
				fn = $0; sub(/^.*\) +/, "", fn); sub(/ \[.*$/, "", fn); sub(/^.*:/, "", fn)
				if (fn ~ /\047/ || rec[fn]) next
				if (fn ~ /^0x/ || fn == "???" || fn ~ /below main|libc_start|^main$|PostgresMain|PostgresSingleUserMain|PortalRun|ProcessUtility|ExecuteQuery|ExecInterpExprStillValid|fmgr_security_definer|^ExecScan$|^standard_|_or_ereport$|DirectFunctionCall|otp_spi_execute|debugtup/) next
				if (ir > 0.97 * total || ir < 0.02 * total || seen[fn]++) next
				printf "| `%s` | %.0f | %.1f %% |\n", fn, ir / n, 100 * ir / total
				if (++k >= 20) exit
			}' "$w/cg-$1.txt" "$w/cg-$1.txt"
	}
	cg_prof="#### otp_link_generate: largest inclusive costs (callgrind)

| function | instructions per call | share |
|---|---|---|
$(top_of generate "$prof_n")

#### otp_link_consume_message: largest inclusive costs (callgrind)

| function | instructions per call | share |
|---|---|---|
$(top_of consume "$prof_n")

#### otp_link_expire: largest inclusive costs per expired link (callgrind, 2 batches of 10,000)

| function | instructions per link | share |
|---|---|---|
$(top_of expire 20000)"
else
	cg_calls="(valgrind is not installed: no callgrind profile)"
fi

profile="#### Profile: instructions per call (callgrind, $prof_n calls, single-user backend)

$cg_calls

$cg_prof

#### Delivery worker at 100 callbacks/s: where its CPU goes (perf, cpu-clock, inclusive)

| function | share (inclusive) | self |
|---|---|---|
$worker_prof"
