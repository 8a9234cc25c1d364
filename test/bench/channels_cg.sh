#!/usr/bin/env bash
# test/bench/channels_cg.sh — issue #15's 100,000-channel target in instructions, not seconds:
# callgrind counts of whole C-pass drains (outbox._log_pass(1000) in bench.drain's server-side
# loop, each pass its own transaction, as log_bench.sh's "channels" phase) of a CH_EVENTS backlog
# on one channel and of one on CH_EVENTS distinct channels (new names each round), ROUNDS rounds
# in one cluster, so that outbox.log_channels grows by CH_EVENTS rows a round (round 3 of the
# defaults passes pg_outbox.channel_cache_size, 262,144). Instruction counts do not depend on
# the machine's load; wall-clock figures are log_bench.sh's.
#
#   bash test/bench/channels_cg.sh                      # CH_EVENTS=100000 ROUNDS=3
#   CACHE=50000 ROUNDS=2 bash test/bench/channels_cg.sh  # pg_outbox.channel_cache_size
#
# Every drain runs in a single-user backend under valgrind --tool=callgrind, with a dump before
# each statement (--dump-before=pg_parse_query): a one-event pass first (untimed, as log_bench.sh
# does: it loads the seq cache), then CALL bench.drain(...), whose dumps are summed. Run as root
# after the build (make); the profile of each drain's CALL is kept in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/pgenv.sh
pg_resolve
[ "$(id -u)" = 0 ] || { echo "channels_cg: run as root (it switches to postgres)" >&2; exit 1; }
. test/bench/lib.sh
CH_EVENTS=${CH_EVENTS:-100000}; ROUNDS=${ROUNDS:-3}; CACHE=${CACHE:-262144}
[ "$CH_EVENTS" -ge 1000 ] && [ $((CH_EVENTS % 1000)) = 0 ] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 5 ] ||
    { echo "channels_cg: CH_EVENTS a multiple of 1000, ROUNDS 1..5" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "channels_cg: valgrind is not installed" >&2; exit 1; }
bench_workdir chcg
cluster_init "fsync = off
pg_outbox.databases = ''
pg_outbox.channel_cache_size = $CACHE"
RES=$OUT/results
: >"$RES"
q >/dev/null <<'SQL'
CREATE EXTENSION pg_outbox;
CREATE SCHEMA bench;
CREATE PROCEDURE bench.drain(max_events integer, INOUT n bigint DEFAULT 0, INOUT passes integer DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE k bigint;
BEGIN
    LOOP
        k := outbox._log_pass(max_events);
        COMMIT;
        EXIT WHEN k = 0;
        n := n + k; passes := passes + 1;
    END LOOP;
END $$;
SQL
EV="'order-' || g, 'order.paid', jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34)"
publish_log() { # N CHANNEL_EXPR
    local seg i
    seg=$(q -c "SELECT cur_seg FROM outbox.log_state")
    for ((i = 0; i < $1 / 1000; i++)); do
        echo "INSERT INTO outbox.log_$seg (channel, key, type, payload) SELECT $2, $EV FROM generate_series($((i * 1000 + 1)), $((i * 1000 + 1000))) g;"
    done | q >/dev/null
}
mkdir -p "$W/cg"; chown postgres: "$W/cg"
BATCHES_SIZE="SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
                WHERE c.relnamespace = 'outbox'::regnamespace AND c.relname ~ '^batches_[0-9]+$'"
# cg_drain NAME: the backlog drained in a single-user backend; records NAME's instructions per event
# (all, and less the write-behind into outbox.log_channels, flush_channels(): it runs at most once
# a second, so under valgrind after nearly every pass, at full speed about once per drain), the
# WAL bytes per event of the drain and the growth of the batch tables per event
cg_drain() {
    local name=$1 f ins total=0 on=0 parts size0 size1 flush wal
    size0=$(q -c "$BATCHES_SIZE")
    runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m fast stop >/dev/null
    printf 'SELECT outbox._log_pass(1)\nSELECT pg_current_wal_insert_lsn()\nCALL bench.drain(1000)\nSELECT pg_current_wal_insert_lsn()\nSELECT 1\n' >"$W/cg/$name.sql"
    chmod 644 "$W/cg/$name.sql"
    runuser -u postgres -- valgrind --tool=callgrind --dump-instr=no --compress-strings=no --dump-before=pg_parse_query \
        --callgrind-out-file="$W/cg/$name.out" "$BIN/postgres" --single -D "$W/data" bench \
        <"$W/cg/$name.sql" >"$W/cg/$name.log" 2>&1
    grep -q "n = \"$((CH_EVENTS - 1))\"" "$W/cg/$name.log" ||
        { echo "channels_cg: $name did not publish $((CH_EVENTS - 1)) events:" >&2; tail -20 "$W/cg/$name.log" >&2; exit 1; }
    # the CALL's dumps: from the one that runs ExecuteCallStmt to the next pg_current_wal_insert_lsn()
    parts=$(ls "$W/cg/" | grep -E "^$name\.out\.[0-9]+$" | sort -t. -k3 -n)
    for f in $parts; do
        grep -q '^fn=ExecuteCallStmt$' "$W/cg/$f" && on=1
        [ $on = 1 ] || continue
        grep -q '^fn=pg_current_wal_insert_lsn$' "$W/cg/$f" && break
        ins=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$W/cg/$f" | head -1)
        total=$((total + ins))
        [ -e "$OUT/callgrind_$name.out" ] || cp "$W/cg/$f" "$OUT/callgrind_$name.out"
    done
    [ $on = 1 ] || { echo "channels_cg: no dump of the CALL for $name ($W/cg)" >&2; exit 1; }
    callgrind_annotate --inclusive=yes "$OUT/callgrind_$name.out" 2>/dev/null | grep -E '^ *[0-9,]+ ' |
        grep -v -E '\?\?\?:0x|below main' | sed -n 1,80p | cut -c1-200 >"$OUT/callgrind_${name}_inclusive.txt"
    callgrind_annotate "$OUT/callgrind_$name.out" 2>/dev/null | grep -E '^ *[0-9,]+ ' | sed -n 1,40p |
        cut -c1-200 >"$OUT/callgrind_${name}_self.txt"
    [ -n "${KEEP:-}" ] || rm -f "$W/cg/$name".out*
    flush=$(callgrind_annotate --inclusive=yes "$OUT/callgrind_$name.out" 2>/dev/null |
        sed -n 's/^ *\([0-9,]*\) .*pg_outbox::flush_channels(bool) \[.*/\1/p' | head -1 | tr -d ,)
    wal=$(sed -n 's/.*pg_current_wal_insert_lsn = "\([0-9A-F\/]*\)".*/\1/p' "$W/cg/$name.log" | tr '\n' ' ')
    runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null
    size1=$(q -c "$BATCHES_SIZE")
    local l0 l1 n=$((CH_EVENTS - 1))
    read -r l0 l1 <<<"$wal"
    wal=$(q -c "SELECT round(pg_wal_lsn_diff('$l1', '$l0') / $n.0, 1)")
    echo "$name $total $((total / n)) $(((total - ${flush:-0}) / n)) $wal $(((size1 - size0) / n))" | tee -a "$RES" >&2
}
for r in $(seq "$ROUNDS"); do
    publish_log "$CH_EVENTS" "'bench_ob'"
    cg_drain "one_r$r"
    publish_log "$CH_EVENTS" "'r${r}_tenant_' || g"
    cg_drain "many_r$r"
done
echo "channels_cg: $("$BIN/postgres" --version), channel_cache_size $CACHE, $CH_EVENTS events a drain" | tee "$OUT/table.md"
echo "| round | channels | instructions/event | ratio one/this | less the write-behind | ratio | WAL B/event | batch tables B/event |" | tee -a "$OUT/table.md"
echo "|---|---|---:|---:|---:|---:|---:|---:|" | tee -a "$OUT/table.md"
for r in $(seq "$ROUNDS"); do
    read -r _ _ o ob _ <<<"$(grep "^one_r$r " "$RES")"
    for c in one many; do
        read -r _ _ i ib w s <<<"$(grep "^${c}_r$r " "$RES")"
        echo "| $r | $([ $c = one ] && echo 1 || echo "$CH_EVENTS") | $i | $($PY -c "print(f'{$o / $i:.2f}')") | $ib | $($PY -c "print(f'{$ob / $ib:.2f}')") | $w | $s |" | tee -a "$OUT/table.md"
    done
done
echo "channels_cg: profiles in $OUT" >&2
