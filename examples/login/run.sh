#!/usr/bin/env bash
#
# examples/login/run.sh: the "Log in with WhatsApp" example on a throw-away
# cluster.  Needs otp_link installed (make && make install at the top) and
# node >= 18.  Starts PostgreSQL in a temporary directory, loads schema.sql
# (the extension, the inbox table and its trigger), and runs the server on
# http://127.0.0.1:$PORT (default 3000) with the simulated phone switched on.
# Ctrl-C stops everything and removes the cluster.
#
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
. ./cluster.sh

export PORT="${PORT:-3000}"

if [ ! -d node_modules/pg ] || [ ! -d node_modules/qrcode ]; then
	echo "run.sh: installing the npm dependencies (npm ci --omit=dev)"
	npm ci --omit=dev --no-audit --no-fund >/dev/null
fi

tmp=$(mktemp -d /tmp/otp_link-login.XXXXXX)
server_pid=
cleanup() {
	trap - EXIT INT TERM
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	cluster_stop
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "run.sh: starting a throw-away cluster in $tmp"
cluster_start "$tmp"

OTP_LINK_DEV=1 node server.js &
server_pid=$!
for _ in $(seq 1 50); do
	if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then
		echo
		echo "    Open http://127.0.0.1:$PORT/   (Ctrl-C to stop)"
		echo
		break
	fi
	kill -0 "$server_pid" 2>/dev/null || { echo "run.sh: the server did not start" >&2; exit 1; }
	sleep 0.2
done
wait "$server_pid"
