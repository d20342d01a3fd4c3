# test/bench/flow.sh: the whole-flow benchmark of test/bench/run.sh
# (sourced by it with the cluster, the worker, nginx and receiver.py
# running; docs/performance.md, "The whole flow").
#
# Logins at BENCH_FLOW_RATE/s (default 500) for BENCH_FLOW_SECONDS
# (default 60): one pgbench (-R rate, 4 clients) runs flow_generate.sql
# (otp_link_generate, callbacks to receiver.py, the code kept in
# bench.flow, due 1 to 5 s later); a second one (-R 1.1 x rate, 6 s longer)
# runs flow_consume.sql (consumes the oldest due code; its reply goes to
# nginx, its success callback to receiver.py).  A loop samples the queued
# deliveries every second.  Sets flow_* for the table:
#   flow_gen_p50/p99, flow_con_p50/p99   transaction times (ms) from
#       pgbench's per-transaction logs, minus pgbench's schedule lag
#   flow_arr_p50/p99/max   consume COMMIT (when pgbench had its answer) ->
#       arrival of its callback at receiver.py (ms); joined through
#       bench.flow (client, k) -> link -> otp_link.deliveries.webhook_id
#       -> receiver.py's webhook-id
#   flow_q0, flow_qmax, flow_qend   queued deliveries at the start, at most
#       during the run (sampled each second), when the generator stopped
#   flow_deliv   the flow's replies and callbacks as the worker saw them:
#       delivered, retried, delivered_at - created_at, the commonest error

BENCH_FLOW_RATE=${BENCH_FLOW_RATE:-500}
BENCH_FLOW_SECONDS=${BENCH_FLOW_SECONDS:-60}

flow_run() {
	local rate=$BENCH_FLOW_RATE secs=$BENCH_FLOW_SECONDS crate ctime sampler watcher gpid cpid
	local flowcb="{\"success\": \"$rurl/flow/success\", \"failed\": \"$rurl/flow/failed\"}"
	crate=$(( rate * 11 / 10 ))
	ctime=$(( secs + 6 ))
	curl -sf -o /dev/null "$rurl/__reset"
	rm -f "$w"/flowgen.* "$w"/flowcon.*
	flow_q0=$(q -c "SELECT count(*) FROM otp_link.deliveries WHERE status = 'queued'")
	# the sampler: epoch and queued deliveries, once a second
	( while :; do
		q -F' ' -c "SELECT extract(epoch FROM clock_timestamp()), count(*) FROM otp_link.deliveries WHERE status = 'queued'" \
			>>"$w/flow-queued.txt" 2>/dev/null || true
		sleep 1
	  done ) &
	sampler=$!
	bg_pids+=("$sampler")
	# what the worker is doing, every 20 ms (one psql session, \watch)
	printf '%s\n' "SELECT extract(epoch FROM clock_timestamp()), coalesce(state, '-'), coalesce(wait_event_type || ':' || wait_event, 'CPU'), xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = $wpid" '\watch 0.02' >"$w/worker-watch.sql"
	psql -X -q -At -F' ' -P footer=off -h "$w" -p "$pgport" -U postgres -d bench -f "$w/worker-watch.sql" \
		>"$w/worker-watch.txt" 2>/dev/null &
	watcher=$!
	bg_pids+=("$watcher")
	flow_cpu0=$(cpu_ticks "$wpid")
	pgbench -n -M prepared -c 4 -j 1 -R "$rate" -T "$secs" -D inst="$inst" -D flowcb="$flowcb" \
		-f test/bench/flow_generate.sql -l --log-prefix="$w/flowgen" >"$w/pgbench-flowgen.out" 2>&1 &
	gpid=$!
	bg_pids+=("$gpid")
	pgbench -n -M prepared -c 4 -j 1 -R "$crate" -T "$ctime" -D k=0 \
		-f test/bench/flow_consume.sql -l --log-prefix="$w/flowcon" >"$w/pgbench-flowcon.out" 2>&1 &
	cpid=$!
	bg_pids+=("$cpid")
	wait "$gpid" || {
		cat "$w/pgbench-flowgen.out" >&2
		echo "run.sh: the flow's generator pgbench failed" >&2
		return 1
	}
	# the end of the load: the last logins are still being consumed
	flow_qend=$(q -c "SELECT count(*) FROM otp_link.deliveries WHERE status = 'queued'")
	wait "$cpid" || {
		cat "$w/pgbench-flowcon.out" >&2
		echo "run.sh: the flow's consumer pgbench failed" >&2
		return 1
	}
	flow_cpu1=$(cpu_ticks "$wpid")
	kill "$sampler" "$watcher" 2>/dev/null
	wait "$sampler" "$watcher" 2>/dev/null || true
	bg_pids=()
	flow_qmax=$(awk 'BEGIN { m = 0 } $2 + 0 > m { m = $2 + 0 } END { print m }' "$w/flow-queued.txt")
	# the callbacks still on their way: at most 30 s
	local deadline=$(( $(date +%s) + 30 ))
	while [ "$(q -c "SELECT count(*) FROM otp_link.deliveries d JOIN bench.flow f ON d.link_id = f.link
			WHERE d.kind = 'callback' AND d.status = 'queued'")" -gt 0 ] && [ "$(date +%s)" -lt "$deadline" ]; do
		sleep 0.5
	done
	sleep 0.5
	curl -sf -o /dev/null "$rurl/__dump?$w/arrivals-flow.tsv"
	cat "$w"/flowgen.* >"$w/flowgen.txt"
	cat "$w"/flowcon.* >"$w/flowcon.txt"
	IFS='|' read -r flow_gen_n flow_gen_p50 flow_gen_p99 flow_gen_lag99 flow_con_n flow_con_p50 flow_con_p99 flow_con_lag99 \
		flow_polls flow_made flow_verified flow_left flow_arr_n flow_arr_p50 flow_arr_p99 flow_arr_max < <(q -F'|' <<SQL
CREATE TEMP TABLE gen (client int, tx int, us bigint, script int, epoch bigint, epoch_us bigint, lag bigint);
\\copy gen FROM '$w/flowgen.txt' WITH (DELIMITER ' ')
CREATE TEMP TABLE con (client int, tx int, us bigint, script int, epoch bigint, epoch_us bigint, lag bigint);
\\copy con FROM '$w/flowcon.txt' WITH (DELIMITER ' ')
CREATE TEMP TABLE arrivals (t float8, wid text, path text);
\\copy arrivals FROM '$w/arrivals-flow.tsv'
CREATE TEMP TABLE consumed AS
	SELECT f.link, c.us, c.lag, c.epoch + c.epoch_us / 1e6 AS done
	  FROM bench.flow f JOIN con c ON c.client = f.client AND c.tx = f.k - 1
	 WHERE f.outcome IS NOT NULL;
CREATE TEMP TABLE arrived AS
	SELECT (a.t - x.done) * 1000 AS ms
	  FROM consumed x
	  JOIN otp_link.deliveries d ON d.link_id = x.link AND d.kind = 'callback'
	  JOIN (SELECT wid, min(t) AS t FROM arrivals WHERE path = '/flow/success' GROUP BY wid) a ON a.wid = d.webhook_id;
SELECT (SELECT count(*) FROM gen),
	   (SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY us - lag) / 1000)::numeric, 2) FROM gen),
	   (SELECT round((percentile_cont(0.99) WITHIN GROUP (ORDER BY us - lag) / 1000)::numeric, 2) FROM gen),
	   (SELECT round((percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) / 1000)::numeric, 2) FROM gen),
	   (SELECT count(*) FROM consumed),
	   (SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY us - lag) / 1000)::numeric, 2) FROM consumed),
	   (SELECT round((percentile_cont(0.99) WITHIN GROUP (ORDER BY us - lag) / 1000)::numeric, 2) FROM consumed),
	   (SELECT round((percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) / 1000)::numeric, 2) FROM consumed),
	   (SELECT count(*) FROM con) - (SELECT count(*) FROM consumed),
	   (SELECT count(*) FROM bench.flow),
	   (SELECT count(*) FROM bench.flow WHERE outcome = 'verified'),
	   (SELECT count(*) FROM bench.flow WHERE outcome IS NULL),
	   (SELECT count(*) FROM arrived),
	   (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) FROM arrived),
	   (SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2) FROM arrived),
	   (SELECT round(max(ms)::numeric, 2) FROM arrived);
SQL
)
	flow_cpu=$(awk -v c=$(( flow_cpu1 - flow_cpu0 )) -v hz="$hz" -v t="$ctime" 'BEGIN { printf "%.0f", 100 * c / hz / t }')
	flow_outcomes=$(q -c "SELECT string_agg(coalesce(outcome, 'not consumed') || ' ' || n, ', ' ORDER BY n DESC)
		FROM (SELECT outcome, count(*) AS n FROM bench.flow GROUP BY 1) s")
	# what the worker did with the flow's deliveries (server side)
	flow_deliv=$(q -c "SELECT string_agg(format('%s: %s delivered, %s retried, delivered_at - created_at p50 %s / p99 %s ms%s',
			CASE kind WHEN 'reply' THEN 'replies' ELSE 'callbacks' END, delivered, retried, p50, p99, coalesce(', last error: ' || err, '')), '; ' ORDER BY kind)
		FROM (SELECT d.kind, count(*) FILTER (WHERE d.status = 'delivered') AS delivered,
					 count(*) FILTER (WHERE d.attempts > 1) AS retried,
					 round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.delivered_at - d.created_at)) * 1000)::numeric, 1) AS p50,
					 round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.delivered_at - d.created_at)) * 1000)::numeric, 1) AS p99,
					 mode() WITHIN GROUP (ORDER BY left(d.last_error, 80)) AS err
				FROM otp_link.deliveries d JOIN bench.flow f ON d.link_id = f.link
			   GROUP BY d.kind) s")
	say "  $flow_made generated ($flow_gen_n logged), $flow_con_n consumed ($flow_outcomes), $flow_polls empty polls; $flow_arr_n callbacks timed"
	say "  generate p50 $flow_gen_p50 / p99 $flow_gen_p99 ms; consume p50 $flow_con_p50 / p99 $flow_con_p99 ms; COMMIT -> arrival p50 $flow_arr_p50 / p99 $flow_arr_p99 / max $flow_arr_max ms"
	say "  queued deliveries: $flow_q0 at the start, at most $flow_qmax, $flow_qend at the end; worker CPU ${flow_cpu}%"
	say "  $flow_deliv"
}
