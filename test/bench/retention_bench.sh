#!/usr/bin/env bash
# Retention without bloat: publish EVENTS events at a steady RATE (events/s) with a short
# pg_outbox.retention and print the size of the pending table and of the history segments (with
# their indexes) every SAMPLE seconds. With rotation + TRUNCATE the sizes must stay bounded
# (about retention × 1.5 × rate events), however many events go through.
# Usage: bash test/bench/retention_bench.sh [EVENTS=5000000] [RATE=25000] [RETENTION=20s]
# Not a test: it prints figures. Starts its own throwaway cluster as the postgres user.
# PG_MAJOR=NN picks the PostgreSQL major (test/pgenv.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
EVENTS=${1:-5000000}
RATE=${2:-25000}
RETENTION=${3:-20s}
SAMPLE=${SAMPLE:-10}
PER_TX=500
# PG_MAJOR=17 or 18: the same inside that major's Debian chroot (test/pgchroot.sh)
. test/pgenv.sh
pg_resolve
[ "$PG_WHERE" = chroot ] && exec bash test/pgchroot.sh intree "$PG_MAJOR" test/bench/retention_bench.sh "$@"
bash test/setup.sh >/dev/null

DIR=$(mktemp -d /tmp/pg_outbox_retention.XXXXXX)
chmod 755 "$DIR"
pg_private_install "$DIR/install" # sets BINDIR: this tree's build in a private copy of PostgreSQL
RUN=()
[ "$(id -u)" = 0 ] && { chown postgres: "$DIR"; RUN=(runuser -u postgres --); }
PORT=5497
cleanup() { "${RUN[@]}" "$BINDIR/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
"${RUN[@]}" "$BINDIR/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
cat >> "$DIR/data/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_outbox'
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
pg_outbox.retention = '$RETENTION'
fsync = off
synchronous_commit = off
CONF
"${RUN[@]}" "$BINDIR/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start >/dev/null
PSQL=("${RUN[@]}" "$BINDIR/psql" -X -q -At -h "$DIR" -p "$PORT" -U postgres -d postgres)
"${PSQL[@]}" -c "CREATE EXTENSION pg_outbox"
echo "SELECT outbox.publish('bench', '{\"order_id\": 12345, \"status\": \"created\"}', key => '12345') FROM generate_series(1, $PER_TX);" > "$DIR/publish.sql"
chmod 644 "$DIR/publish.sql"
TXS=$((EVENTS / PER_TX))
TPS=$((RATE / PER_TX))
DURATION=$((TXS / TPS))
echo "publishing $EVENTS events at $RATE events/s ($TPS transactions of $PER_TX) for ${DURATION}s, retention $RETENTION"
"${RUN[@]}" "$BINDIR/pgbench" -n -h "$DIR" -p "$PORT" -U postgres -c 2 -j 2 -R "$TPS" -t $((TXS / 2)) \
    -f "$DIR/publish.sql" postgres >"$DIR/pgbench.out" 2>&1 &
bench=$!

SIZES="SELECT (SELECT last_pos FROM outbox.state), (SELECT count(*) FROM outbox.pending),
  pg_size_pretty(pg_total_relation_size('outbox.pending')),
  (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'outbox.pending'::regclass),
  pg_size_pretty(pg_total_relation_size('outbox.history_0') + pg_total_relation_size('outbox.history_1')
                 + pg_total_relation_size('outbox.history_2')),
  (SELECT count(*) FROM outbox.history), (SELECT purged_pos FROM outbox.state),
  pg_total_relation_size('outbox.pending') + pg_total_relation_size('outbox.history_0')
   + pg_total_relation_size('outbox.history_1') + pg_total_relation_size('outbox.history_2')"
printf '%6s %10s %8s %10s %9s %14s %10s %10s\n' t_s published pending pending_sz dead_tup history_sz history_n purged_pos
start=$(date +%s)
max_total=0
while kill -0 $bench 2>/dev/null; do
    sleep "$SAMPLE"
    IFS='|' read -r pos pend psz dead hsz hn purged total <<<"$("${PSQL[@]}" -c "$SIZES")"
    printf '%6s %10s %8s %10s %9s %14s %10s %10s\n' $(( $(date +%s) - start )) "$pos" "$pend" "$psz" "$dead" "$hsz" "$hn" "$purged"
    [ "$total" -gt "$max_total" ] && max_total=$total
done
wait $bench || { cat "$DIR/pgbench.out"; exit 1; }
sleep 2
IFS='|' read -r pos pend psz dead hsz hn purged total <<<"$("${PSQL[@]}" -c "$SIZES")"
echo
grep -E "tps|latency average" "$DIR/pgbench.out" | sed 's/^/pgbench: /'
echo "published: $pos events; still pending: $pend; in history: $hn; removed by retention: $purged"
echo "largest total size of pending + history (with indexes) seen: $((max_total / 1024 / 1024)) MB; at the end: $((total / 1024 / 1024)) MB"
echo "for comparison, $EVENTS events kept without retention would take about" \
     "$(( pos > 0 ? (max_total / (hn > 0 ? hn : 1)) * pos / 1024 / 1024 : 0 )) MB"
