#!/usr/bin/env bash
# wait_bench.sh — how long from a producer's COMMIT until a consumer has the event, in one run
# on one throwaway cluster: LISTEN (the drain worker's NOTIFY) beside outbox.wait() on a direct
# connection and outbox.wait() through PgBouncer (pool_mode = transaction). A benchmark, not a
# test: it prints figures and asserts nothing timed.
#
#   bash test/bench/wait_bench.sh                    # RATE=200 events/s for DURATION=10 s, ROUNDS=2
#   RATE=1000 DURATION=5 ROUNDS=3 bash test/bench/wait_bench.sh
#
# One producer commits one outbox.publish() per transaction on a fixed schedule; each consumer
# (threads of test/bench/wait_bench.cpp) timestamps every event as it arrives; latency = arrival
# minus the moment COMMIT returned to the producer (p50, p99, max; the first 5% left out).
# Needs root (installs Debian packages, runs the cluster and pgbouncer as the postgres OS user).
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${RATE:-200}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
[ "$(id -u)" = 0 ] || { echo "wait_bench: run as root (it installs packages and switches to postgres)" >&2; exit 1; }
bash test/setup.sh >/dev/null # builds and installs pg_outbox system-wide (and pgbouncer)
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
BIN=$("$PG_CONFIG" --bindir)

W=$(mktemp -d /var/tmp/pg_outbox_wait_bench.XXXXXX)
chown postgres: "$W"
PORT=$((20000 + RANDOM % 20000))
BPORT=$((PORT + 1))
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
	[ -f "$W/pgbouncer.pid" ] && kill "$(cat "$W/pgbouncer.pid")" 2>/dev/null || true
	as_pg "$BIN/pg_ctl" -D "$W/data" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$W"
}
trap cleanup EXIT

as_pg "$BIN/initdb" -D "$W/data" -A trust >/dev/null
cat >>"$W/data/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_outbox'
listen_addresses = ''
unix_socket_directories = '$W'
port = $PORT
CONF
as_pg "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null
as_pg "$BIN/psql" -XAtq -h "$W" -p "$PORT" -d postgres -c 'CREATE EXTENSION pg_outbox' >/dev/null

cat >"$W/userlist.txt" <<CONF
"postgres" ""
CONF
cat >"$W/pgbouncer.ini" <<CONF
[databases]
postgres = host=$W port=$PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir = $W
auth_type = trust
auth_file = $W/userlist.txt
pool_mode = transaction
default_pool_size = 4
logfile = $W/pgbouncer.log
pidfile = $W/pgbouncer.pid
CONF
chown postgres: "$W"/*
as_pg /usr/sbin/pgbouncer -d "$W/pgbouncer.ini"

g++ -O2 -Wall -Wextra -std=c++17 -I"$("$PG_CONFIG" --includedir)" test/bench/wait_bench.cpp -o "$W/wait_bench" -lpq -pthread
DIRECT="host=$W port=$PORT dbname=postgres user=postgres"
BOUNCER="host=127.0.0.1 port=$BPORT dbname=postgres user=postgres"
for _ in $(seq 50); do as_pg "$BIN/psql" -XAtq -d "$BOUNCER" -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done

echo "wait_bench: $RATE events/s for $DURATION s, one event per transaction, $ROUNDS rounds; latency from COMMIT returned to arrival, ms"
printf '%-6s %-8s %9s %9s %9s %9s %7s\n' round consumer received p50 p99 max calls
for r in $(seq "$ROUNDS"); do
	as_pg "$W/wait_bench" "$DIRECT" "$BOUNCER" "$RATE" "$DURATION" | while read -r line; do
		eval "$(echo "$line" | tr ' ' '\n' | sed 's/^/local_/' | tr '\n' ';')" 2>/dev/null || true
		printf '%-6s %-8s %9s %9s %9s %9s %7s\n' "$r" "$local_consumer" "$local_received" "$local_p50_ms" "$local_p99_ms" "$local_max_ms" "$local_calls"
	done
done
