#!/usr/bin/env bash
# profile_drain.sh — where the drain's time goes (a tool for tuning, not a test).
#
#   bash test/bench/profile_drain.sh            # both profiles below
#   WHAT=callgrind EVENTS=30000 BATCH=10000 bash test/bench/profile_drain.sh
#
# callgrind: a single-user backend (postgres --single) runs outbox.drain(BATCH) until EVENTS
#            events are published; only outbox_drain() is instrumented (--toggle-collect), so
#            the figures are instructions per drained event, free of machine noise. Prints the
#            inclusive top entries and the per-event instruction count.
# perf:      the drain worker of a running server drains a backlog of EVENTS under
#            `perf record -g -p <worker pid>`; prints the flat top entries (Debian's postgres has
#            no frame pointers, so perf's call chains are thin: use callgrind for inclusive costs).
# Uses this tree's build, installed into a private copy of the PostgreSQL installation.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHAT=${WHAT:-callgrind perf}
EVENTS=${EVENTS:-30000}
BATCH=${BATCH:-10000}
[ "$(id -u)" = 0 ] || { echo "profile_drain: run as root" >&2; exit 1; }
# PG_MAJOR=17 or 18: the same inside that major's Debian chroot (test/pgchroot.sh)
. test/pgenv.sh
pg_resolve
[ "$PG_WHERE" = chroot ] && exec bash test/pgchroot.sh intree "$PG_MAJOR" test/bench/profile_drain.sh "$@"
for p in valgrind linux-perf; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$p" >/dev/null
done
bash test/setup.sh >/dev/null
W=$(mktemp -d /var/tmp/pg_outbox_prof.XXXXXX)
chmod 755 "$W"
pg_private_install "$W/install"
BIN=$BINDIR
export PGHOST=$W PGPORT=5432 PGUSER=postgres PGDATABASE=bench
cleanup() {
	set +e
	[ -f "$W/data/postmaster.pid" ] && runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1
	if [ -n "${KEEP:-}" ]; then echo "profile_drain: kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
chown postgres: "$W"
runuser -u postgres -- "$BIN/initdb" -D "$W/data" -U postgres --auth=trust -E UTF8 >/dev/null
cat >>"$W/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$W'
shared_preload_libraries = 'pg_outbox'
max_worker_processes = 16
shared_buffers = 256MB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOF
start() { runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null; }
stop() { runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m fast stop >/dev/null; }
q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
PUBLISH="SELECT count(outbox.publish('bench_ob', jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34), 'order-' || g, 'order.paid')) FROM generate_series(1, $EVENTS) g"
start
q -d postgres -c "CREATE DATABASE bench"
q -c "CREATE EXTENSION pg_outbox"

if [[ $WHAT == *callgrind* ]]; then
	# a first round fills the indexes a little (a fresh, empty history flatters the figures)
	for round in warm measure; do
		q -c "UPDATE outbox.state SET paused = true" -c "$PUBLISH" -c "VACUUM ANALYZE outbox.pending" >/dev/null
		stop
		for ((i = 0; i < (EVENTS + BATCH - 1) / BATCH; i++)); do echo "SELECT outbox.drain($BATCH)"; done >"$W/drain.sql"
		chmod 644 "$W/drain.sql"
		if [ $round = warm ]; then
			runuser -u postgres -- "$BIN/postgres" --single -D "$W/data" bench <"$W/drain.sql" >/dev/null 2>&1
		else
			runuser -u postgres -- valgrind --tool=callgrind --toggle-collect=outbox_drain \
				--callgrind-out-file="$W/callgrind.out" "$BIN/postgres" --single -D "$W/data" bench \
				<"$W/drain.sql" >"$W/single.log" 2>&1
		fi
		start
	done
	[ "$(q -c "SELECT count(*) FROM outbox.pending")" = 0 ] || { echo "profile_drain: pending not empty" >&2; exit 1; }
	total=$(callgrind_annotate "$W/callgrind.out" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
	echo "callgrind: outbox.drain($BATCH), $EVENTS events: $total instructions, $((total / EVENTS)) per event"
	echo "inclusive, top 45 (named functions):"
	callgrind_annotate --inclusive=yes "$W/callgrind.out" | grep -E '^ *[0-9,]+ \(' | grep -v -E '\?\?\?:0x|below main|libc-start|libc_start|ld-linux' |
		sed -n 2,46p | cut -c1-150
	echo "self, top 25:"
	callgrind_annotate "$W/callgrind.out" | grep -E '^ *[0-9,]+ \(' | sed -n 2,26p | cut -c1-150
fi

if [[ $WHAT == *perf* ]]; then
	for _ in $(seq 50); do
		pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = 'bench'")
		[ -n "$pid" ] && break
		sleep 0.1
	done
	q -c "UPDATE outbox.state SET paused = true" -c "$PUBLISH" -c "VACUUM ANALYZE outbox.pending" >/dev/null
	perf record -F 4999 -g -p "$pid" -o "$W/perf.data" >/dev/null 2>&1 &
	perfpid=$!
	sleep 0.5
	t0=$(date +%s.%N)
	q -c "BEGIN; UPDATE outbox.state SET paused = false; SELECT outbox.publish('bench_wake'); COMMIT" >/dev/null
	while [ "$(q -c "SELECT count(*) FROM outbox.pending")" != 0 ]; do sleep 0.02; done
	t1=$(date +%s.%N)
	kill -INT "$perfpid"
	wait "$perfpid" || true
	echo "perf: the drain worker published $EVENTS events in $(python3 -c "print(round($t1 - $t0, 3))") s (under perf)"
	echo "flat profile, top 30:"
	perf report -i "$W/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -30
fi
