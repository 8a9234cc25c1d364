-- The pass over the log in C, outbox._log_pass() (src/log_pass.cpp), against the reference pass
-- outbox._log_pass_sql() on the same log: the same batches (segment, key range, cut, first_pos,
-- channels, first seqs, counts, epoch), the same events at the same positions and seqs, and the
-- same NOTIFY envelopes (received through a dblink connection that LISTENs, compared as jsonb:
-- the C pass writes the 1.2 drain's compact text, the reference jsonb's text). The log has
-- windows over three segments, savepoints rolled back, several channels, a payload and a key too
-- long for NOTIFY. Then passes of both kinds interleaved (the C pass's seq cache must follow the
-- batches another pass wrote), passes rolled back (the cache must forget them), a DBA's trigger
-- on a batch table, and bad calls. A database of its own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_logc;
CREATE DATABASE pg_outbox_logc;
RESET client_min_messages;
\c pg_outbox_logc
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- a listener on every channel of the test, in another session
CREATE FUNCTION pg_temp.here() RETURNS text LANGUAGE sql AS $$
    SELECT format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
                  current_setting('port'), current_database()) $$;
SELECT dblink_connect('listener', pg_temp.here());
SELECT dblink_exec('listener', 'LISTEN a; LISTEN b; LISTEN c1; LISTEN c2; LISTEN c3; LISTEN big');
CREATE TEMP TABLE notes (kind text, ord serial, channel text, env text);
-- the notifications the listener has received, up to want of them (waits up to 30 s)
CREATE FUNCTION pg_temp.collect(k text, want integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE got integer; tries integer := 0;
BEGIN
    LOOP
        INSERT INTO notes (kind, channel, env) SELECT k, n.notify_name, n.extra FROM dblink_get_notify('listener') n;
        SELECT count(*) INTO got FROM notes WHERE kind = k;
        EXIT WHEN got >= want OR tries > 3000;
        PERFORM pg_sleep(0.01);
        tries := tries + 1;
    END LOOP;
    RETURN got;
END $$;
-- passes of one kind until one publishes nothing, each in its own transaction
CREATE PROCEDURE pg_temp.drain_all(kind text, m integer) LANGUAGE plpgsql AS $$
DECLARE k bigint; passes integer := 0;
BEGIN
    LOOP
        IF kind = 'sql' THEN
            k := outbox._log_pass_sql(m);
        ELSIF kind = 'c' THEN
            k := outbox._log_pass(m);
        ELSE -- alternate: c, sql, c, ...
            IF passes % 2 = 0 THEN k := outbox._log_pass(m); ELSE k := outbox._log_pass_sql(m); END IF;
        END IF;
        COMMIT;
        passes := passes + 1;
        EXIT WHEN k = 0 OR passes > 10000;
    END LOOP;
END $$;
CREATE TEMP TABLE got_batches AS
    SELECT ''::text AS kind, first_pos, n, seg, after_xid, after_id, upto_xid, upto_id, cut, skipped, channels,
           first_seqs, counts, epoch FROM outbox.batches WHERE false;
CREATE TEMP TABLE got_events AS
    SELECT ''::text AS kind, pos, seq, id, channel, key, type, payload FROM outbox._log_replay(0, 1) WHERE false;
-- record what a run published, then empty the batch tables for the next run (the log stays)
CREATE FUNCTION pg_temp.record(k text) RETURNS TABLE (batches bigint, events bigint) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO got_batches SELECT k, first_pos, n, seg, after_xid, after_id, upto_xid, upto_id, cut, skipped,
           channels, first_seqs, counts, epoch FROM outbox.batches;
    INSERT INTO got_events SELECT k, r.pos, r.seq, r.id, r.channel, r.key, r.type, r.payload
      FROM outbox._log_replay(0, 100000) r;
    TRUNCATE outbox.batches_0, outbox.batches_1, outbox.batches_2, outbox.log_channels;
    UPDATE outbox.log_state SET channels_flushed_pos = 0;
    RETURN QUERY SELECT (SELECT count(*) FROM got_batches g WHERE g.kind = k),
                        (SELECT count(*) FROM got_events g WHERE g.kind = k);
END $$;
-- a run's notifications collected, and the run recorded
CREATE FUNCTION pg_temp.recorded(k text, want integer) RETURNS TABLE (notified integer, batches bigint, events bigint)
    LANGUAGE sql AS $$ SELECT pg_temp.collect(k, want), r.batches, r.events FROM pg_temp.record(k) r $$;
-- how run b differs from run a: rows of one and not the other (0 and 0: the same)
CREATE FUNCTION pg_temp.differ(a text, b text) RETURNS TABLE (batches_only_a bigint, batches_only_b bigint,
                                                             events_only_a bigint, events_only_b bigint,
                                                             envelopes_only_a bigint, envelopes_only_b bigint)
    LANGUAGE sql AS $$
    WITH ba AS (SELECT first_pos, n, seg, after_xid::text, after_id, upto_xid::text, upto_id, cut, skipped, channels,
                       first_seqs, counts, epoch FROM got_batches WHERE kind = a),
         bb AS (SELECT first_pos, n, seg, after_xid::text, after_id, upto_xid::text, upto_id, cut, skipped, channels,
                       first_seqs, counts, epoch FROM got_batches WHERE kind = b),
         ea AS (SELECT pos, seq, id, channel, key, type, payload FROM got_events WHERE kind = a),
         eb AS (SELECT pos, seq, id, channel, key, type, payload FROM got_events WHERE kind = b),
         na AS (SELECT channel, env::jsonb AS env FROM notes WHERE kind = a),
         nb AS (SELECT channel, env::jsonb AS env FROM notes WHERE kind = b)
    SELECT (SELECT count(*) FROM (SELECT * FROM ba EXCEPT ALL SELECT * FROM bb) x),
           (SELECT count(*) FROM (SELECT * FROM bb EXCEPT ALL SELECT * FROM ba) x),
           (SELECT count(*) FROM (SELECT * FROM ea EXCEPT ALL SELECT * FROM eb) x),
           (SELECT count(*) FROM (SELECT * FROM eb EXCEPT ALL SELECT * FROM ea) x),
           (SELECT count(*) FROM (SELECT * FROM na EXCEPT ALL SELECT * FROM nb) x),
           (SELECT count(*) FROM (SELECT * FROM nb EXCEPT ALL SELECT * FROM na) x)
$$;

-- epoch 1 (a 1.2 drain begins it): both passes stamp the current epoch
SELECT outbox.publish('z') > 0 AS ok, outbox.drain() AS drained_12, outbox.epoch() AS epoch;

-- the log: segment 0, then 1, then 2 (the oldest is cur_seg + 1 = 0 once cur_seg is 2)
BEGIN;
SELECT count(outbox._log_insert('a', jsonb_build_object('n', g))) FROM generate_series(1, 3) g;
SELECT outbox._log_insert('b', '{"n": 4}', 'key4', 'type4') > 0 AS ok;
SAVEPOINT s;
SELECT outbox._log_insert('b', '{"n": 99}') > 0 AS ok;
ROLLBACK TO s;
SELECT outbox._log_insert('b', NULL) > 0 AS ok;
COMMIT;
SELECT outbox._log_insert('big', jsonb_build_object('n', 6, 'blob', repeat('x', 9000))) > 0 AS ok;
SELECT outbox._log_insert('big', '{"n": 7}', repeat('k', 9000), 't') > 0 AS ok;
UPDATE outbox.log_state SET cur_seg = 1;
SELECT count(outbox._log_insert('c' || (g % 3 + 1), jsonb_build_object('n', 10 + g))) FROM generate_series(1, 9) g;
BEGIN;
SELECT outbox._log_insert('a', '{"n": 20}') > 0 AS ok;
SELECT outbox._log_insert('c1', '{"n": 21}') > 0 AS ok;
COMMIT;
UPDATE outbox.log_state SET cur_seg = 2;
SELECT count(outbox._log_insert('a', jsonb_build_object('n', 30 + g))) FROM generate_series(1, 4) g;
SELECT outbox._log_insert('c2', '{"n": 40}', 'k', NULL) > 0 AS ok;
SELECT seg, count(*) FROM (SELECT tableoid::regclass::text AS seg FROM outbox.log) l GROUP BY seg ORDER BY seg;

-- run 1: the reference, batches of 2; run 2: the C pass, batches of 2
CALL pg_temp.drain_all('sql', 2);
SELECT * FROM pg_temp.recorded('sql2', 23);
CALL pg_temp.drain_all('c', 2);
SELECT * FROM pg_temp.recorded('c2', 23);
SELECT * FROM pg_temp.differ('sql2', 'c2');
-- what they published (the C run's): one segment per batch, oldest segment first
SELECT first_pos, n, seg, cut, channels, first_seqs, counts, epoch FROM got_batches WHERE kind = 'c2' ORDER BY first_pos;
SELECT pos, seq, id - (SELECT min(id) FROM got_events WHERE kind = 'c2') + 1 AS nth_id, channel, payload->>'n' AS n,
       key IS NOT NULL AS has_key FROM got_events WHERE kind = 'c2' ORDER BY pos;
-- the envelopes: the payload too long for NOTIFY left out, then the key too ("truncated")
SELECT channel, env::jsonb - 'id' AS env FROM notes WHERE kind = 'c2' AND channel IN ('big', 'b') ORDER BY ord;

-- batches of 1000 (one window, cut where each segment's rows end), and of 1 (every event cut)
CALL pg_temp.drain_all('sql', 1000);
SELECT * FROM pg_temp.recorded('sql1000', 23);
CALL pg_temp.drain_all('c', 1000);
SELECT * FROM pg_temp.recorded('c1000', 23);
SELECT * FROM pg_temp.differ('sql1000', 'c1000');
SELECT first_pos, n, seg, cut FROM got_batches WHERE kind = 'c1000' ORDER BY first_pos;
CALL pg_temp.drain_all('sql', 1);
SELECT * FROM pg_temp.recorded('sql1', 23);
CALL pg_temp.drain_all('c', 1);
SELECT * FROM pg_temp.recorded('c1', 23);
SELECT * FROM pg_temp.differ('sql1', 'c1');

-- interleaved: C, SQL, C, ... passes of 3; the C pass's cache catches up on the SQL pass's batches
CALL pg_temp.drain_all('mixed', 3);
SELECT * FROM pg_temp.recorded('mixed3', 23);
CALL pg_temp.drain_all('sql', 3);
SELECT * FROM pg_temp.recorded('sql3', 23);
SELECT * FROM pg_temp.differ('sql3', 'mixed3');

-- rolled back, whole or to a savepoint: the pass is forgotten, positions and seqs handed out again
BEGIN;
SELECT outbox._log_pass(5) AS rolled_back;
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT outbox._log_pass(5) AS rolled_back_to_savepoint;
ROLLBACK TO s;
COMMIT;
CALL pg_temp.drain_all('c', 3);
SELECT * FROM pg_temp.recorded('c3', 23);
SELECT * FROM pg_temp.differ('sql3', 'c3');

-- new events after a run: seqs continue from the batches (and from log_channels once truncated)
CALL pg_temp.drain_all('c', 1000);
SELECT pg_temp.collect('seed', 23) AS notified;
SELECT outbox._log_insert('a', '{"n": 50}') > 0 AND outbox._log_insert('c3', '{"n": 51}') > 0 AS ok;
SELECT outbox._log_pass() AS published;
SELECT pg_temp.collect('next', 2) AS notified;
SELECT channel, (env::jsonb)->'seq' AS seq, (env::jsonb)->'pos' AS pos FROM notes WHERE kind = 'next' ORDER BY ord;

-- write-behind: the first pass of a session, and then one a second at most, writes the seqs into
-- outbox.log_channels and channels_flushed_pos; another session's cache starts from them and the
-- batches after it, and seqs go on
SELECT pg_sleep(1.1);
SELECT outbox._log_insert('c3', '{"n": 52}') > 0 AS ok;
SELECT outbox._log_pass() AS published;
SELECT s.channels_flushed_pos = outbox._log_head() AS flushed_to_head,
       (SELECT array_agg(channel || ':' || last_seq ORDER BY channel) FROM outbox.log_channels) AS log_channels
  FROM outbox.log_state s;
SELECT outbox._log_insert('a', '{"n": 53}') > 0 AND outbox._log_insert('c3', '{"n": 54}') > 0 AS ok;
SELECT dblink_connect('other', pg_temp.here());
SELECT * FROM dblink('other', 'SELECT outbox._log_pass()') AS t(published_by_another_session bigint);
SELECT dblink_disconnect('other');
SELECT pg_temp.collect('cold', 3) AS notified;
SELECT channel, (env::jsonb)->'seq' AS seq FROM notes WHERE kind = 'cold' ORDER BY ord;

-- a DBA's trigger on a batch table: the batch row is written through SQL, which fires it
CREATE TABLE seen_batches (first_pos bigint);
CREATE FUNCTION see_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO seen_batches VALUES (NEW.first_pos); RETURN NEW; END $$;
CREATE TRIGGER see AFTER INSERT ON outbox.batches_2 FOR EACH ROW EXECUTE FUNCTION see_batch();
SELECT outbox._log_insert('a', '{"n": 60}') > 0 AS ok;
SELECT outbox._log_pass() AS published;
SELECT (SELECT array_agg(first_pos) FROM seen_batches) = ARRAY[outbox._log_head()] AS seen;
-- ... and one that skips the row: the pass fails (its positions would be handed out again)
CREATE FUNCTION skip_batch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER skip BEFORE INSERT ON outbox.batches_2 FOR EACH ROW EXECUTE FUNCTION skip_batch();
SELECT outbox._log_insert('a', '{"n": 61}') > 0 AS ok;
SELECT pg_temp.err($$SELECT outbox._log_pass()$$);
DROP TRIGGER skip ON outbox.batches_2;
DROP TRIGGER see ON outbox.batches_2;
SELECT outbox._log_pass() AS published_after_drop;
SELECT pg_temp.collect('after', 2) AS notified;
SELECT channel, (env::jsonb)->'seq' AS seq, (env::jsonb)->'payload' AS payload FROM notes WHERE kind = 'after' ORDER BY ord;

-- targets (outbox.channel_targets): 'wal', a logical decoding message with the whole envelope and
-- no NOTIFY; 'both'; the rest NOTIFY. The whole log again, through both passes, compared.
SELECT 'init' FROM pg_create_logical_replication_slot('logc_td', 'test_decoding');
INSERT INTO outbox.channel_targets VALUES ('c1', 'wal'), ('c2', 'both');
SELECT count(outbox._log_insert(ch, jsonb_build_object('n', 70 + g), 'k' || g))
  FROM generate_series(1, 3) g, unnest(ARRAY['c1', 'c2', 'c3']) ch;
CREATE TEMP TABLE wal_msgs (kind text, msg jsonb);
CREATE FUNCTION pg_temp.take_messages(k text) RETURNS bigint LANGUAGE sql AS $$
    WITH m AS (INSERT INTO wal_msgs
               SELECT k, substr(c.data, position(' content:' in c.data) + 9)::jsonb
                 FROM pg_logical_slot_get_changes('logc_td', NULL, NULL, 'include-xids', '0', 'skip-empty-xacts', '1') c
                WHERE c.data LIKE 'message:%' RETURNING 1)
    SELECT count(*) FROM m
$$;
SELECT (SELECT count(*) FROM pg_temp.record('before_targets')) AS reset, pg_temp.take_messages('none') AS messages;
CALL pg_temp.drain_all('sql', 4);
SELECT pg_temp.take_messages('sqlw') AS messages, r.* FROM pg_temp.recorded('sqlw', (SELECT count(*)::integer FROM outbox.log WHERE channel <> 'c1')) r;
CALL pg_temp.drain_all('c', 4);
SELECT pg_temp.take_messages('cw') AS messages, r.* FROM pg_temp.recorded('cw', (SELECT count(*)::integer FROM outbox.log WHERE channel <> 'c1')) r;
SELECT * FROM pg_temp.differ('sqlw', 'cw');
SELECT (SELECT count(*) FROM (SELECT msg FROM wal_msgs WHERE kind = 'sqlw' EXCEPT ALL SELECT msg FROM wal_msgs WHERE kind = 'cw') x) AS messages_only_sql,
       (SELECT count(*) FROM (SELECT msg FROM wal_msgs WHERE kind = 'cw' EXCEPT ALL SELECT msg FROM wal_msgs WHERE kind = 'sqlw') x) AS messages_only_c;
-- the C run's messages: c1 and c2 only, every field there; NOTIFYs: everything but c1
SELECT msg->>'channel' AS channel, count(*) AS messages, bool_and(msg ? 'payload' AND msg ? 'key' AND msg ? 'type') AS whole
  FROM wal_msgs WHERE kind = 'cw' GROUP BY 1 ORDER BY 1;
SELECT channel, count(*) AS notified FROM notes WHERE kind = 'cw' GROUP BY 1 ORDER BY 1;
SELECT pg_drop_replication_slot('logc_td');
DELETE FROM outbox.channel_targets;

-- a seq cache smaller than the channels (pg_outbox.channel_cache_size = 16, 40 new channels): past
-- it the cache is written into log_channels and emptied, misses are looked up there; the same
-- batches and seqs as the reference
SELECT count(outbox._log_insert('m' || (g % 40), jsonb_build_object('n', 100 + g))) FROM generate_series(1, 120) g;
-- (and a target table holding '*' alone: every channel takes it, here 'wal', no NOTIFY at all)
SELECT (SELECT count(*) FROM pg_temp.record('before_small')) AS reset;
INSERT INTO outbox.channel_targets VALUES ('*', 'wal');
SET pg_outbox.channel_cache_size = 16;
CALL pg_temp.drain_all('c', 7);
SELECT pg_sleep(0.5);
SELECT * FROM pg_temp.recorded('csmall', 0);
RESET pg_outbox.channel_cache_size;
CALL pg_temp.drain_all('sql', 7);
SELECT pg_sleep(0.5);
SELECT * FROM pg_temp.recorded('sqlsmall', 0);
DELETE FROM outbox.channel_targets;
SELECT * FROM pg_temp.differ('sqlsmall', 'csmall');
SELECT count(*) AS m_channels, sum(seqs) AS m_events FROM (SELECT channel, max(seq) AS seqs FROM got_events
  WHERE kind = 'csmall' AND channel ~ '^m' GROUP BY channel) c;

-- a channel met again in a later pass at a place of that pass's batch that is another channel's
-- (the seq cache entry remembers where in its batch the pass that met it last put it): channels
-- s0..s4 forwards, then backwards, ...; passes of 5 and of 3, against the reference
SELECT count(outbox._log_insert('s' || CASE WHEN (g - 1) / 5 % 2 = 0 THEN (g - 1) % 5 ELSE 4 - (g - 1) % 5 END,
                                jsonb_build_object('n', 300 + g))) FROM generate_series(1, 40) g;
SELECT (SELECT count(*) FROM pg_temp.record('before_slots')) AS reset;
CALL pg_temp.drain_all('c', 5);
SELECT * FROM pg_temp.recorded('cslots5', 0);
CALL pg_temp.drain_all('c', 3);
SELECT * FROM pg_temp.recorded('cslots3', 0);
CALL pg_temp.drain_all('sql', 5);
SELECT * FROM pg_temp.recorded('sqlslots5', 0);
CALL pg_temp.drain_all('sql', 3);
SELECT * FROM pg_temp.recorded('sqlslots3', 0);
SELECT * FROM pg_temp.differ('sqlslots5', 'cslots5');
SELECT * FROM pg_temp.differ('sqlslots3', 'cslots3');
SELECT channel, array_agg(seq ORDER BY pos) AS seqs FROM got_events WHERE kind = 'cslots3' AND channel ~ '^s'
 GROUP BY 1 ORDER BY 1;

-- past pg_outbox.channel_cache_size, the names written into outbox.log_channels are kept in a
-- filter: a channel it lacks is new (no lookup), one it may hold is looked up. Cache 16, 60
-- channels (f1..f60) twice; then a statement on log_channels (every pass loads the cache again,
-- log_channels is larger than the cache: the filter is made from the table) and f1..f80 (old
-- ones and new ones) in a second drain: positions and every channel's seqs without a gap
SELECT (SELECT count(*) FROM pg_temp.record('before_gone')) AS reset;
SET pg_outbox.channel_cache_size = 16;
SELECT count(outbox._log_insert('f' || (g % 60 + 1), jsonb_build_object('n', 400 + g))) FROM generate_series(1, 120) g;
CALL pg_temp.drain_all('c', 5);
SELECT count(*) > 16 AS log_channels_past_the_cache FROM outbox.log_channels;
UPDATE outbox.log_channels SET last_seq = last_seq WHERE false;
SELECT count(outbox._log_insert('f' || (g % 80 + 1), jsonb_build_object('n', 500 + g))) FROM generate_series(1, 160) g;
CALL pg_temp.drain_all('c', 7);
RESET pg_outbox.channel_cache_size;
SELECT * FROM pg_temp.recorded('cgone', 0);
SELECT count(*) AS events, max(pos) - min(pos) + 1 AS pos_span, count(DISTINCT pos) AS positions
  FROM got_events WHERE kind = 'cgone';
SELECT count(DISTINCT channel) AS f_channels, count(*) AS f_events,
       count(*) FILTER (WHERE seq <> rn) AS seqs_out_of_place
  FROM (SELECT channel, seq, row_number() OVER (PARTITION BY channel ORDER BY pos) AS rn
          FROM got_events WHERE kind = 'cgone') e WHERE channel ~ '^f';
SELECT channel, max(seq) AS last_seq FROM got_events WHERE kind = 'cgone' AND channel IN ('f1', 'f60', 'f61', 'f80')
 GROUP BY 1 ORDER BY 1;

-- a wide batch's arrays are compressed with lz4 (or channels stored out of line uncompressed, on a
-- server built without lz4)
SELECT attname, bool_and(attcompression = 'l' OR (attname = 'channels' AND attstorage = 'e')) AS cheap
  FROM pg_attribute WHERE attrelid IN ('outbox.batches'::regclass, 'outbox.batches_0'::regclass,
                                       'outbox.batches_1'::regclass, 'outbox.batches_2'::regclass)
                      AND attname IN ('channels', 'first_seqs', 'counts')
 GROUP BY 1 ORDER BY 1;

-- bad calls
SELECT pg_temp.err($$SELECT outbox._log_pass(NULL)$$);
SELECT pg_temp.err($$SELECT outbox._log_pass(0)$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.err($$SELECT outbox._log_pass()$$);
ROLLBACK;
CREATE ROLE logc_nobody;
SET ROLE logc_nobody;
SELECT pg_temp.err($$SELECT outbox._log_pass()$$);
RESET ROLE;
DROP ROLE logc_nobody;

SELECT dblink_disconnect('listener');
\c contrib_regression
DROP DATABASE pg_outbox_logc;
