-- Red team of the log's rotation (issue #15, part 1: outbox._log_rotate()). A database of its own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_log_rotate_attack;
CREATE DATABASE pg_outbox_log_rotate_attack;
RESET client_min_messages;
\c pg_outbox_log_rotate_attack
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

-- A channel's seqs continue after rotation truncates the segment holding its newest batch.
-- _log_last_seq() reads outbox.log_channels and the batches: with k's batches gone and
-- log_channels never written, channel x started again at seq 1 (seq 1 handed out twice).
SELECT outbox._log_insert('x', '1') > 0 AS ok, outbox._log_insert('x', '2') > 0 AS ok, outbox._log_insert('x', '3') > 0 AS ok;
SELECT outbox._log_pass_sql() AS published;  -- x 1-3, in batches_0
SELECT outbox._log_rotate('0');              -- cur_seg 0 -> 1
SELECT outbox._log_insert('y', '1') > 0 AS ok;
SELECT outbox._log_pass_sql() AS published;  -- batches_1
SELECT outbox._log_rotate('0');              -- cur_seg 1 -> 2
SELECT outbox._log_insert('y', '2') > 0 AS ok;
SELECT outbox._log_pass_sql() AS published;  -- batches_2
SELECT outbox._log_rotate('0');              -- cur_seg 2 -> 0: truncates segment 0, x's only batch
SELECT cur_seg, purged_pos FROM outbox.log_state;
SELECT channel, last_seq, last_pos FROM outbox.log_channels ORDER BY channel;
SELECT outbox._log_last_seq('x') AS x_last_seq, outbox._log_last_seq('y') AS y_last_seq;
SELECT outbox._log_insert('x', '4') > 0 AS ok;
SELECT outbox._log_pass_sql() AS published;
-- x's fourth event has seq 4, not 1 again
SELECT pos, seq, channel, payload FROM outbox._log_replay(3) ORDER BY pos;

-- Twice more around (a rotation after every pass): log_channels never goes backwards, each channel's seqs stay gapless
-- and unique over everything ever published (the passes' return values are the events).
CREATE TEMP TABLE seen (pos bigint, seq bigint, channel text);
INSERT INTO seen SELECT pos, seq, channel FROM outbox._log_replay(3);  -- positions 1-3: truncated
INSERT INTO seen VALUES (1, 1, 'x'), (2, 2, 'x'), (3, 3, 'x');  -- truncated above, as the passes numbered them
-- each statement its own transaction (a pass inside the producers' transaction publishes none
-- of their events: they are in progress in its snapshot)
\o /dev/null
SELECT stmt FROM generate_series(1, 6) i, LATERAL (VALUES
    (1, format('SELECT outbox._log_insert(%L, to_jsonb(%s))', CASE WHEN i % 3 = 0 THEN 'y' ELSE 'x' END, i)),
    (2, format('SELECT outbox._log_insert(''z'', to_jsonb(%s))', i)),
    (3, 'SELECT outbox._log_pass_sql()'),
    (4, 'INSERT INTO seen SELECT pos, seq, channel FROM outbox._log_replay((SELECT coalesce(max(pos), 0) FROM seen))'),
    (5, 'SELECT outbox._log_rotate(''0'')')) v(o, stmt)
 ORDER BY i, o \gexec
\o
SELECT channel, count(*) AS events, count(DISTINCT seq) AS distinct_seqs, min(seq), max(seq)
  FROM seen GROUP BY channel ORDER BY channel;
SELECT count(*) AS positions, count(DISTINCT pos) AS distinct_positions, min(pos), max(pos) FROM seen;
SELECT channel, last_seq FROM outbox.log_channels ORDER BY channel;
-- every position above purged_pos is still there
SELECT count(*) = outbox._log_head() - purged_pos AS all_kept_above_purged_pos
  FROM outbox._log_replay((SELECT purged_pos FROM outbox.log_state)), outbox.log_state
 GROUP BY purged_pos;

\c contrib_regression
DROP DATABASE pg_outbox_log_rotate_attack;
