-- Retention and filtered named consumers (attacks on the consumer API): a filtered consumer
-- that has acknowledged every event of its channels must not be reported OB001 when retention
-- removes other channels' events behind its position (it is still active when the horizon has
-- moved: retention marks lost, in the same transaction, every consumer it removes events for);
-- one that has not processed an event of its channels keeps the segment.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;

\set err_style message
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- 'rare_c' reads channel rare, 'all_c' every channel; both process position 1 (rare)
SELECT outbox.create_consumer('rare_c', ARRAY['rare'], 'earliest');
SELECT outbox.create_consumer('all_c', NULL, 'earliest');
SELECT outbox.create_consumer('rare2', ARRAY['rare', 'rarer'], 'earliest');
SELECT outbox.publish('rare', '{"n": 1}') > 0 AS ok;
SELECT outbox.drain();
SELECT pos, channel FROM outbox.next('rare_c', timeout => '0');
SELECT outbox.ack('rare_c', 1);
SELECT outbox.ack('rare2', 1);
-- other channels' events, which rare_c never sees; all_c acknowledges them
SELECT count(outbox.publish('busy', jsonb_build_object('n', g))) FROM generate_series(2, 6) g;
SELECT outbox.drain();
SELECT outbox.ack('all_c', 6);
-- rare_c is offline meanwhile: it never calls next(), so nothing advanced it past the busy events
SELECT name, state, acked_pos, lag_events FROM outbox.consumers ORDER BY name;
SELECT outbox.purge('0') AS removed;
SELECT purged_pos FROM outbox.state;
-- nothing of rare_c's channels was removed: it is active, and next() works (no OB001); finding
-- nothing, it records that it has seen everything up to the head
SELECT name, state, acked_pos FROM outbox.consumers ORDER BY name;
SELECT pg_temp.err($$SELECT count(*) FROM outbox.next('rare_c', timeout => '0')$$);
SELECT name, state, acked_pos FROM outbox.consumers ORDER BY name;
SELECT outbox.publish('rare', '{"n": 7}') > 0 AS ok;
SELECT outbox.drain();
SELECT pos, channel, payload FROM outbox.next('rare_c', timeout => '0');
SELECT outbox.ack('rare_c', 7);
-- rare2 was offline through the purge: its first next() returns the new event of its channels
SELECT name, acked_pos FROM outbox.consumers WHERE name = 'rare2';
SELECT pos, channel, payload FROM outbox.next('rare2', timeout => '0');
SELECT outbox.ack('rare2', 7);

-- a filtered consumer that has NOT processed an event of its channels keeps the segment
SELECT count(outbox.publish('busy', jsonb_build_object('n', g))) FROM generate_series(8, 9) g;
SELECT outbox.publish('rare', '{"n": 10}') > 0 AS ok;
SELECT count(outbox.publish('busy', jsonb_build_object('n', g))) FROM generate_series(11, 12) g;
SELECT outbox.drain();
SELECT outbox.ack('all_c', 12);
SELECT outbox.purge('0') AS removed;
SELECT name, state, acked_pos FROM outbox.consumers ORDER BY name;
SELECT pos, channel FROM outbox.next('rare_c', timeout => '0');
SELECT outbox.ack('rare_c', 10);
SELECT pos, channel FROM outbox.next('rare2', timeout => '0');
SELECT outbox.ack('rare2', 10);
SELECT outbox.purge('0') AS removed;
SELECT purged_pos FROM outbox.state;
SELECT name, state, acked_pos FROM outbox.consumers ORDER BY name;
SELECT pg_temp.err($$SELECT count(*) FROM outbox.next('rare_c', timeout => '0')$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.next('all_c', timeout => '0')$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.next('rare2', timeout => '0')$$);
SELECT name, state, acked_pos FROM outbox.consumers ORDER BY name;

DROP EXTENSION pg_outbox;
