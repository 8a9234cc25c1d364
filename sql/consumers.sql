-- Named consumers: create_consumer, next, ack, drop_consumer, the view outbox.consumers, the
-- consumer counts of outbox.status, privileges, and retention that keeps what a consumer has not
-- acknowledged. (A consumer marked lost past pg_outbox.consumer_max_retention: test/t/120.)
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
DROP ROLE IF EXISTS regress_cons_bob, regress_cons_dave, regress_cons_carol, regress_cons_team,
                    regress_cons_mallory;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

SELECT outbox.publish('orders', jsonb_build_object('n', g)) > 0 AS ok FROM generate_series(1, 3) g;
SELECT outbox.drain();

-- start 'now' (after the head), 'earliest' (every event kept) or after a position
SELECT outbox.create_consumer('from_now');
SELECT outbox.create_consumer('from_start', NULL, 'earliest');
SELECT outbox.create_consumer('from_two', ARRAY['orders', 'audit', 'orders'], '2');
SELECT name, channels, owner, state, acked_pos, lag_events, last_ack_at IS NULL AS never_acked
  FROM outbox.consumers ORDER BY name;
SELECT consumers, lost_consumers FROM outbox.status;

-- next(): the events after the acknowledged position, of its channels; the same again until
-- acknowledged (at least once)
SELECT pos, channel, payload, envelope FROM outbox.next('from_start', timeout => '0');
SELECT pos FROM outbox.next('from_start', 2, '0');
SELECT outbox.ack('from_start', 2);
SELECT pos FROM outbox.next('from_start', timeout => '0');
SELECT pos FROM outbox.next('from_two', timeout => '0');
SELECT count(*) AS n, clock_timestamp() - statement_timestamp() >= interval '100 ms' AS waited
  FROM outbox.next('from_now', timeout => '100ms');
-- ack is monotonic: an older position is a no-op (a retried ack is harmless), the same one too
SELECT outbox.ack('from_start', 1);
SELECT outbox.ack('from_start', 2);
SELECT outbox.ack('from_start', 3);
SELECT pos FROM outbox.next('from_start', timeout => '0');
SELECT name, acked_pos, lag_events, lag_seconds = 0 AS caught_up, last_ack_at IS NOT NULL AS acked
  FROM outbox.consumers ORDER BY name;

-- lag: events after the acknowledged position of the consumer's channels, and the age of the
-- oldest of them
SELECT outbox.publish('orders', '{"n": 4}') > 0 AS ok, outbox.publish('audit', '{"n": 5}') > 0 AS ok,
       outbox.publish('other', '{"n": 6}') > 0 AS ok;
SELECT outbox.drain();
SELECT pg_sleep(0.05);
SELECT name, acked_pos, lag_events, lag_seconds > 0 AS lagging FROM outbox.consumers ORDER BY name;

-- a filtered consumer with nothing of its channels: next() finds nothing and records that it has
-- seen everything up to the head (retention need not keep other channels' events for it)
SELECT outbox.create_consumer('quiet', ARRAY['rare'], 'earliest');
SELECT count(*) FROM outbox.next('quiet', timeout => '0');
SELECT name, acked_pos, lag_events, last_ack_at IS NULL AS never_acked FROM outbox.consumers WHERE name = 'quiet';
SELECT outbox.publish('rare', '{"n": 7}') > 0 AS ok;
SELECT outbox.drain();
SELECT pos, channel FROM outbox.next('quiet', timeout => '0');

-- bad input
SELECT pg_temp.err($$SELECT outbox.create_consumer(NULL)$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('')$$);
SELECT pg_temp.err(format('SELECT outbox.create_consumer(%L)', repeat('n', 64)));
SELECT pg_temp.err($$SELECT outbox.create_consumer('from_now')$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', ARRAY[]::text[])$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', ARRAY['a', NULL])$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', ARRAY[''])$$);
SELECT pg_temp.err(format('SELECT outbox.create_consumer(%L, ARRAY[%L])', 'x', repeat('c', 64)));
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', NULL, NULL)$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', NULL, 'yesterday')$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', NULL, '-1')$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', NULL, '+1')$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', NULL, '1e3')$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', NULL, '99999999999999999999')$$);
SELECT pg_temp.err($$SELECT outbox.create_consumer('x', NULL, '99')$$);
SELECT pg_temp.err($$SELECT outbox.next(NULL)$$);
SELECT pg_temp.err($$SELECT outbox.next('nobody')$$);
SELECT pg_temp.err($$SELECT outbox.next('from_now', 0)$$);
SELECT pg_temp.err($$SELECT outbox.next('from_now', NULL)$$);
SELECT pg_temp.err($$SELECT outbox.next('from_now', 10, NULL)$$);
SELECT pg_temp.err($$SELECT outbox.next('from_now', 10, '-1 s')$$);
SELECT pg_temp.err($$SELECT outbox.ack('nobody', 1)$$);
SELECT pg_temp.err($$SELECT outbox.ack('from_now', NULL)$$);
SELECT pg_temp.err($$SELECT outbox.ack('from_now', -1)$$);
SELECT pg_temp.err($$SELECT outbox.ack('from_now', 99)$$);
SELECT pg_temp.err($$SELECT outbox.ack(NULL, 1)$$);
SELECT pg_temp.err($$SELECT outbox.drop_consumer('nobody')$$);
SELECT pg_temp.err($$SELECT outbox.drop_consumer(NULL)$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.err($$SELECT * FROM outbox.next('from_now', timeout => '0')$$);
ROLLBACK;
-- ack, create and drop work in REPEATABLE READ (they read the head with the latest snapshot)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT outbox.ack('from_now', 3);
COMMIT;

-- retention keeps what an active consumer has not acknowledged (up to
-- pg_outbox.consumer_max_retention, 7 days by default)
SELECT name, acked_pos FROM outbox.consumers ORDER BY acked_pos, name;
SELECT outbox.purge('0') AS removed;
SELECT purged_pos FROM outbox.state;
SELECT outbox.ack('from_now', 7), outbox.ack('from_two', 7), outbox.ack('quiet', 7);
SELECT outbox.purge('0') AS removed;
SELECT purged_pos FROM outbox.state;
SELECT outbox.ack('from_start', 7);
SELECT outbox.purge('0') AS removed;
SELECT purged_pos FROM outbox.state;
SELECT count(*) FROM outbox.next('from_start', timeout => '0');
-- a consumer created 'earliest' now starts at the horizon; one after a removed position: OB001
SELECT outbox.create_consumer('late', NULL, 'earliest');
SELECT pg_temp.err($$SELECT outbox.create_consumer('later', NULL, '3')$$);

-- privileges: readers create consumers of their own; only the owner (and its members) and
-- outbox_admin may use or drop one; others cannot even call the functions
CREATE ROLE regress_cons_bob;     GRANT outbox_reader TO regress_cons_bob;
CREATE ROLE regress_cons_dave;    GRANT outbox_reader TO regress_cons_dave;
CREATE ROLE regress_cons_carol;   GRANT outbox_admin TO regress_cons_carol;
CREATE ROLE regress_cons_team;    GRANT regress_cons_bob TO regress_cons_team;
CREATE ROLE regress_cons_mallory;
SET ROLE regress_cons_bob;
SELECT outbox.create_consumer('bobs', ARRAY['orders']);
SELECT count(*) FROM outbox.next('bobs', timeout => '0');
SELECT outbox.ack('bobs', 7);
SELECT name, owner FROM outbox.consumers WHERE name = 'bobs';
SELECT pg_temp.err($$SELECT * FROM outbox.consumer$$);
SELECT pg_temp.err($$UPDATE outbox.consumer SET acked_pos = 0$$);
RESET ROLE;
SET ROLE regress_cons_dave;
SELECT pg_temp.err($$SELECT * FROM outbox.next('bobs', timeout => '0')$$);
SELECT pg_temp.err($$SELECT outbox.ack('bobs', 7)$$);
SELECT pg_temp.err($$SELECT outbox.drop_consumer('bobs')$$);
SELECT count(*) AS listed FROM outbox.consumers WHERE name = 'bobs';
RESET ROLE;
SET ROLE regress_cons_team;
SELECT outbox.ack('bobs', 7);
RESET ROLE;
SET ROLE regress_cons_mallory;
SELECT pg_temp.err($$SELECT outbox.create_consumer('mallorys')$$);
SELECT pg_temp.err($$SELECT * FROM outbox.next('bobs', timeout => '0')$$);
SELECT pg_temp.err($$SELECT outbox.ack('bobs', 7)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.consumers$$);
RESET ROLE;
SET ROLE regress_cons_carol;
SELECT outbox.drop_consumer('bobs');
RESET ROLE;
SELECT count(*) FROM outbox.consumers WHERE name = 'bobs';

-- drop_consumer: gone, and retention no longer keeps anything for it
SELECT outbox.drop_consumer('late');
SELECT pg_temp.err($$SELECT * FROM outbox.next('late', timeout => '0')$$);
SELECT name FROM outbox.consumers ORDER BY name;
DROP ROLE regress_cons_bob, regress_cons_dave, regress_cons_carol, regress_cons_team, regress_cons_mallory;

-- messages (issue 16): outbox.event() of an id that never existed, of a removed event and of a
-- dead letter each hint at what it is; resume() counts "1 event", not "1 events"
SELECT pg_temp.err($$SELECT * FROM outbox.event(1000000)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.event(0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.event(1)$$);
ALTER TABLE outbox.history_frozen ADD CONSTRAINT regress_no_bad CHECK (payload IS DISTINCT FROM '"bad"');
SELECT outbox.publish('orders', '"bad"') AS bad_id \gset
SET client_min_messages = error;
SET pg_outbox.max_attempts = 1; -- dead-lettered at its first failure (retries: drain_failures)
SELECT outbox.drain();
RESET pg_outbox.max_attempts;
RESET client_min_messages;
ALTER TABLE outbox.history_frozen DROP CONSTRAINT regress_no_bad;
SELECT replace(pg_temp.err(format('SELECT * FROM outbox.event(%s)', :bad_id)), :'bad_id', 'N') AS err;
SELECT outbox.pause() IS NOT NULL AS paused;
SELECT outbox.publish('orders', '{"n": 8}') > 0 AS ok;
SELECT outbox.resume();
SELECT outbox.publish('orders', '{"n": 9}') > 0 AS ok;
SELECT outbox.resume();
