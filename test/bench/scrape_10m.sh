#!/usr/bin/env bash
#
# test/bench/scrape_10m.sh: what a Prometheus scrape of otp_link costs with
# 10 million links stored (issue #14, item 5; docs/performance.md).
#
# On a throw-away cluster (initdb in a temporary directory, a free port,
# otp_link preloaded) it inserts N links (default 10,000,000) straight into
# otp_link.links with INSERT ... SELECT generate_series (plausible values:
# created evenly over the last 30 days, those of the last 10 minutes still
# pending (about 2,300 of 10 M), the others verified, expired or failed)
# and 2,000 deliveries, VACUUMs, then times otp_link_prometheus() and the
# exporter's queries (contrib/prometheus/queries.yaml) 21 times each and
# prints the medians, with the machine's load (needs python3-yaml).  Stops and removes the
# cluster.  Run as a user that may run postgres (not root), with the
# extension installed for the pg_config on PATH (or PG_CONFIG):
#   test/bench/scrape_10m.sh [N]
#
set -euo pipefail
N=${1:-10000000}
PG_CONFIG=${PG_CONFIG:-pg_config}
bin=$($PG_CONFIG --bindir)
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/otp_link-scrape.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
trap '"$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

"$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
cat >>"$dir/data/postgresql.conf" <<EOC
shared_preload_libraries = 'otp_link'
port = $port
unix_socket_directories = '$dir'
listen_addresses = ''
shared_buffers = 1GB
max_wal_size = 8GB
otp_link.database = 'postgres'
EOC
"$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres)

"${psql[@]}" <<EOS
CREATE EXTENSION otp_link;
SELECT otp_link.otp_link_instance_create('201553730699', 'Scrape')->>'uuid' AS inst \gset
\timing on
INSERT INTO otp_link.links (id, instance_id, code_hash, status, messages, callbacks,
                            created_at, expires_at, finished_at, messages_received, reason)
SELECT gen_random_uuid(), :'inst', sha256(int8send(g)),
       CASE WHEN c > now() - interval '10 minutes' THEN 'pending' WHEN g % 10 < 7 THEN 'verified'
            WHEN g % 10 < 9 THEN 'expired' ELSE 'failed' END,
       '{}', '{}', c, c + interval '10 minutes',
       CASE WHEN c <= now() - interval '10 minutes' THEN c + interval '20 seconds' END,
       (c <= now() - interval '10 minutes')::int,
       CASE WHEN g % 10 >= 7 AND c <= now() - interval '10 minutes' THEN 'expired' END
  FROM generate_series(1, $N) g,
       LATERAL (SELECT now() - (g::float8 / $N) * interval '30 days' AS c) t;
INSERT INTO otp_link.deliveries (instance_id, kind, event, destination, payload, status, next_attempt_at)
SELECT :'inst', 'callback', 'otp_link.verified', 'https://cb' || g % 20 || '.example/hook', '{}',
       CASE WHEN g % 4 = 0 THEN 'dead' ELSE 'queued' END, now() + (g % 60 - 30) * interval '1 second'
  FROM generate_series(1, 2000) g;
VACUUM ANALYZE otp_link.links;
VACUUM ANALYZE otp_link.deliveries;
EOS

cat >"$dir/expo.sql" <<'EOS'
SELECT length(otp_link.otp_link_prometheus());
EOS
# the exporter's queries, one after the other, as one scrape runs them
/usr/bin/python3 - "$top/contrib/prometheus/queries.yaml" >"$dir/exporter.sql" <<'EOP'
import sys, yaml
for name, spec in yaml.safe_load(open(sys.argv[1])).items():
    print(spec["query"].strip().rstrip(";") + ";")
EOP

# median_ms file: 21 runs of file in one session, median of \timing
median_ms()
{
	for i in $(seq 21); do cat "$1"; done |
		"${psql[@]}" -o /dev/null -c '\timing on' -f - 2>&1 |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' >"$dir/t"
	sort -n "$dir/t" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
# (the exporter's file runs 5 statements a scrape: sum them per scrape)
median_scrape_ms()
{
	local k
	k=$(grep -c ';$' "$1")
	for i in $(seq 21); do cat "$1"; done |
		"${psql[@]}" -o /dev/null -c '\timing on' -f - 2>&1 |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' |
		awk -v k="$k" '{s += $1} NR % k == 0 {print s; s = 0}' | sort -n |
		awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

links=$("${psql[@]}" -Atc 'SELECT count(*) FROM otp_link.links')
size=$("${psql[@]}" -Atc "SELECT pg_size_pretty(pg_total_relation_size('otp_link.links'))")
pending=$("${psql[@]}" -Atc "SELECT count(*) FROM otp_link.links WHERE status = 'pending'")
echo "links stored: $links ($size with indexes), $pending pending"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc)"
echo "otp_link_prometheus(): median of 21: $(median_ms "$dir/expo.sql") ms"
echo "exporter queries (5 statements, one scrape): median of 21: $(median_scrape_ms "$dir/exporter.sql") ms"
old=$(cat >"$dir/old.sql" <<<"SELECT length(otp_link.otp_link_metrics());"; median_ms "$dir/old.sql")
echo "otp_link_metrics() (1.0, scans the last 24 h of links): median of 21: $old ms"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
