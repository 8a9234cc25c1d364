#!/usr/bin/env bash
# drain_bench.sh — pg_outbox's drain next to the alternatives, measured in one go on one
# throwaway cluster (a benchmark, not a test: it prints figures, it asserts nothing timed).
#
#   bash test/bench/drain_bench.sh            # RUNS=2 rounds of everything (default)
#   PG_MAJOR=18 bash test/bench/drain_bench.sh  # against PostgreSQL 18 (15 default; 17, 18 in chroots)
#   RUNS=3 EVENTS=100000 LAT_SECONDS=5 bash test/bench/drain_bench.sh
#   KEEP=1 ...                                # keep the cluster's directory (logs) afterwards
#   PHASES="worker drain" ...                 # only some of: ceiling worker worker10k drain python pgq latency
#   LAT_SYSTEMS="outbox log" ...              # the latency phase's systems (notify outbox log python)
#   OUT=dir CHARTS=0 ...                      # where figures.tsv and the charts go (test/bench/charts.py); no charts
#   FSYNC=off ...                             # the cluster's fsync (default on; issue #15's latency target is fsync off)
#
# Measured, side by side, each round:
#   ceiling    raw pg_notify, transactions of 1000 distinct notifications (~100-byte payloads),
#              notifications/s committed, while a listener LISTENs and reads them (CEILING
#              notifications, 5 x EVENTS by default);
#   worker     pg_outbox's drain worker: EVENTS published while outbox.state.paused, then
#              resumed; time from the resume commit until a listener has received every event;
#   drain()    outbox.drain(1000) and outbox.drain(10000) called by hand in a loop (one psql
#              session, one transaction per call), same backlog;
#   python     the design document's external worker (test/bench/py_worker.py: asyncpg +
#              SQLAlchemy, LISTEN 'outbox', SELECT ... FOR UPDATE SKIP LOCKED LIMIT 100, one
#              pg_notify per event, UPDATE published_at, COMMIT) on its own plain table;
#   pgq        PgQ 3 (postgresql-NN-pgq3) with pgqd running: EVENTS inserted in transactions
#              of 1000 with a pgq.ticker() call after each (ticker_max_count 1000), then one
#              consumer (test/bench/pgq_consumer.py: next_batch / get_batch_events /
#              finish_batch) times the consumption;
#   latency    test/bench/bench_client (C++/libpq) commits one event per transaction at 500
#              and 2000 events/s from $PRODUCERS producer threads (one connection each) and
#              timestamps each notification in a listener thread of the same process, pinned to
#              CPU $LAT_CPU with taskset (the server is not pinned); for raw NOTIFY, pg_outbox
#              (worker woken at commit) and the Python worker.
# Needs root (installs Debian packages, runs the cluster as the postgres OS user).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNS=${RUNS:-2}
EVENTS=${EVENTS:-100000}
CEILING=${CEILING:-$((5 * EVENTS))} # notifications for the ceiling: a longer run, less noise
LAT_SECONDS=${LAT_SECONDS:-5}
LAT_CPU=${LAT_CPU:-1}
PRODUCERS=${PRODUCERS:-4}
PHASES=${PHASES:-ceiling worker worker10k drain python pgq latency}
want() { [[ " $PHASES " == *" $1 "* ]]; }
PY=/usr/bin/python3 # Debian's interpreter: the python3-* packages live there
. test/bench/lib.sh # figures file and charts (fig, charts)

[ "$(id -u)" = 0 ] || { echo "drain_bench: run as root (it installs packages and switches to postgres)" >&2; exit 1; }
# PG_MAJOR=17 or 18: the same benchmark inside that major's Debian chroot (test/pgchroot.sh)
. test/pgenv.sh
pg_resolve
[ "$PG_WHERE" = chroot ] && exec bash test/pgchroot.sh intree "$PG_MAJOR" test/bench/drain_bench.sh "$@"

# --- what it needs, from Debian ---------------------------------------------------------
PACKAGES=(python3-asyncpg python3-sqlalchemy "postgresql-$PG_MAJOR-pgq3" pgqd libpq-dev g++ util-linux)
missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "drain_bench: installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
bash test/setup.sh # builds pg_outbox (installs nothing system-wide)

W=$(mktemp -d /var/tmp/pg_outbox_bench.XXXXXX)
chmod 755 "$W"
# Run this tree's build from a private copy of the PostgreSQL installation (as test/run_tests.sh
# does): the system's PostgreSQL is not changed. PgQ is installed into the system (a package),
# so the copy is made after it.
pg_private_install "$W/install"
BIN=$BINDIR
echo "drain_bench: PostgreSQL $("$BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //')"
g++ -O2 -Wall -Wextra -std=c++17 -I"$("$PG_CONFIG" --includedir)" test/bench/bench_client.cpp \
	-o "$W/bench_client" -lpq -pthread
CLIENT=$W/bench_client
PORT=5432 # the socket lives in our private directory: no clash with other clusters
DSN="host=$W port=$PORT user=postgres dbname=bench"
DSN_LOG="host=$W port=$PORT user=postgres dbname=benchlog" # the latency phase's log system
PYDSN="postgres@/bench?host=$W&port=$PORT"
export PGHOST=$W PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
PIDS=()

cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	[ -f "$W/pgqd.pid" ] && kill "$(cat "$W/pgqd.pid")" 2>/dev/null
	[ -f "$W/data/postmaster.pid" ] && runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1
	if [ -n "${KEEP:-}" ]; then echo "drain_bench: kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

chown postgres: "$W"
runuser -u postgres -- "$BIN/initdb" -D "$W/data" -U postgres --auth=trust -E UTF8 >/dev/null
cat >>"$W/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$W'
port = $PORT
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = '*'
max_worker_processes = 16
shared_buffers = 256MB
max_wal_size = 8GB
checkpoint_timeout = 30min
logging_collector = off
fsync = ${FSYNC:-on}
EOF
runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null
psql -q -d postgres -c "CREATE DATABASE bench" -c "CREATE DATABASE benchlog"
# benchlog: a database switched to the write-once log (issue #15), for the latency phase's log system
psql -XAtq -v ON_ERROR_STOP=1 -d benchlog -c "CREATE EXTENSION pg_outbox" -c "SELECT events_moved FROM outbox.use_log_storage()" >/dev/null
q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }

q >/dev/null <<'SQL'
CREATE EXTENSION pg_outbox;
CREATE EXTENSION pgq;
SELECT pgq.create_queue('bench');
SELECT pgq.set_queue_config('bench', 'ticker_max_count', '1000');
SELECT pgq.register_consumer('bench', 'bench');
-- The external worker's plain outbox (the design document's "before" picture).
CREATE SCHEMA bench_py;
CREATE TABLE bench_py.outbox (
    id           bigserial PRIMARY KEY,
    channel      text NOT NULL,
    key          text,
    type         text,
    payload      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX ON bench_py.outbox (id) WHERE published_at IS NULL;
CREATE FUNCTION bench_py.wake() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN PERFORM pg_notify('outbox', ''); RETURN NULL; END $$;
CREATE TRIGGER wake AFTER INSERT ON bench_py.outbox FOR EACH STATEMENT EXECUTE FUNCTION bench_py.wake();
SQL
cat >"$W/pgqd.ini" <<EOF
[pgqd]
base_connstr = host=$W port=$PORT user=postgres
initial_database = postgres
database_list = bench
logfile = $W/pgqd.log
pidfile = $W/pgqd.pid
ticker_period = 0.1
EOF
pgqd -d "$W/pgqd.ini"

# Wait for the drain worker of "bench".
for _ in $(seq 100); do
	[ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_outbox drain' AND datname = 'bench'")" = 1 ] && break
	sleep 0.1
done
WORKER_PID=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_outbox drain' AND datname = 'bench'")
[ -n "$WORKER_PID" ] || { echo "drain_bench: no drain worker started (see $W/server.log)" >&2; exit 1; }

RESULTS=$W/results
: >"$RESULTS"
bench_out drain_bench # OUT: figures.tsv and the charts (CHARTS=0: none)
declare -A FIG_LABEL=([ceiling]="raw pg_notify, txns of 1000 (ceiling)" [worker]="pg_outbox drain worker"
	[worker10k]="pg_outbox worker, batch_size 10000" [drain1000]="pg_outbox drain(1000) loop"
	[drain10000]="pg_outbox drain(10000) loop" [python]="Python worker (asyncpg+SQLAlchemy)" [pgq]="PgQ consumer")
fig_title throughput "Drain of a $EVENTS-event backlog, events/s"
record() { # name run value
	echo "$1 $2 $3" >>"$RESULTS"
	if [ -n "${FIG_LABEL[$1]:-}" ]; then fig throughput "${FIG_LABEL[$1]}" "$2" "$3" events/s; else fig "_$1" "$1" "$2" "$3"; fi
}

# A listener in the background: writes "ready", then its summary, to $W/listen.out.
start_listener() { # channel n
	"$CLIENT" listen "$DSN" "$1" "$2" 300 >"$W/listen.out" &
	LISTENER=$!
	for _ in $(seq 100); do grep -q ready "$W/listen.out" 2>/dev/null && return; sleep 0.05; done
	echo "drain_bench: listener did not start" >&2
	exit 1
}
listener_field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" "$W/listen.out"; }
wait_listener() { # expected count
	wait "$LISTENER" || { echo "drain_bench: listener got $(listener_field received) of $1" >&2; exit 1; }
	[ "$(listener_field distinct)" = "$1" ] || { echo "drain_bench: listener saw duplicates" >&2; exit 1; }
}
rate() { $PY -c "import sys; print(round($1 / ($2)))"; }

publish_backlog() { # paused worker; EVENTS events on channel bench_ob
	q -c "UPDATE outbox.state SET paused = true"
	q -c "SELECT count(outbox.publish('bench_ob', jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34), 'order-' || g, 'order.paid')) FROM generate_series(1, $EVENTS) g" >/dev/null
	q -c "VACUUM ANALYZE outbox.pending"
}

for run in $(seq "$RUNS"); do
	echo "== round $run of $RUNS" >&2
	q -c "CHECKPOINT"

	# --- ceiling: raw pg_notify -----------------------------------------------------------
	if want ceiling; then
	start_listener bench_ceiling "$CEILING"
	out=$("$CLIENT" ceiling "$DSN" $((CEILING / 1000)) 1000 100)
	wait_listener "$CEILING"
	record ceiling "$run" "$(sed -n 's/.*per_s=\([0-9]*\).*/\1/p' <<<"$out")"
	echo "   ceiling: $out" >&2
	fi

	# --- pg_outbox: the drain worker ------------------------------------------------------
	# worker: the default pg_outbox.batch_size (1000); worker10k: batch_size = 10000
	for variant in worker worker10k; do
	want $variant || continue
	if [ $variant = worker10k ]; then q -c "ALTER SYSTEM SET pg_outbox.batch_size = 10000" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3; fi
	publish_backlog
	start_listener bench_ob "$EVENTS"
	t0=$(now)
	# resume, and wake the worker through a commit (a resume alone waits for the idle tick)
	q -c "BEGIN; UPDATE outbox.state SET paused = false; SELECT outbox.publish('bench_wake'); COMMIT" >/dev/null
	wait_listener "$EVENTS"
	t1=$(listener_field last)
	for _ in $(seq 200); do [ "$(q -c "SELECT count(*) FROM outbox.pending")" = 0 ] && break; sleep 0.05; done
	[ "$(q -c "SELECT count(*) FROM outbox.pending")" = 0 ] || { echo "drain_bench: pending not empty" >&2; exit 1; }
	record $variant "$run" "$(rate "$EVENTS" "$t1 - $t0")"
	echo "   $variant: $EVENTS events in $($PY -c "print(round($t1 - $t0, 3))") s" >&2
	if [ $variant = worker10k ]; then q -c "ALTER SYSTEM RESET pg_outbox.batch_size" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.3; fi
	done

	# --- pg_outbox: outbox.drain() by hand --------------------------------------------------
	want drain && for bs in 1000 10000; do
		publish_backlog
		start_listener bench_ob "$EVENTS"
		calls=$((EVENTS / bs))
		t0=$(now)
		printf "SELECT outbox.drain($bs);\n%.0s" $(seq "$calls") | q >/dev/null
		t1=$(now)
		wait_listener "$EVENTS"
		record "drain$bs" "$run" "$(rate "$EVENTS" "$t1 - $t0")"
		q -c "UPDATE outbox.state SET paused = false" # the worker publishes bench_wake-like leftovers
		echo "   drain($bs): $($PY -c "print(round($t1 - $t0, 3))") s" >&2
	done

	# --- the external Python worker ---------------------------------------------------------
	if want python; then
	q -c "TRUNCATE bench_py.outbox"
	q -c "INSERT INTO bench_py.outbox (channel, key, type, payload) SELECT 'bench_py', 'order-' || g, 'order.paid', jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34) FROM generate_series(1, $EVENTS) g"
	q -c "VACUUM ANALYZE bench_py.outbox"
	start_listener bench_py "$EVENTS"
	out=$($PY test/bench/py_worker.py "$PYDSN" backlog "$EVENTS" | tail -n 1)
	wait_listener "$EVENTS"
	record python "$run" "$(sed -n 's/.*per_s=\([0-9]*\).*/\1/p' <<<"$out")"
	echo "   python: $out" >&2
	fi

	# --- PgQ --------------------------------------------------------------------------------
	# EVENTS inserted in transactions of 1000, each followed by a tick
	if want pgq; then
	for ((i = 0; i < EVENTS / 1000; i++)); do
		q -c "SELECT count(pgq.insert_event('bench', 'order.paid', json_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34)::text, 'order-' || g, null, null, null)) FROM generate_series($((i * 1000 + 1)), $((i * 1000 + 1000))) g; SELECT pgq.ticker('bench');" >/dev/null
	done
	q -c "SELECT pgq.force_tick('bench')" >/dev/null
	sleep 0.3 # let the forced tick happen
	out=$($PY test/bench/pgq_consumer.py "$PYDSN" "$EVENTS")
	record pgq "$run" "$(sed -n 's/.*per_s=\([0-9]*\).*/\1/p' <<<"$out")"
	echo "   pgq: $out" >&2
	fi

	# --- latency ----------------------------------------------------------------------------
	want latency || continue
	$PY test/bench/py_worker.py "$PYDSN" serve >"$W/pyserve.out" &
	PYSERVE=$!
	PIDS+=("$PYSERVE")
	for system in ${LAT_SYSTEMS:-notify outbox log python}; do
		# log: outbox.publish() in database benchlog, switched to the write-once log (issue #15)
		dsn=$DSN; [ $system = log ] && dsn=$DSN_LOG
		for r in 500 2000; do
			out=$(BENCH_LAT_SAMPLES="$OUT/lat_${system}_${r}_$run.txt" taskset -c "$LAT_CPU" "$CLIENT" latency "$dsn" "$system" "$r" "$LAT_SECONDS" "$PRODUCERS") ||
				echo "drain_bench: latency $system $r: not every event arrived: $out" >&2
			for f in sent_p50 sent_p99 ack_p50 ack_p99 commit_p50 commit_p99 achieved; do
				record "lat_${system}_${r}_$f" "$run" "$(sed -n "s/.* $f=\([^ ]*\).*/\1/p" <<<"$out")"
			done
			echo "   latency: $out" >&2
		done
	done
	kill "$PYSERVE"
	wait "$PYSERVE" 2>/dev/null || true
done

# --- the table -------------------------------------------------------------------------------
$PY - "$RESULTS" "$RUNS" "$EVENTS" "$LAT_CPU" "$(nproc)" "$PRODUCERS" <<'PY'
import statistics, sys
path, runs, events, cpu, ncpu, nprod = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
vals = {}
for line in open(path):
    name, run, v = line.split()
    vals.setdefault(name, []).append(float(v))
def med(name): return statistics.median(vals[name]) if name in vals else float("nan")
def spread(name):
    v = vals.get(name, [0])
    m = statistics.median(v)
    return 100.0 * (max(v) - min(v)) / m if m else 0.0
def runs_of(name, fmt): return " ".join(fmt.format(x) for x in vals.get(name, []))
print(f"\npg_outbox drain benchmark: {events} events, {runs} rounds, {ncpu} CPUs (figures: median; all rounds in [])")
print("\nthroughput                                        events/s   spread  rounds")
rows = [("ceiling", "raw pg_notify, txns of 1000 (ceiling)"),
        ("worker", "pg_outbox drain worker, 100k backlog"),
        ("worker10k", "  the same, pg_outbox.batch_size = 10000"),
        ("drain1000", "pg_outbox outbox.drain(1000) loop"),
        ("drain10000", "pg_outbox outbox.drain(10000) loop"),
        ("python", "Python worker (asyncpg+SQLAlchemy)"),
        ("pgq", "PgQ consumer (pgqd ticking)")]
for k, label in rows:
    if k not in vals: continue
    print(f"  {label:<46} {med(k):>10,.0f} {spread(k):>6.0f}%  [{runs_of(k, '{:,.0f}')}]")
print("\nratios (medians)")
for k, label in (("worker", "drain worker"), ("worker10k", "worker, batch 10000"), ("drain1000", "drain(1000)")):
    if k not in vals: continue
    print(f"  {label} / Python worker                     {med(k) / med('python'):8.1f}x   (target >= 20x)")
    print(f"  {label} / raw-NOTIFY ceiling                {med(k) / med('ceiling'):8.3f}    (target >= 0.1)")
    print(f"  {label} / PgQ consumer                      {med(k) / med('pgq'):8.2f}x")
if "lat_outbox_2000_achieved" not in vals: sys.exit(0)
print("  per round (same round's figures):")
for k, label in (("worker", "drain worker"), ("worker10k", "worker, batch 10000")):
    if k in vals and "python" in vals and "ceiling" in vals:
        n = min(len(vals[k]), len(vals["python"]), len(vals["ceiling"]))
        print(f"    {label} / Python worker     " + "  ".join(f"{vals[k][i] / vals['python'][i]:6.1f}x" for i in range(n)))
        print(f"    {label} / ceiling           " + "  ".join(f"{vals[k][i] / vals['ceiling'][i]:7.3f}" for i in range(n)))
print(f"\nlatency, ms ({nprod} producer threads commit one event per transaction each, on one schedule; a listener")
print(f"thread in the same process timestamps each notification; process pinned with taskset -c {cpu}, server unpinned)")
print("  end to end from COMMIT sent (upper bound) and from commit acknowledged (lower bound); 'commit' is the")
print("  producer's own commit round trip (a durable commit waits for the WAL flush, i.e. the disk's fsync)")
print("  system          rate  achieved   p50 sent   p99 sent    p50 ack    p99 ack  commit p50  commit p99  rounds: p99 sent")
for system, label in (("notify", "raw NOTIFY"), ("outbox", "pg_outbox"), ("log", "pg_outbox log"), ("python", "Python worker")):
    for r in (500, 2000):
        p = f"lat_{system}_{r}_"
        if p + "achieved" not in vals: continue
        print(f"  {label:<14} {r:>5} {med(p + 'achieved'):>9.0f} {med(p + 'sent_p50'):>10.3f} {med(p + 'sent_p99'):>10.3f}"
              f" {med(p + 'ack_p50'):>10.3f} {med(p + 'ack_p99'):>10.3f} {med(p + 'commit_p50'):>11.3f} {med(p + 'commit_p99'):>11.3f}"
              f"  [{runs_of(p + 'sent_p99', '{:.2f}')}]")
print("  targets (pg_outbox at 2000/s): p50 < 1 ms, p99 < 5 ms")
PY
charts
echo "drain_bench: figures and charts in $OUT" >&2
