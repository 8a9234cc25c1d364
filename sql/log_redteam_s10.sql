-- Red team of session 10's log-mode changes (branch sw-red). Each case failed on merge10 5088969:
-- 1. the remembered log mode (src/storage_mode.cpp): a transaction that published into the log,
--    then dropped and created the extension again (1.2 mode), kept the transaction's cached mode:
--    its next publish() went into the log of a database in 1.2 mode, where nothing drains it and
--    the switch then refuses ("the log is not empty") -- the event was lost;
-- 2. outbox.discard() of a pending event in log mode, twice before a pass: the second one failed
--    with a bare unique violation of outbox.discarded (1.2: no_data_found with its hint);
-- 3. outbox.status, outbox.channel_stats and health() counted a withheld row (a discarded or
--    dead-lettered event whose window no batch has closed) as pending: on a quiet database it
--    stayed pending forever and health()'s pending_age went critical; a failed row copied for its
--    retry was counted twice (the row and its copy);
-- 4. status's pending figure read every row of the log: the range of rows the latest batch does
--    not see was planned as a sequential scan (the segments are never analyzed), and each event
--    being retried was looked up by id alone (the BRIN index is never summarized).
SET client_min_messages = warning;
DROP DATABASE IF EXISTS pg_outbox_red10;
CREATE DATABASE pg_outbox_red10;
RESET client_min_messages;
\c pg_outbox_red10
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
CREATE PROCEDURE fresh() LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL client_min_messages = error; -- DROP EXTENSION warns of the pending events it drops
    DROP EXTENSION IF EXISTS pg_outbox CASCADE;
    CREATE EXTENSION pg_outbox;
END $$;

-- 1. publish() in log mode, DROP + CREATE EXTENSION (1.2 mode) in the same transaction, publish()
-- again: the second event must go into outbox.pending, where the 1.2 drain publishes it
CALL fresh();
SELECT events_moved FROM outbox.use_log_storage();
BEGIN;
SELECT outbox.publish('a', jsonb_build_object('n', 1)) > 0 AS published;
CALL fresh();
SELECT outbox._log_active() AS log_mode;
SELECT outbox.publish('a', jsonb_build_object('n', 2)) > 0 AS published;
COMMIT;
SELECT outbox.publish('a', jsonb_build_object('n', 3)) > 0 AS published;
SELECT (SELECT count(*) FROM outbox.log) AS in_log, (SELECT count(*) FROM outbox.pending) AS in_pending;
SELECT outbox.drain() AS published;
SELECT payload->>'n' AS n FROM outbox.history ORDER BY pos;
SELECT pg_temp.err('SELECT events_moved FROM outbox.use_log_storage()', 'message');

-- 2. discard() twice before a pass: the second says the event is neither pending nor a dead letter
CALL fresh();
SELECT events_moved FROM outbox.use_log_storage();
SELECT outbox.publish('a', jsonb_build_object('n', 1)) AS e1 \gset
SELECT outbox.drain() AS published;
SELECT outbox.publish('a', jsonb_build_object('n', 2)) AS e2 \gset
SELECT outbox.discard(:e2, 'first') ~ 'discarded event' AS discarded;
SELECT pg_temp.err(format('SELECT outbox.discard(%s, %L)', :e2, 'again'), 'hint');
SELECT count(*) AS recorded FROM outbox.discarded;

-- 3. ... and the discarded event, alone in its window (no batch closes it), is not pending
SELECT outbox.drain() AS published;
SELECT count(*) AS withheld FROM outbox.withheld;
SELECT pending FROM outbox.status;
SELECT pending FROM outbox.channel_stats WHERE channel = 'a';
SELECT value AS pending_events FROM outbox.health() WHERE "check" = 'pending_events';
-- a dead letter alone in its window: one dead letter, nothing pending
SET pg_outbox.retry_delay = 0;
SET pg_outbox.max_attempts = 1;
SELECT outbox.publish('a', jsonb_build_object('n', 3)) AS e3 \gset
SELECT set_config('pg_outbox._fail_event_ids', :'e3', false) IS NOT NULL AS armed;
SET client_min_messages = error; -- the dead letter's WARNING names the event's id
SELECT outbox.drain() AS published;
RESET client_min_messages;
SELECT count(*) AS withheld FROM outbox.withheld;
SELECT pending, dead_letters FROM outbox.status;
-- a failed row copied for its retry (withheld while its window is open) and its copy: one event
RESET pg_outbox._fail_event_ids;
SET pg_outbox.max_attempts = 5;
SET pg_outbox.retry_delay = '5min';
SELECT outbox.publish('a', jsonb_build_object('n', 4)) AS e4 \gset
SELECT set_config('pg_outbox._fail_event_ids', :'e4', false) IS NOT NULL AS armed;
SELECT outbox.drain() AS published;
UPDATE outbox.failures SET next_attempt_at = now(); -- due
SELECT outbox.drain() AS published; -- copies it: the copy waits for a later window
SELECT copied FROM outbox.failures;
SELECT count(*) AS rows_of_the_event FROM outbox._log_pending() l WHERE l.id = :e4;
SELECT pending, retrying FROM outbox.status;
RESET pg_outbox._fail_event_ids;
SELECT outbox.drain() AS published;
SELECT pending, retrying, dead_letters FROM outbox.status;
SELECT payload->>'n' AS n FROM outbox.replay(0, NULL, 100) ORDER BY pos;

-- 4. the pending figure with an event being retried in a log of 20,000 published rows: a few
-- blocks of the segment are read (its btree), not every row
CALL fresh();
SELECT events_moved FROM outbox.use_log_storage();
SELECT count(outbox.publish('a', jsonb_build_object('n', g))) AS published FROM generate_series(1, 20000) g;
SELECT outbox.drain(10000) + outbox.drain(10000) AS published;
SELECT outbox.publish('a', jsonb_build_object('n', 0)) AS e5 \gset
SELECT set_config('pg_outbox._fail_event_ids', :'e5', false) IS NOT NULL AS armed;
SELECT outbox.publish('a', jsonb_build_object('n', 1)) > 0 AS published;
SELECT outbox.drain() AS published;
RESET pg_outbox._fail_event_ids;
SELECT pg_relation_size('outbox.log_0') / current_setting('block_size')::int > 100 AS segment_of_over_100_blocks;
BEGIN;
SELECT pg_stat_get_xact_blocks_fetched('outbox.log_0'::regclass) AS blocks_before \gset
SELECT pending, retrying FROM outbox.status;
SELECT pg_stat_get_xact_blocks_fetched('outbox.log_0'::regclass) - :blocks_before < 20 AS few_blocks_read;
COMMIT;

\c contrib_regression
DROP DATABASE pg_outbox_red10;
