#!/usr/bin/env bash
# test/bench/log_bench.sh — the write-once log (issue #15: src/sql/60_log.sql, the C pass
# outbox._log_pass() of src/log_pass.cpp) next to the 1.2 storage and PgQ, in one cluster and one
# run, against issue #15's targets. Not a test: prints figures (medians of RUNS rounds).
#
#   bash test/bench/log_bench.sh                      # every phase below, RUNS=3
#   PHASES="drain wal" RUNS=3 EVENTS=300000 bash test/bench/log_bench.sh
#   SIZE_EVENTS=1000000 ...                           # the size phase's backlog (2,000,000 default)
#   KEEP=1 ...                                        # keep the cluster's directory afterwards
#
# The worker is off (pg_outbox.databases = ''), nobody LISTENs (NOTIFY without listeners still
# queues). Every drain is a server-side loop (a procedure: one pass, COMMIT, the next pass), timed
# inside the server with clock_timestamp(); the clients (psql, the PgQ consumer) are pinned with
# taskset -c $CPU, the server is not. Producers: the log by INSERT INTO outbox.log_<cur_seg>, 1.2
# by outbox.publish(), PgQ by pgq.insert_event() + pgq.ticker(), each in transactions of 1,000,
# the same events (channel, key, type, a 4-key JSON payload).
#   drain     EVENTS-event backlog (300,000): the C pass (_log_pass(1000)), 1.2's outbox.drain(1000),
#             PgQ's consumer (test/bench/pgq_consumer.py, asyncpg: next_batch / get_batch_events /
#             finish_batch, as drain_bench.sh) and the same PgQ loop inside the server
#   wal       WAL bytes per event of publishing and of draining, the log (C pass) and 1.2 (measured
#             on the drain phase's backlogs, after a CHECKPOINT)
#   rr        the C pass's drain with a REPEATABLE READ transaction held open from before the
#             backlog to the end (test/bench/drain_timer.py hold), plain and after _log_replay()
#   channels  a CH_EVENTS backlog (100,000) on one channel against CH_EVENTS distinct channels
#             (new names each round), the C pass
#   size      the log's relations before, published, drained (+ _log_rotate('0') after every
#             pass, as the worker would) and after a trickle of 3 one-event passes, SIZE_EVENTS
#   callgrind instructions per statement with its commit (single-user backend, a valgrind dump
#             before each pg_parse_query) of a one-event C pass and a one-event 1.2 drain(), of
#             C passes of 1000 events on one channel and on 1000 new channels; the last pass
#             statement's dump of each kept in $OUT with its inclusive profile (callgrind_*)
#   sqlref    (not in the default list) the PL/pgSQL reference pass _log_pass_sql() against 1.2
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/pgenv.sh
pg_resolve
[ "$(id -u)" = 0 ] || { echo "log_bench: run as root (it installs packages and switches to postgres)" >&2; exit 1; }
. test/bench/lib.sh
EVENTS=${EVENTS:-300000}; RUNS=${RUNS:-3}; CH_EVENTS=${CH_EVENTS:-100000}
SIZE_EVENTS=${SIZE_EVENTS:-2000000}; CG_PASSES=${CG_PASSES:-40}; CPU=${CPU:-1}
PHASES=${PHASES:-drain wal rr channels size callgrind}
want() { [[ " $PHASES " == *" $1 "* ]]; }
for n in "$EVENTS" "$CH_EVENTS" "$SIZE_EVENTS"; do
    [ "$n" -ge 1000 ] && [ "$n" -le 2000000 ] && [ $((n % 1000)) = 0 ] ||
        { echo "log_bench: EVENTS, CH_EVENTS, SIZE_EVENTS: multiples of 1000, 1000..2000000" >&2; exit 2; }
done
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 10 ] && [ "$CG_PASSES" -le 200 ] || { echo "log_bench: RUNS 1..10, CG_PASSES <= 200" >&2; exit 2; }
bench_packages "postgresql-$PG_MAJOR-pgq3" python3-asyncpg valgrind util-linux # before the private copy
bash test/setup.sh >/dev/null
bench_workdir log
cluster_init "fsync = off
pg_outbox.databases = ''"
RES=$W/results
: >"$RES"
pin() { taskset -c "$CPU" "$@"; }
qp() { pin psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
rec() { echo "$1 $2 $3" >>"$RES"; fig "$1" "$1" "$2" "$3"; } # name run value
lsn() { q -c "SELECT pg_current_wal_lsn()"; }
b_per_ev() { q -c "SELECT round(pg_wal_lsn_diff('$2', '$1') / $3.0, 1)"; }
START=$(date -u +%Y-%m-%dT%H:%MZ)

q >/dev/null <<'SQL'
CREATE EXTENSION pg_outbox;
CREATE EXTENSION pgq;
SELECT pgq.create_queue('bench');
SELECT pgq.set_queue_config('bench', 'ticker_max_count', '1000');
SELECT pgq.register_consumer('bench', 'bench');
CREATE SCHEMA bench;
-- The server-side drain loop: one pass, COMMIT, until a pass publishes nothing; with rotate,
-- _log_rotate(retention 0) in its own transaction after every pass (as the worker will). Timed
-- inside the server.
CREATE PROCEDURE bench.drain(what text, max_events integer, rotate boolean,
                             INOUT n bigint DEFAULT 0, INOUT passes integer DEFAULT 0, INOUT secs float8 DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE k bigint; t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        IF what = 'c' THEN k := outbox._log_pass(max_events);
        ELSIF what = 'sql' THEN k := outbox._log_pass_sql(max_events);
        ELSE k := outbox.drain(max_events);
        END IF;
        COMMIT;
        IF rotate THEN PERFORM outbox._log_rotate(interval '0'); COMMIT; END IF;
        EXIT WHEN k = 0;
        n := n + k; passes := passes + 1;
    END LOOP;
    secs := extract(epoch FROM clock_timestamp() - t0);
END $$;
-- PgQ's consumer loop inside the server: next_batch, every event's data read, finish_batch, COMMIT.
CREATE PROCEDURE bench.pgq_drain(INOUT n bigint DEFAULT 0, INOUT secs float8 DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE b bigint; k bigint; bytes bigint; t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        b := pgq.next_batch('bench', 'bench');
        EXIT WHEN b IS NULL;
        SELECT count(*), sum(octet_length(ev_data)) INTO k, bytes FROM pgq.get_batch_events(b);
        PERFORM pgq.finish_batch(b);
        COMMIT;
        n := n + k;
    END LOOP;
    secs := extract(epoch FROM clock_timestamp() - t0);
END $$;
SQL

EV="'order-' || g, 'order.paid', jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34)"
# publish_log N [CHANNEL_EXPR]: N events into the current segment, transactions of 1000
publish_log() {
    local seg i ch=${2:-"'bench_ob'"}
    seg=$(q -c "SELECT cur_seg FROM outbox.log_state")
    for ((i = 0; i < $1 / 1000; i++)); do
        echo "INSERT INTO outbox.log_$seg (channel, key, type, payload) SELECT $ch, $EV FROM generate_series($((i * 1000 + 1)), $((i * 1000 + 1000))) g;"
    done | qp >/dev/null
}
publish_12() {
    local i
    for ((i = 0; i < $1 / 1000; i++)); do
        echo "SELECT count(outbox.publish('bench_ob', jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34), 'order-' || g, 'order.paid')) FROM generate_series($((i * 1000 + 1)), $((i * 1000 + 1000))) g;"
    done | qp >/dev/null
    q -c "VACUUM ANALYZE outbox.pending"
}
publish_pgq() {
    local i
    for ((i = 0; i < $1 / 1000; i++)); do
        echo "SELECT count(pgq.insert_event('bench', 'order.paid', json_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34)::text, 'order-' || g, null, null, null)) FROM generate_series($((i * 1000 + 1)), $((i * 1000 + 1000))) g;"
        echo "SELECT pgq.ticker('bench');"
    done | qp >/dev/null
    q -c "SELECT pgq.ticker('bench')" >/dev/null
}
# drain WHAT EXPECTED [ROTATE]: the server-side loop; prints events/s, checks the count. A
# one-event pass first, in the same session and untimed: a long-lived worker has its caches
# (the C pass's per-channel seqs, loaded from every batch kept; 1.2's SPI plans) loaded once.
drain() {
    local out n secs first=outbox._log_pass
    [ "$1" = 12 ] && first=outbox.drain
    [ "$1" = sql ] && first=outbox._log_pass_sql
    out=$(printf 'SELECT %s(1) \\g /dev/null\nCALL bench.drain(%s, 1000, %s);\n' "$first" "'$1'" "${3:-false}" | qp -F' ')
    read -r n _ secs <<<"$out"
    [ "$n" = $(($2 - 1)) ] || { echo "log_bench: drain $1 published $n of $2 - 1" >&2; exit 1; }
    $PY -c "print(round($n / $secs))"
}

for r in $(seq "$RUNS"); do
    echo "== round $r of $RUNS" >&2
    # --- drain and wal: the same backlog for each -------------------------------------------
    if want drain || want wal; then
        q -c "CHECKPOINT"; l0=$(lsn); publish_log "$EVENTS"; l1=$(lsn)
        v=$(drain c "$EVENTS"); l2=$(lsn)
        rec drain_c "$r" "$v"
        rec wal_pub_log "$r" "$(b_per_ev "$l0" "$l1" "$EVENTS")"; rec wal_drain_log "$r" "$(b_per_ev "$l1" "$l2" "$EVENTS")"
        q -c "CHECKPOINT"; l0=$(lsn); publish_12 "$EVENTS"; l1=$(lsn)
        v=$(drain 12 "$EVENTS"); l2=$(lsn)
        rec drain_12 "$r" "$v"
        rec wal_pub_12 "$r" "$(b_per_ev "$l0" "$l1" "$EVENTS")"; rec wal_drain_12 "$r" "$(b_per_ev "$l1" "$l2" "$EVENTS")"
        if want drain; then
            publish_pgq "$EVENTS"
            out=$(pin $PY test/bench/pgq_consumer.py "$PYDSN" "$EVENTS")
            rec drain_pgq "$r" "$(sed -n 's/.*per_s=\([0-9]*\).*/\1/p' <<<"$out")"
            publish_pgq "$EVENTS"
            read -r n secs <<<"$(qp -F' ' -c "CALL bench.pgq_drain()")"
            [ "$n" = "$EVENTS" ] || { echo "log_bench: the PgQ loop read $n of $EVENTS" >&2; exit 1; }
            rec drain_pgq_srv "$r" "$($PY -c "print(round($n / $secs))")"
        fi
        echo "   drain: $(grep " $r " "$RES" | grep -E '^(drain|wal)' | tr '\n' ' ')" >&2
    fi
    # --- rr: a REPEATABLE READ transaction open for the whole drain ---------------------------
    if want rr; then
        for mode in none plain logreplay; do
            if [ $mode != none ]; then
                $PY test/bench/drain_timer.py hold "$PYDSN" "$mode" 600 >"$W/hold.out" &
                HOLD=$!; BG_PIDS+=("$HOLD")
                for _ in $(seq 100); do grep -q ready "$W/hold.out" && break; sleep 0.05; done
                grep -q ready "$W/hold.out" || { echo "log_bench: the holder did not start" >&2; exit 1; }
            fi
            publish_log "$EVENTS"
            rec "rr_$mode" "$r" "$(drain c "$EVENTS")"
            if [ $mode != none ]; then kill "$HOLD"; wait "$HOLD" 2>/dev/null || true; fi
        done
    fi
    # --- channels: one channel against CH_EVENTS distinct ones -------------------------------
    if want channels; then
        publish_log "$CH_EVENTS"
        rec ch_one "$r" "$(drain c "$CH_EVENTS")"
        publish_log "$CH_EVENTS" "'r${r}_tenant_' || g"
        rec ch_many "$r" "$(drain c "$CH_EVENTS")"
    fi
    # --- sqlref: the PL/pgSQL reference pass against 1.2's drain -----------------------------
    if want sqlref; then
        publish_log 100000; rec drain_sqlref "$r" "$(drain sql 100000)"
    fi
done

# --- size: the log's relations around a SIZE_EVENTS backlog ----------------------------------
LOG_RELS="SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'outbox'::regnamespace AND c.relkind = 'r'
           AND c.relname ~ '^(log|batches)(_[0-9]+)?$|^log_(state|channels)$'"
log_size() { q -c "SELECT sum(pg_total_relation_size(oid)) FROM ($LOG_RELS) r"; }
log_sizes() { q -c "SELECT string_agg(format('%s %s', oid::regclass, pg_size_pretty(pg_total_relation_size(oid))), ', '
                ORDER BY pg_total_relation_size(oid) DESC) FROM ($LOG_RELS) r WHERE pg_total_relation_size(oid) > 16384"; }
# trickle N: N one-event passes, each followed by _log_rotate('0'): what a live producer and the
# worker do after a backlog (a segment is truncated only once the latest batch is elsewhere)
trickle() {
    local i seg
    for ((i = 0; i < $1; i++)); do
        seg=$(q -c "SELECT cur_seg FROM outbox.log_state")
        q -c "INSERT INTO outbox.log_$seg (channel, payload) VALUES ('bench_trickle', '{}')"
        q -c "CALL bench.drain('c', 1000, true)" >/dev/null
    done
}
if want size; then
    trickle 4 # empty the segments the phases above filled
    for r in $(seq "$RUNS"); do
        before=$(log_size); echo "   size before: $(log_sizes)" >&2
        publish_log "$SIZE_EVENTS"; published=$(log_size); echo "   size published: $(log_sizes)" >&2
        drain c "$SIZE_EVENTS" true >/dev/null; drained=$(log_size); echo "   size drained: $(log_sizes)" >&2
        trickle 3; after=$(log_size); echo "   size after the trickle: $(log_sizes)" >&2
        rec size_before "$r" "$before"; rec size_published "$r" "$published"
        rec size_drained "$r" "$drained"; rec size_after "$r" "$after"
    done
fi

# --- callgrind: one-event passes in a single-user backend ------------------------------------
# Every statement of the input is dumped on its own (--dump-before=pg_parse_query: dump k+1 holds
# statement k: its parse, plan, execution and commit, and single-user mode's reading and printing);
# the input alternates a producer's one-event statement and a one-event pass, and ends with a
# SELECT 1 (the last statement's dump is the exit's).
cg_pairs() { # producer_sql pass_sql from to: @K@ in producer_sql is the pair's number
    local i; for ((i = $3; i < $4; i++)); do echo "${1//@K@/$i}"; echo "$2"; done
}
# cg_run NAME PRODUCER_SQL PASS_SQL PASS_FUNCTION: cg_prod_NAME, cg_pass_NAME (CG_PASSES of each)
cg_run() {
    local name=$1 total i f ins
    { cg_pairs "$2" "$3" 0 20; cg_pairs "$2" "$3" 20 $((20 + CG_PASSES)); echo "SELECT 1"; } >"$W/cg/$name.sql" # warm-up first
    chmod 644 "$W/cg/$name.sql"
    runuser -u postgres -- valgrind --tool=callgrind --dump-instr=no --compress-strings=no --dump-before=pg_parse_query \
        --callgrind-out-file="$W/cg/$name.out" "$BIN/postgres" --single -D "$W/data" bench \
        <"$W/cg/$name.sql" >"$W/cg/$name.log" 2>&1
    # the dumps in order: a dump with the pass function in it is a pass; the dumps between two
    # passes are the producer's statement (a statement that plans an SQL function parses twice)
    ls "$W/cg/" | grep -E "^$name\.out\.[0-9]+$" | sort -t. -k3 -n >"$W/cg/$name.parts"
    local passes=0 acc=0
    while read -r f; do
        ins=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$W/cg/$f" | head -1)
        if grep -q "^fn=$4\$" "$W/cg/$f"; then
            passes=$((passes + 1))
            if [ "$passes" -gt 20 ]; then rec "cg_prod_$name" 1 "$acc"; rec "cg_pass_$name" 1 "$ins"; fi
            acc=0
        else
            acc=$((acc + ins))
        fi
    done <"$W/cg/$name.parts"
    [ "$passes" = $((20 + CG_PASSES)) ] || { echo "log_bench: callgrind $name: $passes pass dumps, not $((20 + CG_PASSES))" >&2; exit 1; }
    last=$(for f in $(cat "$W/cg/$name.parts"); do grep -q "^fn=$4\$" "$W/cg/$f" && echo "$f"; done | tail -1)
    cp "$W/cg/$last" "$OUT/callgrind_${name}_lastpass.out"
    callgrind_annotate --inclusive=yes "$W/cg/$last" 2>/dev/null | grep -E '^ *[0-9,]+ ' |
        grep -v -E '\?\?\?:0x|below main' | sed -n 1,70p | cut -c1-200 >"$OUT/callgrind_${name}_lastpass_inclusive.txt"
    callgrind_annotate --auto=yes "$W/cg/$last" >"$OUT/callgrind_${name}_lastpass_annotated.txt" 2>/dev/null || true
    rm -f "$W/cg/$name".out.*
}
if want callgrind; then
    seg=$(q -c "SELECT cur_seg FROM outbox.log_state")
    q -c "CALL bench.drain('12', 1000, false)" >/dev/null
    runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m fast stop >/dev/null
    mkdir -p "$W/cg"; chown postgres: "$W/cg"
    JS='{"i": 1, "amount": 12.34, "status": "paid", "order_id": 100001}'
    LOGINS="INSERT INTO outbox.log_$seg (channel, key, type, payload)"
    cg_run c "$LOGINS VALUES ('bench_ob', 'order-1', 'order.paid', '$JS')" "SELECT outbox._log_pass(1000)" outbox_log_pass
    cg_run 12 "SELECT outbox.publish('bench_ob', '$JS'::jsonb, 'order-1', 'order.paid')" "SELECT outbox.drain(1000)" outbox_drain
    # passes of 1000 events: one channel, and 1000 new channels each
    cg_run c1000 "$LOGINS SELECT 'bench_ob', $EV FROM generate_series(1, 1000) g" "SELECT outbox._log_pass(1000)" outbox_log_pass
    cg_run c1000ch "$LOGINS SELECT 'cg@K@_tenant_' || g, $EV FROM generate_series(1, 1000) g" "SELECT outbox._log_pass(1000)" outbox_log_pass
    runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null
fi

# --- the table ---------------------------------------------------------------------------------
$PY - "$RES" "$RUNS" "$EVENTS" "$CH_EVENTS" "$SIZE_EVENTS" "$CG_PASSES" "$START" "$("$BIN/postgres" --version)" "$(nproc)" "$CPU" <<'PY' | tee "$OUT/table.md"
import statistics, sys
path, runs, events, chev, sizeev, cgp, start, ver, ncpu, cpu = sys.argv[1:]
vals = {}
for line in open(path):
    k, r, v = line.split()
    vals.setdefault(k, []).append(float(v))
def med(k): return statistics.median(vals[k]) if k in vals else float("nan")
def rounds(k, f="{:,.0f}"): return " ".join(f.format(x) for x in vals.get(k, []))
def row(label, k, unit="", f="{:,.0f}"): print(f"| {label} | {f.format(med(k))}{unit} | {rounds(k, f)} |")
def ratio(label, a, b, target):
    print(f"| {label} | {med(a) / med(b):.2f}x | {' '.join(f'{x / y:.2f}' for x, y in zip(vals[a], vals[b]))} | {target} |")
print(f"\nlog_bench: {ver}, {ncpu} CPUs, fsync off, started {start}; {runs} rounds, medians; clients pinned to CPU {cpu}\n")
if "drain_c" in vals:
    print(f"Drain of a {int(events):,}-event backlog (server-side loops of passes of 1000, each its own transaction), events/s\n")
    print("| drain | median | rounds |\n|---|---:|---|")
    row("C pass, outbox._log_pass(1000)", "drain_c")
    row("1.2 outbox.drain(1000)", "drain_12")
    row("PgQ consumer (Python, asyncpg)", "drain_pgq")
    row("PgQ consumer loop inside the server", "drain_pgq_srv")
    print("\n| ratio | median | rounds | target |\n|---|---:|---|---|")
    ratio("C / PgQ consumer", "drain_c", "drain_pgq", ">= 1.0 (moonshot 1.2)")
    ratio("C / PgQ loop in the server", "drain_c", "drain_pgq_srv", "")
    ratio("C / 1.2 drain()", "drain_c", "drain_12", "")
if "wal_pub_log" in vals:
    print("\nWAL bytes per event\n\n| storage | publish | drain | (publish + drain) / publish | rounds | target |\n|---|---:|---:|---:|---|---|")
    for s, t in (("log", "<= 1.3"), ("12", "")):
        tot = [(p + d) / p for p, d in zip(vals[f"wal_pub_{s}"], vals[f"wal_drain_{s}"])]
        print(f"| {'log (C pass)' if s == 'log' else '1.2'} | {med(f'wal_pub_{s}'):.1f} | {med(f'wal_drain_{s}'):.1f} | "
              f"{statistics.median(tot):.2f}x | {' '.join(f'{x:.2f}' for x in tot)} | {t} |")
if "rr_none" in vals:
    print(f"\nThe C pass's drain ({int(events):,} backlog) with a REPEATABLE READ transaction open from before the backlog to the end\n")
    print("| variant | events/s | rounds |\n|---|---:|---|")
    row("no long transaction", "rr_none"); row("REPEATABLE READ open", "rr_plain"); row("REPEATABLE READ that called _log_replay()", "rr_logreplay")
    print("\n| ratio | median | rounds | target |\n|---|---:|---|---|")
    ratio("REPEATABLE READ / none", "rr_plain", "rr_none", ">= 0.8")
    ratio("REPEATABLE READ + replay / none", "rr_logreplay", "rr_none", ">= 0.8")
if "ch_one" in vals:
    print(f"\nThe C pass's drain of {int(chev):,} events: one channel against {int(chev):,} distinct channels (new each round)\n")
    print("| channels | events/s | rounds |\n|---|---:|---|")
    row("1", "ch_one"); row(f"{int(chev):,}", "ch_many")
    print("\n| ratio | median | rounds | target |\n|---|---:|---|---|")
    ratio("distinct / one", "ch_many", "ch_one", ">= 0.8")
if "size_before" in vals:
    print(f"\nThe log's relations (outbox.log*, batches*, log_state, log_channels) around a {int(sizeev):,}-event backlog, bytes\n")
    print("| when | median | rounds |\n|---|---:|---|")
    row("before", "size_before"); row("published", "size_published")
    row("drained, _log_rotate('0') after every pass", "size_drained"); row("after 3 more one-event passes (+ rotate)", "size_after")
    print("\n| ratio | median | rounds | target |\n|---|---:|---|---|")
    ratio("drained / before", "size_drained", "size_before", "<= 2")
    ratio("after the trickle / before", "size_after", "size_before", "<= 2")
if "cg_pass_c" in vals:
    print(f"\ncallgrind, instructions per statement with its commit (single-user backend, median of {cgp} after 20 warm-up)\n")
    print("| statement | C pass / log | 1.2 |\n|---|---:|---:|")
    print(f"| the producer's one-event insert / publish() | {med('cg_prod_c'):,.0f} | {med('cg_prod_12'):,.0f} |")
    print(f"| the one-event pass / drain(1000) | {med('cg_pass_c'):,.0f} | {med('cg_pass_12'):,.0f} |")
    print(f"| ratio of the passes | {med('cg_pass_c') / med('cg_pass_12'):.2f}x | |")
if "cg_pass_c1000" in vals:
    print("\n| C pass of 1000 events, per statement with its commit | instructions | per event |\n|---|---:|---:|")
    print(f"| one channel | {med('cg_pass_c1000'):,.0f} | {med('cg_pass_c1000') / 1000:,.0f} |")
    print(f"| 1000 new channels | {med('cg_pass_c1000ch'):,.0f} | {med('cg_pass_c1000ch') / 1000:,.0f} |")
if "drain_sqlref" in vals:
    print("\n| PL/pgSQL reference pass, 100k | " + f"{med('drain_sqlref'):,.0f} | {rounds('drain_sqlref')} |")
PY
charts
echo "log_bench: figures in $OUT" >&2
