#!/usr/bin/env bash
# storage_proto.sh — the storage of doc/storage.md, prototyped: its tables in plain SQL
# (test/bench/storage_proto.sql, schema proto) and its drain pass both in PL/pgSQL (proto.drain)
# and in C (test/bench/proto_drain/proto_drain.c, built here: proto.drain_c), next to today's
# outbox (this tree's pg_outbox) and PgQ, on one throwaway cluster, in one run. A benchmark, not
# a test: it prints figures.
#
#   bash test/bench/storage_proto.sh                 # EVENTS=300000, CHANNELS=100000, DURATION=10
#   EVENTS=100000 DURATION=5 bash test/bench/storage_proto.sh
#   PHASES="backlog channels snapshot producers" ...  # a subset
#
# Measured (fsync off, like the issue's figures):
#   backlog    EVENTS events on one channel, published in transactions of 1000 while nothing
#              drains; WAL bytes written by the publishing and by the draining; then the drain
#              from one session: outbox.drain(1000) in a loop (today), proto.drain_c(1000) in a
#              loop (the prototype's C pass; proto_plpgsql: its PL/pgSQL pass), PgQ's consumer
#              (test/bench/pgq_consumer.py:
#              next_batch / get_batch_events / finish_batch) on the same number of events;
#   channels   CHANNELS events on CHANNELS distinct channels: today; the prototype's C pass in
#              a new session (cold channel cache: one lookup per pass for the channels it has
#              not seen, the touched channels written behind every second); and in a session
#              that drained the same channels before (warm cache), the write-behind left to the
#              idle pass after the timed drain; and in a new session that loads every channel
#              row first (a complete cache: no lookups), its write-behind timed apart;
#   snapshot   the backlog once, then twice again while a REPEATABLE READ transaction, opened
#              in between, stays open (it has read the history and the log, and called both
#              replays, as a consumer would);
#   producers  pgbench, 2 clients, DURATION seconds each, one single-row INSERT per transaction: a plain
#              table, a PL/pgSQL pg_notify trigger, outbox.publish() with the drain worker paused
#              and running, INSERT INTO outbox.pending with the worker running, INSERT INTO
#              proto.log_0 with nothing draining and with a prototype drain loop (one session,
#              polling every 0.5 ms when idle: no wake-up at commit) running.
#   callgrind  machine instructions inside the drain function (valgrind --toggle-collect, a
#              single-user backend: free of the machine's noise): per event over CG_EVENTS
#              events in passes of 10,000, and per pass for 100 passes of one event each, for
#              outbox.drain() (1.2) and proto.drain_c() (the commit after each is not counted);
#   producer_cost  what one single-row transaction of a producer costs, free of the machine's
#              noise: WAL bytes (2000 transactions on the running server, nothing draining) and
#              machine instructions (callgrind, a single-user backend, 2000 transactions less an
#              empty run), for the plain table, the PL/pgSQL pg_notify trigger, outbox.publish(),
#              INSERT INTO outbox.pending and INSERT INTO proto.log_0;
# Needs root (runs the cluster as the postgres OS user); postgresql-NN-pgq3, python3-asyncpg,
# valgrind (callgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
EVENTS=${EVENTS:-300000}
CHANNELS=${CHANNELS:-100000}
DURATION=${DURATION:-10}
PHASES=${PHASES:-backlog channels snapshot producers callgrind producer_cost}
CG_EVENTS=${CG_EVENTS:-30000}
want() { [[ " $PHASES " == *" $1 "* ]]; }
PY=/usr/bin/python3

[ "$(id -u)" = 0 ] || { echo "storage_proto: run as root" >&2; exit 1; }
. test/pgenv.sh
pg_resolve
PACKAGES=("postgresql-$PG_MAJOR-pgq3" python3-asyncpg valgrind)
missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || true
fi
bash test/setup.sh >/dev/null

W=$(mktemp -d /var/tmp/pg_outbox_proto.XXXXXX)
chmod 755 "$W"
pg_private_install "$W/install"
BIN=$BINDIR
PORT=5432
export PGHOST=$W PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
BG=()
cleanup() {
	set +e
	for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
	[ -f "$W/data/postmaster.pid" ] && runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1
	if [ -n "${KEEP:-}" ]; then echo "storage_proto: kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
chown postgres: "$W"
runuser -u postgres -- "$BIN/initdb" -D "$W/data" -U postgres --auth=trust -E UTF8 >/dev/null
cat >>"$W/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$W'
port = $PORT
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = '*'
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
fsync = off
logging_collector = off
EOF
runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null
psql -q -d postgres -c "CREATE DATABASE bench"
q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
rate() { $PY -c "print(round($1 / ($2)))"; }
ratio() { $PY -c "print('%.2f' % (($1) / ($2)))"; }
lsn() { q -c "SELECT pg_current_wal_insert_lsn()"; }
walbytes() { q -c "SELECT pg_wal_lsn_diff('$2', '$1')::bigint"; }

q >/dev/null <<'SQL'
CREATE EXTENSION pg_outbox;
CREATE EXTENSION pgq;
SELECT pgq.create_queue('bench');
SELECT pgq.set_queue_config('bench', 'ticker_max_count', '1000');
SELECT pgq.register_consumer('bench', 'bench');
SQL
q -f test/bench/storage_proto.sql >/dev/null
# the C pass, built in the scratch directory (nothing is built in the tree)
cp -r test/bench/proto_drain "$W/proto_drain"
make -s -C "$W/proto_drain" PG_CONFIG="$PG_CONFIG" >/dev/null
chmod 755 "$W/proto_drain" "$W/proto_drain/proto_drain.so"
q >/dev/null <<SQL
CREATE FUNCTION proto.drain_c(max_events integer, flush_ms integer, load_all boolean DEFAULT false) RETURNS bigint
    LANGUAGE c AS '$W/proto_drain/proto_drain', 'proto_drain_c';
CREATE PROCEDURE proto.drain_all_c(max_events integer, flush_ms integer, load_all boolean DEFAULT false)
    LANGUAGE plpgsql AS \$\$
DECLARE n bigint;
BEGIN
    LOOP
        n := proto.drain_c(max_events, flush_ms, load_all);
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
END \$\$;
SQL
q >/dev/null <<'SQL'
CREATE PROCEDURE bench_publish(variant text, events integer, nchannels integer, prefix text DEFAULT 'c')
    LANGUAGE plpgsql AS $$
DECLARE k integer := 0;
BEGIN
    WHILE k < events LOOP
        IF variant = 'today' THEN
            PERFORM outbox.publish(CASE WHEN nchannels = 1 THEN 'bench' ELSE prefix || g END,
                                   jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34))
               FROM generate_series(k + 1, least(k + 1000, events)) g;
        ELSIF variant = 'proto' THEN
            INSERT INTO proto.log_0 (channel, payload)
            SELECT CASE WHEN nchannels = 1 THEN 'bench' ELSE prefix || g END,
                   jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34)
              FROM generate_series(k + 1, least(k + 1000, events)) g;
        ELSE
            PERFORM pgq.insert_event('bench', 'order.paid',
                                     jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34)::text)
               FROM generate_series(k + 1, least(k + 1000, events)) g;
            COMMIT;
            PERFORM pgq.ticker();
        END IF;
        COMMIT;
        k := k + 1000;
    END LOOP;
END $$;
CREATE PROCEDURE bench_drain_today() LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    LOOP
        n := outbox.drain(1000);
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
END $$;
SQL

echo "storage_proto: PostgreSQL $("$BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //'), $(nproc) CPUs, fsync off; EVENTS=$EVENTS CHANNELS=$CHANNELS"

# backlog VARIANT EVENTS NCHANNELS -> prints "publish_wal_per_event drain_wal_per_event events_per_s"
backlog() {
	local v=$1 n=$2 nch=$3 l0 l1 l2 t0 t1
	q -c "UPDATE outbox.state SET paused = true" >/dev/null
	q -c "CHECKPOINT"
	l0=$(lsn)
	q -c "CALL bench_publish('${v%_*}', $n, $nch)"
	l1=$(lsn)
	# statistics for the planner, as a drain that has run for a while has them
	case $v in today) q -c "VACUUM ANALYZE outbox.pending" ;; proto*) q -c "ANALYZE proto.log_0" ;; esac
	t0=$(now)
	case $v in
	today) q -c "CALL bench_drain_today()" ;;
	proto) q -c "CALL proto.drain_all_c(1000, 1000)" ;;
	proto_plpgsql) q -c "SET proto.write_behind = on" -c "CALL proto.drain_all(1000)" ;;
	pgq) $PY test/bench/pgq_consumer.py "postgres@/bench?host=$W&port=$PORT" "$n" >/dev/null ;;
	esac
	t1=$(now)
	l2=$(lsn)
	# every event published exactly once (what the prototype's batches count, today's pending left)
	case $v in
	today) [ "$(q -c "SELECT count(*) FROM outbox.pending")" = 0 ] || echo "storage_proto: today left events pending" >&2 ;;
	proto*) [ "$(q -c "SELECT (SELECT count(*) FROM proto.log) - (SELECT sum(n) FROM proto.batches)")" = 0 ] || echo "storage_proto: prototype batches do not cover the log" >&2 ;;
	esac
	echo "$(( $(walbytes "$l0" "$l1") / n )) $(( $(walbytes "$l1" "$l2") / n )) $(rate "$n" "$t1 - $t0")"
}
sizes() { q -c "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = '$1' AND c.relkind = 'r'"; }

declare -A R
if want backlog; then
	for v in today proto proto_plpgsql pgq; do
		read -r pw dw r < <(backlog $v "$EVENTS" 1)
		R[$v]=$r
		echo "backlog $v: $r events/s; WAL per event: publish $pw B, drain $dw B (publish + drain = $(ratio "$pw + $dw" "$pw")x publish)"
	done
	echo "backlog: prototype / today = $(ratio "${R[proto]}" "${R[today]}")x, prototype / PgQ = $(ratio "${R[proto]}" "${R[pgq]}")x, today / PgQ = $(ratio "${R[today]}" "${R[pgq]}")x"
	echo "sizes after the backlog: outbox $(sizes outbox), proto $(sizes proto)"
fi

if want channels; then
	for v in today proto; do
		read -r pw dw r < <(backlog $v "$CHANNELS" "$CHANNELS")
		echo "channels $v: $CHANNELS events on $CHANNELS channels: $r events/s$([ -n "${R[$v]:-}" ] && echo " ($(ratio "$r" "${R[$v]}")x its one-channel rate)"); WAL per event: publish $pw B, drain $dw B"
	done
	# warm cache: one session drains the channels once, then the same channels again (timed)
	q -c "UPDATE outbox.state SET paused = true" >/dev/null
	r=$(q <<SQL
CALL bench_publish('proto', $CHANNELS, $CHANNELS);
CALL proto.drain_all_c(1000, 1000);
CALL bench_publish('proto', $CHANNELS, $CHANNELS);
ANALYZE proto.log_0;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset
CALL proto.drain_all_c(1000, -2);
SELECT round($CHANNELS / (extract(epoch FROM clock_timestamp()) - :t0));
SELECT proto.drain_c(1000, 1000);
SQL
)
	r=$(sed -n 1p <<<"$r")
	echo "channels proto_warm: $CHANNELS events on $CHANNELS channels, cache warm, written behind when idle: $r events/s$([ -n "${R[proto]:-}" ] && echo " ($(ratio "$r" "${R[proto]}")x its one-channel rate)")"
	# complete cache: a new session loads every channel row first (timed), then never looks one
	# up; the channel rows are written behind after the drain (timed apart)
	r=$(q <<SQL
CALL bench_publish('proto', $CHANNELS, $CHANNELS, 'new');
ANALYZE proto.log_0;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset
CALL proto.drain_all_c(1000, -2, true);
SELECT round($CHANNELS / (extract(epoch FROM clock_timestamp()) - :t0));
SELECT extract(epoch FROM clock_timestamp()) AS t1 \\gset
SELECT proto.drain_c(1000, 1000);
SELECT round((extract(epoch FROM clock_timestamp()) - :t1)::numeric, 3);
SELECT count(*) FROM proto.channels;
SQL
)
	echo "channels proto_complete: $CHANNELS events on $CHANNELS channels, new channels, every channel row loaded at start (now $(sed -n 4p <<<"$r") rows), none looked up: $(sed -n 1p <<<"$r") events/s$([ -n "${R[proto]:-}" ] && echo " ($(ratio "$(sed -n 1p <<<"$r")" "${R[proto]}")x its one-channel rate)"); then $(sed -n 3p <<<"$r") s to write the channel rows behind"
fi

if want snapshot; then
	# the same backlog once without, then twice under a reader that stays in one REPEATABLE READ
	# snapshot (it has read the history, the log and replay()): same table state either way
	declare -A S
	for v in today proto; do
		read -r pw dw r < <(backlog $v "$EVENTS" 1)
		S[$v]=$r
		echo "snapshot $v, backlog without a long snapshot: $r events/s"
		# a control: the next backlog, still without a snapshot (what a larger log alone does)
		read -r pw dw r < <(backlog $v "$EVENTS" 1)
		echo "snapshot $v, the next backlog without a long snapshot: $r events/s ($(ratio "$r" "${S[$v]}")x the first)"
	done
	mkfifo "$W/rr"
	chmod 666 "$W/rr"
	(psql -XAtq -d bench <"$W/rr" >/dev/null 2>&1) &
	BG+=($!)
	exec 7>"$W/rr"
	echo "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM outbox.history; SELECT count(*) FROM proto.log; SELECT count(*) FROM outbox.replay(0, NULL, 10); SELECT count(*) FROM proto.replay(0, 10);" >&7
	sleep 1
	for k in 1 2; do
		for v in today proto; do
			read -r pw dw r < <(backlog $v "$EVENTS" 1)
			echo "snapshot $v, backlog $k under a REPEATABLE READ snapshot: $r events/s ($(ratio "$r" "${S[$v]}")x without)"
		done
	done
	echo "sizes with the snapshot still open: outbox $(sizes outbox), proto $(sizes proto)"
	echo "COMMIT;" >&7
	exec 7>&-
fi

if want producers; then
	q -c "UPDATE outbox.state SET paused = false" >/dev/null
	q -c "VACUUM" -c "CHECKPOINT" >/dev/null
	q >/dev/null <<'SQL'
CREATE TABLE plain (id bigserial PRIMARY KEY, channel text, payload jsonb, created_at timestamptz DEFAULT now());
CREATE TABLE notified (id bigserial PRIMARY KEY, channel text, payload jsonb, created_at timestamptz DEFAULT now());
CREATE FUNCTION notify_row() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN PERFORM pg_notify('bench', json_build_object('id', NEW.id, 'table', TG_TABLE_NAME)::text); RETURN NULL; END $$;
CREATE TRIGGER n AFTER INSERT ON notified FOR EACH ROW EXECUTE FUNCTION notify_row();
CREATE PROCEDURE proto_drain_loop(seconds float8) LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp(); n bigint;
BEGIN
    WHILE clock_timestamp() < t0 + make_interval(secs => seconds) LOOP
        n := proto.drain_c(1000, 1000);
        COMMIT;
        IF n = 0 THEN PERFORM pg_sleep(0.0005); END IF;
    END LOOP;
END $$;
SQL
	echo "INSERT INTO plain (channel, payload) VALUES ('bench', '{\"order_id\": 1, \"status\": \"paid\"}');" >"$W/plain.sql"
	echo "INSERT INTO notified (channel, payload) VALUES ('bench', '{\"order_id\": 1, \"status\": \"paid\"}');" >"$W/notified.sql"
	echo "SELECT outbox.publish('bench', '{\"order_id\": 1, \"status\": \"paid\"}');" >"$W/today.sql"
	echo "INSERT INTO outbox.pending (channel, payload) VALUES ('bench', '{\"order_id\": 1, \"status\": \"paid\"}');" >"$W/today_insert.sql"
	echo "INSERT INTO proto.log_0 (channel, payload) VALUES ('bench', '{\"order_id\": 1, \"status\": \"paid\"}');" >"$W/proto.sql"
	chmod 644 "$W"/*.sql
	declare -A T
	for v in plain notified today_paused today today_insert proto_nodrain proto; do
		f=$v
		case $v in
		today_paused) f=today; q -c "UPDATE outbox.state SET paused = true" >/dev/null ;;
		today) q -c "UPDATE outbox.state SET paused = false" -c "SELECT outbox.publish('wake')" >/dev/null ;;
		proto_nodrain) f=proto ;;
		proto) (q -c "CALL proto_drain_loop($DURATION + 2)" >/dev/null 2>&1) & BG+=($!) ;;
		esac
		T[$v]=$("$BIN/pgbench" -n -c 2 -j 2 -T "$DURATION" -f "$W/$f.sql" bench 2>/dev/null | sed -n 's/^tps = \([0-9]*\).*/\1/p')
		[ $v = proto ] && wait "${BG[-1]}" 2>/dev/null || true
		[ $v = proto_nodrain ] && q -c "CALL proto.drain_all_c(1000, 1000)" >/dev/null
		echo "producers $v: ${T[$v]} TPS ($(ratio "${T[$v]}" "${T[plain]}")x no trigger, $([ -n "${T[notified]:-}" ] && ratio "${T[$v]}" "${T[notified]}")x the pg_notify trigger)"
	done
	echo "producers: after the run, events not in a batch: proto $(q -c "SELECT (SELECT count(*) FROM proto.log) - (SELECT sum(n) FROM proto.batches)"), today $(q -c "SELECT count(*) FROM outbox.pending")"
fi

if want callgrind; then
	stop() { runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m fast stop >/dev/null; }
	start() { runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null; }
	# single_user FUNCTION SCRIPT -> instructions inside FUNCTION
	single_user() {
		chmod 644 "$2"
		runuser -u postgres -- valgrind --tool=callgrind --toggle-collect="$1" --callgrind-out-file="$W/cg.out" \
			"$BIN/postgres" --single -D "$W/data" bench <"$2" >"$W/single.log" 2>&1
		callgrind_annotate "$W/cg.out" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
	}
	q -c "UPDATE outbox.state SET paused = true" >/dev/null
	for v in today proto; do
		[ $v = today ] && fn=outbox_drain || fn=proto_drain_c
		q -c "CALL bench_publish('$v', $CG_EVENTS, 1)"
		case $v in today) q -c "VACUUM ANALYZE outbox.pending" ;; proto) q -c "ANALYZE proto.log_0" ;; esac
		stop
		for ((i = 0; i < CG_EVENTS / 10000; i++)); do
			[ $v = today ] && echo "SELECT outbox.drain(10000)" || echo "SELECT proto.drain_c(10000, 1000)"
		done >"$W/cg.sql"
		per_event=$(( $(single_user $fn "$W/cg.sql") / CG_EVENTS ))
		for ((i = 0; i < 100; i++)); do
			if [ $v = today ]; then
				echo "SELECT outbox.publish('bench', '{\"i\": $i}')"; echo "SELECT outbox.drain(1000)"
			else
				echo "SELECT proto.publish('bench', '{\"i\": $i}')"; echo "SELECT proto.drain_c(1000, 1000)"
			fi
		done >"$W/cg.sql"
		per_pass=$(( $(single_user $fn "$W/cg.sql") / 100 ))
		start
		echo "callgrind $v: $per_event instructions per event (passes of 10,000), $per_pass per one-event pass"
	done
fi

if want producer_cost; then
	stop() { runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m fast stop >/dev/null; }
	start() { runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null; }
	q >/dev/null <<'SQL'
CREATE TABLE IF NOT EXISTS plain (id bigserial PRIMARY KEY, channel text, payload jsonb, created_at timestamptz DEFAULT now());
CREATE TABLE IF NOT EXISTS notified (id bigserial PRIMARY KEY, channel text, payload jsonb, created_at timestamptz DEFAULT now());
CREATE OR REPLACE FUNCTION notify_row() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN PERFORM pg_notify('bench', json_build_object('id', NEW.id, 'table', TG_TABLE_NAME)::text); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS n ON notified;
CREATE TRIGGER n AFTER INSERT ON notified FOR EACH ROW EXECUTE FUNCTION notify_row();
SQL
	q -c "UPDATE outbox.state SET paused = true" >/dev/null
	declare -A STMT=(
		[plain]="INSERT INTO plain (channel, payload) VALUES ('bench', '{\"order_id\": 1, \"status\": \"paid\"}')"
		[notified]="INSERT INTO notified (channel, payload) VALUES ('bench', '{\"order_id\": 1, \"status\": \"paid\"}')"
		[today_publish]="SELECT outbox.publish('bench', '{\"order_id\": 1, \"status\": \"paid\"}')"
		[today_insert]="INSERT INTO outbox.pending (channel, payload) VALUES ('bench', '{\"order_id\": 1, \"status\": \"paid\"}')"
		[proto]="INSERT INTO proto.log_0 (channel, payload) VALUES ('bench', '{\"order_id\": 1, \"status\": \"paid\"}')")
	declare -A WALB INSTR
	for v in plain notified today_publish today_insert proto; do
		for ((i = 0; i < 2000; i++)); do echo "${STMT[$v]};"; done >"$W/pc.sql"
		q -c "CHECKPOINT"
		l0=$(lsn)
		q -f "$W/pc.sql" >/dev/null
		l1=$(lsn)
		WALB[$v]=$(( $(walbytes "$l0" "$l1") / 2000 ))
	done
	stop
	for v in plain notified today_publish today_insert proto; do
		for n in 0 2000; do
			for ((i = 0; i < n; i++)); do echo "${STMT[$v]}"; done >"$W/pc.sql"
			chmod 644 "$W/pc.sql"
			runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$W/pc.out" \
				"$BIN/postgres" --single -D "$W/data" bench <"$W/pc.sql" >/dev/null 2>&1
			t=$(callgrind_annotate "$W/pc.out" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
			[ $n = 0 ] && base=$t || INSTR[$v]=$(( (t - base) / 2000 ))
		done
		echo "producer_cost $v: ${WALB[$v]} WAL bytes and ${INSTR[$v]} instructions per single-row transaction ($(ratio "${INSTR[$v]}" "${INSTR[plain]}")x the plain table's instructions)"
	done
	start
fi
