# test/bench/lib.sh — sourced by the benchmark scripts in test/bench/: a throwaway cluster as the
# postgres OS user on a private socket, this tree's build in a private copy of PostgreSQL, the
# figures file the chart writer reads, and the SQL that asks pg_outbox "is it drained?".
#
# The scripts source it after `cd` to the repository's root. Nothing here changes the system
# beyond the Debian packages a script asks for (bench_packages).

PY=/usr/bin/python3 # Debian's interpreter: the python3-* packages live there

# --- what "drained" means: the only place the benchmarks ask pg_outbox about its progress -------
# Kept to the public interface so that the scripts keep working across storage redesigns.
#   OB_HEAD_SQL   the latest published position (every published event moves it by one)
#   OB_IDLE_SQL   true when nothing is waiting to be published
OB_HEAD_SQL="SELECT outbox.head()"
OB_IDLE_SQL="SELECT NOT EXISTS (SELECT FROM outbox.pending)"
# The extension's relations: its member tables, their inheritance/partition descendants and any
# table in its schema (tables the worker makes at run time), with indexes and TOAST
# (pg_total_relation_size). No table name is written here.
OB_RELS_SQL="WITH RECURSIVE ext AS (SELECT oid, extnamespace FROM pg_extension WHERE extname = 'pg_outbox'),
  rels(oid) AS (
    SELECT c.oid FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
     WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
       AND d.refobjid = (SELECT oid FROM ext) AND d.deptype = 'e' AND c.relkind IN ('r', 'p', 'm')
    UNION SELECT c.oid FROM pg_class c WHERE c.relnamespace = (SELECT extnamespace FROM ext) AND c.relkind IN ('r', 'p', 'm')
    UNION SELECT i.inhrelid FROM pg_inherits i JOIN rels ON i.inhparent = rels.oid)
  SELECT oid FROM rels"
OB_SIZE_SQL="SELECT coalesce(sum(pg_total_relation_size(oid)), 0) FROM ($OB_RELS_SQL) r"
# Per relation (for the log): name and total size, largest first
OB_SIZES_SQL="SELECT string_agg(format('%s %s', oid::regclass, pg_size_pretty(pg_total_relation_size(oid))), ', '
                ORDER BY pg_total_relation_size(oid) DESC) FROM ($OB_RELS_SQL) r WHERE pg_total_relation_size(oid) > 16384"

# --- setup -------------------------------------------------------------------------------------
# bench_packages PKG...: installs the missing Debian packages (apt-get; nothing else system-wide)
bench_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "bench: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# bench_workdir NAME: W (a private directory, removed at exit unless KEEP=1), the build in a private
# copy of PostgreSQL (BIN), bench_client compiled into $W, OUT (bench_out).
bench_workdir() {
    local name=$1
    W=$(mktemp -d "/var/tmp/pg_outbox_$name.XXXXXX")
    chmod 755 "$W"
    bench_out "$name"
    pg_private_install "$W/install"
    BIN=$BINDIR
    g++ -O2 -Wall -Wextra -std=c++17 -I"$("$PG_CONFIG" --includedir)" test/bench/bench_client.cpp \
        -o "$W/bench_client" -lpq -pthread
    CLIENT=$W/bench_client
    PORT=5432 # the socket lives in our private directory: no clash with other clusters
    DSN="host=$W port=$PORT user=postgres dbname=bench"
    PYDSN="postgres@/bench?host=$W&port=$PORT"
    export PGHOST=$W PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
    BG_PIDS=()
    chown postgres: "$W"
    trap bench_cleanup EXIT
}

bench_cleanup() {
    set +e
    local p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    [ -f "$W/pgqd.pid" ] && kill "$(cat "$W/pgqd.pid")" 2>/dev/null
    [ -f "$W/data/postmaster.pid" ] && runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1
    if [ -n "${KEEP:-}" ]; then echo "bench: kept $W" >&2; else rm -rf "$W"; fi
}

# cluster_init [EXTRA CONF LINES]: initdb, pg_outbox preloaded for every database, started.
cluster_init() {
    runuser -u postgres -- "$BIN/initdb" -D "$W/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
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
${1:-}
EOF
    runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null
    psql -XAtq -d postgres -c "CREATE DATABASE bench"
}

cluster_restart() {
    runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w -m fast restart >/dev/null
}

q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
rate() { $PY -c "import sys; print(round($1 / ($2)))"; }

# wait_worker: until the drain worker of database "bench" runs (WORKER_PID)
wait_worker() {
    local _
    for _ in $(seq 200); do
        WORKER_PID=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_outbox drain' AND datname = 'bench'")
        [ -n "$WORKER_PID" ] && return 0
        sleep 0.1
    done
    echo "bench: no drain worker started (see $W/server.log)" >&2
    exit 1
}

# wait_idle [SECONDS]: until nothing is waiting to be published (OB_IDLE_SQL), bounded
wait_idle() {
    local deadline=$(($(date +%s) + ${1:-300}))
    while [ "$(q -c "$OB_IDLE_SQL")" != t ]; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "bench: the outbox did not drain within ${1:-300} s" >&2; exit 1; }
        sleep 0.1
    done
}

# start_pgqd: PgQ's ticker daemon for database bench (pgq installed in it)
start_pgqd() {
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
}

# bench_out NAME: OUT, the directory of the figures file, the charts and the text (kept): $OUT or
# /var/tmp/pg_outbox_bench_results/NAME-<time>; starts an empty figures file
bench_out() {
    OUT=${OUT:-/var/tmp/pg_outbox_bench_results/$1-$(date -u +%Y%m%dT%H%M%SZ)}
    mkdir -p "$OUT"
    : >"$OUT/figures.tsv"
}

# --- figures -----------------------------------------------------------------------------------
# $OUT/figures.tsv, read by test/bench/charts.py:
#   fig GROUP LABEL RUN VALUE UNIT     one measured figure (a chart per GROUP, a bar per LABEL,
#                                      median over RUNs, whiskers min..max)
#   title GROUP TEXT                   the chart's title
#   target NAME MEASURED GOAL >=|<=    a target of an issue and its figure (the targets chart)
fig() { printf 'fig\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >>"$OUT/figures.tsv"; }
fig_title() { printf 'title\t%s\t%s\n' "$1" "$2" >>"$OUT/figures.tsv"; }

# charts: draws $OUT/*.png from $OUT/figures.tsv (CHARTS=0 skips; needs python3-matplotlib)
charts() {
    [ "${CHARTS:-1}" = 0 ] && return 0
    if ! $PY -c "import matplotlib" 2>/dev/null; then
        [ "$(id -u)" = 0 ] && bench_packages python3-matplotlib ||
            { echo "bench: no charts (python3-matplotlib is not installed; figures in $OUT/figures.tsv)" >&2; return 0; }
    fi
    $PY test/bench/charts.py "$OUT" >&2 || echo "bench: charts.py failed (figures are in $OUT/figures.tsv)" >&2
}
