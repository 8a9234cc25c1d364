-- The readers of the write-once log (src/sql/64_log_readers.sql): outbox._log_replay_channel(),
-- _log_event(), _log_head(channel) and _log_pending(), each checked against a brute-force
-- recomputation from outbox._log_replay(0, N) (every channel, every after_seq, several
-- max_events; every id; every channel's head; the pending rows as outbox.log less the replayed
-- ones). The log: four channels over three segments, cut windows (passes of 4 events, the C
-- pass), a cut window's rest and rows committed after the latest batch left pending. Then
-- retention: rotations truncate segments, and the channel replays that need a removed seq give
-- OB001, also where the removed seq sits between two kept ones (a producer that wrote into an
-- old segment after cur_seg moved, seen through dblink); a REPEATABLE READ snapshot older than a
-- rotation. Bad inputs, and the plan of a channel's batches (the GIN index).
-- A database of its own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_logr;
CREATE DATABASE pg_outbox_logr;
RESET client_min_messages;
\c pg_outbox_logr
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

CREATE FUNCTION pg_temp.here() RETURNS text LANGUAGE sql AS $$
    SELECT format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
                  current_setting('port'), current_database()) $$;

-- n transactions of 1 to 3 events each on channels a, b, c, d (deterministic)
CREATE PROCEDURE pg_temp.produce(n integer, salt integer) LANGUAGE plpgsql AS $$
BEGIN
    FOR t IN 1 .. n LOOP
        FOR j IN 1 .. 1 + (t * 7 + salt) % 3 LOOP
            PERFORM outbox._log_insert((ARRAY['a', 'b', 'c', 'd'])[1 + (t * 5 + j * 3 + salt) % 4],
                                       jsonb_build_object('t', t, 'j', j, 's', salt), 'k' || t, 'ty');
        END LOOP;
        COMMIT;
    END LOOP;
END $$;
-- C passes of m events, each in its own transaction, at most n of them (until one publishes nothing)
CREATE PROCEDURE pg_temp.passes(m integer, n integer) LANGUAGE plpgsql AS $$
DECLARE k bigint;
BEGIN
    FOR i IN 1 .. n LOOP
        k := outbox._log_pass(m);
        COMMIT;
        EXIT WHEN k = 0;
    END LOOP;
END $$;

-- every kept event, from the log's own replay from the retention horizon on
CREATE TEMP TABLE allev AS SELECT * FROM outbox._log_replay(0, 1) WHERE false;
CREATE PROCEDURE pg_temp.brute() LANGUAGE sql AS $$
    TRUNCATE allev;
    INSERT INTO allev SELECT * FROM outbox._log_replay((SELECT s.purged_pos FROM outbox.log_state s), 1000000);
$$;
-- the number of answers of each reader that differ from the brute force
CREATE FUNCTION pg_temp.check_readers() RETURNS TABLE (reader text, checked bigint, wrong bigint)
    LANGUAGE sql AS $$
    WITH chs(ch) AS (VALUES ('a'), ('b'), ('c'), ('d')),
         heads AS (SELECT chs.ch, coalesce((SELECT max(a.seq) FROM allev a WHERE a.channel = chs.ch), 0) AS head FROM chs),
         rc AS (
             SELECT (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.seq), '[]') FROM outbox._log_replay_channel(h.ch, s, m.m) r)
                    IS DISTINCT FROM
                    (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.seq), '[]')
                       FROM (SELECT * FROM allev a WHERE a.channel = h.ch AND a.seq > s ORDER BY a.seq LIMIT m.m) r) AS bad
               FROM heads h, generate_series((SELECT coalesce(min(a.seq), 1) - 1 FROM allev a WHERE a.channel = h.ch), h.head) s,
                    (VALUES (1), (3), (1000)) m(m)),
         ev AS (
             SELECT (SELECT to_jsonb(e) FROM outbox._log_event(l.id) e)
                    IS DISTINCT FROM
                    (SELECT to_jsonb(x) FROM (
                        SELECT l.id, l.channel, l.key, l.type, l.payload, l.created_at, a.pos, a.seq, a.published_at
                          FROM (SELECT 1) one LEFT JOIN allev a ON a.id = l.id) x) AS bad
               FROM outbox.log l),
         hd AS (SELECT outbox._log_head(h.ch) <> h.head AS bad FROM heads h),
         pe AS (SELECT (SELECT array_agg(p.id ORDER BY p.id) FROM outbox._log_pending() p)
                       IS DISTINCT FROM
                       (SELECT array_agg(l.id ORDER BY l.id) FROM outbox.log l WHERE l.id NOT IN (SELECT a.id FROM allev a)) AS bad)
    SELECT 'replay_channel', count(*), count(*) FILTER (WHERE bad) FROM rc
    UNION ALL SELECT 'event', count(*), count(*) FILTER (WHERE bad) FROM ev
    UNION ALL SELECT 'head', count(*), count(*) FILTER (WHERE bad) FROM hd
    UNION ALL SELECT 'pending', (SELECT count(*) FROM outbox._log_pending()), count(*) FILTER (WHERE bad) FROM pe
$$;

-- nothing yet: no batch, nothing pending
CALL pg_temp.brute();
SELECT * FROM pg_temp.check_readers();

-- the log: three segments, then passes of 4 events that leave a cut window's rest, then rows
-- committed after the latest batch
CALL pg_temp.produce(12, 0);
UPDATE outbox.log_state SET cur_seg = 1;
CALL pg_temp.produce(12, 1);
UPDATE outbox.log_state SET cur_seg = 2;
CALL pg_temp.produce(12, 2);
CALL pg_temp.passes(4, 9);
CALL pg_temp.produce(5, 3);
SELECT count(*) AS batches, count(*) FILTER (WHERE cut) AS cut, count(DISTINCT seg) AS segments,
       (outbox._log_latest()).cut AS latest_cut FROM outbox.batches;
CALL pg_temp.brute();
SELECT * FROM pg_temp.check_readers();

-- a window of the rows committed after it, and passes of one event, some windows cut
CALL pg_temp.passes(1, 7);
CALL pg_temp.brute();
SELECT * FROM pg_temp.check_readers();
-- everything published
CALL pg_temp.passes(1000, 100);
CALL pg_temp.brute();
SELECT * FROM pg_temp.check_readers();
SELECT count(*) AS events, count(DISTINCT channel) AS channels FROM allev;

-- only the batches with seqs above after_seq are recomputed: with channel b's first event deleted
-- by hand, a replay after the seqs of its batch still answers, one from 0 finds the batch short
BEGIN;
CREATE TEMP TABLE first_b ON COMMIT DROP AS
SELECT a.id, b.first_seqs[array_position(b.channels, 'b')] + b.counts[array_position(b.channels, 'b')] - 1 AS batch_last
  FROM allev a JOIN outbox.batches b ON a.pos BETWEEN b.first_pos AND b.first_pos + b.n - 1
 WHERE a.channel = 'b' AND a.seq = 1;
DELETE FROM outbox.log WHERE id = (SELECT id FROM first_b);
SELECT count(*) = outbox._log_head('b') - (SELECT batch_last FROM first_b) AS all_after_it
  FROM outbox._log_replay_channel('b', (SELECT batch_last FROM first_b));
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('b', 0)$$, 'hint_numbers');
ROLLBACK;

-- retention: segment 0 truncated (the latest batch is in segment 2)
SELECT outbox._log_rotate('0');
SELECT purged_pos > 0 AS purged, cur_seg FROM outbox.log_state;
CALL pg_temp.brute();
-- from the oldest kept seq of each channel on, every answer as the brute force's
SELECT * FROM pg_temp.check_readers();
-- below it, OB001 (a: seqs of segment 0 are gone); after the last seq, nothing
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('a', 0)$$);
SELECT pg_temp.err(format($$SELECT * FROM outbox._log_replay_channel('a', %s)$$,
                          (SELECT min(seq) - 2 FROM allev WHERE channel = 'a')));
SELECT count(*) FROM outbox._log_replay_channel('a', (SELECT min(seq) - 1 FROM allev WHERE channel = 'a'));
SELECT count(*) FROM outbox._log_replay_channel('a', outbox._log_head('a'));
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(0)$$);
-- an event of segment 0: removed
SELECT pg_temp.err('SELECT * FROM outbox._log_event(1)');

-- a removed seq between two kept ones: a producer (dblink) writes into segment 0, the current
-- one, and commits after cur_seg moved to 1 and a pass published an event of its channel from
-- segment 1; its event is published from segment 0 between two of segment 1's
SELECT outbox._log_insert('g', '{"n": 1}');
CALL pg_temp.passes(1000, 100);
SELECT dblink_connect('late', pg_temp.here());
SELECT dblink_exec('late', 'BEGIN');
SELECT * FROM dblink('late', $$SELECT outbox._log_insert('g', '{"n": 2}')$$) AS t(id bigint);
UPDATE outbox.log_state SET cur_seg = 1;
SELECT outbox._log_insert('g', '{"n": 3}');
CALL pg_temp.passes(1000, 100);
SELECT dblink_exec('late', 'COMMIT');
CALL pg_temp.passes(1000, 100);
SELECT outbox._log_insert('g', '{"n": 4}');
CALL pg_temp.passes(1000, 100);
SELECT seq, payload, (SELECT b.seg FROM outbox.batches b WHERE r.pos BETWEEN b.first_pos AND b.first_pos + b.n - 1) AS seg
  FROM outbox._log_replay_channel('g', 0) r;
-- two rotations: segment 2, then segment 0 (with g's seqs 1 and 3) truncated; segment 1 kept
SELECT outbox._log_rotate('0');
SELECT outbox._log_rotate('0');
SELECT cur_seg FROM outbox.log_state;
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('g', 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('g', 1)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('g', 2)$$);
SELECT seq, payload FROM outbox._log_replay_channel('g', 3);
SELECT outbox._log_head('g');
SELECT pg_temp.err(format('SELECT * FROM outbox._log_event(%s)', (SELECT max(id) FROM allev) + 2));

-- a REPEATABLE READ snapshot older than a rotation (another session's): OB001 or serialization_failure,
-- never an answer from half a log
SELECT outbox._log_insert('g', '{"n": 5}');
CALL pg_temp.passes(1000, 100);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) > 0 FROM outbox.log_state;
SELECT * FROM dblink('late', $$SELECT outbox._log_rotate('0')$$) AS t(r text);
SELECT pg_temp.err($$SELECT outbox._log_head('g')$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox._log_pending()$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('g', 3)$$);
ROLLBACK;
SELECT outbox._log_head('g');
SELECT seq, payload FROM outbox._log_replay_channel('g', 4);
SELECT dblink_disconnect('late');

-- bad inputs
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel(NULL, 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('', 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('a', NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('a', -1)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('a', 0, 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('a', 0, NULL)$$);
SELECT pg_temp.err(format($$SELECT * FROM outbox._log_replay_channel('a', %s)$$, outbox._log_head('a') + 1));
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay_channel('never', 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_event(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_event(0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_event(1000000)$$);
SELECT pg_temp.err($$SELECT outbox._log_head(NULL)$$);
SELECT pg_temp.err($$SELECT outbox._log_head('')$$);
SELECT outbox._log_head('never');

-- plan: a channel's batches can be read through the GIN index (the function's query, its
-- parameters as constants). With seq scans allowed, the planner's choice on tables this small
-- depends on what ran before (it changed between two commits of main): seq scans and plain
-- index scans (the primary key, for the order) off here.
-- (the plan without PostgreSQL 18's "Disabled: true" lines, which 15 and 17 do not print)
CREATE FUNCTION pg_temp.plan(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE l text;
BEGIN
    FOR l IN EXECUTE 'EXPLAIN (costs off) ' || q LOOP
        IF l !~ '^\s*Disabled: ' THEN RETURN NEXT l; END IF;
    END LOOP;
END $$;
BEGIN;
SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off;
SELECT * FROM pg_temp.plan($$SELECT x FROM outbox.batches x, LATERAL (SELECT array_position(x.channels, 'a') AS i) i
 WHERE ((cardinality(x.channels) <= 64 AND x.channels @> ARRAY['a'])
        OR (cardinality(x.channels) > 64 AND x.channels @> ARRAY['a']))
   AND x.first_seqs[i.i] + x.counts[i.i] - 1 > 5 ORDER BY x.first_pos$$);
ROLLBACK;

\c contrib_regression
DROP DATABASE pg_outbox_logr;
