# test/bench/phases.sh: where a delivery's microseconds go (sourced by
# test/bench/run.sh, which calls phase_burst after the first 20,000
# burst; docs/performance.md, "Deliveries per second").
#
# phase_burst: one more burst of 20,000 callbacks to nginx, with
# "perf record -e cpu-clock -g" on the worker's pid from before the COMMIT
# until the last one is recorded.  Each sample's call chain is read from
# the innermost frame outwards; the first frame whose function (or, for
# frames without a name, whose library) matches one of the pattern lists
# below gives the sample its phase; a chain matching none is "other".
# The shares of the samples, times the worker's CPU time during the burst
# (/proc/PID/stat) divided by the deliveries, are microseconds of worker
# CPU per delivery.  Sets $phase_table (Markdown) and phase_* for the
# summary row.
#
# The lists are extended regular expressions on function names, matched
# case-sensitively; keep them in step with src/queue.c, worker.c, http.c,
# signing.c and outbound.c (a renamed function falls through to the next
# named frame outwards, which usually still has the right phase).  Order
# matters only within one frame: a function whose name says it claims and
# records ("claim+record") is checked first.

PHASES=(claim+record claim record sign build http wait)
declare -A PHASE_RE PHASE_DSO PHASE_WHAT PHASE_SHOW
# one transaction that claims and records (if claim and record are merged
# and their helpers inlined, the samples cannot be split: reported as such)
PHASE_RE[claim+record]='^otp_.*(claim.*record|record.*claim)|^otp_queue_(round|work|step|cycle)$'
PHASE_WHAT[claim+record]='the round'\''s transaction around both (otp_queue_round: begin, COMMIT)'
PHASE_SHOW[claim+record]='otp_…claim…record…, otp_queue_round'
# the claim: the SQL that selects and locks due deliveries, its commit
PHASE_RE[claim]='^otp_.*claim|^claim_|^next_due$|^held_ids$'
PHASE_WHAT[claim]='SQL that selects and locks due deliveries'
PHASE_SHOW[claim]='claim_rows, claim_args, next_due, held_ids'
# the record: the SQL that writes the outcomes, its commit
PHASE_RE[record]='^otp_.*record|^results?_(update|row|status|arrays|recorded)$|^record_'
PHASE_WHAT[record]='SQL that writes the outcomes (delivered, retry, dead)'
PHASE_SHOW[record]='record_rows, results_arrays, results_recorded, result_row, result_status'
# the signature: HMAC-SHA256 of the webhook (and the key)
PHASE_RE[sign]='^otp_webhook_(signature|key)|^sign_webhook$|^signature_with$|^otp_.*sign|^pg_hmac_|^pg_cryptohash_|^pg_sha256_|HMAC|^EVP_|^SHA256|^sha256_|^pg_b64_'
PHASE_DSO[sign]='libcrypto'
PHASE_WHAT[sign]='HMAC-SHA256 webhook signature and its key'
PHASE_SHOW[sign]='otp_webhook_signature, otp_webhook_key, sign_webhook, pg_hmac_*, libcrypto'
# building the request from the claimed row (inside the claim transaction)
PHASE_RE[build]='^otp_build_request$|^build_gateway$|^gw_|^add_secret$'
PHASE_WHAT[build]='the request built from the claimed row (headers, body), inside the claim transaction'
PHASE_SHOW[build]='otp_build_request, build_gateway, gw_*'
# HTTP: libcurl and the sockets
PHASE_RE[http]='^otp_http_|^curl_|^Curl_|^socket_cb$|^timer_cb$|^write_cb$|^opensocket_cb$|^prereq_cb$|^start_requests$|^take_finished$|^otp_dest_|^tcp_|^inet_|^sock_|^__sys_(sendto|recvfrom|sendmsg|recvmsg|connect|socket)$|^__x64_sys_(sendto|recvfrom|sendmsg|recvmsg|connect|socket)$|^ip_(finish|output|rcv|local)|^__(dev|netif)_|^net_rx_|^__libc_(send|recv)|^__(send|recv)(to|from|msg)?$|^(send|recv)(to|from|msg)?$|^do_sys_poll$|^__x64_sys_poll$'
PHASE_DSO[http]='libcurl|libnghttp|libssl|libssh|libidn|libpsl|libbrotli|libzstd|librtmp|libgssapi|libldap|libz\.'
PHASE_WHAT[http]='libcurl, the sockets and their system calls, per-destination accounting'
PHASE_SHOW[http]='otp_http_*, curl_*, libcurl, otp_dest_*, send/recv/poll, kernel tcp_*/ip_*/sock_*'
# waiting: the wait event set, epoll, the latch
PHASE_RE[wait]='^wait_for_work$|WaitEventSet|^WaitLatch|^ResetLatch$|^epoll_|^ep_poll|^do_epoll|^__x64_sys_epoll|^__sys_epoll'
PHASE_WHAT[wait]='the wait event set (built each round), epoll, the latch'
PHASE_SHOW[wait]='wait_for_work, *WaitEventSet*, epoll, latch'

# phase_classify PERF_DATA OUT OTHER: OUT gets "phase samples total
# samples-inside-a-COMMIT" lines;
# OTHER the innermost named functions of the samples left to "other", with
# their counts (to extend the patterns)
phase_classify() {
	perf script -i "$1" -F ip,sym,dso 2>/dev/null | phase_classify_text "$2" "$3"
}
# phase_classify_text OUT OTHER: the same from perf script's text on stdin
phase_classify_text() {
	awk -v phases="${PHASES[*]}" \
		-v re_claimrecord="${PHASE_RE[claim+record]}" -v re_claim="${PHASE_RE[claim]}" \
		-v re_record="${PHASE_RE[record]}" -v re_sign="${PHASE_RE[sign]}" -v re_build="${PHASE_RE[build]}" \
		-v re_http="${PHASE_RE[http]}" -v re_wait="${PHASE_RE[wait]}" \
		-v dso_sign="${PHASE_DSO[sign]}" -v dso_http="${PHASE_DSO[http]}" -v other="$2" '
		BEGIN { n = split(phases, ph, " ")
			re["claim+record"] = re_claimrecord; re["claim"] = re_claim; re["record"] = re_record
			re["sign"] = re_sign; re["build"] = re_build; re["http"] = re_http; re["wait"] = re_wait
			dso["sign"] = dso_sign; dso["http"] = dso_http }
		function finish() {
			if (started) {
				if (got == "") { got = "other"; oth[first == "" ? "(no named frame)" : first]++ }
				count[got]++; total++
				if (commit) incommit[got]++
			}
			started = 0; got = ""; first = ""; commit = 0
		}
		/^[[:space:]]*$/ { finish(); next }
		{
			started = 1
			sym = $2; lib = $NF
			sub(/\+0x[0-9a-f]+$/, "", sym)
			# inside a COMMIT (below the phase frame or not): noted apart
			if (sym ~ /^(CommitTransactionCommand|otp_worker_end_tx|RecordTransactionCommit|XLogFlush)$/) commit = 1
			if (got != "") next
			if (first == "" && sym != "[unknown]") first = sym
			for (i = 1; i <= n; i++) {
				p = ph[i]
				if (sym != "[unknown]" && sym ~ re[p]) { got = p; break }
				if (sym == "[unknown]" && (p in dso) && dso[p] != "" && lib ~ dso[p]) { got = p; break }
			}
		}
		END {
			finish()
			for (p in count) printf "%s %d %d %d\n", p, count[p], total, incommit[p] + 0
			for (f in oth) printf "%d %s\n", oth[f], f | ("sort -rn >" other)
		}' >"$1"
}

phase_table=""
phase_burst() {
	local data=$w/perf-burst.data ppid total_us
	if ! command -v perf >/dev/null || ! perf record -q -e cpu-clock -o "$w/perf-probe.data" -- true >/dev/null 2>&1; then
		phase_table="(perf record does not work on this machine: no phase profile)"
		return 0
	fi
	perf record -q -e cpu-clock -F 1999 -g -p "$wpid" -o "$data" >"$w/perf-burst.out" 2>&1 &
	ppid=$!
	bg_pids+=("$ppid")
	sleep 1
	burst burstprof
	kill -INT "$ppid" 2>/dev/null
	wait "$ppid" || true
	bg_pids=()
	phase_classify "$data" "$w/phases.txt" "$w/phases-other.txt"

	phase_cpu=${bst[cpu.burstprof]}
	phase_ok=${bst[ok.burstprof]}
	phase_samples=$(awk 'NR == 1 { print $3 }' "$w/phases.txt")
	total_us=$(awk -v c="$phase_cpu" -v n="$phase_ok" 'BEGIN { if (n > 0) printf "%.1f", c * 1e6 / n }')
	phase_us_total=$total_us
	phase_oncpu=$(awk -v c="$total_us" -v r="${bst[rate.burstprof]}" 'BEGIN { if (r > 0) printf "%.0f", 100 * c * r / 1e6 }')
	phase_wall_us=$(awk -v r="${bst[rate.burstprof]}" 'BEGIN { if (r > 0) printf "%.1f", 1e6 / r }')
	local p line rows=""
	for p in "${PHASES[@]}" other; do
		line=$(awk -v p="$p" -v t="$total_us" '$1 == p { printf "%.1f %% | %.1f | %.1f", 100 * $2 / $3, t * $2 / $3, t * $4 / $3 }' "$w/phases.txt")
		[ -z "$line" ] && { [ "$p" = claim+record ] && continue; line="0 % | 0 | 0"; }
		local what=${PHASE_WHAT[$p]:-everything else: the round loop, memory, the executor outside the phases, unnamed frames}
		rows="$rows| $p | $what | $line | ${PHASE_SHOW[$p]:-the rest} |
"
	done
	local other_top
	other_top=$(awk -v t="$(awk 'NR == 1 { print $3 }' "$w/phases.txt")" 'NR <= 6 && t > 0 { printf "%s`%s` %.1f %%", (NR > 1 ? ", " : ""), $2, 100 * $1 / t }' "$w/phases-other.txt")
	phase_table="#### Worker: µs per delivery by phase (perf cpu-clock during a burst of 20,000 callbacks to nginx)

${bst[ok.burstprof]} delivered in this burst at ${bst[rate.burstprof]}/s under perf (the unprofiled burst above: ${bst[rate.burst]}/s); the worker used ${phase_cpu} s of CPU: **${total_us} µs of worker CPU per delivery** (a delivery every ${phase_wall_us} µs of wall time: the worker was on a CPU ${phase_oncpu} % of the burst, the rest it waited for WAL flushes, nginx or a CPU; 20,000/s needs 50 µs). ${phase_samples:-0} samples at 1,999 Hz; each sample goes to the innermost frame of its call chain that matches a phase's pattern (unnamed frames by their library). Noisy: ±30 % from run to run on the shared 2-core VM; /proc counts CPU in 10 ms ticks.

| phase | what | share of worker CPU | µs per delivery | of which in COMMIT | functions (patterns at the top of test/bench/phases.sh) |
|---|---|---|---|---|---|
$rows
\"other\" is mostly libc (malloc, free) and kernel time whose callers the chain does not show: libc and Debian's libcurl have no frame pointers, so a sample inside them loses the frame of its caller. Its largest innermost functions: ${other_top:-none}."
	say "  phases: $(awk -v t="$total_us" '{ printf "%s %.1f µs; ", $1, t * $2 / $3 }' "$w/phases.txt")(of $total_us µs per delivery)"
}
