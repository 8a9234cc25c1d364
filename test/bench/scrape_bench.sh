#!/usr/bin/env bash
# scrape_bench.sh — does monitoring slow the drain? (issue #19; a benchmark, it asserts nothing)
# The drain worker publishes a backlog of EVENTS events, alternately with nobody watching
# ("quiet") and with Debian's prometheus-postgres-exporter (contrib/prometheus/
# pg_outbox_queries.yaml) scraped every 100 ms by curl on 127.0.0.1 ("scraped"), ABAB for RUNS
# rounds each, on one throwaway cluster. The drain rate is measured by the server: EVENTS /
# (the last batch's published_at - the resume's clock_timestamp()); it also prints how long a
# scrape takes while the backlog is pending (the queries count outbox.pending).
#
#   bash test/bench/scrape_bench.sh                 # RUNS=6 EVENTS=200000
#   RUNS=3 EVENTS=100000 INTERVAL=0.1 bash test/bench/scrape_bench.sh
# Needs root (runs the cluster as the postgres OS user); installs prometheus-postgres-exporter
# through test/setup.sh (no service started).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-6}
EVENTS=${EVENTS:-200000}
INTERVAL=${INTERVAL:-0.1}
[ "$(id -u)" = 0 ] || { echo "scrape_bench: run as root" >&2; exit 1; }
. test/pgenv.sh
pg_resolve
bash test/setup.sh >/dev/null
EXPORTER=/usr/bin/prometheus-postgres-exporter
[ -x "$EXPORTER" ] || { echo "scrape_bench: $EXPORTER missing" >&2; exit 1; }

W=$(mktemp -d /var/tmp/pg_outbox_scrape.XXXXXX)
chmod 755 "$W"
pg_private_install "$W/install" >/dev/null
BIN=$BINDIR
PORT=5432
HTTP_PORT=$((20000 + RANDOM % 20000))
export PGHOST=$W PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
EXPORTER_PID=""; SCRAPER_PID=""
cleanup() {
	set +e
	[ -z "$SCRAPER_PID" ] || kill "$SCRAPER_PID" 2>/dev/null
	[ -z "$EXPORTER_PID" ] || kill "$EXPORTER_PID" 2>/dev/null
	[ -f "$W/data/postmaster.pid" ] && runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1
	if [ -n "${KEEP:-}" ]; then echo "scrape_bench: kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
chown postgres: "$W"
cp contrib/prometheus/pg_outbox_queries.yaml "$W/queries.yaml"
chmod 644 "$W/queries.yaml"
runuser -u postgres -- "$BIN/initdb" -D "$W/data" -U postgres --auth=trust -E UTF8 >/dev/null
cat >>"$W/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$W'
port = $PORT
shared_preload_libraries = 'pg_outbox'
shared_buffers = 256MB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOF
runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null
q() { runuser -u postgres -- "$BIN/psql" -XAtq -v ON_ERROR_STOP=1 "$@"; }
q -d postgres -c "CREATE DATABASE bench"
q -c "CREATE EXTENSION pg_outbox" -c "CREATE ROLE monitor LOGIN IN ROLE outbox_reader"
for _ in $(seq 100); do [ "$(q -c "SELECT pid IS NOT NULL FROM outbox.status")" = t ] && break; sleep 0.1; done

runuser -u postgres -- env DATA_SOURCE_NAME="host=$W port=$PORT user=monitor dbname=bench sslmode=disable" \
	"$EXPORTER" --web.listen-address="127.0.0.1:$HTTP_PORT" --extend.query-path="$W/queries.yaml" \
	--disable-default-metrics --disable-settings-metrics >"$W/exporter.log" 2>&1 &
EXPORTER_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP_PORT/metrics" && break; sleep 0.1; done

# scrape every INTERVAL s until killed (at most 120 s); one line per scrape: its duration (s)
scraper() {
	local end=$((SECONDS + 120))
	while [ $SECONDS -lt $end ]; do
		curl -s -o /dev/null --max-time 5 -w '%{time_total}\n' "http://127.0.0.1:$HTTP_PORT/metrics" >>"$W/scrapes_$1"
		sleep "$INTERVAL"
	done
}

# CPU time (clock ticks) used so far by the exporter's server backends (role monitor)
TICKS=$(getconf CLK_TCK)
backend_cpu() {
	local total=0 pid
	for pid in $(q -c "SELECT pid FROM pg_stat_activity WHERE usename = 'monitor'"); do
		[ -r "/proc/$pid/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$total"
}

one_round() { # mode run
	q -c "UPDATE outbox.state SET paused = true"
	q -c "SELECT count(outbox.publish('bench', jsonb_build_object('i', g, 'status', 'paid'), 'k' || g, 'order.paid')) FROM generate_series(1, $EVENTS) g" >/dev/null
	q -c "VACUUM ANALYZE outbox.pending" -c "CHECKPOINT"
	: >"$W/scrapes_$1_$2"
	local cpu0
	cpu0=$(backend_cpu)
	if [ "$1" = scraped ]; then scraper "$1_$2" & SCRAPER_PID=$!; sleep 0.5; fi
	local from
	from=$(q -c "SELECT max(pos) FROM outbox.history" | sed 's/^$/0/')
	# resume and wake the worker through a commit; t0 is taken inside that transaction
	local t0
	t0=$(q -c "BEGIN" -c "UPDATE outbox.state SET paused = false" -c "SELECT outbox.publish('bench_wake') > 0" \
		-c "SELECT extract(epoch FROM clock_timestamp())" -c "COMMIT" | tail -1)
	for _ in $(seq 1200); do [ "$(q -c "SELECT count(*) = 0 FROM outbox.pending")" = t ] && break; sleep 0.05; done
	if [ -n "$SCRAPER_PID" ]; then kill "$SCRAPER_PID" 2>/dev/null; wait "$SCRAPER_PID" 2>/dev/null || true; SCRAPER_PID=""; fi
	local cpu1
	cpu1=$(backend_cpu)
	local t1
	t1=$(q -c "SELECT extract(epoch FROM max(published_at)) FROM outbox.history WHERE pos > $from AND channel = 'bench'")
	local rate
	rate=$(python3 -c "print(round($EVENTS / ($t1 - $t0)))")
	echo "$1 $2 $rate" >>"$W/results"
	local scrapes=""
	if [ "$1" = scraped ]; then
		scrapes=$(python3 -c "
import statistics
v = [float(x) for x in open('$W/scrapes_$1_$2') if x.strip()]
cpu = ($cpu1 - $cpu0) * 1000.0 / $TICKS
print(f'{len(v)} scrapes, median {statistics.median(v)*1000:.0f} ms, max {max(v)*1000:.0f} ms, server CPU {cpu / max(len(v), 1):.0f} ms per scrape' if v else 'no scrape')")
		echo "cpu $2 $(python3 -c "print(($cpu1 - $cpu0) * 1000.0 / $TICKS / max(1, $(grep -c . "$W/scrapes_$1_$2")))")" >>"$W/results"
	fi
	echo "   $1 round $2: $rate events/s ${scrapes}" >&2
}

: >"$W/results"
# the cost of a scrape with nothing pending: 20 scrapes
c0=$(backend_cpu)
for _ in $(seq 20); do curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$HTTP_PORT/metrics"; done
c1=$(backend_cpu)
idle_cpu=$(python3 -c "print(round(($c1 - $c0) * 1000.0 / $TICKS / 20, 1))")
for run in $(seq "$RUNS"); do
	one_round quiet "$run"
	one_round scraped "$run"
done
# a scrape while the whole backlog is pending (the drain paused)
q -c "UPDATE outbox.state SET paused = true"
q -c "SELECT count(outbox.publish('bench', '{}')) FROM generate_series(1, $EVENTS) g" >/dev/null
c0=$(backend_cpu)
paused_scrape=$(curl -s -o /dev/null --max-time 10 -w '%{time_total}' "http://127.0.0.1:$HTTP_PORT/metrics")
c1=$(backend_cpu)
paused_cpu=$(python3 -c "print(round(($c1 - $c0) * 1000.0 / $TICKS, 1))")
python3 - "$W/results" "$EVENTS" "$paused_scrape" "$idle_cpu" "$paused_cpu" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
q = [int(r[2]) for r in rows if r[0] == 'quiet']
s = [int(r[2]) for r in rows if r[0] == 'scraped']
cpu = [float(r[2]) for r in rows if r[0] == 'cpu']
mq, ms = statistics.median(q), statistics.median(s)
print(f"drain of {int(sys.argv[2]):,} events, {len(q)} rounds each (events/s)")
print(f"  quiet:   median {mq:,.0f}  (rounds {', '.join(f'{x:,}' for x in q)})")
print(f"  scraped: median {ms:,.0f}  (rounds {', '.join(f'{x:,}' for x in s)})")
pairs = [b / a for a, b in zip(q, s)]
print(f"  scraped / quiet = {ms / mq:.3f} (medians); round by round {', '.join(f'{x:.2f}' for x in pairs)}, median {statistics.median(pairs):.3f}")
print(f"  spread of the quiet rounds {min(q) / mq:.2f}..{max(q) / mq:.2f}")
if cpu:
    print(f"  server CPU per scrape while draining: median {statistics.median(cpu):.1f} ms")
print(f"  one scrape with {int(sys.argv[2]):,} events pending: {float(sys.argv[3]) * 1000:.0f} ms, server CPU {sys.argv[5]} ms")
print(f"  one scrape with nothing pending: server CPU {sys.argv[4]} ms (mean of 20)")
EOF
echo "exporter errors: $(grep -c 'level=error' "$W/exporter.log" || true)"
