-- Observability (issue #19): the per-channel figures the drain keeps in outbox.channels (both
-- of its statements: one channel per batch, several), outbox.channel_stats and channel rights,
-- outbox.health() row by row, its thresholds (pg_outbox.health_*) and their checks, access.
-- Nothing timing-dependent is printed: ages and times are compared, not shown.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
DROP ROLE IF EXISTS regress_obs_tenant, regress_obs_reader, regress_obs_nobody, regress_obs_pub;
RESET client_min_messages;

\set err_style detail_ok
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
-- a function that tells what it saw (for the security barrier)
CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$;
GRANT EXECUTE ON FUNCTION pg_temp.leak(text) TO PUBLIC;

-- ---- the figures of a fresh channel, kept by the multi-channel statement ----
SELECT outbox.publish('obs_a', '{"n": 1}'), outbox.publish('obs_a', '{"n": 2}'), outbox.publish('obs_b');
SELECT channel, published, pending, oldest_pending_age > interval '0' OR oldest_pending_age = interval '0' AS has_age,
       last_seq, last_published_at IS NULL AS never_published, dead_letters, target
  FROM outbox.channel_stats ORDER BY channel;
SELECT outbox.drain();
SELECT channel, published, published_last_minute, pending, oldest_pending_age, last_seq,
       last_published_at = (SELECT max(h.published_at) FROM outbox.history h WHERE h.channel = s.channel) AS last_at_ok,
       dead_letters, target
  FROM outbox.channel_stats s ORDER BY channel;
SELECT channel, published, minute_count, prev_minute_count,
       minute_start = date_bin('1 minute', last_published_at, '2000-01-01 00:00+00') AS minute_start_ok
  FROM outbox.channels ORDER BY channel;

-- ---- the one-channel statement; the minute buckets roll over ----
-- the current bucket is from the minute before: it becomes the previous one
UPDATE outbox.channels SET minute_start = date_bin('1 minute', now(), '2000-01-01 00:00+00') - interval '1 minute',
                           minute_count = 10, prev_minute_count = 99 WHERE channel = 'obs_a';
BEGIN;
SELECT outbox.publish('obs_a') > 0 AS published, outbox.publish('obs_a') > 0 AS published;
SELECT outbox.drain();
SELECT channel, published, last_seq, minute_count, prev_minute_count,
       minute_start = date_bin('1 minute', now(), '2000-01-01 00:00+00') AS this_minute
  FROM outbox.channels WHERE channel = 'obs_a';
-- 2 this minute, plus the part of the 10 of the minute before still inside the last 60 s
SELECT published_last_minute BETWEEN 2 AND 12 AS estimate_in_range FROM outbox.channel_stats WHERE channel = 'obs_a';
COMMIT;
-- a bucket older than a minute counts nothing
UPDATE outbox.channels SET minute_start = date_bin('1 minute', now(), '2000-01-01 00:00+00') - interval '5 minutes',
                           minute_count = 10, prev_minute_count = 99 WHERE channel = 'obs_b';
SELECT published_last_minute FROM outbox.channel_stats WHERE channel = 'obs_b';
BEGIN;
SELECT outbox.publish('obs_b') > 0 AS published;
SELECT outbox.drain();
SELECT channel, published, last_seq, minute_count, prev_minute_count FROM outbox.channels WHERE channel = 'obs_b';
SELECT published_last_minute FROM outbox.channel_stats WHERE channel = 'obs_b';
COMMIT;
-- the same minute: the bucket adds up
BEGIN;
UPDATE outbox.channels SET minute_start = date_bin('1 minute', now(), '2000-01-01 00:00+00'),
                           minute_count = 7, prev_minute_count = 3 WHERE channel = 'obs_b';
SELECT outbox.publish('obs_b') > 0 AS published;
SELECT outbox.drain();
SELECT channel, published, minute_count, prev_minute_count FROM outbox.channels WHERE channel = 'obs_b';
ROLLBACK;
-- an aborted drain counts nothing
BEGIN;
SELECT outbox.publish('obs_b') > 0 AS published;
SELECT outbox.drain();
ROLLBACK;
SELECT channel, published, last_seq FROM outbox.channels WHERE channel = 'obs_b';

-- ---- pending, dead letters, targets ----
SELECT outbox.publish('obs_c') > 0 AS published, outbox.publish('obs_c') > 0 AS published;
INSERT INTO outbox.dead_letter (id, channel, created_at, failed_at, error, sqlstate)
VALUES (100001, 'obs_c', now(), now(), 'test', 'XX000'), (100002, 'obs_dead', now(), now(), 'test', 'XX000');
SELECT outbox.set_target('obs_b', 'wal');
SELECT channel, published, pending, oldest_pending_age IS NOT NULL AS has_age, last_seq,
       last_published_at IS NOT NULL AS has_last_at, dead_letters, target
  FROM outbox.channel_stats ORDER BY channel;
SELECT outbox.set_target('*', 'both');
SELECT channel, target FROM outbox.channel_stats ORDER BY channel;
SELECT outbox.reset_target('*'), outbox.reset_target('obs_b');

-- ---- a plan that would be parallel (a large backlog) stays serial: the rights test cannot run
-- in parallel mode ----
BEGIN;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
SELECT count(*) AS channels, sum(pending) AS pending FROM outbox.channel_stats;
SELECT count(*) AS replayed FROM outbox.replay(0);
ROLLBACK;

-- ---- channel rights: a tenant sees the channels it may read ----
CREATE ROLE regress_obs_tenant IN ROLE outbox_consumer;
CREATE ROLE regress_obs_reader IN ROLE outbox_reader;
CREATE ROLE regress_obs_nobody;
CREATE ROLE regress_obs_pub IN ROLE outbox_publisher;
GRANT USAGE ON SCHEMA outbox TO regress_obs_nobody;
-- while no read right exists, every channel
SET ROLE regress_obs_tenant;
SELECT string_agg(channel, ',' ORDER BY channel) AS tenant_sees FROM outbox.channel_stats;
RESET ROLE;
SET client_min_messages = error;
SELECT outbox.grant_channel('obs\_a', 'regress_obs_tenant', '{read}');
RESET client_min_messages;
SET ROLE regress_obs_tenant;
SELECT string_agg(channel, ',' ORDER BY channel) AS tenant_sees FROM outbox.channel_stats;
-- the tenant cannot widen what it sees with a leaky function: the view is a security barrier
SELECT count(*) FROM outbox.channel_stats WHERE pg_temp.leak(channel);
SELECT pg_temp.err('SELECT * FROM outbox.health()') AS tenant_health;
RESET ROLE;
SET ROLE regress_obs_reader;
SELECT string_agg(channel, ',' ORDER BY channel) AS reader_sees FROM outbox.channel_stats;
SELECT count(*) AS reader_health_rows FROM outbox.health();
RESET ROLE;
SET ROLE regress_obs_pub;
SELECT pg_temp.err('SELECT * FROM outbox.channel_stats') AS publisher_stats;
RESET ROLE;
SET ROLE regress_obs_nobody;
SELECT pg_temp.err('SELECT * FROM outbox.channel_stats') AS nobody_stats;
SELECT pg_temp.err('SELECT * FROM outbox.health()') AS nobody_health;
SELECT pg_temp.err('SELECT * FROM outbox._health_threshold(''pending'')') AS nobody_threshold;
SELECT pg_temp.err('SELECT * FROM outbox._waiting_databases()') AS nobody_waiting;
RESET ROLE;
SET client_min_messages = error;
SELECT outbox.revoke_channel('obs\_a', 'regress_obs_tenant', '{read}');
RESET client_min_messages;

-- ---- outbox.health(): every check, with its default thresholds ----
-- (the SQL tests run no drain worker: pg_outbox.databases = '')
SELECT "check", status, CASE WHEN "check" = 'pending_age' THEN value > 0 ELSE NULL END AS age_positive,
       CASE WHEN "check" = 'pending_age' THEN NULL ELSE value END AS value, threshold, hint
  FROM outbox.health();
-- thresholds: warning at or above the first value, critical at or above the second
SET pg_outbox.health_pending = '2,3';
SET pg_outbox.health_dead_letters = '1,2';
SET pg_outbox.health_pending_age = '0,1h';
SELECT "check", status, threshold FROM outbox.health() WHERE "check" IN ('pending_events', 'dead_letters', 'pending_age');
SET pg_outbox.health_pending = '1,2';
SET pg_outbox.health_dead_letter_window = '1d';
UPDATE outbox.dead_letter SET failed_at = now() - interval '2 hours' WHERE id = 100002;
SELECT "check", status, value, threshold FROM outbox.health() WHERE "check" IN ('pending_events', 'dead_letters');
SET pg_outbox.health_dead_letter_window = '1h';
SELECT "check", status, value, threshold FROM outbox.health() WHERE "check" = 'dead_letters';
RESET pg_outbox.health_pending;
RESET pg_outbox.health_dead_letters;
RESET pg_outbox.health_pending_age;
RESET pg_outbox.health_dead_letter_window;

-- consumers: a lagging one, a lost one
SELECT outbox.create_consumer('obs_consumer', NULL, 'earliest') IS NOT NULL AS created;
SET pg_outbox.health_consumer_lag = '0,1h';
SELECT "check", status, value >= 0 AS has_value, threshold, hint FROM outbox.health() WHERE "check" = 'consumer_lag';
UPDATE outbox.history_frozen SET published_at = now() - interval '2 hours';
SELECT "check", status, value >= 7200 AS two_hours, threshold, hint FROM outbox.health() WHERE "check" = 'consumer_lag';
SELECT outbox.ack('obs_consumer', (SELECT max(pos) FROM outbox.history)) IS NOT NULL AS acked;
SELECT "check", status, value, threshold FROM outbox.health() WHERE "check" = 'consumer_lag';
RESET pg_outbox.health_consumer_lag;
UPDATE outbox.consumer SET state = 'lost', lost_at = now(), lost_reason = 'test' WHERE name = 'obs_consumer';
SELECT "check", status, value, threshold, hint FROM outbox.health() WHERE "check" IN ('consumer_lag', 'lost_consumers');
SELECT outbox.drop_consumer('obs_consumer') IS NOT NULL AS dropped;

-- a logical slot of this database that retains WAL
SELECT 'init' FROM pg_create_logical_replication_slot('regress_obs_slot', 'test_decoding');
SET pg_outbox.health_wal_retained = '0,1TB';
SELECT "check", status, value >= 0 AS has_value, threshold, hint FROM outbox.health() WHERE "check" = 'wal_retained';
RESET pg_outbox.health_wal_retained;
SELECT pg_drop_replication_slot('regress_obs_slot');

-- pause: the worker check says so
SELECT outbox.pause() LIKE 'paused%' AS paused;
SELECT "check", status, hint FROM outbox.health() WHERE "check" = 'worker';
SELECT outbox.resume() LIKE 'resumed%' AS resumed;

-- ---- the thresholds' checks ----
SELECT pg_temp.err($$SET pg_outbox.health_pending = '5,1'$$);
SELECT pg_temp.err($$SET pg_outbox.health_pending = '1'$$);
SELECT pg_temp.err($$SET pg_outbox.health_pending = '1,2,3'$$);
SELECT pg_temp.err($$SET pg_outbox.health_pending = '-1,2'$$);
SELECT pg_temp.err($$SET pg_outbox.health_pending = 'x,2'$$);
SELECT pg_temp.err($$SET pg_outbox.health_pending = 'NaN,2'$$);
SELECT pg_temp.err($$SET pg_outbox.health_pending = ''$$);
SELECT pg_temp.err($$SET pg_outbox.health_queue_usage = '0.5,2'$$);
SELECT pg_temp.err($$SET pg_outbox.health_pending_age = '1 fortnight,2'$$);
SELECT left(pg_temp.err($$SET pg_outbox.health_dead_letter_window = '0'$$), 5) AS window_zero; -- (16+ words it otherwise)
SELECT pg_temp.err($$SELECT * FROM outbox._health_threshold('nope')$$);
SELECT pg_temp.err($$SELECT * FROM outbox._health_threshold(NULL)$$);
-- units: the pairs health() compares are in seconds and bytes
SET pg_outbox.health_pending_age = ' 90s , 2h ';
SET pg_outbox.health_wal_retained = '512MB,2GB';
SET pg_outbox.health_consumer_lag = '10,20';
SELECT 'pending_age' AS name, * FROM outbox._health_threshold('pending_age')
UNION ALL SELECT 'wal_retained', * FROM outbox._health_threshold('wal_retained')
UNION ALL SELECT 'consumer_lag', * FROM outbox._health_threshold('consumer_lag')
UNION ALL SELECT 'queue_usage', * FROM outbox._health_threshold('queue_usage');
SHOW pg_outbox.health_pending_age;
RESET pg_outbox.health_pending_age;
RESET pg_outbox.health_wal_retained;
RESET pg_outbox.health_consumer_lag;

-- clean up
DELETE FROM outbox.pending;
DROP EXTENSION pg_outbox;
DROP ROLE regress_obs_tenant, regress_obs_reader, regress_obs_nobody, regress_obs_pub;
