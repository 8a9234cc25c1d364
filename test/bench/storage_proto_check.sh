#!/usr/bin/env bash
# storage_proto_check.sh — what doc/storage.md claims of its batches, checked on the prototype
# (test/bench/storage_proto.sql and its C pass, test/bench/proto_drain): exits non-zero when a
# check fails. Lab equipment for the storage design, not one of the extension's test suites.
#
#   bash test/bench/storage_proto_check.sh
#
# On two throwaway clusters (the system's PostgreSQL, no pg_outbox needed):
#   plain  a transaction stays open across many passes (with a savepoint rolled back inside it)
#          while two sessions publish on three channels in single-event transactions, drained by
#          the C pass and the PL/pgSQL pass in turn;
#   wrap   the same on a cluster whose xids start in epoch 7 just below 2^32 (pg_resetwal after
#          VACUUM FREEZE), so that the run crosses the 32-bit wrap;
# and asserts on each: every committed event is published exactly once and no rolled-back one;
# positions 1..N with no gap; every channel's seqs 1..n; the long transaction's events come after
# every event of a batch that was committed before it; the NOTIFY envelopes a listener received
# carry the same (id, pos, seq) as replay recomputes from the batch rows.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
[ "$(id -u)" = 0 ] || { echo "storage_proto_check: run as root" >&2; exit 1; }
PG_CONFIG=${PG_CONFIG:-pg_config}
BIN=$("$PG_CONFIG" --bindir)
PY=/usr/bin/python3
W=$(mktemp -d /var/tmp/pg_outbox_proto_check.XXXXXX)
chmod 755 "$W"
chown postgres: "$W"
BG=()
cleanup() {
	set +e
	for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
	for d in "$W"/plain "$W"/wrap; do
		[ -f "$d/postmaster.pid" ] && runuser -u postgres -- "$BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
	done
	rm -rf "$W"
}
trap cleanup EXIT
cp -r test/bench/proto_drain "$W/proto_drain"
make -s -C "$W/proto_drain" PG_CONFIG="$PG_CONFIG" >/dev/null
chmod 755 "$W/proto_drain" "$W/proto_drain/proto_drain.so"
failed=0
pass() { echo "ok - $1"; }
fail() { echo "not ok - $1" >&2; failed=$((failed + 1)); }

start_cluster() { # name port [wrap]
	local d=$W/$1 port=$2
	runuser -u postgres -- "$BIN/initdb" -D "$d" -U postgres --auth=trust -E UTF8 >/dev/null
	printf "listen_addresses = ''\nunix_socket_directories = '%s'\nport = %s\nfsync = off\n" "$W" "$port" >>"$d/postgresql.conf"
	if [ "${3:-}" = wrap ]; then
		# every row frozen first, or the reset xid counter would put them in the future
		runuser -u postgres -- "$BIN/pg_ctl" -D "$d" -l "$d.log" -w start >/dev/null
		psql -XAtq -h "$W" -p "$port" -U postgres -d postgres -c "UPDATE pg_database SET datallowconn = true WHERE datname = 'template0'"
		for db in template0 template1 postgres; do "$BIN/vacuumdb" -q -h "$W" -p "$port" -U postgres --freeze -d "$db"; done
		runuser -u postgres -- "$BIN/pg_ctl" -D "$d" -w stop >/dev/null
		# the commit log segment the new counter points into must exist
		runuser -u postgres -- dd if=/dev/zero of="$d/pg_xact/0FFF" bs=8192 count=32 status=none
		runuser -u postgres -- "$BIN/pg_resetwal" -e 7 -x 4294966900 -u 4294966000 "$d" >/dev/null
	fi
	runuser -u postgres -- "$BIN/pg_ctl" -D "$d" -l "$d.log" -w start >/dev/null
	psql -XAtq -h "$W" -p "$port" -U postgres -d postgres -c "CREATE DATABASE chk"
	psql -XAtq -v ON_ERROR_STOP=1 -h "$W" -p "$port" -U postgres -d chk -f test/bench/storage_proto.sql >/dev/null
	psql -XAtq -v ON_ERROR_STOP=1 -h "$W" -p "$port" -U postgres -d chk >/dev/null <<SQL
CREATE FUNCTION proto.drain_c(max_events integer, flush_ms integer, load_all boolean DEFAULT false) RETURNS bigint
    LANGUAGE c AS '$W/proto_drain/proto_drain', 'proto_drain_c';
CREATE PROCEDURE pubn(n integer, tag text) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM proto.publish('c' || (i % 3), jsonb_build_object('tag', tag, 'i', i));
        COMMIT;
    END LOOP;
END \$\$;
-- what producers committed, by id (the prototype's publish() returns it)
CREATE TABLE acked (id bigint PRIMARY KEY);
SQL
}

check_cluster() { # name port
	local name=$1 port=$2
	local q=(psql -XAtq -v ON_ERROR_STOP=1 -h "$W" -p "$port" -U postgres -d chk)
	# a listener on every channel, fed commands through a fifo
	mkfifo "$W/$name.fifo"
	chmod 666 "$W/$name.fifo"
	(psql -XAt -h "$W" -p "$port" -U postgres -d chk <"$W/$name.fifo" >"$W/$name.notes" 2>&1) &
	BG+=($!)
	exec 8>"$W/$name.fifo"
	echo "LISTEN c0; LISTEN c1; LISTEN c2; LISTEN long;" >&8
	# the long transaction: one event before a savepoint, one rolled back, then open across every
	# pass below; its last event and COMMIT come after them (fed through a fifo)
	mkfifo "$W/$name.longfifo"
	chmod 666 "$W/$name.longfifo"
	("${q[@]}" <"$W/$name.longfifo" >"$W/$name.long" 2>&1) &
	BG+=($!)
	local longpid=$!
	exec 9>"$W/$name.longfifo"
	printf "BEGIN;\nINSERT INTO acked SELECT proto.publish('long', '{\"long\": 1}');\nSAVEPOINT s;\nSELECT proto.publish('long', '{\"rolled_back\": 1}');\nROLLBACK TO s;\n" >&9
	sleep 0.3
	# two producers, and passes of both kinds in between
	for round in 1 2 3 4 5 6; do
		("${q[@]}" -c "CALL pubn(50, 'a$round')" >/dev/null) &
		local p1=$!
		("${q[@]}" -c "CALL pubn(50, 'b$round')" >/dev/null) &
		local p2=$!
		wait $p1 $p2
		if [ $((round % 2)) = 0 ]; then
			"${q[@]}" -c "SELECT proto.drain_c(7, 1000)" -c "SELECT proto.drain_c(1000, 1000)" >/dev/null
		else
			"${q[@]}" -c "SELECT proto.drain(7)" -c "SELECT proto.drain(1000)" >/dev/null
		fi
	done
	local mid
	mid=$("${q[@]}" -c "SELECT coalesce(max(first_pos + n - 1), 0) FROM proto.batches")
	printf "INSERT INTO acked SELECT proto.publish('long', '{\"long\": 2}');\nCOMMIT;\n" >&9
	exec 9>&-
	wait $longpid
	"${q[@]}" -c "SELECT proto.drain_c(1000, 1000)" -c "SELECT proto.drain_c(1000, 1000)" >/dev/null
	# the producers' events, acknowledged: every pubn() event committed
	"${q[@]}" -c "INSERT INTO acked SELECT id FROM proto.log WHERE payload ? 'tag'"
	echo "SELECT 'done';" >&8
	exec 8>&-
	for _ in $(seq 100); do grep -q '^done$' "$W/$name.notes" && break; sleep 0.1; done
	"${q[@]}" -c "SELECT pos, seq, id, channel FROM proto.replay(0, 100000)" >"$W/$name.replay"
	"${q[@]}" -c "SELECT id FROM acked" >"$W/$name.acked"
	grep -m1 '^[0-9][0-9]*$' "$W/$name.long" >"$W/$name.rolledback" || fail "$name: the rolled-back event's id"
	"${q[@]}" -c "SELECT min(xid), max(xid) FROM proto.log" >"$W/$name.xids"
	local failed_before=$failed
	$PY - "$W/$name" "$mid" <<'PY' || fail "$name: replay, envelopes and acknowledgements agree"
import json, re, sys
base, mid = sys.argv[1], int(sys.argv[2])
rows = [l.split('|') for l in open(base + '.replay').read().split()]
rows = [(int(p), int(s), int(i), c) for p, s, i, c in rows]
acked = {int(x) for x in open(base + '.acked').read().split()}
rolled = {int(x) for x in open(base + '.rolledback').read().split()}
errors = []
ids = [r[2] for r in rows]
if len(ids) != len(set(ids)): errors.append('an event was published twice')
if set(ids) != acked: errors.append('published %d, acknowledged %d, missing %s, extra %s' % (
    len(ids), len(acked), sorted(acked - set(ids))[:5], sorted(set(ids) - acked)[:5]))
if len(rolled) != 1: errors.append('the rolled-back event\'s id was not recorded')
if rolled & set(ids): errors.append('a rolled-back event was published')
if [r[0] for r in rows] != list(range(1, len(rows) + 1)): errors.append('positions are not 1..N')
seqs = {}
for p, s, i, c in rows: seqs.setdefault(c, []).append(s)
for c, ss in seqs.items():
    if ss != list(range(1, len(ss) + 1)): errors.append('seqs of %s are not 1..n' % c)
long_pos = [p for p, s, i, c in rows if c == 'long']
if len(long_pos) != 2 or min(long_pos) <= mid: errors.append('the long transaction\'s events %s are not after position %d' % (long_pos, mid))
notes = {}
for m in re.finditer(r'with payload "(\{.*?\})" received', open(base + '.notes').read()):
    e = json.loads(m.group(1)); notes[e['id']] = (e['pos'], e['seq'])
want = {i: (p, s) for p, s, i, c in rows}
if notes != want: errors.append('envelopes differ from replay: %d received, %d replayed, %d differ' % (
    len(notes), len(want), sum(1 for k in want if notes.get(k) != want[k])))
for e in errors: print('   ' + e, file=sys.stderr)
print('   %d events, %d positions, %d envelopes; long transaction at %s (batches before it ended at %d)' % (
    len(rows), len(rows), len(notes), long_pos, mid))
sys.exit(1 if errors else 0)
PY
	[ $failed = "$failed_before" ] && pass "$name: every committed event once, none rolled back, positions 1..N, seqs 1..n, the long transaction after what committed before it, envelopes = replay"
	echo "   xids from $(sed 's/|/ to /' "$W/$name.xids")"
}

start_cluster plain 5433
check_cluster plain 5433
start_cluster wrap 5434 wrap
check_cluster wrap 5434
wrapped=$(psql -XAtq -h "$W" -p 5434 -U postgres -d chk -c "SELECT min(xid::text::numeric % 4294967296) < 1000 AND max(xid::text::numeric % 4294967296) > 4294966000 FROM proto.log")
[ "$wrapped" = t ] && pass "wrap: the run crossed the 32-bit xid wrap" || fail "wrap: the run did not cross the 32-bit xid wrap"
echo "$((3 - failed)) passed, $failed failed"
[ $failed = 0 ]
