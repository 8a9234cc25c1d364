-- The write-once log (issue #15, part 1: beside the 1.2 storage, not used by publish() or the
-- worker yet): producers' inserts, the reference pass outbox._log_pass_sql(), batches, positions
-- and seqs recomputed by outbox._log_replay(), cut windows, several segments in one window,
-- savepoints, dump-style restore of the state row, bad inputs. A database of its own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_log;
CREATE DATABASE pg_outbox_log;
RESET client_min_messages;
\c pg_outbox_log
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\set err_style hint
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
-- every event of the log once, in position order, as replay recomputes it
CREATE VIEW pg_temp.published AS
    SELECT pos, seq, channel, payload->>'n' AS n FROM outbox._log_replay(0, 100000) ORDER BY pos;

-- empty: head 0, nothing to publish, nothing to replay, and no batch row for an empty pass
SELECT outbox._log_head() AS head, outbox._log_pass_sql() AS published, count(*) AS batches
  FROM outbox.batches;
SELECT count(*) FROM outbox._log_replay(0);

-- the 1.2 storage does not see the log, and the log does not see the 1.2 storage
SELECT outbox._log_insert('a', '{"n": 1}') > 0 AS got_id;
SELECT outbox.publish('old', '{"n": 0}') > 0 AS got_id;
SELECT (SELECT count(*) FROM outbox.pending) AS pending_12, (SELECT count(*) FROM outbox.log) AS log_rows;

-- three transactions on two channels; the second one writes three events, one of them in a
-- savepoint that is rolled back
BEGIN;
SELECT outbox._log_insert('b', '{"n": 2}') > 0 AS ok;
SAVEPOINT s;
SELECT outbox._log_insert('b', '{"n": 99}') > 0 AS ok;
ROLLBACK TO s;
SELECT outbox._log_insert('a', '{"n": 3}') > 0 AS ok;
COMMIT;
BEGIN;
SELECT outbox._log_insert('a', '{"n": 98}') > 0 AS ok;
ROLLBACK;
SELECT outbox._log_insert('b', '{"n": 4}', 'k', 't') > 0 AS ok;

-- passes of at most 2 events: the window of 4 events is cut into batches; the flag says so
SELECT outbox._log_pass_sql(2) AS p1, outbox._log_pass_sql(2) AS p2, outbox._log_pass_sql(2) AS p3;
SELECT first_pos, n, seg, cut, channels, first_seqs, counts FROM outbox.batches ORDER BY first_pos;
SELECT * FROM pg_temp.published;
SELECT outbox._log_head() AS head;

-- a cut window followed by a larger pass: the rest of the cut window first, then the next one
SELECT outbox._log_insert('a', '{"n": 5}') > 0 AND outbox._log_insert('a', '{"n": 6}') > 0 AS ok;
SELECT outbox._log_pass_sql(1) AS cut_pass;
SELECT outbox._log_insert('c', '{"n": 7}') > 0 AS ok;
SELECT outbox._log_pass_sql(1000) AS rest_of_window, outbox._log_pass_sql(1000) AS next_window,
       outbox._log_pass_sql(1000) AS nothing;
SELECT * FROM pg_temp.published WHERE pos > 4;

-- one window with rows in two segments (producers that read cur_seg around a rotation): the
-- pass reads the oldest segment first and cuts the batch where its rows end
UPDATE outbox.log_state SET cur_seg = 1;
INSERT INTO outbox.log_0 (channel, payload) VALUES ('a', '{"n": 8}');
INSERT INTO outbox.log_1 (channel, payload) VALUES ('a', '{"n": 9}');
INSERT INTO outbox.log_2 (channel, payload) VALUES ('a', '{"n": 10}');
SELECT outbox._log_pass_sql() AS p1, outbox._log_pass_sql() AS p2, outbox._log_pass_sql() AS p3,
       outbox._log_pass_sql() AS p4;
SELECT first_pos, n, seg, cut FROM outbox.batches WHERE first_pos > 7 ORDER BY first_pos;
SELECT * FROM pg_temp.published WHERE pos > 7;

-- replay from every position, and with every limit, agrees with the whole
SELECT bool_and(r.ok) AS every_after_pos_agrees FROM (
    SELECT a, (SELECT array_agg(pos ORDER BY pos) FROM outbox._log_replay(a, 3))
              = (SELECT array_agg(pos ORDER BY pos) FROM (SELECT pos FROM pg_temp.published WHERE pos > a LIMIT 3) x)
              IS NOT FALSE AS ok
      FROM generate_series(0, 11) a) r;
-- gap-free positions and per-channel seqs
SELECT count(*) AS events, min(pos), max(pos), count(DISTINCT pos) AS distinct_pos FROM pg_temp.published;
SELECT channel, array_agg(seq ORDER BY pos) AS seqs FROM pg_temp.published GROUP BY channel ORDER BY channel;

-- a restore writes the dumped state row again: it is merged into the existing one
INSERT INTO outbox.log_state (cur_seg, purged_pos) VALUES (2, 5);
SELECT count(*) AS state_rows, min(cur_seg) AS cur_seg, min(purged_pos) AS purged_pos FROM outbox.log_state;

-- bad inputs
BEGIN ISOLATION LEVEL REPEATABLE READ; -- a pass's snapshot must be taken after its batch lock
SELECT pg_temp.err($$SELECT outbox._log_pass_sql()$$);
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT pg_temp.err($$SELECT outbox._log_pass_sql()$$);
ROLLBACK;
SELECT pg_temp.err($$SELECT outbox._log_pass_sql(0)$$);
SELECT pg_temp.err($$SELECT outbox._log_pass_sql(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(0, -1)$$);
SELECT pg_temp.err($$SELECT outbox._log_insert(NULL)$$);
SELECT pg_temp.err($$SELECT outbox._log_insert('')$$);
SELECT pg_temp.err($$SELECT outbox._log_insert(repeat('x', 64))$$);

-- nothing of it is anyone's but the owner's: not even a publisher's and reader's (the schema
-- is theirs to use)
CREATE ROLE log_storage_nobody IN ROLE outbox_publisher, outbox_reader;
SET ROLE log_storage_nobody;
SELECT pg_temp.err($$SELECT outbox._log_insert('a')$$);
SELECT pg_temp.err($$SELECT outbox._log_pass_sql()$$);
SELECT pg_temp.err($$SELECT * FROM outbox.log_0$$);
SELECT pg_temp.err($$INSERT INTO outbox.log_0 (channel) VALUES ('a')$$);
SELECT pg_temp.err($$SELECT * FROM outbox.batches$$);
RESET ROLE;
DROP ROLE log_storage_nobody;

\c contrib_regression
DROP DATABASE pg_outbox_log;
