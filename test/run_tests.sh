#!/usr/bin/env bash
# The whole test suite: sets everything up (test/setup.sh), then runs
#   1. unit tests of the pure C++ code (GoogleTest),
#   2. pg_regress       (sql/, expected/)                  on a temporary instance,
#   3. isolation tests  (test/isolation/specs, expected)    on a temporary instance,
#   4. TAP tests        (test/t/*.pl, PostgreSQL::Test::Cluster),
#   5. the Python client (clients/python/tests, pytest)     on a cluster of its own,
#   6. kafka            (test/kafka/run.sh: Kafka broker, Kafka Connect + Debezium, the WAL target),
#   7. fuzz targets     (test/fuzz/*.cpp, libFuzzer + ASan/UBSan, FUZZ_SECONDS=20 each),
#   8. prometheus       (test/prometheus/t: Debian's prometheus-postgres-exporter with
#                        contrib/prometheus/pg_outbox_queries.yaml, scraped on 127.0.0.1).
# Servers run as an unprivileged OS user (postgres, when called as root). Exits non-zero on
# any failure. Usage: bash test/run_tests.sh [unit|regress|isolation|tap|python|kafka|fuzz|prometheus ...]
# (TAP_FILES=t/040_admin.pl runs only some TAP files; REGRESS_TESTS="a b", ISOLATION_TESTS="c" likewise)
# PG_MAJOR=17 bash test/run_tests.sh runs them against PostgreSQL 17 (15, 16, 17, 18; default 15):
# natively when that major is installed here (or is this Debian release's own), else inside a
# Debian chroot of it that test/pgchroot.sh makes once and reuses. PG_CONFIG=/path/to/pg_config
# tests against any other installation (e.g. one built from source). See test/pgenv.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. test/pgenv.sh
pg_resolve || exit 2
bash test/setup.sh || exit 1
if [ "$PG_WHERE" = chroot ]; then
    exec bash test/pgchroot.sh test "$PG_MAJOR" "$@"
fi
echo "run_tests: PostgreSQL $("$PG_CONFIG" --version | sed 's/^PostgreSQL //') ($PG_CONFIG)"

SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(unit regress isolation tap python kafka fuzz prometheus)

# Work in a scratch folder the test user owns (a fresh clone may be unreadable to it).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pg_outbox_test.XXXXXX")
cp -r sql expected test contrib clients "$WORK"/   # clients: t/131_epochs_clients.pl runs the Python client
cp README.md "$WORK"/   # t/091_security_matrix.pl checks its access-control table

# Test against a private copy of the PostgreSQL installation with this tree's build installed
# into it: PostgreSQL finds its share and lib directories relative to its binaries, so the
# tests never depend on (or disturb) what is installed system-wide.
PREFIX="$WORK/install"
pg_private_install "$PREFIX" || exit 1 # sets BINDIR, PGXS_DIR
RUN=()
if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$WORK"
    RUN=(runuser -u postgres --)
fi
chmod 755 "$WORK"

passed=0; failed=0; failed_names=()
suite() { # name, command...
    local name=$1; shift
    echo; echo "=== $name ==="
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$name"); fi
}
show_diffs() {
    local diffs=$1
    if [ -s "$diffs" ]; then echo "--- $diffs (first 200 lines)"; head -200 "$diffs"; fi
}

# REGRESS_TESTS="log_switch wal" / ISOLATION_TESTS="log_switch" run only those (each sets itself up)
regress_tests=${REGRESS_TESTS:-$(cd sql && ls *.sql | sed 's/\.sql$//' | sort | tr '\n' ' ')}
isolation_tests=${ISOLATION_TESTS:-$(cd test/isolation/specs && ls *.spec 2>/dev/null | sed 's/\.spec$//' | sort | tr '\n' ' ')}

run_regress() {
    (cd "$WORK" && "${RUN[@]}" "$PGXS_DIR/test/regress/pg_regress" --bindir="$BINDIR" \
        --temp-instance="$WORK/tmp_regress" --temp-config="$WORK/test/regress.conf" \
        --inputdir="$WORK" --outputdir="$WORK/regress" --dbname=contrib_regression --encoding=UTF8 --no-locale $regress_tests) \
        || { show_diffs "$WORK/regress/regression.diffs"; return 1; }
}
run_isolation() {
    [ -n "$isolation_tests" ] || { echo "no isolation specs"; return 1; }
    (cd "$WORK" && "${RUN[@]}" "$PGXS_DIR/test/isolation/pg_isolation_regress" --bindir="$BINDIR" \
        --temp-instance="$WORK/tmp_isolation" --temp-config="$WORK/test/regress.conf" \
        --inputdir="$WORK/test/isolation" --outputdir="$WORK/isolation" --dbname=isolation_regression --encoding=UTF8 --no-locale \
        $isolation_tests) \
        || { show_diffs "$WORK/isolation/regression.diffs"; return 1; }
}
run_tap() {
    # t/111_disk_full.pl needs a small file system (a full disk); only root can mount one
    local small_fs=""
    if [ "$(id -u)" = 0 ] && mkdir -p "$WORK/small_fs" &&
        mount -t tmpfs -o size=40m,mode=0700,uid="$(id -u postgres)" tmpfs "$WORK/small_fs" 2>/dev/null; then
        small_fs="$WORK/small_fs"
    fi
    (cd "$WORK/test" && "${RUN[@]}" env PATH="$BINDIR:$PATH" TESTDIR="$WORK/test" PG_OUTBOX_SMALL_FS="$small_fs" \
        PG_REGRESS="$PGXS_DIR/test/regress/pg_regress" PG_OUTBOX_LISTEN="$BINDIR/pg_outbox_listen" \
        prove -I "$PGXS_DIR/test/perl" -I "$WORK/test" --timer ${TAP_FILES:-t/*.pl}) \
        || { [ -z "$small_fs" ] || umount "$small_fs"
             for f in "$WORK"/test/tmp_check/log/regress_log_*; do [ -f "$f" ] && { echo "--- $f (last 60 lines)"; tail -60 "$f"; }; done; return 1; }
    [ -z "$small_fs" ] || umount "$small_fs"
}

# The Prometheus exporter with the queries file (test/prometheus/t, TAP like test/t): the exporter
# listens on 127.0.0.1 only, against a cluster of the test's own; no service of the host is used.
run_prometheus() {
    (cd "$WORK/test" && "${RUN[@]}" env PATH="$BINDIR:$PATH" TESTDIR="$WORK/test" \
        PG_REGRESS="$PGXS_DIR/test/regress/pg_regress" \
        prove -I "$PGXS_DIR/test/perl" -I "$WORK/test" --timer prometheus/t/*.pl) \
        || { for f in "$WORK"/test/tmp_check/log/regress_log_0*_exporter; do [ -f "$f" ] && { echo "--- $f (last 60 lines)"; tail -60 "$f"; }; done; return 1; }
}

# The Python client's tests (clients/python/tests, pytest), against a cluster of their own made
# from this private installation; as the test user, with Debian's python3 (not one first on PATH).
run_python() {
    cp -r clients "$WORK"/ && { [ -z "${RUN[*]}" ] || chown -R postgres: "$WORK/clients"; }
    (cd "$WORK/clients/python" && "${RUN[@]}" env PG_OUTBOX_BINDIR="$BINDIR" HOME="$WORK" PYTHONDONTWRITEBYTECODE=1 \
        /usr/bin/python3 -m pytest -p no:cacheprovider -q -rs --basetemp="$WORK/pytest" ${PYTEST_FILES:-tests})
}

run_kafka() { # jars from Maven Central (cached in ~/.m2); servers on loopback; see test/kafka/run.sh
	KAFKA_WORK="$WORK/kafka" PG_BINDIR="$BINDIR" bash "$ROOT/test/kafka/run.sh"
}
# fuzz: each libFuzzer target (test/fuzz/, ASan + UBSan) for FUZZ_SECONDS (20) on a copy of its
# seed corpus; a crash, a sanitizer report or a failed check fails the suite.
run_fuzz() {
    make -s fuzz-build FUZZ_DIR="$WORK/fuzz/bin" || return 1
    local rc=0 t
    for t in template payload envelope listen; do
        mkdir -p "$WORK/fuzz/corpus_$t" "$WORK/fuzz/artifacts_$t"
        cp test/fuzz/corpus/$t/* "$WORK/fuzz/corpus_$t/" 2>/dev/null
        if "$WORK/fuzz/bin/fuzz_$t" -max_total_time="${FUZZ_SECONDS:-20}" -print_final_stats=1 -timeout=10 \
            -rss_limit_mb=2048 -artifact_prefix="$WORK/fuzz/artifacts_$t/" "$WORK/fuzz/corpus_$t" \
            > "$WORK/fuzz/$t.log" 2>&1; then
            echo "fuzz_$t: ok, $(grep -o 'number_of_executed_units: [0-9]*' "$WORK/fuzz/$t.log" | grep -o '[0-9]*') executions"
        else
            echo "fuzz_$t: FAILED"; grep -E 'ERROR|SUMMARY|fuzz check|runtime error|Test unit written' "$WORK/fuzz/$t.log" | head -20
            rc=1
        fi
    done
    return $rc
}

for s in "${SUITES[@]}"; do
    case $s in
        unit)      suite "unit tests (GoogleTest)" make -s unit ;;
        regress)   suite "pg_regress" run_regress ;;
        isolation) suite "isolation tests" run_isolation ;;
        tap)       suite "TAP tests" run_tap ;;
        python)    suite "Python client (pytest)" run_python ;;
        kafka)     suite "Kafka and Debezium (test/kafka)" run_kafka ;;
        fuzz)      suite "fuzz targets (libFuzzer)" run_fuzz ;;
        prometheus) suite "Prometheus exporter (test/prometheus)" run_prometheus ;;
        *) echo "unknown suite $s (unit, regress, isolation, tap, python, kafka, fuzz, prometheus)"; exit 2 ;;
    esac
done

echo
if [ $failed -eq 0 ]; then rm -rf "$WORK"; else echo "failed: ${failed_names[*]} (output kept in $WORK)"; fi
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
