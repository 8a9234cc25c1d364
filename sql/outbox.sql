-- The durable outbox: publish in the producer's transaction, drain by hand (the worker's code),
-- gap-free positions, per-channel sequences, and every bad input.
-- every test file starts from a fresh extension: its output does not depend on the others
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- bad channels fail when the event is written, never later in the worker
SELECT outbox.publish(NULL);
SELECT pg_temp.err($$SELECT outbox.publish(NULL, '{}')$$);
SELECT pg_temp.err($$SELECT outbox.publish('')$$);
SELECT pg_temp.err($$SELECT outbox.publish(repeat('c', 64))$$);
SELECT pg_temp.err($$SELECT outbox.publish(repeat('é', 32))$$);
-- ... and so does a direct INSERT that bypasses publish()
SELECT split_part(pg_temp.err($$INSERT INTO outbox.pending (channel) VALUES (repeat('c', 64))$$), ' | detail', 1);

-- publish returns the event id
SELECT outbox.publish('orders', '{"order": 1}') AS first_id \gset
SELECT outbox.publish('orders', '{"order": 2}', key => 'order-2', type => 'created') > :first_id AS later_id;
SELECT outbox.publish('users', NULL) > 0 AS ok;
SELECT outbox.publish(channel => 'users', payload => '"just a string"', type => 'renamed') > 0 AS ok;
-- rollback publishes nothing
BEGIN;
SELECT outbox.publish('orders', '{"rolled": "back"}') > 0 AS ok;
ROLLBACK;
-- a rolled-back savepoint drops its events, the rest of the transaction keeps its own
BEGIN;
SAVEPOINT s1;
SELECT outbox.publish('orders', '{"savepoint": "rolled back"}') > 0 AS ok;
ROLLBACK TO SAVEPOINT s1;
SELECT outbox.publish('orders', '{"savepoint": "kept"}') > 0 AS ok;
COMMIT;

SELECT id - :first_id AS rel_id, channel, key, type, payload FROM outbox.pending ORDER BY id;

-- drain in batches: positions 1, 2, 3, ... in publish order, seq counts per channel
SELECT outbox.drain(2);
SELECT outbox.drain();
SELECT outbox.drain();
SELECT pos, seq, id - :first_id AS rel_id, channel, key, type, payload, published_at >= created_at AS after_created
  FROM outbox.history ORDER BY pos;
SELECT count(*) AS still_pending FROM outbox.pending;
SELECT last_pos FROM outbox.state;
SELECT channel, last_seq FROM outbox.channels ORDER BY channel;

-- a drained batch that rolls back publishes nothing and hands out no position
BEGIN;
SELECT outbox.publish('orders', '{"order": 3}') > 0 AS ok;
COMMIT;
BEGIN;
SELECT outbox.drain();
ROLLBACK;
SELECT count(*) AS still_pending FROM outbox.pending;
SELECT outbox.drain();
SELECT pos, seq, channel, payload FROM outbox.history WHERE pos > 4 ORDER BY pos;

-- outbox.event(): pending or published events by id
SELECT channel, key, type, payload, pos, seq FROM outbox.event(:first_id);
SELECT outbox.publish('orders', '{"order": 4}') AS pending_id \gset
SELECT channel, payload, pos IS NULL AS not_yet_published FROM outbox.event(:pending_id);
SELECT outbox.drain();
SELECT outbox.event(-1);
SELECT pg_temp.err($$SELECT outbox.event(-1)$$);
SELECT pg_temp.err($$SELECT outbox.event(NULL)$$);

-- drain() arguments
SELECT pg_temp.err($$SELECT outbox.drain(0)$$);
SELECT pg_temp.err($$SELECT outbox.drain(-5)$$);
SELECT pg_temp.err($$SELECT outbox.drain(NULL)$$);

-- large payloads are stored whole (the envelope carries "truncated" instead, see the isolation
-- test); a 1 MB payload round-trips through publish, drain and event()
SELECT outbox.publish('big', jsonb_build_object('blob', repeat('z', 1000000))) AS big_id \gset
SELECT outbox.drain();
SELECT octet_length(payload->>'blob') AS blob_bytes, pos FROM outbox.event(:big_id);

-- an incompressible payload is stored out of line (TOAST) in the pending table, and moves
-- whole into the history
SELECT outbox.publish('big', jsonb_build_object('blob', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 40000) g))) AS toast_id \gset
SELECT pg_column_size(payload) > 8192 AS stored_out_of_line FROM outbox.pending WHERE id = :toast_id;
SELECT outbox.drain();
SELECT md5(payload->>'blob') = (SELECT md5(string_agg(md5(g::text), '')) FROM generate_series(1, 40000) g) AS intact
  FROM outbox.event(:toast_id);

-- the pending table is not left with the drained rows
SELECT count(*) AS pending FROM outbox.pending;
SELECT min(pos), max(pos), count(*), count(DISTINCT pos), count(DISTINCT id) FROM outbox.history;
