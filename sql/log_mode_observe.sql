-- Observability in log mode (issue #15): outbox.status, outbox.channel_stats, outbox.health() and
-- outbox.consumers over the write-once log (src/sql/98_observe_log.sql), outbox.purge() in log mode,
-- and named consumers held or marked lost by a rotation of the log (61_log_rotate.sql). A switched
-- database of its own; events wait because no worker runs in regress (pause() as well, to show
-- that status says so); the passes are outbox._log_pass(n) by hand. Ages are shown as booleans.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_lmo;
CREATE DATABASE pg_outbox_lmo;
DROP ROLE IF EXISTS lmo_tenant;
DROP ROLE IF EXISTS lmo_monitor;
CREATE ROLE lmo_tenant IN ROLE outbox_consumer;
CREATE ROLE lmo_monitor IN ROLE outbox_reader;
RESET client_min_messages;
\c pg_outbox_lmo
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- the figures of this file, one line each (ages as "> 0")
CREATE FUNCTION pg_temp.status() RETURNS TABLE (pending bigint, aged boolean, published_total bigint, last_pos bigint,
                                                 purged_pos bigint, consumers bigint, lost bigint)
    LANGUAGE sql AS $$
    SELECT s.pending, s.oldest_pending_age > '0', s.published_total, s.last_pos, s.purged_pos, s.consumers,
           s.lost_consumers FROM outbox.status s $$;
CREATE FUNCTION pg_temp.channels() RETURNS TABLE (channel text, published bigint, last_minute bigint, pending bigint,
                                                   aged boolean, last_seq bigint, published_at boolean)
    LANGUAGE sql AS $$
    SELECT c.channel, c.published, c.published_last_minute, c.pending, c.oldest_pending_age > '0', c.last_seq,
           c.last_published_at IS NOT NULL FROM outbox.channel_stats c ORDER BY c.channel $$;
CREATE FUNCTION pg_temp.health() RETURNS TABLE ("check" text, status text, value double precision)
    LANGUAGE sql AS $$
    SELECT h."check", h.status, CASE WHEN h."check" IN ('pending_age', 'consumer_lag') THEN (h.value > 0)::int ELSE h.value END
      FROM outbox.health() h WHERE h."check" IN ('pending_events', 'pending_age', 'consumer_lag', 'lost_consumers') $$;
GRANT EXECUTE ON FUNCTION pg_temp.channels() TO lmo_tenant;

-- 1. 1.2: three events published on a and b, one left pending; then the switch moves it into the log
SELECT count(outbox.publish(ch, jsonb_build_object('n', n))) FROM (VALUES ('a', 1), ('a', 2), ('b', 1)) v(ch, n);
SELECT outbox.drain();
SELECT outbox.publish('a', '{"n": 3}') IS NOT NULL AS a3;
SELECT pg_sleep(0.01);
SELECT * FROM pg_temp.status();
SELECT * FROM pg_temp.channels();
SELECT events_moved, base_pos FROM outbox.use_log_storage();
-- the moved event waits in the log: pending 1, and its age is its 1.2 age
SELECT * FROM pg_temp.status();
SELECT * FROM pg_temp.channels();
SELECT * FROM pg_temp.health();

-- 2. events wait in the log (paused: status says so; no worker runs here anyway)
SELECT outbox.pause() LIKE 'paused%' AS paused;
SELECT count(outbox.publish('a', jsonb_build_object('n', n))) FROM generate_series(4, 8) n;
SELECT count(outbox.publish('c', jsonb_build_object('n', n))) FROM generate_series(1, 3) n;
SELECT pg_sleep(0.01);
SELECT * FROM pg_temp.status();
SELECT * FROM pg_temp.channels();
-- resume() says how many wait (then paused again)
SELECT outbox.resume();
SELECT outbox.pause() LIKE 'paused%' AS paused;
-- health() against low thresholds: 9 pending is critical at '5,8'
SET pg_outbox.health_pending = '5,8';
SELECT * FROM pg_temp.health();
RESET pg_outbox.health_pending;
-- a transaction rolled back: its events never were pending
BEGIN;
SELECT outbox.publish('d', '{"rolled": "back"}') IS NOT NULL AS d;
ROLLBACK;
SELECT pending FROM pg_temp.status();

-- 3. a cut window: a pass of 4 publishes 4 of the 9, the rest of the window is pending
SELECT outbox._log_pass(4);
SELECT cut FROM outbox._log_latest();
SELECT * FROM pg_temp.status();
SELECT * FROM pg_temp.channels();
-- more events commit meanwhile: the rest of the cut window and the next window together
SELECT count(outbox.publish('b', jsonb_build_object('n', n))) FROM generate_series(2, 3) n;
SELECT * FROM pg_temp.status();
-- the next pass continues the cut window only (5 left of it), the 2 new ones stay pending
SELECT outbox._log_pass(1000);
SELECT cut FROM outbox._log_latest();
SELECT * FROM pg_temp.status();
SELECT outbox._log_pass(1000);
SELECT * FROM pg_temp.status();
SELECT * FROM pg_temp.channels();
SELECT * FROM pg_temp.health();
SELECT outbox.resume();

-- 4. an event being retried (a row of outbox.failures: the failure path's skipped event) is
-- pending until it is published, counted once whether or not it is in the window yet
SELECT outbox.publish('e', '{"n": 1}') AS e1 \gset
INSERT INTO outbox.failures VALUES (:e1, 1, now(), now(), now(), 'boom', 'XX000');
SELECT pending, (SELECT retrying FROM outbox.status) FROM pg_temp.status();
SELECT outbox._log_pass(1000);
-- published, but its failures row is left (by hand here): still pending, as in 1.2
SELECT pending FROM pg_temp.status();
SELECT channel, pending FROM pg_temp.channels() WHERE channel = 'e';
DELETE FROM outbox.failures;
SELECT pending FROM pg_temp.status();

-- 5. channel rights: a tenant sees the figures of its channels only
SELECT outbox.grant_channel('a', 'lmo_tenant', ARRAY['read']);
SELECT outbox.publish('b', '{"n": 4}') IS NOT NULL AS b4;
SELECT outbox.publish('a', '{"n": 9}') IS NOT NULL AS a9;
SET ROLE lmo_tenant;
SELECT * FROM pg_temp.channels();
-- the view's functions, called directly: the tenant's channels only; the log itself is not theirs
SELECT channel, pending FROM outbox._pending_channels() ORDER BY channel;
SELECT channel, last_seq FROM outbox._log_channel_figures() ORDER BY channel;
SELECT pg_temp.err('SELECT count(*) FROM outbox._log_pending()', 'message');
SELECT pg_temp.err('SELECT outbox._pending_summary()', 'message');
RESET ROLE;
SET ROLE lmo_monitor;
SELECT pending, published_total FROM outbox.status;
SELECT count(*) AS checks FROM outbox.health();
RESET ROLE;
SELECT outbox.revoke_channel('a', 'lmo_tenant', ARRAY['read']);
SELECT outbox._log_pass(1000);

-- 6. named consumers: lag from the batches, and a rotation holds the segment of an event a
-- consumer has not acknowledged (pg_outbox.consumer_max_retention, 7 days here)
SELECT outbox.create_consumer('all_c', NULL, 'now');
SELECT outbox.create_consumer('c_only', ARRAY['c'], 'earliest');
SELECT outbox.create_consumer('behind', NULL, '2');
SELECT outbox.publish('a', '{"n": 10}') IS NOT NULL AS a10;
SELECT outbox._log_pass(1000);
SELECT pg_sleep(0.01);
SELECT name, state, acked_pos, lag_events, lag_seconds > 0 AS lagging FROM outbox.consumers ORDER BY name;
SELECT * FROM pg_temp.health();
SELECT outbox.ack('behind', (SELECT outbox.head()));
SELECT count(*) FROM outbox.next('c_only', timeout => '0');
SELECT outbox.ack('c_only', (SELECT max(pos) FROM outbox.replay(0, ARRAY['c'])));
-- the rotations: all_c has not acknowledged the log's events, so the segment stays
SELECT outbox._log_rotate('0');
SELECT outbox.publish('a', '{"n": 11}') IS NOT NULL AS a11;
SELECT outbox._log_pass(1000);
SELECT outbox._log_rotate('0');
SELECT outbox._log_rotate('0');
SELECT purged_pos, cur_seg FROM outbox.log_state;
SELECT outbox.ack('all_c', (SELECT outbox.head()));
SELECT outbox._log_rotate('0');
SELECT purged_pos > (SELECT base_pos FROM outbox.log_state) AS log_purged FROM outbox.log_state;
-- c_only acknowledged its channel's events: nothing of it was removed; it stays active and reads on
SELECT name, state, lost_reason FROM outbox.consumers ORDER BY name;
SELECT pg_temp.err($$SELECT count(*) FROM outbox.next('c_only', timeout => '0')$$, 'message');
SELECT * FROM pg_temp.status();

-- 7. purge() in log mode: the frozen history, then the log's segments that can go (the segment of
-- the latest batch stays: the next pass needs its snapshot)
SELECT outbox.publish('a', '{"n": 12}') IS NOT NULL AS a12;
SELECT outbox._log_pass(1000);
SELECT outbox.publish('a', '{"n": 13}') IS NOT NULL AS a13;
SELECT outbox._log_pass(1000);
SELECT outbox.ack('all_c', outbox.head());
SELECT outbox.ack('behind', outbox.head());
SELECT outbox.ack('c_only', outbox.head());
SELECT outbox.head(), (SELECT purged_pos FROM outbox.log_state) AS log_purged_before;
SELECT outbox.purge('0') AS removed;
SELECT purged_pos FROM outbox.state;
SELECT purged_pos AS log_purged, (SELECT first_pos + n - 1 FROM outbox._log_latest()) = outbox.head() AS latest_kept
  FROM outbox.log_state;
SELECT pg_temp.err('SELECT outbox.purge(NULL)');
SELECT pg_temp.err($$SELECT outbox.purge('-1 day')$$);
SELECT * FROM pg_temp.status();
-- published and last_seq survive the rotation (seqs are gap-free); last_published_at is the
-- newest kept batch's (c's batches are gone, and 1.2 never published on c: NULL)
SELECT channel, published, last_seq, published_at FROM pg_temp.channels();

-- 8. past pg_outbox.consumer_max_retention a rotation marks the consumers it removes events of
-- lost, in its transaction; their next()/ack() raise OB001, status and health() count them
ALTER SYSTEM SET pg_outbox.consumer_max_retention = 0;
SELECT pg_reload_conf();
DO $$ BEGIN
    FOR i IN 1 .. 100 LOOP
        EXIT WHEN current_setting('pg_outbox.consumer_max_retention') = '0';
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT current_setting('pg_outbox.consumer_max_retention');
SELECT outbox.create_consumer('slow', NULL, 'now') = outbox.head() AS slow_at_head;
SELECT outbox.create_consumer('slow_b', ARRAY['b'], 'now') = outbox.head() AS slow_b_at_head;
SELECT outbox.publish('a', '{"n": 14}') IS NOT NULL AS a14;
SELECT outbox._log_pass(1000);
SELECT outbox.ack('all_c', outbox.head());
SELECT outbox.ack('behind', outbox.head());
SELECT outbox.ack('c_only', outbox.head());
SELECT outbox._log_rotate('0');
SELECT outbox.publish('a', '{"n": 15}') IS NOT NULL AS a15;
SELECT outbox._log_pass(1000);
SELECT outbox._log_rotate('0');
SELECT outbox._log_rotate('0');
SELECT outbox._log_rotate('0');
SELECT name, state, lost_reason FROM outbox.consumers ORDER BY name;
SELECT pg_temp.err($$SELECT count(*) FROM outbox.next('slow', timeout => '0')$$);
SELECT pg_temp.err($$SELECT outbox.ack('slow', 1)$$, 'message');
-- slow_b (channel b) had nothing in the removed segment: active, and it reads on from the horizon
SELECT pg_temp.err($$SELECT count(*) FROM outbox.next('slow_b', timeout => '0')$$);
SELECT consumers, lost FROM pg_temp.status();
SELECT * FROM pg_temp.health() WHERE "check" = 'lost_consumers';
ALTER SYSTEM RESET pg_outbox.consumer_max_retention;
SELECT pg_reload_conf();

\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE pg_outbox_lmo;
DROP ROLE lmo_tenant;
DROP ROLE lmo_monitor;
