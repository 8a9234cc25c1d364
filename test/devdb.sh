#!/usr/bin/env bash
# test/devdb.sh — a throwaway development cluster with this tree's build, for trying things by hand.
#   bash test/devdb.sh start DIR [PORT]   build, install into DIR/install (a private copy of the
#                                          server), initdb DIR/data as the postgres OS user, start
#                                          it on a unix socket in DIR (no TCP), CREATE DATABASE dev
#                                          with the extension; prints the psql command to use
#   bash test/devdb.sh reinstall DIR      rebuild and reinstall the library and scripts, restart
#   bash test/devdb.sh stop DIR           stop it (DIR stays; rm -rf it yourself)
# PG_MAJOR as in test/pgenv.sh (the host's 15 by default). Nothing system-wide is changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/pgenv.sh
pg_resolve
cmd=${1:?start|reinstall|stop}; dir=${2:?DIR}; port=${3:-5499}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
install() {
    make -s -j2 PG_CONFIG="$PG_CONFIG" >/dev/null
    rm -rf "$dir/install.lib.tmp"
    pg_private_install "$dir/install"
    echo "$BINDIR" >"$dir/bindir"
    chown -R postgres: "$dir"
}
ctl() { runuser -u postgres -- "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w "$@" >/dev/null; }
case $cmd in
start)
    install
    bin=$(cat "$dir/bindir")
    runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = '*'
fsync = off
CONF
    ctl start
    "$bin/psql" -XAtq -h "$dir" -p "$port" -U postgres -d postgres -c "CREATE DATABASE dev" \
        -c '\c dev' -c "CREATE EXTENSION pg_outbox"
    echo "$bin/psql -h $dir -p $port -U postgres dev"
    ;;
reinstall) install; ctl restart ;;
stop) ctl stop -m fast ;;
*) echo "devdb: start|reinstall|stop" >&2; exit 2 ;;
esac
