#!/usr/bin/env bash
# Installs what pg_outbox's build and tests need from Debian's archive (only what is missing),
# then builds the extension. It installs nothing into the system's PostgreSQL: the tests and the
# demo install the build into private copies of it; `make install` is the user's own step.
# Idempotent; used by test/demo.sh, test/run_tests.sh and the benchmarks, so they work on a
# fresh Debian 12 machine.
#   PG_MAJOR=NN (default 15; see test/pgenv.sh): for a major this Debian release does not carry
#   (17, 18 on Debian 12) only debootstrap is installed here; the chroot test/pgchroot.sh makes
#   carries the rest, and the build happens there.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/pgenv.sh
pg_resolve

codename=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")
boost=libboost-json-dev
[ "$codename" = bookworm ] && boost=libboost-json1.81-dev # bookworm's default Boost (1.74) has no JSON
TOOLS=(libpq-dev "$boost" libipc-run-perl libgtest-dev g++ make perl
       pgbouncer) # pgbouncer: test/t/121_pgbouncer.pl and test/bench/wait_bench.sh (consumers behind a pooler)
# The client-side suites (python, kafka) and the fuzz suite run on the Debian 12 host only (CI runs
# them on 15; inside the chroots of 17 and 18 only the server suites run): their packages are
# Debian 12's names.
if [ "$codename" = bookworm ]; then
    # the Python client (clients/python) and its tests (suite "python" of test/run_tests.sh)
    TOOLS+=(python3 python3-asyncpg python3-psycopg python3-psycopg2 python3-sqlalchemy python3-pytest python3-pytest-asyncio)
    TOOLS+=(clang-14 libclang-rt-14-dev) # the fuzz suite (test/fuzz, libFuzzer)
    TOOLS+=(openjdk-17-jdk-headless maven curl) # test/kafka: Kafka, Connect and Debezium from Maven Central
    TOOLS+=(prometheus-postgres-exporter) # suite "prometheus": contrib/prometheus/pg_outbox_queries.yaml
fi
if [ "$PG_WHERE" = chroot ]; then
    PACKAGES=(debootstrap)
elif [ "$PG_CONFIG" = "/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" ]; then
    PACKAGES=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" "${TOOLS[@]}")
else
    PACKAGES=("${TOOLS[@]}") # a PostgreSQL of one's own (PG_CONFIG=...)
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: run as root (or install sudo): apt-get needs it" >&2; exit 1; }
    SUDO=(sudo)
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # Debian starts the services it installs (prometheus-postgres-exporter would listen on :9187
    # and connect to the host's PostgreSQL): forbid that for this install unless a policy exists
    policy=/usr/sbin/policy-rc.d; own_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# test/setup.sh: no service starts while it installs packages\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"; own_policy=1
    fi
    rc=0
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
    [ -z "$own_policy" ] || "${SUDO[@]}" rm -f "$policy"
    [ "$rc" = 0 ] || exit "$rc"
fi

if [ "$PG_WHERE" = chroot ]; then
    echo "setup: PostgreSQL $PG_MAJOR is not packaged for Debian $codename: it runs in a chroot (test/pgchroot.sh)"
    exit 0
fi
# objects built against another PostgreSQL (another PG_MAJOR or PG_CONFIG) are built again
stamp=.built-for-pg
if [ "$(cat "$stamp" 2>/dev/null)" != "$PG_CONFIG $("$PG_CONFIG" --version)" ]; then
    make -s clean PG_CONFIG="$PG_CONFIG" >/dev/null 2>&1 || true
fi
make -s -j"$(nproc)" PG_CONFIG="$PG_CONFIG"
echo "$PG_CONFIG $("$PG_CONFIG" --version)" >"$stamp"
echo "setup: pg_outbox built for PostgreSQL $PG_MAJOR (not installed; 'make install PG_CONFIG=$PG_CONFIG' installs it)"
