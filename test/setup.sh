#!/usr/bin/env bash
# Installs what pg_outbox needs from Debian's archive (only what is missing), then builds and
# installs the extension into the system's PostgreSQL 15. Idempotent; used by test/demo.sh and
# test/run_tests.sh, so both work on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(postgresql-15 postgresql-server-dev-15 libpq-dev libboost-json1.81-dev libipc-run-perl libgtest-dev
          g++ make perl
          pgbouncer # pgbouncer: test/t/121_pgbouncer.pl and test/bench/wait_bench.sh (consumers behind a pooler)
          # the Python client (clients/python) and its tests (suite "python" of test/run_tests.sh)
          python3 python3-asyncpg python3-psycopg python3-psycopg2 python3-sqlalchemy python3-pytest python3-pytest-asyncio)
SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: run as root (or install sudo): apt-get and make install need it" >&2; exit 1; }
    SUDO=(sudo)
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

export PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
make -s -j"$(nproc)" PG_CONFIG="$PG_CONFIG"
"${SUDO[@]}" make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
echo "setup: pg_outbox built and installed into $("$PG_CONFIG" --pkglibdir)"
