#!/usr/bin/env bash
# Cost of channel rights on outbox.publish() (not a test; not run in CI). Counts the machine
# instructions spent inside outbox_publish() (callgrind, inclusive, --toggle-collect) for N
# publishes in a single-user backend (postgres --single: no other process, deterministic), and
# inside outbox_change_trigger() per row of an INSERT into a table attached in outbox mode, in
# four states: no right at all (1.1's behaviour); only read rights (publish unaffected); one
# publish right that covers the channel; 100 publish rights, the covering one last.
# Instruction counts, unlike times, do not depend on the other load of a shared machine.
#
# Usage: bash test/bench/rights_bench.sh [SOURCE_TREE]   (default: this tree)
#   e.g. git archive main | tar -x -C /tmp/main_tree && bash test/bench/rights_bench.sh /tmp/main_tree
#   (a tree without channel rights measures only the first state)
# Environment: N (20000).
set -euo pipefail
SRC=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
N=${N:-20000}
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
command -v valgrind >/dev/null || { echo "valgrind is needed"; exit 1; }

DIR=$(mktemp -d "${TMPDIR:-/tmp}/pg_outbox_rights_bench.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
PREFIX="$DIR/install"
mkdir -p "$PREFIX/usr/lib/postgresql" "$PREFIX/usr/share/postgresql"
cp -a "$("$PG_CONFIG" --pkglibdir)/.." "$PREFIX/usr/lib/postgresql/15"
cp -a "$("$PG_CONFIG" --sharedir)" "$PREFIX/usr/share/postgresql/15"
cp -r "$SRC" "$DIR/src"
(cd "$DIR/src" && make -s clean >/dev/null 2>&1 || true; make -s PG_CONFIG="$PG_CONFIG" >/dev/null && \
    make -s install PG_CONFIG="$PG_CONFIG" DESTDIR="$PREFIX" >/dev/null)
BIN="$PREFIX/usr/lib/postgresql/15/bin"
RUN=()
if [ "$(id -u)" = 0 ]; then chown -R postgres: "$DIR"; RUN=(runuser -u postgres --); fi
chmod 755 "$DIR"
"${RUN[@]}" "$BIN/initdb" -D "$DIR/data" -E UTF8 --no-locale -A trust >/dev/null
cat >>"$DIR/data/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = ''
fsync = off
CONF
single() { # SQL on stdin
    "${RUN[@]}" "$BIN/postgres" --single -D "$DIR/data" -j postgres >/dev/null 2>&1
}
# the publisher is not a superuser (a superuser holds every right: its check stops early)
echo "CREATE EXTENSION pg_outbox; CREATE ROLE bench_p IN ROLE outbox_publisher; CREATE ROLE bench_t;
CREATE TABLE bench_rows (id int PRIMARY KEY); ALTER TABLE bench_rows OWNER TO bench_p; GRANT ALL ON bench_rows TO PUBLIC;
SET ROLE bench_p; SELECT outbox.attach('bench_rows', 'tenant_42');" | single
has_rights=$(echo "SELECT to_regprocedure('outbox.grant_channel(text,regrole,text[])') IS NOT NULL;" | \
    "${RUN[@]}" "$BIN/postgres" --single -D "$DIR/data" -j postgres 2>/dev/null | grep -c '= "t"' || true)

measure() { # label, SQL to run first
    local label=$1 setup=$2
    echo "TRUNCATE outbox.pending; $setup" | single
    # one warm-up call (loads the cache), then N
    local sql="SET ROLE bench_p;
SELECT outbox.publish('tenant_42', NULL);
SELECT count(outbox.publish('tenant_42', NULL)) FROM generate_series(1, $N);"
    echo "$sql" | "${RUN[@]}" valgrind --tool=callgrind --toggle-collect=outbox_publish \
        --callgrind-out-file="$DIR/cg.out" "$BIN/postgres" --single -D "$DIR/data" -j postgres >/dev/null 2>"$DIR/vg.err"
    local ir
    ir=$(grep -E '^summary:|^totals:' "$DIR/cg.out" | head -1 | awk '{print $2}')
    awk -v l="$label" -v ir="$ir" -v n="$((N + 1))" 'BEGIN { printf "%-44s %8.0f instructions per publish (%d calls)\n", l, ir / n, n }'
    # the change trigger, as the table's owner (the row trigger: the statement's flush is apart)
    echo "TRUNCATE bench_rows;" | single
    echo "INSERT INTO bench_rows SELECT g FROM generate_series(1, $N) g;" | "${RUN[@]}" valgrind --tool=callgrind \
        --toggle-collect=outbox_change_trigger --callgrind-out-file="$DIR/cg2.out" "$BIN/postgres" --single \
        -D "$DIR/data" -j postgres >/dev/null 2>"$DIR/vg2.err"
    ir=$(grep -E '^summary:|^totals:' "$DIR/cg2.out" | head -1 | awk '{print $2}')
    awk -v l="" -v ir="$ir" -v n="$((N + 1))" 'BEGIN { printf "%-44s %8.0f instructions per row in the change trigger (its flush included)\n", l, ir / n }'
}
measure "no channel right" ""
if [ "$has_rights" -ge 1 ]; then
    measure "read rights only (publish not enforced)" "SELECT outbox.grant_channel('tenant_%', 'postgres', '{read}');"
    measure "one publish right covering the channel" \
        "SELECT outbox.grant_channel('tenant_42', 'bench_t', '{publish}'); GRANT bench_t TO bench_p;"
    measure "100 publish rights, the covering one last" \
        "SELECT outbox.revoke_channel('tenant_42', 'bench_t', '{publish}'); SELECT outbox.grant_channel('other_' || g || '_%', 'bench_t', '{publish}') FROM generate_series(1, 99) g; SELECT outbox.grant_channel('tenant_%', 'bench_t', '{publish}');"
fi
