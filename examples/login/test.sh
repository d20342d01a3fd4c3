#!/usr/bin/env bash
#
# examples/login/test.sh: end-to-end test of the login example in headless
# Chromium.
#
# Installs what is missing (chromium and zbar-tools through scripts/setup,
# the npm packages with npm ci), starts a throw-away cluster and the server
# on a free port of 127.0.0.1, runs test/login.test.js (playwright-core with
# /usr/bin/chromium; the WhatsApp side is simulated by an INSERT into the
# inbox table), writes screenshot.png, then test/attacks.test.js (issue #18:
# the example as an attacker sees it; it starts servers of its own, in
# other configurations), then stops everything it started and checks that
# it did.  Needs otp_link installed (make install at the top; pg_config on
# PATH says where).  SERVER_JS=path tests another server.js (e.g. an old one).
# Last line: "N passed, M failed"; exit status 0 only when M is 0.
#
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here" || exit 1
. ./cluster.sh

passed=0
failed=0
server_pid=
browser_ran=
tmp=$(mktemp -d /tmp/otp_link-login-test.XXXXXX)
chmod 711 "$tmp"	# the cluster's user must reach $tmp/pg

ok() { passed=$((passed + 1)); echo "ok - $*"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $*"; }

# browsers this run started: their command line holds our temporary directory
browser_pids() { pgrep -f -- "--user-data-dir=$tmp/" 2>/dev/null || true; }

stop_server() {
	[ -n "$server_pid" ] || return 0
	kill -TERM "$server_pid" 2>/dev/null
	for _ in $(seq 1 50); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$server_pid" 2>/dev/null; then
		kill -KILL "$server_pid" 2>/dev/null
		wait "$server_pid" 2>/dev/null
		server_pid=
		return 1
	fi
	wait "$server_pid" 2>/dev/null
	server_pid=
}

finish() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$server_pid" ]; then
		if stop_server; then ok "the server stopped on SIGTERM"; else not_ok "the server stopped on SIGTERM"; fi
	fi
	if [ -n "$CLUSTER_DIR" ] && [ -f "$CLUSTER_DIR/data/postmaster.pid" ]; then
		cluster_stop
		if [ -f "$CLUSTER_DIR/data/postmaster.pid" ]; then not_ok "the cluster stopped"; else ok "the cluster stopped"; fi
	fi
	local left
	left=$(browser_pids)
	if [ -z "$browser_ran" ]; then
		:
	elif [ -z "$left" ]; then
		ok "no browser process left behind"
	else
		not_ok "no browser process left behind (killing $left)"
		# shellcheck disable=SC2086
		kill -KILL $left 2>/dev/null
	fi
	rm -rf "$tmp"
	[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && not_ok "test.sh ran to its end (exit status $rc)"
	echo "$passed passed, $failed failed"
	# (in an EXIT trap, a bare "exit" would keep the status from before the trap)
	if [ "$failed" -eq 0 ]; then exit 0; else exit 1; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

die() { not_ok "$*"; exit 1; }

# --- what the test needs (playwright-core wants Node.js 20 or newer)
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null ||
	die "Node.js 20 or newer (found $(node --version 2>/dev/null || echo none))"
if ! timeout 600 ../../scripts/setup chromium zbar-tools; then
	die "scripts/setup chromium zbar-tools"
fi
if ! timeout 120 npm ci --no-audit --no-fund --prefer-offline >"$tmp/npm.log" 2>&1; then
	cat "$tmp/npm.log"
	die "npm ci"
fi

# --- the database
mkdir "$tmp/pg"
cluster_start "$tmp/pg" || die "a throw-away cluster with otp_link and the inbox"

# --- the server, on a free port
port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })') ||
	die "a free port"
base="http://127.0.0.1:$port"
server_js=$(realpath "${SERVER_JS:-$here/server.js}")
(cd "$(dirname "$server_js")" && OTP_LINK_DEV=1 PORT="$port" exec node "$server_js") >"$tmp/server.log" 2>&1 &
server_pid=$!
up=
for _ in $(seq 1 100); do
	if curl -fsS -o /dev/null --max-time 2 "$base/healthz" 2>/dev/null; then up=1; break; fi
	kill -0 "$server_pid" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$up" ]; then
	cat "$tmp/server.log"
	die "the server answers on $base"
fi
ok "the server answers on $base"

# --- the browser
mkdir "$tmp/browser"
out="$tmp/browser.out"
browser_ran=1
# count_summary NAME: adds the "N passed, M failed" of $out to ours
count_summary() {
	local summary p f
	summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
	if [ -z "$summary" ]; then
		not_ok "$1 reported its results"
	else
		read -r p _ f _ <<<"$summary"
		passed=$((passed + p))
		failed=$((failed + f))
	fi
}
TMPDIR="$tmp/browser" BASE_URL="$base" SCREENSHOT="$here/screenshot.png" \
	timeout -k 5 110 node test/login.test.js 2>&1 | tee "$out"
count_summary "the browser test"
TMPDIR="$tmp/browser" SERVER_JS="$server_js" \
	timeout -k 5 120 node test/attacks.test.js 2>&1 | tee "$out"
count_summary "the attack test"
# the summary line of the browser test is not the last line of this script
if [ "$failed" -ne 0 ]; then
	echo "==== server log"
	cat "$tmp/server.log"
fi
