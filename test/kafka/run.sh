#!/usr/bin/env bash
# test/kafka/run.sh — pg_outbox -> Debezium (Kafka Connect) -> Kafka, for real, on loopback.
#
# Called by `bash test/run_tests.sh kafka` (which builds pg_outbox into a private copy of the
# PostgreSQL installation and passes PG_BINDIR), and by test/bench/kafka_bench.sh (KAFKA_MODE=bench).
#
#   PG_BINDIR   bin directory of the PostgreSQL installation with pg_outbox installed (required)
#   KAFKA_WORK  scratch directory (default: a new one under $TMPDIR); jars, data, logs go there
#   KAFKA_M2    Maven's local repository (default: Maven's own, ~/.m2/repository)
#   KAFKA_MODE  test (default): the assertions below; bench: publish() -> consumer throughput
#   BENCH_EVENTS  events for the benchmark (default 100000)
#
# Starts a throwaway PostgreSQL (wal_level = logical, as user postgres when run as root), a
# single-node Kafka broker in KRaft mode, Kafka Connect in distributed mode with the Debezium
# PostgreSQL connector on its plugin.path, and the test's consumer (src/main/java), and stops
# all of them on exit, whatever happens. The two connectors are test/kafka/connector-*.json,
# the very files README.md shows (the test checks README against them), with only the
# connection settings replaced.
set -euo pipefail
HERE=${KAFKA_SRC:-$(cd "$(dirname "$0")" && pwd)} # KAFKA_SRC: for running a copy of this script
ROOT=$(cd "$HERE/../.." && pwd)
: "${PG_BINDIR:?PG_BINDIR must name the bin directory of a PostgreSQL installation with pg_outbox}"
MODE=${KAFKA_MODE:-test}
KW=${KAFKA_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/pg_outbox_kafka.XXXXXX")}
mkdir -p "$KW"
KW=$(cd "$KW" && pwd)
BENCH_EVENTS=${BENCH_EVENTS:-100000}
T0=$(date +%s)

RUN=()
if [ "$(id -u)" = 0 ]; then RUN=(runuser -u postgres --); fi

log() { printf '[kafka %4ds] %s\n' $(($(date +%s) - T0)) "$*"; }
die() { log "FAIL: $*"; exit 1; }
# Assertions: counted, printed, and the run fails at the end if any failed.
NPASS=0; NFAIL=0
ok() { NPASS=$((NPASS + 1)); log "ok $NPASS - $*"; }
not_ok() { NFAIL=$((NFAIL + 1)); log "NOT OK - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; fi; }

# --- ports: free ones on loopback -----------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 20000))
		if port_free "$p" && [[ " ${PICKED:-} " != *" $p "* ]]; then PICKED="${PICKED:-} $p"; echo "$p"; return; fi
	done
	die "no free port"
}
PICKED=""
PGPORT=$(pick_port); PICKED="$PICKED $PGPORT"
KPORT=$(pick_port); PICKED="$PICKED $KPORT"
CTRLPORT=$(pick_port); PICKED="$PICKED $CTRLPORT"
CPORT=$(pick_port); PICKED="$PICKED $CPORT"
BOOT=127.0.0.1:$KPORT
REST=http://127.0.0.1:$CPORT

# --- processes, stopped on exit ---------------------------------------------------------------
BROKER_PID=""; CONNECT_PID=""; CONSUMER_PID=""; PRODUCER_PID=""; PG_STARTED=""
stop_pid() { # pid name: TERM, then KILL after 20 s
	local pid=$1 i
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill "$pid" 2>/dev/null || true
	for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
	log "$2 ($pid) did not stop in 20 s: SIGKILL"
	kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
	local rc=$?
	set +e
	stop_pid "$PRODUCER_PID" producer
	stop_pid "$CONSUMER_PID" consumer
	stop_pid "$CONNECT_PID" "Kafka Connect"
	stop_pid "$BROKER_PID" "Kafka broker"
	if [ -n "$PG_STARTED" ]; then "${RUN[@]}" "$PG_BINDIR/pg_ctl" -D "$KW/pg" -m immediate -w stop >/dev/null 2>&1; fi
	if [ $rc -ne 0 ]; then
		for f in "$KW"/logs/*.log "$KW/pg/log/postgresql.log"; do
			[ -f "$f" ] && { echo "--- $f (last 40 lines)"; tail -40 "$f"; }
		done
		echo "(kafka work directory kept: $KW)"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$KW/logs" "$KW/sock"

# --- jars from Maven Central (cached in the local repository) ---------------------------------
MVN=(mvn -B -q)
[ -n "${KAFKA_M2:-}" ] && MVN+=("-Dmaven.repo.local=$KAFKA_M2")
t=$(date +%s)
"${MVN[@]}" -f "$HERE/pom.xml" "-Dbuild.dir=$KW/build" package dependency:copy-dependencies \
	"-DoutputDirectory=$KW/lib" >"$KW/logs/maven.log" 2>&1 || { cat "$KW/logs/maven.log"; die "maven (kafka, connect, consumer)"; }
"${MVN[@]}" -f "$HERE/connect/pom.xml" "-Dbuild.dir=$KW/build-connect" dependency:copy-dependencies \
	"-DoutputDirectory=$KW/connect-lib" >>"$KW/logs/maven.log" 2>&1 || { cat "$KW/logs/maven.log"; die "maven (connect)"; }
"${MVN[@]}" -f "$HERE/debezium/pom.xml" "-Dbuild.dir=$KW/build-debezium" dependency:copy-dependencies \
	"-DoutputDirectory=$KW/plugins/debezium-connector-postgres" >>"$KW/logs/maven.log" 2>&1 || { cat "$KW/logs/maven.log"; die "maven (debezium)"; }
KAFKA_VERSION=$(ls "$KW/lib" | sed -n 's/^kafka_2.13-\(.*\)\.jar$/\1/p')
CONNECT_VERSION=$(ls "$KW/connect-lib" | sed -n 's/^connect-runtime-\(.*\)\.jar$/\1/p')
DEBEZIUM_VERSION=$(ls "$KW/plugins/debezium-connector-postgres" | sed -n 's/^debezium-connector-postgres-\(.*\)\.jar$/\1/p')
log "jars: Kafka broker $KAFKA_VERSION, Connect $CONNECT_VERSION, Debezium $DEBEZIUM_VERSION ($(($(date +%s) - t)) s)"
CP="$KW/build/kafka-e2e-1.jar:$KW/lib/*"
CHECK=(java -Xmx384m -cp "$CP" pgoutbox.kafka.Check)

# --- PostgreSQL ---------------------------------------------------------------------------------
mkdir -p "$KW/pg"
[ ${#RUN[@]} -gt 0 ] && chown postgres: "$KW/pg" "$KW/sock"
"${RUN[@]}" "$PG_BINDIR/initdb" -D "$KW/pg" -U postgres -A trust -E UTF8 --no-locale >"$KW/logs/initdb.log" 2>&1 || die "initdb"
cat >>"$KW/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$KW/sock'
shared_preload_libraries = 'pg_outbox'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
max_slot_wal_keep_size = '1GB'
fsync = off
logging_collector = on
log_directory = 'log'
log_filename = 'postgresql.log'
log_replication_commands = on
log_min_messages = warning
EOF
cat >"$KW/pg/pg_hba.conf" <<EOF
local all         all                trust
host  all         all  127.0.0.1/32  scram-sha-256
host  replication all  127.0.0.1/32  scram-sha-256
EOF
"${RUN[@]}" "$PG_BINDIR/pg_ctl" -D "$KW/pg" -w -t 60 start >"$KW/logs/pg_ctl.log" 2>&1 || die "PostgreSQL did not start"
PG_STARTED=1
psql() { "${RUN[@]}" "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$KW/sock" -p "$PGPORT" -U postgres "$@"; }
sql() { psql -d app -At -c "$1"; }
pg_wait() { # until the server accepts connections again (after a crash or restart)
	local i
	for i in $(seq 1 120); do
		psql -d app -At -c 'SELECT 1' >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	die "PostgreSQL does not accept connections"
}
psql -d postgres -c "CREATE DATABASE app" >/dev/null
psql -d app >/dev/null <<'EOF'
CREATE EXTENSION pg_outbox;
-- the connectors' role: replication, and (path 2) reading the history segments
CREATE ROLE debezium LOGIN REPLICATION PASSWORD 'secret';
GRANT USAGE ON SCHEMA outbox TO debezium;
GRANT SELECT ON outbox.history_0, outbox.history_1, outbox.history_2 TO debezium;
-- path 1: channels whose events are written into the WAL as logical decoding messages
SELECT outbox.set_target('orders', 'wal');
SELECT outbox.set_target('payments', 'both');
-- 'audit' keeps the built-in target notify: never a message, only path 2 sees it
CREATE PUBLICATION pg_outbox_messages;
CREATE PUBLICATION pg_outbox_history
    FOR TABLE outbox.history_0, outbox.history_1, outbox.history_2 WITH (publish = 'insert');
EOF
log "PostgreSQL $(sql 'SHOW server_version') on 127.0.0.1:$PGPORT, pg_outbox $(sql "SELECT extversion FROM pg_extension WHERE extname = 'pg_outbox'")"

# --- Kafka broker (KRaft, one node: broker and controller) ------------------------------------
cat >"$KW/log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.kafkacore.name = kafka
logger.kafkacore.level = WARN
logger.worker.name = org.apache.kafka.connect.runtime.WorkerSourceTask
logger.worker.level = INFO
logger.connect.name = org.apache.kafka.connect.runtime.distributed
logger.connect.level = INFO
EOF
JAVA_LOG=(-Dlog4j2.configurationFile="$KW/log4j2.properties")
cat >"$KW/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CTRLPORT
listeners=PLAINTEXT://127.0.0.1:$KPORT,CONTROLLER://127.0.0.1:$CTRLPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KPORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$KW/kafka-data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# events up to 4 MB (the 1 MB payload's record is about 1 MB + headers)
message.max.bytes=4194304
EOF
java -cp "$CP" "${JAVA_LOG[@]}" kafka.tools.StorageTool format --standalone \
	-t "$(java -cp "$CP" "${JAVA_LOG[@]}" kafka.tools.StorageTool random-uuid)" -c "$KW/server.properties" \
	>"$KW/logs/kafka-format.log" 2>&1 || die "kafka storage format"
java -Xms256m -Xmx512m -XX:+UseG1GC -cp "$CP" "${JAVA_LOG[@]}" kafka.Kafka "$KW/server.properties" >"$KW/logs/broker.log" 2>&1 &
BROKER_PID=$!
"${CHECK[@]}" wait-broker "$BOOT" 120 || die "the Kafka broker did not come up"
log "Kafka broker $KAFKA_VERSION (KRaft) on $BOOT"

# --- Kafka Connect (distributed mode, one worker) ---------------------------------------------
cat >"$KW/connect.properties" <<EOF
bootstrap.servers=$BOOT
group.id=pg-outbox-test-connect
listeners=http://127.0.0.1:$CPORT
plugin.path=$KW/plugins
plugin.discovery=service_load
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=false
config.storage.topic=connect-configs
offset.storage.topic=connect-offsets
status.storage.topic=connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.flush.interval.ms=5000
# a worker that died is not waited for (default 5 minutes) before its connectors move on
scheduled.rebalance.max.delay.ms=1000
producer.max.request.size=4194304
EOF
start_connect() {
	java -Xms256m -Xmx768m -XX:+UseG1GC -cp "$KW/connect-lib/*" "${JAVA_LOG[@]}" \
		org.apache.kafka.connect.cli.ConnectDistributed "$KW/connect.properties" >>"$KW/logs/connect.log" 2>&1 &
	CONNECT_PID=$!
	local i
	for i in $(seq 1 240); do
		curl -sf "$REST/connector-plugins" 2>/dev/null | grep -q PostgresConnector && return 0
		kill -0 "$CONNECT_PID" 2>/dev/null || die "Kafka Connect exited"
		sleep 0.5
	done
	die "Kafka Connect did not come up"
}
task_state() { # connector -> state of task 0 (RUNNING, FAILED, ...) or NONE
	curl -sf "$REST/connectors/$1/status" 2>/dev/null |
		sed -n 's/.*"tasks":\[{"id":0,"state":"\([A-Z]*\)".*/\1/p' | grep . || echo NONE
}
task_trace() { # the deepest cause of a failed task
	curl -sf "$REST/connectors/$1/status" 2>/dev/null | grep -o 'Caused by: [^\\]*' | tail -1
}
wait_running() { # connector seconds: task RUNNING and its slot active
	local name=$1 slot=$2 i
	for i in $(seq 1 $(($3 * 2))); do
		if [ "$(task_state "$name")" = RUNNING ] &&
			[ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot' AND active")" = 1 ]; then
			return 0
		fi
		sleep 0.5
	done
	log "$name: task $(task_state "$name"): $(task_trace "$name")"
	return 1
}
start_connect
log "Kafka Connect $CONNECT_VERSION (distributed) on $REST, plugins: $(curl -sf "$REST/connector-plugins" | grep -o 'PostgresConnector","type":"source","version":"[^"]*' | sed 's/.*version":"//')"

# --- README's connector configurations are these files ---------------------------------------
for f in connector-messages.json connector-history.json; do
	if awk -v f="$HERE/$f" 'BEGIN { while ((getline l < f) > 0) want = want l "\n" }
		/^```json$/ { inblk = 1; blk = ""; next }
		/^```$/ && inblk { inblk = 0; if (blk == want) found = 1; next }
		inblk { blk = blk $0 "\n" }
		END { exit !found }' "$ROOT/README.md"; then
		ok "README.md shows test/kafka/$f verbatim"
	else
		not_ok "README.md shows test/kafka/$f verbatim (update README's json block from the file)"
	fi
done

create_connector() { # file
	local body
	body=$("${CHECK[@]}" config "$HERE/$1" database.hostname=127.0.0.1 "database.port=$PGPORT" \
		database.dbname=app database.user=debezium database.password=secret)
	curl -sf -X POST -H 'Content-Type: application/json' --data "$body" "$REST/connectors" >/dev/null ||
		die "POST $1: $(curl -s -X POST -H 'Content-Type: application/json' --data "$body" "$REST/connectors")"
}
create_connector connector-messages.json
create_connector connector-history.json
wait_running pg-outbox-messages pg_outbox_debezium 120 || die "connector pg-outbox-messages not running"
wait_running pg-outbox-history pg_outbox_history 120 || die "connector pg-outbox-history not running"
log "connectors running: $(sql "SELECT string_agg(slot_name || ' (' || plugin || ')', ', ' ORDER BY slot_name) FROM pg_replication_slots")"

# --- the test's consumer: every record of the outbox.* topics into records.jsonl -------------
"${CHECK[@]}" consume "$BOOT" 'outbox\..*' "$KW/records.jsonl" "$KW/consumer.stop" >"$KW/logs/consumer.log" 2>&1 &
CONSUMER_PID=$!

now_ms() { date +%s%3N; }
pending() { sql "SELECT count(*) FROM outbox.pending"; }
wait_pending_empty() { # seconds
	local i
	for i in $(seq 1 $(($1 * 2))); do [ "$(pending)" = 0 ] && return 0; sleep 0.5; done
	return 1
}
slots() { sql "SELECT coalesce(string_agg(format('%s active=%s wal_status=%s retained=%s', slot_name, active, wal_status,
	pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn))), '; ' ORDER BY slot_name), 'none') FROM pg_replication_slots"; }

# =============================================================================================
# bench: events/s from publish() to the consumer, Kafka (path 1, path 2) beside NOTIFY
# =============================================================================================
if [ "$MODE" = bench ]; then
	N=$BENCH_EVENTS
	sql "SELECT outbox.set_target('bench.wal', 'wal')" >/dev/null
	publish_n() { # channel: N events, transactions of 1000, ~100-byte payloads, 100 keys
		local b
		for b in $(seq 0 1000 $((N - 1))); do
			echo "SELECT count(outbox.publish('$1', jsonb_build_object('i', g, 'order_id', 100000 + g, 'status', 'paid', 'amount', 12.34), 'order-' || (g % 100), 'order.paid')) FROM generate_series($b + 1, $b + 1000) g;"
		done | psql -d app >/dev/null
	}
	bench_kafka() { # label channel topic
		"${CHECK[@]}" bench "$BOOT" "$3" "$N" 600 >"$KW/bench.out" 2>"$KW/logs/bench-consumer.log" &
		local cpid=$! t0 t1 got
		sleep 5 # the consumer joins its group and is assigned the (new) topic's partitions
		t0=$(now_ms)
		publish_n "$2"
		wait $cpid || true
		read -r got t1 <"$KW/bench.out"
		[ "$got" = "$N" ] || die "$1: the consumer got $got of $N events"
		log "BENCH $1: $N events in $((t1 - t0)) ms: $((N * 1000 / (t1 - t0))) events/s"
	}
	# path 1 alone (the history connector paused), then path 2 alone (the messages connector paused)
	curl -sf -X PUT "$REST/connectors/pg-outbox-history/pause" >/dev/null
	sleep 3
	bench_kafka "Kafka path 1 (target wal, logical decoding messages, decode + outbox router)" bench.wal outbox.event.bench.wal
	curl -sf -X PUT "$REST/connectors/pg-outbox-messages/pause" >/dev/null
	curl -sf -X PUT "$REST/connectors/pg-outbox-history/resume" >/dev/null
	wait_running pg-outbox-history pg_outbox_history 120 || die "history connector did not resume"
	bench_kafka "Kafka path 2 (target notify, history segments captured, outbox router)" bench.cap outbox.history.bench.cap
	curl -sf -X PUT "$REST/connectors/pg-outbox-history/pause" >/dev/null
	# NOTIFY: the reference listener (LISTEN, replay, envelopes on stdout)
	"$PG_BINDIR/pg_outbox_listen" "host=$KW/sock port=$PGPORT dbname=app user=postgres" --channel bench.notify --from-now \
		>"$KW/notify.out" 2>"$KW/logs/listen.log" &
	LPID=$!
	PRODUCER_PID=$LPID # stopped on exit
	sleep 2
	t0=$(now_ms)
	publish_n bench.notify
	for _ in $(seq 1 6000); do [ "$(wc -l <"$KW/notify.out")" -ge "$N" ] && break; sleep 0.1; done
	t1=$(now_ms)
	[ "$(wc -l <"$KW/notify.out")" -ge "$N" ] || die "NOTIFY: the listener got $(wc -l <"$KW/notify.out") of $N"
	log "BENCH NOTIFY (pg_outbox_listen): $N events in $((t1 - t0)) ms: $((N * 1000 / (t1 - t0))) events/s"
	stop_pid "$LPID" listener; PRODUCER_PID=""
	for c in pg-outbox-messages pg-outbox-history; do curl -sf -X DELETE "$REST/connectors/$c" >/dev/null || true; done
	sleep 2
	sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active" >/dev/null || true
	exit 0
fi

# =============================================================================================
# test: a stream of transactions, committed and rolled back, through three faults
# =============================================================================================
# The producer runs until the three faults are over (and at most 5000 transactions or 10 minutes).
K=20 # events per transaction
producer() { # each transaction is its own psql call: a crash or restart fails only that one
	local t g0 body end=$(($(date +%s) + 600))
	for t in $(seq 1 5000); do
		[ -e "$KW/producer.stop" ] && break
		[ "$(date +%s)" -lt "$end" ] || break
		g0=$((t * K))
		body="SELECT count(outbox.publish((ARRAY['orders','payments','audit'])[1 + g % 3],
			jsonb_build_object('tx', $t, 'n', g, 'note', 'żółw \"quoted\" ✓', 'amount', 12.5,
			                   'tags', jsonb_build_array(1, 2, 3), 'nested', jsonb_build_object('ok', true, 'none', NULL),
			                   'gone', NULL),
			'k' || (g % 11), 'created')) FROM generate_series($g0, $g0 + $K - 1) g"
		if [ $((t % 5)) = 0 ]; then # rolled back whole
			body="BEGIN; ${body//'created'/'rolledback'}; ROLLBACK;"
		else # committed, with a rolled-back savepoint inside
			body="BEGIN; $body; SAVEPOINT s; SELECT outbox.publish('orders', '{\"x\":1}', 'k1', 'rolledback'); ROLLBACK TO SAVEPOINT s; COMMIT;"
		fi
		psql -d app -c "$body" >/dev/null 2>>"$KW/logs/producer.log" || echo "transaction $t failed" >>"$KW/logs/producer.log"
		echo "$t" >"$KW/producer.progress.new" && mv "$KW/producer.progress.new" "$KW/producer.progress"
		sleep 0.02
	done
}
progress() { cat "$KW/producer.progress" 2>/dev/null || echo 0; }
wait_progress() { # transactions, up to 300 s
	local i
	for i in $(seq 1 600); do [ "$(progress)" -ge "$1" ] && return 0; kill -0 "$PRODUCER_PID" 2>/dev/null || return 0; sleep 0.5; done
	die "the producer is stuck at $(progress)"
}
recovered() { # after a fault: both connectors' tasks running and their slots active again
	wait_running pg-outbox-messages pg_outbox_debezium 180 && wait_running pg-outbox-history pg_outbox_history 180
}

producer &
PRODUCER_PID=$!
log "producer: transactions of $K events (every 5th rolled back, a rolled-back savepoint in each other one)"

# fault 1: Kafka Connect SIGKILLed mid-stream, restarted a little later
wait_progress 50
kill -9 "$CONNECT_PID"; wait "$CONNECT_PID" 2>/dev/null || true
log "fault 1: Kafka Connect SIGKILLed at transaction $(progress)"
for _ in $(seq 1 60); do [ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE active")" = 0 ] && break; sleep 0.5; done
wait_progress $(($(progress) + 15))
log "  slots while Connect is down: $(slots)"
SAFE=$(sql "SELECT min(safe_wal_size) FROM pg_replication_slots")
# safe_wal_size: what may still be written before the slot is lost; NULL without the limit
check "max_slot_wal_keep_size = 1GB bounds what an inactive slot keeps (safe_wal_size $SAFE bytes)" \
	test -n "$SAFE" -a "${SAFE:-0}" -gt 0 -a "${SAFE:-0}" -le $(((1024 + 64) * 1024 * 1024))
start_connect
check "after the Connect restart, both connectors resume by themselves" recovered
log "  Connect back at transaction $(progress)"

# fault 2: the drain worker SIGKILLed (the postmaster restarts every backend)
wait_progress $(($(progress) + 30))
DRAIN_PID=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'")
[ -n "$DRAIN_PID" ] || die "no drain worker"
kill -9 "$DRAIN_PID"
log "fault 2: drain worker $DRAIN_PID SIGKILLed at transaction $(progress)"
sleep 1
pg_wait
check "after the drain worker's crash, both connectors resume by themselves" recovered
log "  recovered at transaction $(progress)"

# fault 3: PostgreSQL restarted
wait_progress $(($(progress) + 30))
"${RUN[@]}" "$PG_BINDIR/pg_ctl" -D "$KW/pg" -m fast -w -t 60 restart >>"$KW/logs/pg_ctl.log" 2>&1 || die "PostgreSQL restart"
log "fault 3: PostgreSQL restarted at transaction $(progress)"
pg_wait
check "after the PostgreSQL restart, both connectors resume by themselves" recovered
wait_progress $(($(progress) + 30))
touch "$KW/producer.stop"

wait "$PRODUCER_PID" || true
PRODUCER_PID=""
log "producer done ($(cat "$KW/logs/producer.log" 2>/dev/null | grep -c "transaction .* failed") transactions failed during the faults)"

# fault 4: the history connector stopped right after it delivered the first event of a drain
# batch. That is the offset Kafka Connect keeps when a task stops (a restart, a lost connection)
# after its last record was one from the middle of a drain transaction: the test writes that
# offset itself (PATCH /offsets of a STOPPED connector, Connect 3.5+), so the case happens in
# every run instead of by chance. Debezium resumes after the LSN of the event the offset names
# and skips every other change at that LSN (debezium/dbz#1554, 3.6.1 and older): history rows
# written many to a WAL record (table_multi_insert) were lost there, now each row has its own.
connector_state() { # connector -> RUNNING, PAUSED, STOPPED, ... or NONE
	curl -sf "$REST/connectors/$1/status" 2>/dev/null |
		sed -n 's/.*"connector":{"state":"\([A-Z]*\)".*/\1/p' | grep . || echo NONE
}
# First path 2 has every event committed so far: the offset written below says so (Debezium asks
# the slot to start at the batch's first insert, and PostgreSQL skips what committed before it).
caught_up() {
	local i
	wait_pending_empty 120 || return 1
	for i in $(seq 1 150); do
		[ "$("${CHECK[@]}" count "$KW/records.jsonl" 'outbox\.history\..*')" -ge "$(sql "SELECT count(*) FROM outbox.history")" ] && return 0
		sleep 2
	done
	return 1
}
check "fault 4: before the stop, path 2 has every event committed so far" caught_up
curl -sf -X PUT "$REST/connectors/pg-outbox-history/stop" >/dev/null || die "PUT pg-outbox-history/stop"
for _ in $(seq 1 120); do
	[ "$(connector_state pg-outbox-history)" = STOPPED ] &&
		[ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pg_outbox_history' AND NOT active")" = 1 ] && break
	sleep 0.5
done
[ "$(connector_state pg-outbox-history)" = STOPPED ] || die "pg-outbox-history did not stop: $(connector_state pg-outbox-history)"
B=10 # one transaction of B events: one drain batch, B history rows in one transaction
sql "SELECT count(outbox.publish('payments', jsonb_build_object('batch', g), 'kb' || g, 'created')) FROM generate_series(1, $B) g" >/dev/null
wait_pending_empty 60 || die "the batch of fault 4 was not drained"
# what the history slot will send: the batch's transaction (the last one with inserts), its first insert
# (get_byte 73 = 'I', pgoutput's insert message)
read -r F4_LSN F4_XID F4_ROWS F4_LSNS <<<"$(sql "WITH c AS (SELECT lsn, xid FROM pg_logical_slot_peek_binary_changes('pg_outbox_history', NULL, NULL,
	'proto_version', '1', 'publication_names', 'pg_outbox_history') WHERE get_byte(data, 0) = 73),
	t AS (SELECT lsn, xid FROM c WHERE xid = (SELECT xid FROM c ORDER BY lsn DESC LIMIT 1))
	SELECT (min(lsn) - '0/0'::pg_lsn)::bigint, min(xid::text), count(*), count(DISTINCT lsn) FROM t" | tr '|' ' ')"
[ "${F4_ROWS:-0}" = "$B" ] || die "fault 4: the history slot shows ${F4_ROWS:-no} inserts in the batch's transaction, expected $B"
F4_ID=$(sql "SELECT id FROM outbox.history WHERE payload ? 'batch' ORDER BY pos LIMIT 1")
OFFSETS=$(curl -sf "$REST/connectors/pg-outbox-history/offsets") || die "GET pg-outbox-history/offsets"
BODY=$("${CHECK[@]}" offset "$OFFSETS" "lsn=$F4_LSN" "lsn_proc=$F4_LSN" "txId=$F4_XID" messageType=INSERT) || die "offset: $OFFSETS"
curl -sf -X PATCH -H 'Content-Type: application/json' --data "$BODY" "$REST/connectors/pg-outbox-history/offsets" >/dev/null ||
	die "PATCH pg-outbox-history/offsets: $(curl -s -X PATCH -H 'Content-Type: application/json' --data "$BODY" "$REST/connectors/pg-outbox-history/offsets")"
log "fault 4: history connector stopped, its offset set to event $F4_ID, the first of a drain batch of $B (history rows at $F4_LSNS LSNs): $BODY"
curl -sf -X PUT "$REST/connectors/pg-outbox-history/resume" >/dev/null || die "PUT pg-outbox-history/resume"
check "after a stop past the first event of a drain batch, the history connector resumes" \
	wait_running pg-outbox-history pg_outbox_history 120
batch_arrived() { # the batch's events after F4_ID on path 2 (F4_ID itself: the offset says it was delivered)
	local i id n
	for i in $(seq 1 60); do
		n=0
		for id in $(sql "SELECT id FROM outbox.history WHERE payload ? 'batch' AND id <> $F4_ID"); do
			grep -q "\"t\":\"outbox\.history\.payments\".*\"id\":\"$id\"" "$KW/records.jsonl" && n=$((n + 1))
		done
		[ "$n" = $((B - 1)) ] && return 0
		sleep 2
	done
	log "fault 4: $n of $((B - 1)) events after event $F4_ID arrived on path 2"
	return 1
}
check "fault 4: the $((B - 1)) other events of the drain batch reach Kafka on path 2" batch_arrived

# special events, on a 'wal' channel, a 'both' channel and the 'notify' channel
psql -d app >/dev/null <<'EOF'
SELECT outbox.publish('payments', jsonb_build_object('blob', repeat('x', 1048576), 'end', 'ok'), 'big', 'large');  -- 1 MB
SELECT outbox.publish('orders', '{"keyless": true}', NULL, 'created');        -- no key
SELECT outbox.publish('orders', NULL, 'k-nopayload', 'deleted');              -- no payload
SELECT outbox.publish('orders', '{"untyped": true}', 'k-notype');             -- no type
SELECT outbox.publish('audit', NULL, NULL, NULL);                              -- nothing but a channel
SELECT outbox.publish('orders', '{"last": true}', 'k-last', 'created');
EOF
check "every committed event is published by the drain worker" wait_pending_empty 120

# What must arrive: the committed events (outbox.history), per path
dump() { # file, WHERE
	sql "SELECT row_to_json(e) FROM (SELECT id, pos, seq, channel, key, type, payload FROM outbox.history WHERE $2 ORDER BY pos) e" >"$1"
}
dump "$KW/expected-messages.jsonl" "channel IN ('orders', 'payments')"
dump "$KW/expected-history.jsonl" "id <> $F4_ID" # F4_ID: delivered, says the offset of fault 4
E1=$(wc -l <"$KW/expected-messages.jsonl"); E2=$(wc -l <"$KW/expected-history.jsonl")
log "committed: $E2 events, $E1 of them on channels with target wal/both"
arrived() {
	local i n1 n2
	for i in $(seq 1 90); do
		n1=$("${CHECK[@]}" count "$KW/records.jsonl" 'outbox\.event\..*')
		n2=$("${CHECK[@]}" count "$KW/records.jsonl" 'outbox\.history\..*')
		[ "$n1" -ge "$E1" ] && [ "$n2" -ge "$E2" ] && return 0
		[ "$(task_state pg-outbox-messages)" = RUNNING ] || [ "$i" -lt 10 ] || break
		[ "$(task_state pg-outbox-history)" = RUNNING ] || [ "$n2" -ge "$E2" ] || [ "$i" -lt 10 ] || break
		sleep 2
	done
	log "arrived: $n1 of $E1 (path 1), $n2 of $E2 (path 2); tasks: $(task_state pg-outbox-messages) $(task_state pg-outbox-history)"
	return 1
}
check "every committed event reaches Kafka on both paths" arrived

# A payload that is not a JSON object (here an array): path 1 carries it; on path 2 the outbox
# event router's expand.json.payload cannot make it a record value and the task stops (FAILED,
# and a restart meets the same row again). Path 2 is checked up to the event before it.
dump "$KW/expected-history.jsonl" "id <> $F4_ID"
E2=$(wc -l <"$KW/expected-history.jsonl")
sql "SELECT outbox.publish('orders', '[1, 2, 3]', 'k-array', 'created'); SELECT outbox.publish('orders', '{\"after\": \"array\"}', 'k-array', 'created')" >/dev/null
wait_pending_empty 60 || not_ok "the drain publishes the array payload"
dump "$KW/expected-messages.jsonl" "channel IN ('orders', 'payments')"
E1=$(wc -l <"$KW/expected-messages.jsonl")
check "an array payload: path 1 carries it (and what follows)" arrived
history_failed() {
	local i
	for i in $(seq 1 60); do [ "$(task_state pg-outbox-history)" = FAILED ] && return 0; sleep 0.5; done
	return 1
}
check "an array payload: path 2's task stops (FAILED)" history_failed
log "  path 2: $(task_trace pg-outbox-history)"
touch "$KW/consumer.stop"
wait "$CONSUMER_PID" || true
CONSUMER_PID=""
check "path 1 (messages): each committed wal/both event in outbox.event.<channel>, key, pos/seq headers, payload, order per key" \
	"${CHECK[@]}" check "$KW/records.jsonl" "$KW/expected-messages.jsonl" outbox.event.
check "path 2 (history capture): each committed event in outbox.history.<channel>, key, pos/seq headers, payload, order per key" \
	"${CHECK[@]}" check "$KW/records.jsonl" "$KW/expected-history.jsonl" outbox.history. strip-nulls
check "the 1 MB payload arrived on both paths (compared whole above)" \
	test "$(grep -c '"k":"big"' "$KW/records.jsonl")" -ge 2
check "no record of a rolled-back transaction or savepoint" \
	test "$(grep -c rolledback "$KW/records.jsonl")" = 0
check "no record of a notify-only channel (audit) on path 1" \
	test "$(grep -c '"t":"outbox.event.audit"' "$KW/records.jsonl")" = 0

# Slot hygiene: what a DBA finds once the connectors are gone
for c in pg-outbox-messages pg-outbox-history; do curl -sf -X DELETE "$REST/connectors/$c" >/dev/null || not_ok "DELETE connector $c"; done
for _ in $(seq 1 60); do [ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE active")" = 0 ] && break; sleep 0.5; done
log "slots after the connectors were deleted: $(slots)"
check "deleting a connector leaves its slot behind (Debezium's slot.drop.on.stop is false): both slots still there, inactive" \
	test "$(sql "SELECT count(*) FROM pg_replication_slots WHERE NOT active AND slot_name IN ('pg_outbox_debezium', 'pg_outbox_history')")" = 2
if [ "$(sql "SELECT count(*) FROM pg_attribute WHERE attrelid = 'pg_replication_slots'::regclass AND attname = 'failover'")" = 1 ]; then
	check "the connectors' slots are not failover slots (slot.failover is not set)" \
		test "$(sql "SELECT count(*) FROM pg_replication_slots WHERE failover")" = 0
else
	log "PostgreSQL $(sql 'SHOW server_version_num') has no failover slots (pg_replication_slots.failover is PostgreSQL 17+)"
fi
sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('pg_outbox_debezium', 'pg_outbox_history')" >/dev/null
sql "DROP PUBLICATION pg_outbox_messages; DROP PUBLICATION pg_outbox_history" >/dev/null
check "no replication slot and no publication left" \
	test "$(sql "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)")" = 0

log "kafka: $NPASS passed, $NFAIL failed ($(($(date +%s) - T0)) s)"
echo "$NPASS passed, $NFAIL failed"
[ "$NFAIL" = 0 ]
