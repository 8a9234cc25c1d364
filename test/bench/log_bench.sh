#!/usr/bin/env bash
# test/bench/log_bench.sh — the write-once log (issue #15, part 1: src/sql/60_log.sql) next to
# the 1.2 storage, in one cluster and one run: WAL bytes per event of publishing and of draining
# (the target: publish + drain <= 1.3x publish), and the drain rate of a backlog through the
# reference pass outbox._log_pass_sql() (PL/pgSQL) against 1.2's outbox.drain() (C). The worker
# is off (pg_outbox.databases = ''): both drains run from this script, in batches of 1000, each
# its own transaction, nobody LISTENing. Not a test: prints figures.
#   EVENTS=100000 RUNS=3 bash test/bench/log_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/pgenv.sh
pg_resolve
bash test/setup.sh >/dev/null
. test/bench/lib.sh
EVENTS=${EVENTS:-100000}; RUNS=${RUNS:-3}
[ "$EVENTS" -le 2000000 ] && [ "$RUNS" -le 10 ] || { echo "log_bench: EVENTS <= 2000000, RUNS <= 10" >&2; exit 2; }
bench_workdir log
cluster_init "fsync = off
pg_outbox.databases = ''"
q -c "CREATE EXTENSION pg_outbox"
lsn() { q -c "SELECT pg_current_wal_lsn()"; }
per_event() { q -c "SELECT round(pg_wal_lsn_diff('$2', '$1') / $EVENTS.0)"; }
secs() { $PY -c "print($2 - $1)"; }
printf '%-8s %-6s %12s %12s %10s %12s\n' run store pub_B/ev drain_B/ev total/pub drain_ev/s
for r in $(seq "$RUNS"); do
    for store in 1.2 log; do
        if [ "$store" = 1.2 ]; then
            ins="SELECT outbox.publish('bench', jsonb_build_object('n', g)) FROM generate_series(1, 1000) g"
            pass="SELECT outbox.drain(1000)"
        else
            ins="SELECT outbox._log_insert('bench', jsonb_build_object('n', g)) FROM generate_series(1, 1000) g"
            pass="SELECT outbox._log_pass_sql(1000)"
        fi
        q -c "CHECKPOINT" >/dev/null
        l0=$(lsn)
        for _ in $(seq $((EVENTS / 1000))); do echo "$ins;"; done | q >/dev/null
        l1=$(lsn); t0=$(now)
        n=0
        while :; do
            k=$(q -c "$pass"); n=$((n + k))
            [ "$k" -gt 0 ] || break
        done
        t1=$(now); l2=$(lsn)
        [ "$n" = "$EVENTS" ] || { echo "log_bench: $store drained $n of $EVENTS" >&2; exit 1; }
        pub=$(per_event "$l0" "$l1"); drn=$(per_event "$l1" "$l2")
        printf '%-8s %-6s %12s %12s %10s %12s\n' "$r" "$store" "$pub" "$drn" \
            "$($PY -c "print(round(($pub + $drn) / $pub, 2))")" "$(rate "$EVENTS" "$(secs "$t0" "$t1")")"
        fig wal_total "$store" "$r" "$($PY -c "print(round(($pub + $drn) / $pub, 2))")" "x publish"
        fig drain_rate "$store" "$r" "$(rate "$EVENTS" "$(secs "$t0" "$t1")")" "events/s"
    done
done
echo "figures: $OUT/figures.tsv"
