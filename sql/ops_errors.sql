-- Clear errors instead of surprises (issue 12): settings checked when set, limits of every
-- argument, read-only transactions, user-sized input that is cancellable, DROP EXTENSION with
-- events pending.
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- ---- settings: pg_outbox.databases is checked when it is set ----
-- (ALTER SYSTEM runs the check; the server's postgresql.conf is not touched by a refused value)
ALTER SYSTEM SET pg_outbox.databases = '"unterminated';
ALTER SYSTEM SET pg_outbox.databases = 'a,,b';
ALTER SYSTEM SET pg_outbox.databases = ',a';
ALTER SYSTEM SET pg_outbox.databases = 'a,';
-- good values are accepted
ALTER SYSTEM SET pg_outbox.databases = 'a, "b,c", d';
ALTER SYSTEM SET pg_outbox.databases = '*';
ALTER SYSTEM SET pg_outbox.databases = '';
ALTER SYSTEM RESET pg_outbox.databases;
-- the numeric settings have ranges
ALTER SYSTEM SET pg_outbox.batch_size = 0;
ALTER SYSTEM SET pg_outbox.batch_size = 100001;
ALTER SYSTEM SET pg_outbox.max_queue_usage = 1.5;
ALTER SYSTEM SET pg_outbox.idle_interval = '1ms';
ALTER SYSTEM SET pg_outbox.retention = '0';
-- and an unknown pg_outbox.* name is refused (reserved prefix)
SET pg_outbox.no_such_setting = 1;

-- ---- limits of every numeric argument: 22023, never an internal error ----
SELECT pg_temp.err($$SELECT outbox.drain(134217728)$$);
SELECT pg_temp.err($$SELECT outbox.drain(2147483647)$$);
SELECT pg_temp.err($$SELECT outbox.drain(0)$$);
SELECT outbox.drain(1000000) >= 0 AS the_limit_itself_works;
SELECT pg_temp.err($$SELECT outbox.purge('1000000 years')$$);
SELECT pg_temp.err($$SELECT outbox.purge('-1000000 years')$$);
SELECT pg_temp.err($$SELECT outbox.purge('178000000 years')$$);
SELECT pg_temp.err($$SELECT outbox.purge('-1 second')$$);
SELECT outbox.purge('999 years') AS purge_within_the_limit;
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay(-1)$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay(0, NULL, 0)$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay_channel('c', -1)$$);
SELECT count(*) AS replay_with_the_largest_batch FROM outbox.replay(0, NULL, 2147483647);

-- ---- user-sized input: linear or n log n, cancellable ----
CREATE TABLE wide (id int PRIMARY KEY, a int, b int);
-- 120,000 column names are refused at once (a table has at most 1600 columns)
SET statement_timeout = '1s';
SELECT pg_temp.err(format('SELECT outbox.attach(%L, key_columns => %L)', 'wide',
                          (SELECT array_agg('c' || g) FROM generate_series(1, 120000) g)));
SELECT pg_temp.err(format('SELECT outbox.attach(%L, include_columns => %L)', 'wide',
                          (SELECT array_agg('c' || g) FROM generate_series(1, 120000) g)));
-- 1600 distinct names: sorted, not compared pairwise; the first unknown one is named
SELECT pg_temp.err(format('SELECT outbox.attach(%L, include_columns => %L)', 'wide',
                          (SELECT array_agg('c' || g) FROM generate_series(1, 1600) g)));
-- a duplicate anywhere in a long list is found
SELECT pg_temp.err(format('SELECT outbox.attach(%L, include_columns => %L)', 'wide',
                          (SELECT array_agg('c' || g) FROM generate_series(1, 1599) g) || '{c777}'::text[]));
SELECT pg_temp.err($$SELECT outbox.attach('wide', include_columns => '{a,b,a}')$$);
RESET statement_timeout;

-- ---- read-only transactions: every writing function fails with 25006 and says what to do ----
SELECT outbox.attach('wide') IS NOT NULL AS attached;
SELECT outbox.publish('c', '{"n": 1}') > 0 AS published;
SET default_transaction_read_only = on;
SELECT pg_temp.err($$SELECT outbox.publish('c', '{}')$$);
SELECT pg_temp.err($$SELECT outbox.drain()$$);
SELECT pg_temp.err($$SELECT outbox.purge('1 day')$$);
SELECT pg_temp.err($$SELECT outbox.pause()$$);
SELECT pg_temp.err($$SELECT outbox.resume()$$);
SELECT pg_temp.err($$SELECT outbox.attach('wide')$$);
SELECT pg_temp.err($$SELECT outbox.detach('wide')$$);
SELECT pg_temp.err($$SELECT outbox.set_target('c', 'notify')$$);
SELECT pg_temp.err($$SELECT outbox.reset_target('c')$$);
SELECT pg_temp.err($$SELECT outbox.retry(1)$$) LIKE '25006:%' AS retry_is_25006;
SELECT pg_temp.err($$INSERT INTO wide VALUES (1)$$);
-- NOTIFY is allowed in a read-only transaction (not on a standby: test/t/112_standby.pl)
SELECT pg_temp.err($$SELECT outbox.notify('c', 'ro')$$) AS notify_in_read_only;
-- readers work
SELECT count(*) AS replay_works FROM outbox.replay(0);
SELECT outbox.head() >= 0 AS head_works;
SELECT pending AS status_works FROM outbox.status;
RESET default_transaction_read_only;
BEGIN READ ONLY;
SELECT pg_temp.err($$SELECT outbox.publish('c', '{}')$$);
ROLLBACK;
-- nothing was written meanwhile
SELECT count(*) AS still_one_pending FROM outbox.pending;

-- ---- DROP EXTENSION with events pending: a WARNING says how many are discarded ----
SELECT outbox.publish('c', jsonb_build_object('n', g)) > 0 AS ok FROM generate_series(2, 5) g;
SET client_min_messages = warning;
BEGIN;
DROP EXTENSION pg_outbox CASCADE;
ROLLBACK;
RESET client_min_messages;
SELECT count(*) AS pending_kept_after_rollback FROM outbox.pending;
SELECT outbox.drain() AS drained;
-- nothing pending: no warning
SET client_min_messages = warning;
DROP EXTENSION pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
DROP TABLE wide;
