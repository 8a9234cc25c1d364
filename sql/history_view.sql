-- outbox.history as a view (issue #15, src/sql/67_history_view.sql): the 1.2 table is now
-- outbox.history_frozen; the view shows its rows and the log's published events with the pos, seq,
-- id, channel, key, type, payload and times outbox.replay() returns. In 1.2 mode the log part is
-- empty and WHERE pos = N reaches the segments' primary keys; after the switch the frozen 1.2 rows
-- and the log's rows show together; 1.2 retention, purge() and rotations of the log remove rows
-- from the view as from replay; only the roles that could read the 1.2 table may read the view.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_hv;
CREATE DATABASE pg_outbox_hv;
DROP ROLE IF EXISTS hv_nobody;
DROP ROLE IF EXISTS hv_reader;
DROP ROLE IF EXISTS hv_tenant;
CREATE ROLE hv_nobody;
CREATE ROLE hv_reader IN ROLE outbox_reader;
CREATE ROLE hv_tenant IN ROLE outbox_consumer;
RESET client_min_messages;
\c pg_outbox_hv
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;
-- hv_nobody may look into the schema (as a publisher or any outbox role may): what refuses it is
-- the view's own privilege
GRANT USAGE ON SCHEMA outbox TO hv_nobody;

\getenv abs_srcdir PG_ABS_SRCDIR
\set err_style message
\i :abs_srcdir/sql/include/err.sql
\i :abs_srcdir/sql/include/wait_event.sql

-- the view has exactly the columns and types of the 1.2 table, now outbox.history_frozen
SELECT c.relname, c.relkind, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
 WHERE c.oid IN ('outbox.history'::regclass, 'outbox.history_frozen'::regclass)
 GROUP BY c.relname, c.relkind ORDER BY c.relname;
SELECT inhrelid::regclass, inhparent::regclass FROM pg_inherits WHERE inhparent = 'outbox.history_frozen'::regclass
 ORDER BY 1::text;

-- the rows of the view that differ from outbox.replay() after a position (either way), and
-- the number of rows; replay's columns minus epoch and envelope
CREATE FUNCTION pg_temp.compare(after bigint, OUT differ bigint, OUT rows bigint) LANGUAGE sql AS $$
    WITH v AS (SELECT pos, seq, id, channel, key, type, payload, created_at, published_at
                 FROM outbox.history),
         r AS (SELECT pos, seq, id, channel, key, type, payload, created_at, published_at
                 FROM outbox.replay(after, max_events => 100000))
    SELECT (SELECT count(*) FROM ((TABLE v EXCEPT ALL TABLE r) UNION ALL (TABLE r EXCEPT ALL TABLE v)) d),
           (SELECT count(*) FROM v) $$;
CREATE FUNCTION pg_temp.rows() RETURNS TABLE (pos bigint, seq bigint, channel text, key text, payload jsonb)
    LANGUAGE sql AS $$ SELECT h.pos, h.seq, h.channel, h.key, h.payload FROM outbox.history h ORDER BY h.pos $$;

-- 1. 1.2 mode: the drain writes the history; the view shows it, the log part is empty
SELECT count(outbox.publish(ch, jsonb_build_object('n', n), 'k' || n)) FROM (VALUES ('a', 1), ('b', 1), ('a', 2)) v(ch, n);
SELECT outbox.drain();
SELECT * FROM pg_temp.rows();
SELECT * FROM pg_temp.compare(0);
SELECT count(*) AS log_part FROM outbox._history_log();
-- WHERE pos = N reaches each segment's primary key (the parent is always empty; the log part is
-- one call that returns nothing in 1.2 mode)
EXPLAIN (COSTS OFF) SELECT * FROM outbox.history WHERE pos = 2;
SELECT pos, seq, channel FROM outbox.history WHERE pos = 2;

-- 2. the switch: the frozen rows stay, the log's events follow them with positions and seqs
-- continued (one event pending at the switch moves into the log)
SELECT outbox.publish('b', '{"n": 2}', 'k2') IS NOT NULL AS b2;
SELECT events_moved, base_pos FROM outbox.use_log_storage();
SELECT * FROM pg_temp.rows();
SELECT count(outbox.publish(ch, jsonb_build_object('n', n), 'k' || n)) FROM (VALUES ('a', 3), ('c', 1)) v(ch, n);
SELECT outbox._log_pass(1000);
SELECT count(outbox.publish(ch, jsonb_build_object('n', n), 'k' || n)) FROM (VALUES ('b', 3), ('a', 4)) v(ch, n);
SELECT outbox._log_pass(1000);
SELECT * FROM pg_temp.rows();
SELECT * FROM pg_temp.compare(0);
-- the log's rows come from the log, the frozen ones from the table
SELECT (SELECT count(*) FROM outbox.history_frozen) AS frozen, (SELECT count(*) FROM outbox._history_log()) AS log;
SELECT pos, seq, channel FROM outbox.history WHERE pos = 6;
SELECT (outbox.event(id)).pos AS event_pos, (outbox.event(id)).seq AS event_seq FROM outbox.history WHERE pos = 6;
-- an event not yet published is not in the view
SELECT outbox.publish('c', '{"n": 2}', 'k2') IS NOT NULL AS c2;
SELECT count(*) AS rows, max(pos) AS last FROM outbox.history;

-- 3. retention: purge() removes the frozen history and rotates out the log's old segments (the
-- segment of the latest batch stays); the view loses the same rows as replay
SELECT outbox._log_pass(1000);
SELECT count(outbox.publish('a', jsonb_build_object('n', n))) FROM generate_series(5, 6) n;
SELECT outbox._log_pass(1000);
SELECT outbox.purge('0') > 0 AS removed;
SELECT (SELECT purged_pos FROM outbox.state) AS purged_1_2, (SELECT purged_pos FROM outbox.log_state) AS purged_log;
SELECT * FROM pg_temp.rows();
SELECT * FROM pg_temp.compare(greatest((SELECT purged_pos FROM outbox.state), (SELECT purged_pos FROM outbox.log_state)));
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(0)');
-- rotations of the log alone, as the worker runs them
SELECT outbox.publish('c', '{"n": 3}') IS NOT NULL AS c3;
SELECT outbox._log_pass(1000);
SELECT outbox._log_rotate('0');
SELECT outbox.publish('c', '{"n": 4}') IS NOT NULL AS c4;
SELECT outbox._log_pass(1000);
SELECT outbox._log_rotate('0');
SELECT purged_pos FROM outbox.log_state;
SELECT * FROM pg_temp.rows();
SELECT * FROM pg_temp.compare((SELECT purged_pos FROM outbox.log_state));

-- 4. rights: as the 1.2 table, readable by outbox_reader (and outbox_admin), by nobody else, not
-- even a consumer with channel rights (the view is not filtered); nor its function
SET ROLE hv_reader;
SELECT count(*) AS reader_rows FROM outbox.history;
SELECT count(*) AS reader_debezium FROM outbox.debezium_events;
SET ROLE hv_nobody;
SELECT pg_temp.err('SELECT count(*) FROM outbox.history');
SELECT pg_temp.err('SELECT count(*) FROM outbox._history_log()');
SELECT pg_temp.err('SELECT count(*) FROM outbox.history_frozen');
SET ROLE hv_tenant;
SELECT pg_temp.err('SELECT count(*) FROM outbox.history');
RESET ROLE;
SELECT grantee, privilege_type FROM information_schema.role_table_grants
 WHERE table_schema = 'outbox' AND table_name = 'history' AND grantee <> current_user ORDER BY grantee;
-- the view cannot be written (the drain and the pass write the tables under it)
SELECT pg_temp.err($$INSERT INTO outbox.history VALUES (100, 1, 1, 'a', NULL, NULL, NULL, now(), now())$$);

-- 5. a reader of the view while a rotation commits: _history_log() took the log's horizon before
-- its lock on the log, so a rotation that committed in between (the reader waiting for that lock)
-- made its first replay start below the new horizon: OB001 for a plain SELECT of the view. It
-- locks first now, and reads the rows kept
SET client_min_messages = warning;
CREATE EXTENSION dblink;
RESET client_min_messages;
CREATE FUNCTION conn(name text) RETURNS text LANGUAGE sql AS $$
    SELECT dblink_connect(name, format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
                                       current_setting('port'), current_database())) $$;
SELECT outbox.publish('c', '{"n": 5}') IS NOT NULL AS c5;
SELECT outbox._log_pass(1000);
SELECT conn('rot');
SELECT conn('reader');
SELECT dblink_exec('rot', 'BEGIN');
SELECT * FROM dblink('rot', $$SELECT outbox._log_rotate('0')$$) AS t(rotated text);
SELECT * FROM dblink('rot', $$SELECT purged_pos FROM outbox.log_state$$) AS t(purged_pos bigint);
SELECT dblink_send_query('reader', $$SELECT count(*) FROM outbox.history$$);
SELECT pg_temp.waiting('%FROM outbox.history%', 'Lock') AS reader_waits;
SELECT dblink_exec('rot', 'COMMIT');
SELECT * FROM dblink_get_result('reader', false) AS t(n bigint);
SELECT count(*) AS rows_now FROM outbox.history;
SELECT dblink_disconnect('reader');
SELECT dblink_disconnect('rot');

REVOKE USAGE ON SCHEMA outbox FROM hv_nobody;
\c contrib_regression
DROP DATABASE pg_outbox_hv;
DROP ROLE hv_nobody;
DROP ROLE hv_reader;
DROP ROLE hv_tenant;
