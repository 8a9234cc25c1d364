-- outbox.next() of a named consumer that another client of the same consumer acknowledges past
-- while the first one reads (two workers of one consumer, or a retry that overlaps the call it
-- retries): next() reads the consumer's acked_pos, then replays after it; in between the other
-- client acknowledged further and a rotation removed the segment those acknowledged events were in
-- (the consumer needed them no more). next() raised OB001 ("the consumer must resynchronise from the
-- source of truth") for a consumer that had lost nothing. It reads the consumer again and goes on
-- after the position now acknowledged. (Found by a log-mode fuzz: pgbench, producers with
-- savepoints, outbox.drain() by hand, outbox.purge(), two clients of one consumer.)
SET client_min_messages = warning;
DROP DATABASE IF EXISTS pg_outbox_nextrace;
CREATE DATABASE pg_outbox_nextrace;
RESET client_min_messages;
\c pg_outbox_nextrace
SET client_min_messages = warning;
CREATE EXTENSION dblink;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/wait_event.sql
SELECT events_moved FROM outbox.use_log_storage();
SELECT outbox.create_consumer('c', NULL, 'earliest');
CREATE FUNCTION conn(name text) RETURNS text LANGUAGE sql AS $$
    SELECT dblink_connect(name, format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
                                       current_setting('port'), current_database())) $$;
-- positions 1..3 in segment 0; the log rotated on (segment 0 is kept: the latest batch is there);
-- position 4 in the current segment
SELECT count(outbox.publish('a', jsonb_build_object('n', g))) FROM generate_series(1, 3) g;
SELECT outbox.drain() AS drained;
SET client_min_messages = warning;
SELECT outbox.purge('0 s') AS purged;
RESET client_min_messages;
SELECT cur_seg FROM outbox.log_state;
SELECT outbox.publish('a', jsonb_build_object('n', 4)) > 0 AS published;
SELECT outbox.drain() AS drained;
SELECT outbox.ack('c', 1) AS acked;
-- the reader: its next() reads acked_pos 1, then its replay waits for its lock on the history
SELECT conn('other');
SELECT conn('reader');
SELECT dblink_exec('other', 'BEGIN');
SELECT dblink_exec('other', 'LOCK TABLE outbox.history IN ACCESS EXCLUSIVE MODE');
SELECT dblink_send_query('reader', $$SELECT pos FROM outbox.next('c', 10, '0 s')$$);
SELECT pg_temp.waiting('%outbox.next(%', 'Lock') AS reader_waits;
-- meanwhile the other client acknowledges up to 3, and segment 0 is removed (the consumer needs
-- none of it now)
SELECT * FROM dblink('other', $$SELECT outbox.ack('c', 3)$$) AS t(acked bigint);
SELECT * FROM dblink('other', $$SELECT outbox.purge('0 s') >= 0$$) AS t(purged boolean);
SELECT dblink_exec('other', 'COMMIT');
SELECT purged_pos FROM outbox.log_state;
-- the reader gets what comes after the position acknowledged now: 4 (it raised OB001)
SELECT * FROM dblink_get_result('reader') AS t(pos bigint);
SELECT name, acked_pos, state FROM outbox.consumers;

-- 2. the wait after such a false OB001 counts against the caller's timeout: next() waited its
-- whole timeout again after each one (up to 4 times the timeout it was given). The reader waits
-- 2 s after position 4 (nothing there); 1 s in, 5 is published and wakes it, its replay waits for
-- the lock on the history again, and meanwhile 6 is published, acknowledged, and the segments of 4
-- and 5 rotated away: the reader is behind the horizon, reads the consumer again (acknowledged 6)
-- and waits on, after 6, until its 2 s are over (it returned after 3 s and more)
SELECT outbox.ack('c', 4) AS acked;
SELECT conn('reader2');
SELECT dblink_send_query('reader2', $$SELECT (SELECT count(*) FROM outbox.next('c', 10, '2 s')) AS n,
                                            extract(epoch FROM clock_timestamp() - statement_timestamp()) AS secs$$);
SELECT pg_temp.waiting('%outbox.next(%', 'Extension') AS reader_sleeps;
SELECT pg_sleep(1);
SELECT dblink_exec('other', 'BEGIN');
SELECT dblink_exec('other', 'LOCK TABLE outbox.history IN ACCESS EXCLUSIVE MODE');
SELECT outbox.publish('a', jsonb_build_object('n', 5)) > 0 AS published;
SELECT outbox.drain() AS drained;
SELECT pg_temp.waiting('%outbox.next(%', 'Lock') AS reader_waits;
SELECT outbox._log_rotate('0 s') AS rotated; -- the segment of 4
SELECT outbox.publish('a', jsonb_build_object('n', 6)) > 0 AS published;
SELECT outbox.drain() AS drained;
-- (the other client: it holds the lock ack() takes)
SELECT * FROM dblink('other', $$SELECT outbox.ack('c', 6)$$) AS t(acked bigint);
SELECT * FROM dblink('other', $$SELECT outbox._log_rotate('0 s')$$) AS t(rotated text);
SELECT * FROM dblink('other', $$SELECT outbox._log_rotate('0 s')$$) AS t(rotated text); -- the segment of 5
SELECT * FROM dblink('other', $$SELECT purged_pos FROM outbox.log_state$$) AS t(purged_pos bigint);
SELECT dblink_exec('other', 'COMMIT');
SELECT n, secs >= 2 AS waited_its_timeout, secs < 2.8 AS not_longer FROM dblink_get_result('reader2') AS t(n bigint, secs numeric);
SELECT name, acked_pos, state FROM outbox.consumers;
SELECT dblink_disconnect('reader2');
SELECT dblink_disconnect('reader');
SELECT dblink_disconnect('other');

\c contrib_regression
DROP DATABASE pg_outbox_nextrace;
