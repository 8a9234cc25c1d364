-- The public readers in log mode (issue #15, src/sql/66_readers.sql): replay(), replay_channel(),
-- event(), head() and head(channel), next() of a named consumer, each compared with a brute-force
-- expectation built from the frozen history (outbox.history, positions <= base_pos) and the log
-- above it (outbox._log_replay(base_pos, ...)), on a history that spans the boundary: 1.2 events
-- published by outbox.drain(), the switch, then log events published by outbox._log_pass().
-- Then read rights, a consumer acked below the boundary reading across it, a REPEATABLE READ
-- reader that began before the switch (dblink), a 1.2 purge and a rotation of the log, and
-- bad inputs.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_lmr;
CREATE DATABASE pg_outbox_lmr;
DROP ROLE IF EXISTS lmr_reader;
CREATE ROLE lmr_reader;
RESET client_min_messages;
\c pg_outbox_lmr
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;
GRANT outbox_consumer TO lmr_reader;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- The switch, by hand until outbox.use_log_storage() lands (shared_design.md): nothing pending,
-- nothing in the log; base_pos is the 1.2 head, the channels' seqs continue.
\set switch 'UPDATE outbox.log_state SET active = true, base_pos = outbox.head(); INSERT INTO outbox.log_channels (channel, last_seq, last_pos) SELECT c.channel, c.last_seq, (SELECT max(h.pos) FROM outbox.history h WHERE h.channel = c.channel) FROM outbox.channels c;'

-- n events on channels a, b, c, s (deterministic), through publish() (1.2) or _log_publish() (log)
CREATE FUNCTION pg_temp.produce(n integer, salt integer, log boolean) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE ch text;
BEGIN
    FOR t IN 1 .. n LOOP
        ch := (ARRAY['a', 'b', 'c', 's'])[1 + (t * 5 + salt) % 4];
        IF log THEN
            PERFORM outbox._log_publish(ch, jsonb_build_object('t', t, 's', salt), 'k' || t, 'ty');
        ELSE
            PERFORM outbox.publish(ch, jsonb_build_object('t', t, 's', salt), 'k' || t, 'ty');
        END IF;
    END LOOP;
    RETURN n;
END $$;

-- the brute force: every kept event, the history's then the log's
CREATE TEMP TABLE allev (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                         epoch bigint);
GRANT SELECT ON allev TO lmr_reader;
CREATE PROCEDURE pg_temp.brute() LANGUAGE sql AS $$
    TRUNCATE allev;
    INSERT INTO allev
        SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, outbox._epoch_of(h.pos)
          FROM outbox.history h WHERE h.pos <= (SELECT s.base_pos FROM outbox.log_state s)
           AND h.pos > (SELECT s.purged_pos FROM outbox.log_state s)
        UNION ALL
        SELECT e.pos, e.seq, e.id, e.channel, e.key, e.type, e.payload, e.epoch
          FROM outbox._log_replay(greatest((SELECT s.base_pos FROM outbox.log_state s),
                                           (SELECT s.purged_pos FROM outbox.log_state s)), 1000000) e;
$$;
-- the number of answers of each reader that differ from the brute force (readable: the channels
-- the caller may read; the envelope is checked against outbox._envelope() of the row)
CREATE FUNCTION pg_temp.check_readers(readable text[]) RETURNS TABLE (reader text, checked bigint, wrong bigint)
    LANGUAGE sql AS $$
    WITH v AS (SELECT * FROM allev WHERE channel = ANY (readable)),
         lim AS (SELECT * FROM unnest(ARRAY[1, 3, 1000]) m),
         ps AS (SELECT p FROM generate_series((SELECT min(pos) - 1 FROM allev), (SELECT max(pos) FROM allev)) p),
         r AS (SELECT 'replay'::text AS reader, ps.p, lim.m,
                      (SELECT coalesce(array_agg(x ORDER BY x.pos), '{}')
                         FROM (SELECT o.pos, o.seq, o.id, o.channel, o.key, o.type, o.payload, o.epoch
                                 FROM outbox.replay(ps.p, NULL, lim.m) o) x)
                      IS DISTINCT FROM
                      (SELECT coalesce(array_agg(x ORDER BY x.pos), '{}')
                         FROM (SELECT * FROM v WHERE v.pos > ps.p ORDER BY v.pos LIMIT lim.m) x) AS bad
                 FROM ps, lim
               UNION ALL
               SELECT 'replay a,c', ps.p, lim.m,
                      (SELECT coalesce(array_agg(x ORDER BY x.pos), '{}')
                         FROM (SELECT o.pos, o.seq, o.id, o.channel, o.key, o.type, o.payload, o.epoch
                                 FROM outbox.replay(ps.p, ARRAY['a', 'c'], lim.m) o) x)
                      IS DISTINCT FROM
                      (SELECT coalesce(array_agg(x ORDER BY x.pos), '{}')
                         FROM (SELECT * FROM v WHERE v.pos > ps.p AND v.channel IN ('a', 'c') ORDER BY v.pos LIMIT lim.m) x)
                 FROM ps, lim
               UNION ALL
               SELECT 'replay_channel', 0, lim.m,
                      (SELECT coalesce(array_agg(x ORDER BY x.seq), '{}')
                         FROM (SELECT o.pos, o.seq, o.id, o.channel, o.key, o.type, o.payload, o.epoch
                                 FROM outbox.replay_channel(c.ch, s.s, lim.m) o) x)
                      IS DISTINCT FROM
                      (SELECT coalesce(array_agg(x ORDER BY x.seq), '{}')
                         FROM (SELECT * FROM v WHERE v.channel = c.ch AND v.seq > s.s ORDER BY v.seq LIMIT lim.m) x)
                 FROM (SELECT DISTINCT channel AS ch FROM v) c,
                      LATERAL generate_series((SELECT min(seq) - 1 FROM v WHERE v.channel = c.ch),
                                              (SELECT max(seq) FROM v WHERE v.channel = c.ch)) s(s), lim
               UNION ALL
               SELECT 'envelope', 0, 0,
                      EXISTS (SELECT FROM outbox.replay(ps.p, NULL, 1000) o
                               WHERE o.envelope IS DISTINCT FROM outbox._envelope(o.pos, o.seq, o.id, o.key, o.type,
                                                                                   o.payload, o.epoch)
                                  OR o.published_at IS NULL)
                 FROM (SELECT min(pos) - 1 AS p FROM allev) ps
               UNION ALL
               SELECT 'event', 0, 0,
                      (SELECT (e.id, e.channel, e.key, e.type, e.payload, e.pos, e.seq) FROM outbox.event(v.id) e)
                      IS DISTINCT FROM (v.id, v.channel, v.key, v.type, v.payload, v.pos, v.seq)
                 FROM v
               UNION ALL
               SELECT 'head(channel)', 0, 0,
                      outbox.head(c.ch) IS DISTINCT FROM (SELECT max(seq) FROM allev WHERE allev.channel = c.ch)
                 FROM (SELECT DISTINCT channel AS ch FROM v) c
               UNION ALL
               SELECT 'head()', 0, 0, outbox.head() IS DISTINCT FROM (SELECT max(pos) FROM allev))
    SELECT reader, count(*), count(*) FILTER (WHERE bad) FROM r GROUP BY reader ORDER BY reader $$;

-- 1.2: 20 events, drained; a consumer reads and acks some of them
SELECT pg_temp.produce(20, 1, false);
SELECT outbox.drain() AS drained;
SELECT outbox.create_consumer('lmr_c', NULL, 'earliest');
SELECT count(*) FROM outbox.next('lmr_c', 5, timeout => '0');
SELECT outbox.ack('lmr_c', 5);
-- a REPEATABLE READ reader that began before the switch
SELECT dblink_connect('rr', format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
                                   current_setting('port'), current_database()));
SELECT dblink_exec('rr', 'BEGIN ISOLATION LEVEL REPEATABLE READ');
SELECT * FROM dblink('rr', 'SELECT outbox.head()') AS t(head bigint);

-- the switch, then 30 log events in batches of 4 (several batches, channels' seqs continue)
:switch
SELECT base_pos, active FROM outbox.log_state;
SELECT pg_temp.produce(30, 2, true);
SELECT sum(outbox._log_pass(4)) AS published FROM generate_series(1, 10);
SELECT count(*) AS pending FROM outbox.pending;
CALL pg_temp.brute();
SELECT min(pos), max(pos), count(*), count(DISTINCT pos) FROM allev;
-- the seqs of every channel are gap-free across the boundary
SELECT channel, min(seq), max(seq), count(*) FROM allev GROUP BY channel ORDER BY channel;
SELECT * FROM pg_temp.check_readers(ARRAY['a', 'b', 'c', 's']);
SELECT outbox.head(), outbox.head('a'), outbox.head('never');

-- the REPEATABLE READ reader: 1.2 mode in its snapshot, the 1.2 history only, no gap
SELECT * FROM dblink('rr', 'SELECT outbox.head(), count(*), min(pos), max(pos), count(DISTINCT pos) FROM outbox.replay(0, NULL, 1000)')
    AS t(head bigint, n bigint, lo bigint, hi bigint, distinct_pos bigint);
SELECT dblink_exec('rr', 'COMMIT');
SELECT * FROM dblink('rr', 'SELECT outbox.head(), count(*), min(pos), max(pos), count(DISTINCT pos) FROM outbox.replay(0, NULL, 1000)')
    AS t(head bigint, n bigint, lo bigint, hi bigint, distinct_pos bigint);

-- the consumer acked below the boundary reads across it
SELECT min(pos), max(pos), count(*) FROM outbox.next('lmr_c', 100, timeout => '0');
-- ack() above the 1.2 head: the head is the log's (50); above it OB002
SELECT pg_temp.err($$SELECT outbox.ack('lmr_c', 51)$$);
SELECT outbox.ack('lmr_c', 30);
SELECT name, state, acked_pos FROM outbox.consumers;
SELECT min(pos), max(pos), count(*) FROM outbox.next('lmr_c', 100, timeout => '0');
SELECT outbox.create_consumer('lmr_now', NULL, 'now');
SELECT name, acked_pos FROM outbox.consumers WHERE name = 'lmr_now';
SELECT outbox.drop_consumer('lmr_now');

-- an event pending in the log: NULL pos, seq and published_at, as 1.2 says of a pending event
SELECT outbox._log_publish('a', '{"pending": true}') AS pend_id \gset
SELECT channel, payload, pos, seq, published_at FROM outbox.event(:pend_id);
SELECT pg_temp.err('SELECT * FROM outbox.event(0)');
SELECT pg_temp.err('SELECT * FROM outbox.event(1000000)');
SELECT outbox._log_pass(1000);
SELECT channel, pos, seq, published_at IS NOT NULL AS published FROM outbox.event(:pend_id);
CALL pg_temp.brute();

-- read rights: lmr_reader may read a and b only
SELECT outbox.grant_channel('a', 'lmr_reader', '{read}'), outbox.grant_channel('b', 'lmr_reader', '{read}');
SET ROLE lmr_reader;
SELECT count(*), count(*) FILTER (WHERE channel IN ('a', 'b')) FROM outbox.replay(0, NULL, 1000);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay(0, ARRAY['s'])$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay_channel('s', 0)$$);
SELECT pg_temp.err($$SELECT outbox.head('c')$$);
SELECT pg_temp.err(format('SELECT * FROM outbox.event(%s)', (SELECT min(id) FROM allev WHERE channel = 's' AND pos > 20)));
SELECT pg_temp.err(format('SELECT * FROM outbox.event(%s)', (SELECT min(id) FROM allev WHERE channel = 's' AND pos <= 20)));
RESET ROLE;
SELECT outbox.revoke_channel('a', 'lmr_reader', '{read}'), outbox.revoke_channel('b', 'lmr_reader', '{read}');
-- a role without any right on the outbox
SET ROLE lmr_reader;
RESET ROLE;
CREATE ROLE lmr_nobody;
SET ROLE lmr_nobody;
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(0)', 'message');
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay_channel('a', 0)$$, 'message');
SELECT pg_temp.err('SELECT outbox.head()', 'message');
SELECT pg_temp.err('SELECT * FROM outbox.event(1)', 'message');
RESET ROLE;
DROP ROLE lmr_nobody;

-- bad inputs, as in 1.2
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(NULL)');
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(-1)');
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(0, NULL, 0)');
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(0, NULL, NULL)');
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay(0, '{}')$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay(0, ARRAY[NULL])$$);
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(52)');
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(51)');
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay_channel(NULL, 0)');
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay_channel('a', NULL)$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay_channel('a', -1)$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay_channel('a', 1000)$$);
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay_channel('a', 0, 0)$$);
SELECT pg_temp.err('SELECT outbox.head(NULL)');
SELECT pg_temp.err('SELECT * FROM outbox.event(NULL)');
SELECT pg_temp.err('SELECT * FROM outbox.event(-5)');

-- a 1.2 purge: the frozen history is all in the current history segment, so it removes nothing
-- (a purge that removes part of it is not covered yet); the readers still agree. In log mode it
-- rotates the log too, as far as it can (here its empty segments: the latest batch's one stays)
SELECT outbox.purge('0') > 0 AS removed;
SELECT purged_pos FROM outbox.state;
CALL pg_temp.brute();
SELECT min(pos), max(pos), count(*) FROM allev;
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(0)');
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay_channel('a', 0)$$);
SELECT * FROM pg_temp.check_readers(ARRAY['a', 'b', 'c', 's']) WHERE reader <> 'event';
-- the consumer acked at 30 no longer holds the frozen history: purge('0') removed it (P0002)
SELECT pg_temp.err('SELECT * FROM outbox.event(1)');

-- rotations of the log: its oldest segment is truncated, replay below its horizon is OB001.
-- The named consumer (acked at 30) holds the log's segments (pg_outbox.consumer_max_retention):
-- dropped first (consumers held and lost by a rotation: log_mode_observe)
SELECT outbox.drop_consumer('lmr_c');
SELECT outbox._log_rotate('0');
SELECT pg_temp.produce(6, 3, true);
SELECT outbox._log_pass(1000);
SELECT outbox._log_rotate('0');
SELECT pg_temp.produce(6, 4, true);
SELECT outbox._log_pass(1000);
SELECT outbox._log_rotate('0');
SELECT purged_pos > (SELECT base_pos FROM outbox.log_state) AS log_purged, cur_seg FROM outbox.log_state;
CALL pg_temp.brute();
SELECT min(pos) > 51 AS log_cut, max(pos), count(*) FROM allev;
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(30)');
SELECT pg_temp.err(format('SELECT count(*) FROM outbox.replay(%s)', (SELECT purged_pos - 1 FROM outbox.log_state)));
SELECT pg_temp.err($$SELECT count(*) FROM outbox.replay_channel('a', 0)$$);
SELECT * FROM pg_temp.check_readers(ARRAY['a', 'b', 'c', 's']) WHERE reader <> 'event';

\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE pg_outbox_lmr;
DROP ROLE lmr_reader;
