-- Rotation and retention of the write-once log (issue #15, part 1; not used by the worker yet):
-- outbox._log_rotate() never truncates an event that is not published, nor one younger than the
-- retention, nor the latest batch; positions survive every rotation. A database of its own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_log_rotate;
CREATE DATABASE pg_outbox_log_rotate;
RESET client_min_messages;
\c pg_outbox_log_rotate
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\set err_style hint
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
CREATE FUNCTION pg_temp.drain() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint := 0; k bigint;
BEGIN
    LOOP
        k := outbox._log_pass_sql(1000);
        EXIT WHEN k = 0;
        n := n + k;
    END LOOP;
    RETURN n;
END $$;
CREATE FUNCTION pg_temp.seg_rows() RETURNS text LANGUAGE sql AS $$
    SELECT format('log %s/%s/%s batches %s/%s/%s cur_seg %s purged_pos %s',
                  (SELECT count(*) FROM outbox.log_0), (SELECT count(*) FROM outbox.log_1), (SELECT count(*) FROM outbox.log_2),
                  (SELECT count(*) FROM outbox.batches_0), (SELECT count(*) FROM outbox.batches_1),
                  (SELECT count(*) FROM outbox.batches_2), s.cur_seg, s.purged_pos)
      FROM outbox.log_state s
$$;

-- an empty log rotates at once: segment 1 is empty
SELECT outbox._log_rotate('0') AS rotate, pg_temp.seg_rows();
-- events in segment 1, published; segment 2 is empty: rotates
SELECT count(outbox._log_insert('a', jsonb_build_object('n', g))) FROM generate_series(1, 5) g;
SELECT pg_temp.drain() AS published, outbox._log_rotate('0') AS rotate, pg_temp.seg_rows();
-- events in segment 2; segment 0 is empty: rotates; segment 1 (published) is next
SELECT count(outbox._log_insert('a', jsonb_build_object('n', g))) FROM generate_series(6, 8) g;
SELECT pg_temp.drain() AS published, outbox._log_rotate('0') AS rotate, pg_temp.seg_rows();
-- segment 1 is next: published, but younger than the retention: kept
SELECT outbox._log_rotate('1 hour') AS rotate, pg_temp.seg_rows();
-- with retention 0 it is truncated: its 5 events (positions 1-5) are gone, purged_pos 5
SELECT outbox._log_rotate('0') AS rotate, pg_temp.seg_rows();
-- replay after purged_pos reads what is kept; from before it, OB001 (the events are gone)
SELECT array_agg(pos ORDER BY pos) AS kept, outbox._log_head() AS head FROM outbox._log_replay(5);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(4)$$);

-- an unpublished event in the next segment holds the rotation back (a producer that read
-- cur_seg before a rotation and wrote into the old segment)
INSERT INTO outbox.log_2 (channel, payload) VALUES ('a', '{"n": 9}');
SELECT outbox._log_rotate('0') AS rotate, pg_temp.seg_rows();
-- the latest batch in the next segment holds it back too (the next pass needs its snapshot)
SELECT pg_temp.drain() AS published, outbox._log_rotate('0') AS rotate;
-- once a later batch exists elsewhere, it goes
SELECT outbox._log_insert('a', '{"n": 10}') > 0 AS ok;
SELECT pg_temp.drain() AS published, outbox._log_rotate('0') AS rotate, pg_temp.seg_rows();
-- a cut window holds it back (the segment order of a window must not change)
SELECT count(outbox._log_insert('a', jsonb_build_object('n', g))) FROM generate_series(11, 13) g;
SELECT outbox._log_pass_sql(1) AS cut_pass, outbox._log_rotate('0') AS rotate;
SELECT pg_temp.drain() AS published;
-- an event this very transaction wrote into the next segment is not published either
BEGIN;
INSERT INTO outbox.log_0 (channel, payload) VALUES ('a', '{"n": 0}');
SELECT outbox._log_rotate('0') AS rotate_own_unpublished;
ROLLBACK;

-- many rotations later (each step its own transaction): positions and seqs continue, nothing
-- is published twice, nothing unpublished is truncated
SELECT format($$SELECT outbox._log_insert('a', '{"n": %s}') > 0 AS ok$$, 13 + g), 'SELECT pg_temp.drain() AS published',
       $$SELECT outbox._log_rotate('0') AS rotate$$
  FROM generate_series(1, 9) g \gexec
SELECT outbox._log_head() AS head, min(pos), max(pos), count(*) AS kept, count(DISTINCT pos) AS distinct_pos,
       max(seq) AS last_seq, bool_and(seq = pos) AS seq_is_pos
  FROM outbox._log_replay((SELECT purged_pos FROM outbox.log_state), 100000);
SELECT pg_temp.seg_rows();

-- bad input
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.err($$SELECT outbox._log_rotate('0')$$);
ROLLBACK;
SELECT pg_temp.err($$SELECT outbox._log_rotate(NULL)$$);
SELECT pg_temp.err($$SELECT outbox._log_rotate('-1 day')$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(-1)$$);

-- A position at or below purged_pos can be missing while lower and higher ones are kept: a
-- producer that read cur_seg before a rotation writes into the old segment, its event gets a
-- position between two of the newer segment's, and leaves with the old segment. Replay after a
-- position below purged_pos is OB001, not a silent gap (a fresh log: the extension again).
SET client_min_messages = warning;
DROP EXTENSION pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
SELECT outbox._log_insert('a', '1') > 0 AS ok;           -- segment 0
SELECT pg_temp.drain() AS published;                      -- pos 1, batches_0
SELECT outbox._log_rotate('0') AS rotate;                 -- cur_seg 0 -> 1
SELECT outbox._log_insert('a', '2') > 0 AS ok;           -- segment 1
SELECT pg_temp.drain() AS published;                      -- pos 2, batches_1
INSERT INTO outbox.log_0 (channel, payload) VALUES ('a', '3'); -- the late producer, in the old segment
SELECT pg_temp.drain() AS published;                      -- pos 3, batches_0
SELECT outbox._log_insert('a', '4') > 0 AS ok;           -- segment 1
SELECT pg_temp.drain() AS published;                      -- pos 4, batches_1
SELECT outbox._log_rotate('0') AS rotate_1_2, outbox._log_rotate('0') AS rotate_2_0; -- truncates segment 0
SELECT pg_temp.seg_rows();
SELECT array_agg(b.first_pos ORDER BY b.first_pos) AS kept_batches FROM outbox.batches b;
-- position 2 is kept, 3 is gone, 4 is kept: after 1 or 2 the replay would skip 3
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(1)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(2)$$);
SELECT pos, seq, payload FROM outbox._log_replay(3);

-- Retention is measured at the rotation, not at the start of its transaction: segment 1's newest
-- batch (position 4) was published just now; a rotation with retention 1 second in a transaction
-- that began before it waited 1.1 seconds takes segment 1 (with now(), it deferred).
SELECT outbox._log_insert('a', '5') > 0 AS ok;           -- segment 0
SELECT pg_temp.drain() AS published;                      -- pos 5, batches_0: the latest batch
BEGIN;
SELECT true AS slept FROM pg_sleep(1.1);
SELECT outbox._log_rotate('1 second') AS rotate_0_1, pg_temp.seg_rows();
COMMIT;

-- Never a short answer: a batch or an event gone from a kept segment (by hand) is an error, not
-- a gap in what the replay returns.
SELECT outbox._log_insert('a', '6') > 0 AS ok;
SELECT pg_temp.drain() AS published;                      -- pos 6
SELECT outbox._log_insert('a', '7') > 0 AS ok;
SELECT pg_temp.drain() AS published;                      -- pos 7
SELECT array_agg(pos ORDER BY pos) AS kept FROM outbox._log_replay(4);
BEGIN;
DELETE FROM outbox.batches_1 WHERE first_pos = 6;
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(4)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(5)$$);
SELECT array_agg(pos ORDER BY pos) AS kept_after_6 FROM outbox._log_replay(6);
ROLLBACK;
BEGIN;
DELETE FROM outbox.log_1 WHERE payload = '6';
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(4)$$);
ROLLBACK;
-- max_events stops inside a batch without an error (positions 8 and 9 in one batch)
SELECT count(outbox._log_insert('a', to_jsonb(g))) FROM generate_series(8, 9) g;
SELECT pg_temp.drain() AS published;
SELECT array_agg(pos ORDER BY pos) AS two, (SELECT count(*) FROM outbox.batches WHERE first_pos = 8 AND n = 2) AS batch_8_9
  FROM outbox._log_replay(6, 2);

\c contrib_regression
DROP DATABASE pg_outbox_log_rotate;
