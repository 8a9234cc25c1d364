#!/usr/bin/env bash
# Proves that test/check_wrappers.sh fails on a planted violation: each case copies src/ to a
# scratch folder, plants one entry point that bypasses boundary(), and expects the check to fail
# naming it; the unchanged copy must pass. Run by `make unit`.
set -uo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d "${TMPDIR:-/tmp}/check_wrappers.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
fails=0; n=0
expect() { # name, expected "pass" or "fail", pattern the output must contain (fail), file to append to, code
    local name=$1 want=$2 pattern=$3 file=$4 code=$5
    n=$((n + 1))
    rm -rf "$scratch/src" && cp -r src "$scratch/src"
    [ -n "$file" ] && printf '%s\n' "$code" >> "$scratch/src/$file"
    out=$(bash test/check_wrappers.sh "$scratch/src" 2>&1); rc=$?
    if [ "$want" = pass ] && [ $rc = 0 ]; then echo "ok $n - $name"; return; fi
    if [ "$want" = fail ] && [ $rc != 0 ] && grep -q -- "$pattern" <<<"$out"; then echo "ok $n - $name"; return; fi
    echo "not ok $n - $name (exit $rc)"; echo "$out" | sed 's/^/#   /'; fails=$((fails + 1))
}
# the allow list names files under src/: point it at the copy
sed "s#^src/#$scratch/src/#" test/check_wrappers.allow > "$scratch/allow"
export CHECK_WRAPPERS_ALLOW="$scratch/allow"
expect "the tree as it is passes" pass "" "" ""
expect "bare PG_FUNCTION_INFO_V1" fail "PG_FUNCTION_INFO_V1(planted_fn) outside PGO_FUNCTION" notify.cpp '
extern "C" { PG_FUNCTION_INFO_V1(planted_fn); }
extern "C" Datum planted_fn(PG_FUNCTION_ARGS) { PG_RETURN_VOID(); }'
expect "hand-written V1 function" fail "planted_v1 is a hand-written V1 function" notify.cpp '
extern "C" Datum planted_v1(PG_FUNCTION_ARGS) { PG_RETURN_VOID(); }'
expect "unwrapped hook" fail "hook planted_hook does not run its body inside boundary" shmem.cpp '
static void planted_hook(void) {
	std::string s("owns memory");
}
static void install_planted(void) { shmem_startup_hook = planted_hook; }'
expect "unwrapped transaction callback" fail "transaction callback planted_cb does not run" wakeup.cpp '
static void planted_cb(XactEvent event, void *) {
	(void)event;
}
static void install_planted(void) { RegisterXactCallback(planted_cb, nullptr); }'
expect "unwrapped relcache callback" fail "cache callback planted_rel does not run" trigger_config.cpp '
static void planted_rel(Datum, Oid relid) {
	(void)relid;
}
static void install_planted(void) { CacheRegisterRelcacheCallback(planted_rel, (Datum)0); }'
expect "unwrapped GUC check hook" fail "GUC hook planted_check does not run" pg_outbox.cpp '
static bool planted_check(int *newval, void **, GucSource) {
	return *newval > 0;
}
static int planted_guc;
static void define_planted(void) {
	DefineCustomIntVariable("pg_outbox.planted", "x", nullptr, &planted_guc, 1, 0, 10, PGC_SIGHUP, 0,
	                        planted_check, nullptr, nullptr);
}'
expect "unwrapped GUC hook of a template" fail "GUC hook planted_tcheck does not run" pg_outbox.cpp '
template <int I> bool planted_tcheck(char **newval, void **, GucSource) {
	return *newval != nullptr;
}
static char *planted_tguc;
static void define_tplanted(void) {
	DefineCustomStringVariable("pg_outbox.tplanted", "x", nullptr, &planted_tguc, "", PGC_SIGHUP, 0,
	                           planted_tcheck<0>, nullptr, nullptr);
}'
expect "unwrapped exit callback" fail "exit callback planted_exit does not run" shmem.cpp '
static void planted_exit(int, Datum) {
	shared = nullptr;
}
static void install_planted(void) { before_shmem_exit(planted_exit, 0); }'
expect "wrapped entry points pass" pass "" wakeup.cpp '
static void planted_ok(XactEvent event, void *) {
	boundary([&] { (void)event; });
}
static void install_planted(void) { RegisterXactCallback(planted_ok, nullptr); }'
echo "check_wrappers_test: $((n - fails)) of $n cases passed"
[ $fails = 0 ]
