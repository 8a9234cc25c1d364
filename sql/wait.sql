-- outbox.wait(): what replay() returns, at once when there is something, else after waiting up
-- to timeout; the envelope column of replay(), replay_channel() and wait(). (Waking by a drain's
-- commit is in test/isolation/specs/wait_wakeup.spec; many waiters, terminate: test/t/120.)
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
DROP ROLE IF EXISTS regress_wait_reader, regress_wait_nobody;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- nothing published yet: an empty set at the timeout (0: only check)
SELECT count(*) FROM outbox.wait(0, timeout => '0');
SELECT count(*) AS n, clock_timestamp() - statement_timestamp() >= interval '200 ms' AS waited
  FROM outbox.wait(0, timeout => '200ms');

SELECT outbox.publish('orders', '{"id": 1}', key => 'o-1', type => 'created') > 0 AS ok;
SELECT outbox.publish('audit', NULL) > 0 AS ok;
SELECT outbox.publish('orders', '[1, "two", null]', type => 'list') > 0 AS ok;
SELECT outbox.publish('orders', '"just a string"', key => 'o-3') > 0 AS ok;
SELECT outbox.drain();

-- the envelope: the NOTIFY envelope's fields, complete; key and type only when set, payload
-- always (JSON null when NULL); the same in replay(), replay_channel() and wait()
SELECT pos, envelope FROM outbox.replay(0);
SELECT pos, envelope FROM outbox.replay_channel('orders', 0);
SELECT envelope->'payload' = coalesce(payload, 'null') AS payload_same, envelope->>'id' = id::text AS id_same,
       envelope->>'seq' = seq::text AS seq_same, envelope->>'key' IS NOT DISTINCT FROM key AS key_same,
       envelope->>'type' IS NOT DISTINCT FROM type AS type_same, envelope ? 'channel' AS has_channel
  FROM outbox.replay(0);
-- a payload far above NOTIFY's 8000 bytes: the NOTIFY envelope is truncated, the column never
SELECT outbox.publish('big', jsonb_build_object('blob', repeat('x', 20000))) > 0 AS ok;
SELECT outbox.drain();
SELECT pos, length(envelope->'payload'->>'blob') AS blob_bytes, envelope ? 'truncated' AS truncated
  FROM outbox.replay(4);

-- wait() returns what replay() returns, at once, columns and rows alike
SELECT (SELECT count(*) FROM outbox.wait(0)) AS waited,
       (SELECT count(*) FROM (SELECT * FROM outbox.wait(0) EXCEPT SELECT * FROM outbox.replay(0)) d) AS differ;
SELECT pos, channel, key, type, payload FROM outbox.wait(1, ARRAY['orders'], '10s', 1);
SELECT pos FROM outbox.wait(0, max_events => 2);
SELECT pos, channel FROM outbox.wait(2, ARRAY['audit', 'big']);
SELECT count(*) AS n, clock_timestamp() - statement_timestamp() >= interval '100 ms' AS waited
  FROM outbox.wait(5, timeout => '100ms');
-- a filtered wait with nothing of its channels after the position: empty at the timeout
SELECT count(*) AS n FROM outbox.wait(2, ARRAY['audit'], '100ms');

-- in a READ COMMITTED transaction block it works; REPEATABLE READ and SERIALIZABLE are refused
BEGIN;
SELECT count(*) FROM outbox.wait(3, timeout => '0');
COMMIT;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, timeout => '0')$$);
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0)$$);
ROLLBACK;

-- bad input
SELECT pg_temp.err($$SELECT * FROM outbox.wait(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(-1)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, timeout => NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, timeout => '-1s')$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, timeout => '25 hours')$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, timeout => '1 mon')$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, timeout => '1 day -1 hour')$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, max_events => 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, max_events => NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, ARRAY[]::text[])$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, ARRAY['orders', NULL])$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, ARRAY[''])$$);
SELECT pg_temp.err(format('SELECT * FROM outbox.wait(0, ARRAY[%L])', repeat('c', 64)));
-- a position ahead of the outbox (OB002), and one before the retention horizon (OB001)
SELECT pg_temp.err($$SELECT * FROM outbox.wait(99)$$);
SELECT outbox.purge('0');
SELECT pg_temp.err($$SELECT * FROM outbox.wait(1)$$);
SELECT count(*) FROM outbox.wait(5, timeout => '0');

-- cancelled by statement_timeout
SET statement_timeout = '300ms';
SELECT * FROM outbox.wait(5, timeout => '20s');
RESET statement_timeout;

-- privileges: wait() is granted to outbox_reader, and it is built on replay(): a role that may
-- execute wait() but not replay() still gets nothing
CREATE ROLE regress_wait_reader; GRANT outbox_reader TO regress_wait_reader;
CREATE ROLE regress_wait_nobody;
SET ROLE regress_wait_reader;
SELECT count(*) FROM outbox.wait(5, timeout => '0');
RESET ROLE;
SET ROLE regress_wait_nobody;
SELECT pg_temp.err($$SELECT * FROM outbox.wait(4, timeout => '0')$$);
RESET ROLE;
GRANT USAGE ON SCHEMA outbox TO regress_wait_nobody;
GRANT EXECUTE ON FUNCTION outbox.wait(bigint, text[], interval, integer) TO regress_wait_nobody;
SET ROLE regress_wait_nobody;
SELECT pg_temp.err($$SELECT * FROM outbox.wait(5, timeout => '0')$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION outbox.wait(bigint, text[], interval, integer) FROM regress_wait_nobody;
REVOKE USAGE ON SCHEMA outbox FROM regress_wait_nobody;
DROP ROLE regress_wait_reader, regress_wait_nobody;
