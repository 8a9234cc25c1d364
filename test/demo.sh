#!/usr/bin/env bash
# The main job: set everything up (test/setup.sh), start a throwaway cluster with pg_outbox
# preloaded under .demo/ in the project folder (private socket, port 5488 by default), create
# the extension, and show events flowing from producers to a listener. The cluster is left
# running; the script prints how to connect and how to stop it. Re-running starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PORT=${PG_OUTBOX_DEMO_PORT:-5488}
DEMO="$ROOT/.demo"
BINDIR=/usr/lib/postgresql/15/bin

bash test/setup.sh

RUN=()
if [ "$(id -u)" = 0 ]; then
    RUN=(runuser -u postgres --)
    # the postgres user must be able to reach .demo: open the path for traversal if needed
    d="$ROOT"
    while [ "$d" != / ]; do
        if ! runuser -u postgres -- test -x "$d"; then
            echo "demo: chmod o+x $d (so the postgres user can reach $DEMO)"
            chmod o+x "$d"
        fi
        d=$(dirname "$d")
    done
fi

if [ -f "$DEMO/data/postmaster.pid" ]; then
    "${RUN[@]}" "$BINDIR/pg_ctl" -D "$DEMO/data" -m fast -w stop >/dev/null 2>&1 || true
fi
rm -rf "$DEMO"
mkdir -p "$DEMO"
[ "$(id -u)" = 0 ] && chown postgres: "$DEMO"

"${RUN[@]}" "$BINDIR/initdb" -D "$DEMO/data" -A trust -U postgres --encoding=UTF8 --no-locale >/dev/null
cat >> "$DEMO/data/postgresql.conf" <<CONF
# pg_outbox demo cluster
shared_preload_libraries = 'pg_outbox'
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DEMO'
CONF
"${RUN[@]}" "$BINDIR/pg_ctl" -D "$DEMO/data" -l "$DEMO/server.log" -w start >/dev/null
PSQL=("${RUN[@]}" "$BINDIR/psql" -X -q -h "$DEMO" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE demo"
"${PSQL[@]}" -d demo <<'SQL'
CREATE EXTENSION pg_outbox;
CREATE TABLE orders (id bigint PRIMARY KEY, customer text, total numeric);
-- every change of a row of orders becomes a durable event on channel "public.orders"
SELECT outbox.attach('orders', include_columns => '{customer}');
SQL

echo "== a listener subscribes to channels 'orders', 'public.orders' and 'alerts' (psql, LISTEN)"
"${PSQL[@]}" -d demo -c "LISTEN orders" -c 'LISTEN "public.orders"' -c "LISTEN alerts" -c "SELECT pg_sleep(2.5)" \
    >"$DEMO/listener.out" 2>&1 &
listener=$!
sleep 0.7

echo "== producers write events in their own transactions"
"${PSQL[@]}" -d demo -e <<'SQL'
-- durable: stored in the outbox with the order, published by the drain worker after commit
BEGIN;
INSERT INTO orders VALUES (1, 'ada', 42.00);
SELECT outbox.publish('orders', '{"order_id": 1, "status": "created"}', key => '1', type => 'created');
COMMIT;
-- rolled back: nothing is published
BEGIN;
INSERT INTO orders VALUES (2, 'bob', 7.50);
SELECT outbox.publish('orders', '{"order_id": 2, "status": "created"}', key => '2', type => 'created');
ROLLBACK;
-- the trigger attached to orders publishes row changes by itself
UPDATE orders SET total = 45.00 WHERE id = 1;
-- a payload too big for NOTIFY: the envelope says "truncated", the consumer fetches it by id
SELECT outbox.publish('orders', jsonb_build_object('order_id', 3, 'notes', repeat('x', 9000)), key => '3');
-- direct, size-checked NOTIFY (best effort)
SELECT outbox.notify('alerts', 'disk almost full');
SQL
wait $listener || true
echo "== what the listener received"
sed -e 's/ from server process with PID [0-9]*\././' "$DEMO/listener.out" | grep -i notification || {
    echo "demo: the listener received nothing; see $DEMO/server.log"; exit 1; }
echo "== published history (outbox.history), and the drain worker"
"${PSQL[@]}" -d demo -c "SELECT pos, seq, id, channel, key, type, left(payload::text, 50) AS payload FROM outbox.history ORDER BY pos" \
    -c "SELECT backend_type, query FROM pg_stat_activity WHERE backend_type LIKE 'pg_outbox%' ORDER BY 1"

echo "== only pos is gap-free: ids have holes where a transaction rolled back (its events used up ids); pos has none"
"${PSQL[@]}" -d demo -c "SELECT string_agg(pos::text, ', ' ORDER BY pos) AS pos, string_agg(id::text, ', ' ORDER BY pos) AS id FROM outbox.history"
echo "== without LISTEN (works through PgBouncer): outbox.wait() returns at once what is there, or waits for it"
"${PSQL[@]}" -d demo -c "SELECT pos, channel, left(envelope::text, 80) AS envelope FROM outbox.wait(0, ARRAY['orders'], '5s', 2)"

cat <<EOF2

The demo cluster is running (data in $DEMO/data, log in $DEMO/server.log).
  connect:  ${RUN[*]} $BINDIR/psql -h $DEMO -p $PORT -U postgres demo
  stop:     ${RUN[*]} $BINDIR/pg_ctl -D $DEMO/data stop
  listener: ${RUN[*]} $BINDIR/pg_outbox_listen "host=$DEMO port=$PORT user=postgres dbname=demo" --channel orders --channel public.orders --from-pos 0
            (the reference consumer, installed by make install next to psql: $BINDIR; it prints
            every event as a JSON line, then follows new ones; Ctrl-C stops it)
Try: LISTEN orders;  then in another psql:  SELECT outbox.publish('orders', '{"hello": "world"}');
Every example in README.md's "Getting started" and "Consumers" runs as written in this database.
EOF2
