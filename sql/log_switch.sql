-- The switch to the write-once log, outbox.use_log_storage() (src/sql/65_log_switch.sql), and the
-- producers in log mode (src/storage_mode.cpp: producer_writes_log()): rights, the refusals
-- (already active, a log that is not empty, failures being retried, REPEATABLE READ, READ ONLY), the move of pending
-- events (same ids, payloads, created_at), positions and seqs continuing across the boundary
-- (1.2 history + the log's replay = one gap-free sequence), and every producer in log mode:
-- publish(), the change trigger, INSERT INTO outbox.pending by hand, COPY, retry() of a dead letter,
-- a DBA's trigger on outbox.pending (refused in log mode). A database of its own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_logswitch;
CREATE DATABASE pg_outbox_logswitch;
RESET client_min_messages;
\c pg_outbox_logswitch
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP ROLE IF EXISTS sw_admin;
DROP ROLE IF EXISTS sw_pub;
CREATE ROLE sw_admin IN ROLE outbox_admin;
CREATE ROLE sw_pub IN ROLE outbox_publisher;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- 1. 1.2: two channels, published and drained, then two events left pending
SELECT outbox.publish('a', jsonb_build_object('n', i)) IS NOT NULL FROM generate_series(1, 3) i;
SELECT outbox.publish('b', '{"n": 1}');
SELECT outbox.drain();
SELECT outbox.publish('a', '{"n": 4}', 'k4', 't4') AS a4 \gset
SELECT outbox.publish('b', '{"n": 2}') AS b2 \gset
SELECT outbox.head(), outbox._log_active();

-- 2. who may switch: not a publisher; not in a READ ONLY or REPEATABLE READ transaction
SET ROLE sw_pub;
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
RESET ROLE;
BEGIN READ ONLY;
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
ROLLBACK;
-- a REPEATABLE READ transaction that already read pending: refused (its snapshot could miss
-- events committed before the switch's lock)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM outbox.pending;
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
ROLLBACK;
-- a log that was written before the switch (the internal producer): refused, nothing changed
BEGIN;
SELECT outbox._log_publish('x') IS NOT NULL;
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
ROLLBACK;
SELECT outbox._log_active(), (SELECT count(*) FROM outbox.pending) AS pending;

-- 3. a failure being retried in 1.2: the switch refuses (the log cannot retry it yet); retry()
-- clears it (the event stays pending, a fresh count) and the switch moves the event
INSERT INTO outbox.failures VALUES (:b2, 1, now(), now(), now(), 'boom', 'XX000');
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
SELECT outbox.retry(:b2) = :b2 AS retried;

-- the switch, by an outbox_admin (as pause(), purge())
SET ROLE sw_admin;
SELECT * FROM outbox.use_log_storage();
RESET ROLE;
SELECT outbox._log_active(), base_pos, channels_flushed_pos FROM outbox.log_state;
SELECT count(*) AS pending, (SELECT count(*) FROM outbox.failures) AS failures FROM outbox.pending;
SELECT channel, last_seq, last_pos FROM outbox.log_channels ORDER BY channel;
-- the moved events: same ids, key, type, payload; the switch's xid (one transaction)
SELECT id = :a4 OR id = :b2 AS same_id, channel, key, type, payload FROM outbox.log ORDER BY id;
SELECT count(DISTINCT xid) AS xids FROM outbox.log;
-- twice: refused
SELECT pg_temp.err('SELECT outbox.use_log_storage()');

-- 4. producers in log mode: nothing reaches outbox.pending
SELECT outbox.publish('a', '{"n": 5}') AS a5 \gset
SET ROLE sw_pub;
SELECT outbox.publish('c', '{"n": 1}') IS NOT NULL AS published;
RESET ROLE;
CREATE TABLE orders (id int PRIMARY KEY, v text);
SELECT outbox.attach('orders', 'orders') IS NOT NULL;
INSERT INTO orders VALUES (1, 'x'), (2, 'y');
-- by hand (RETURNING gets no row: the row went into the log with its id), COPY
INSERT INTO outbox.pending (channel, payload) VALUES ('b', '{"n": 3}') RETURNING id;
COPY outbox.pending (channel, payload) FROM stdin;
b	{"n": 4}
\.
-- a savepoint rolled back after the mode was read does not let the switch's lock go (nothing
-- to see here but that the events after it go into the log too)
BEGIN;
SAVEPOINT s;
SELECT outbox.publish('a', '{"rolled": "back"}') IS NOT NULL;
ROLLBACK TO SAVEPOINT s;
SELECT outbox.publish('a', '{"n": 6}') IS NOT NULL;
COMMIT;
-- retry() of a dead letter of 1.2 puts it into the log
INSERT INTO outbox.dead_letter VALUES (1000000, 'd', 'dk', 'dt', '{"dead": 1}', now(), now(), 'boom', 'XX000');
SELECT outbox.retry(1000000);
SELECT count(*) AS pending FROM outbox.pending;
SELECT count(*) AS dead_letters FROM outbox.dead_letter;

-- a DBA's trigger on outbox.pending is refused in log mode: it would see the rows inserted by hand
-- and never publish()'s or the change trigger's (src/pending_ddl.cpp, regress log_mode_ddl)
CREATE FUNCTION pending_upper() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.type := upper(coalesce(NEW.type, 'none')); RETURN NEW; END $$;
SELECT pg_temp.err('CREATE TRIGGER a_dba_trigger BEFORE INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION pending_upper()', 'message');
INSERT INTO outbox.pending (channel, type) VALUES ('e', 'by hand');
SELECT outbox.publish('e', NULL, NULL, 'published') IS NOT NULL;
SELECT count(*) AS pending FROM outbox.pending;

-- 5. the first pass publishes after base_pos: positions and seqs continue 1.2's
SELECT outbox._log_pass(1000);
-- (the frozen 1.2 rows, then the log's: the view outbox.history shows both, history_view.sql)
SELECT pos, seq, channel, key, type, payload FROM outbox.history_frozen ORDER BY pos;
SELECT pos, seq, channel, key, type, payload FROM outbox._log_replay(0, 1000) ORDER BY pos;
-- one gap-free sequence of positions, and of seqs per channel, across the boundary
WITH e AS (SELECT pos, seq, channel FROM outbox.history_frozen UNION ALL SELECT pos, seq, channel FROM outbox._log_replay(0, 1000))
SELECT count(*) AS events, min(pos), max(pos), count(DISTINCT pos) AS distinct_pos,
       bool_and(s.ok) AS seqs_gap_free
  FROM e, LATERAL (SELECT seq = (SELECT count(*) FROM e e2 WHERE e2.channel = e.channel AND e2.pos <= e.pos) AS ok) s;
-- the moved events kept their ids
SELECT id = :a4 AS a4, id = :b2 AS b2, id = :a5 AS a5, channel FROM outbox._log_replay(0, 3) ORDER BY pos;

\c contrib_regression
DROP DATABASE pg_outbox_logswitch;
DROP ROLE sw_admin;
DROP ROLE sw_pub;
