#!/usr/bin/env bash
#
# test/demo.sh [N]: run scripts/demo N times (default 3) and check each run:
# exit status 0, no process left behind whose command line or working
# directory is in the demo's cluster directory (the postmaster, its
# children, the callback receiver), and the cluster directory removed.
#
# The cluster directory is read from the demo's line "== Starting a
# throw-away cluster in DIR".  A run's leftovers are reported, then
# stopped and removed, so that the next run starts clean.  Each run is
# bounded (OTP_LINK_DEMO_TIMEOUT seconds, default 300: TERM, then KILL).
# One line per run, with its time; the last line reads
# "demo: N passed, M failed"; exit status 0 only when M is 0.
#
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

runs=${1:-3}
case $runs in
'' | *[!0-9]* | 0) echo "usage: test/demo.sh [N]  (N > 0, default 3)" >&2; exit 2 ;;
esac
limit=${OTP_LINK_DEMO_TIMEOUT:-300}

passed=0
failed=0
demo_pid=
log=$(mktemp /tmp/otp_link-demo-test.XXXXXX)

finish() {
	trap - EXIT INT TERM
	if [ -n "$demo_pid" ]; then
		kill -TERM "$demo_pid" 2>/dev/null
		wait "$demo_pid" 2>/dev/null
	fi
	rm -f "$log"
}
trap finish EXIT
trap 'echo "test/demo.sh: interrupted" >&2; exit 130' INT TERM

# processes whose command line or working directory is in $1 ("PID ARGS" lines);
# the children of a postmaster carry a retitled command line but keep
# the data directory as their working directory
left_running() {
	python3 - "$1" <<'PY'
import os, sys
d = sys.argv[1].rstrip("/")
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) == os.getpid():
        continue
    try:
        with open(f"/proc/{p}/cmdline", "rb") as f:
            args = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{p}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        continue
    if state == "Z":
        continue
    try:
        cwd = os.readlink(f"/proc/{p}/cwd")
    except OSError:
        cwd = ""
    cwd = cwd.removesuffix(" (deleted)")
    if d in args or cwd == d or cwd.startswith(d + "/"):
        print(p, args[:150])
PY
}

# stop what a failed run left: QUIT (a postmaster's immediate shutdown), then KILL
sweep() {
	local dir=$1 pids
	pids=$(left_running "$dir" | cut -d' ' -f1)
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		kill -QUIT $pids 2>/dev/null
		for _ in $(seq 50); do
			[ -z "$(left_running "$dir")" ] && break
			sleep 0.1
		done
		pids=$(left_running "$dir" | cut -d' ' -f1)
		# shellcheck disable=SC2086
		[ -n "$pids" ] && kill -KILL $pids 2>/dev/null
	fi
	rm -rf "$dir"
}

for i in $(seq "$runs"); do
	start=$(date +%s.%N)
	timeout -k 30 "$limit" scripts/demo </dev/null >"$log" 2>&1 &
	demo_pid=$!
	wait "$demo_pid"
	rc=$?
	demo_pid=
	secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")

	problems=()
	[ "$rc" -eq 0 ] || problems+=("exit status $rc$([ "$rc" -eq 124 ] && echo " (timed out after ${limit}s)")")
	dir=$(sed -n 's/\x1b\[[0-9;]*m//g; s/^== Starting a throw-away cluster in //p' "$log" | head -n 1)
	if [ -z "$dir" ]; then
		problems+=("no \"Starting a throw-away cluster in DIR\" line in its output")
	else
		# a process in its last instant of exiting is not a leftover: allow 2 s
		for _ in $(seq 20); do
			left=$(left_running "$dir")
			[ -z "$left" ] && break
			sleep 0.1
		done
		[ -z "$left" ] || problems+=("left running: $(echo "$left" | paste -sd';' | sed 's/;/; /g')")
		[ ! -e "$dir" ] || problems+=("left on disk: $dir")
	fi

	if [ "${#problems[@]}" -eq 0 ]; then
		passed=$((passed + 1))
		echo "ok $i - scripts/demo: exit 0, nothing left running, $dir removed (${secs}s)"
	else
		failed=$((failed + 1))
		msg=$(printf '%s, ' "${problems[@]}")
		echo "not ok $i - scripts/demo: ${msg%, } (${secs}s)"
		tail -n 15 "$log" | sed 's/\x1b\[[0-9;]*m//g; s/^/#   /'
		if [ -n "$dir" ]; then
			sweep "$dir"
			[ -z "$(left_running "$dir")" ] && [ ! -e "$dir" ] &&
				echo "#   (stopped and removed what it left)"
		fi
	fi
done

echo "demo: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
