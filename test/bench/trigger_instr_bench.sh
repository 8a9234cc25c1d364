#!/usr/bin/env bash
# Machine instructions per row inside the change trigger (not a test; not run in CI): callgrind,
# inclusive, --toggle-collect=outbox_change_trigger (the statement's flush into the outbox
# included), for an INSERT of N rows in a single-user backend (postgres --single: no other
# process, so the count does not depend on the load of a shared machine). Four tables: outbox
# and notify mode, each with the key only and with three included columns (text with characters
# to escape, int, timestamptz). Give it several source trees to compare them in one run:
#   git archive main | tar -x -C /tmp/main_tree
#   bash test/bench/trigger_instr_bench.sh /tmp/main_tree .
# Environment: N (5000).
set -euo pipefail
N=${N:-5000}
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
command -v valgrind >/dev/null || { echo "valgrind is needed"; exit 1; }
[ $# -gt 0 ] || set -- "$(dirname "$0")/../.."

run_tree() {
    local SRC DIR PREFIX BIN RUN=()
    SRC=$(cd "$1" && pwd)
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/pg_outbox_trigger_instr.XXXXXX")
    PREFIX="$DIR/install"
    mkdir -p "$PREFIX/usr/lib/postgresql" "$PREFIX/usr/share/postgresql"
    cp -a "$("$PG_CONFIG" --pkglibdir)/.." "$PREFIX/usr/lib/postgresql/15"
    cp -a "$("$PG_CONFIG" --sharedir)" "$PREFIX/usr/share/postgresql/15"
    cp -r "$SRC" "$DIR/src"
    (cd "$DIR/src" && { make -s clean >/dev/null 2>&1 || true; } && make -s PG_CONFIG="$PG_CONFIG" >/dev/null &&
        make -s install PG_CONFIG="$PG_CONFIG" DESTDIR="$PREFIX" >/dev/null)
    BIN="$PREFIX/usr/lib/postgresql/15/bin"
    if [ "$(id -u)" = 0 ]; then chown -R postgres: "$DIR"; RUN=(runuser -u postgres --); fi
    chmod 755 "$DIR"
    "${RUN[@]}" "$BIN/initdb" -D "$DIR/data" -E UTF8 --no-locale -A trust >/dev/null
    printf "shared_preload_libraries = 'pg_outbox'\npg_outbox.databases = ''\nfsync = off\n" >>"$DIR/data/postgresql.conf"
    single() { "${RUN[@]}" "$BIN/postgres" --single -D "$DIR/data" -j postgres >/dev/null 2>&1; }
    echo "CREATE EXTENSION pg_outbox;
CREATE TABLE o_key (id int PRIMARY KEY, name text, n int, at timestamptz);
CREATE TABLE o_data (LIKE o_key INCLUDING ALL); CREATE TABLE n_key (LIKE o_key INCLUDING ALL); CREATE TABLE n_data (LIKE o_key INCLUDING ALL);
SELECT outbox.attach('o_key', 'c');
SELECT outbox.attach('o_data', 'c', include_columns => '{name,n,at}');
SELECT outbox.attach('n_key', 'c', mode => 'notify');
SELECT outbox.attach('n_data', 'c', mode => 'notify', include_columns => '{name,n,at}');" | single
    echo "== $SRC ($(cd "$SRC" && git log -1 --format=%h 2>/dev/null || echo 'no git'))"
    local t ir
    for t in o_key o_data n_key n_data; do
        echo "INSERT INTO $t SELECT g, E'row \"' || g || E'\"\\twith a tab', g, '2024-05-01 12:00:00+00' FROM generate_series(1, $N) g;" |
            "${RUN[@]}" valgrind --tool=callgrind --toggle-collect=outbox_change_trigger \
            --callgrind-out-file="$DIR/cg.out" "$BIN/postgres" --single -D "$DIR/data" -j postgres >/dev/null 2>"$DIR/vg.err"
        ir=$(grep -E '^summary:|^totals:' "$DIR/cg.out" | head -1 | awk '{print $2}')
        awk -v t="$t" -v ir="$ir" -v n="$N" 'BEGIN { printf "  %-8s %8.0f instructions per row\n", t, ir / n }'
    done
    rm -rf "$DIR"
}
for tree in "$@"; do run_tree "$tree"; done
