-- Attacks on the C pass over the log, outbox._log_pass() (src/log_pass.cpp; issue #15, red team):
-- each case runs the reference outbox._log_pass_sql() in a transaction rolled back, keeps what it
-- published (batches and replayed events) in a psql variable, then runs the C pass for real and
-- compares; the envelopes the C pass NOTIFYed (received by a dblink listener) are compared with
-- the reference's outbox._log_envelope() of the replayed events. Cases: DROP + CREATE EXTENSION
-- in the session (ids, positions and seqs start again at 1), a DBA's trigger on a batch table
-- that raises inside a caught block after the seq cache was loaded, channel names of 63 bytes
-- (ASCII and multi-byte), a key and a type too long for NOTIFY, max_events 2147483647,
-- log_state.cur_seg out of range, and a DBA's descending indexes. A database of its own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_logca;
CREATE DATABASE pg_outbox_logca;
RESET client_min_messages;
\c pg_outbox_logca
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\set err_style hint
\i :abs_srcdir/sql/include/err.sql

-- what the log has published: the batches (without their snapshots, which differ between two
-- runs) and the replayed events
CREATE FUNCTION pg_temp.published() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'batches', (SELECT jsonb_agg(jsonb_build_object('first_pos', first_pos, 'n', n, 'seg', seg,
                                                        'after', after_xid::text || '/' || after_id,
                                                        'upto', upto_xid::text || '/' || upto_id, 'cut', cut,
                                                        'channels', channels, 'first_seqs', first_seqs,
                                                        'counts', counts, 'epoch', epoch) ORDER BY first_pos)
                      FROM outbox.batches),
        'events', (SELECT jsonb_agg(jsonb_build_object('pos', pos, 'seq', seq, 'id', id, 'channel', channel,
                                                       'key', key, 'type', type, 'payload', payload) ORDER BY pos)
                     FROM outbox._log_replay(0, 100000)))
$$;

-- 1. DROP + CREATE EXTENSION in this session after C passes: the new log starts again at id 1,
-- position 1, seq 1 (the seq cache of the old tables is not used)
SELECT outbox._log_insert('a', '{"n": 1}') AS id, outbox._log_insert('a', '{"n": 2}') AS id2;
SELECT outbox._log_pass() AS published;
SELECT first_pos, n, channels, first_seqs FROM outbox.batches;
DROP EXTENSION pg_outbox;
CREATE EXTENSION pg_outbox;
SELECT outbox._log_insert('a', '{"n": 3}') AS id;
SELECT outbox._log_pass() AS published;
SELECT pos, seq, id, channel, payload FROM outbox._log_replay(0);

-- 2. A DBA's trigger on a batch table raises after the pass loaded its cache; the error is caught
-- (a subtransaction rolled back); the next passes publish what the reference does.
CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('logca.boom', true) = 'on' THEN RAISE EXCEPTION 'boom'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER boom BEFORE INSERT ON outbox.batches_0 FOR EACH ROW EXECUTE FUNCTION public.boom();
SELECT outbox._log_insert('a', '{"n": 4}') > 0 AND outbox._log_insert('b', '{"n": 5}') > 0 AS ok;
SET logca.boom = on;
DO $$
BEGIN
    PERFORM outbox._log_pass(1);
EXCEPTION WHEN raise_exception THEN
    RAISE NOTICE 'caught: %', SQLERRM;
END $$;
RESET logca.boom;
SELECT outbox._log_insert('a', '{"n": 6}') > 0 AS ok;
BEGIN;
SELECT outbox._log_pass_sql(1) + outbox._log_pass_sql(1) + outbox._log_pass_sql(1) AS reference;
SELECT pg_temp.published() AS ref \gset
ROLLBACK;
SELECT outbox._log_pass(1) + outbox._log_pass(1) + outbox._log_pass(1) AS c_pass;
SELECT pg_temp.published() = :'ref'::jsonb AS same_as_reference;
SELECT pos, seq, channel, payload FROM outbox._log_replay(1);
DROP TRIGGER boom ON outbox.batches_0;

-- 3. Names and sizes: channels of 63 bytes (the limit; ASCII, and 31 two-byte characters and one
-- byte), of one 3-byte character; a key and a type longer than NOTIFY takes; payloads whose
-- envelope is just under and just over the limit; one pass of max_events 2147483647.
SELECT dblink_connect('listener', format('host=%s port=%s dbname=%s',
       split_part(current_setting('unix_socket_directories'), ',', 1), current_setting('port'), current_database()));
SELECT repeat('x', 63) AS ch_ascii, repeat('é', 31) || 'y' AS ch_multi, '€' AS ch_euro \gset
SELECT octet_length(:'ch_ascii') AS ascii_bytes, octet_length(:'ch_multi') AS multi_bytes;
SELECT dblink_exec('listener', format('LISTEN %I; LISTEN %I; LISTEN %I; LISTEN kt', :'ch_ascii', :'ch_multi', :'ch_euro'));
CREATE TEMP TABLE notes (ord serial, channel text, env text);
CREATE FUNCTION pg_temp.collect(want integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE got integer; tries integer := 0;
BEGIN
    LOOP
        INSERT INTO notes (channel, env) SELECT n.notify_name, n.extra FROM dblink_get_notify('listener') n;
        SELECT count(*) INTO got FROM notes;
        EXIT WHEN got >= want OR tries > 3000;
        PERFORM pg_sleep(0.01);
        tries := tries + 1;
    END LOOP;
    RETURN got;
END $$;
SELECT outbox._log_insert(:'ch_ascii', '{"n": 10}', 'k', 't') > 0 AS ok;
SELECT outbox._log_insert(:'ch_multi', '{"n": 11}', 'ключ', 'тип') > 0 AS ok;
SELECT outbox._log_insert(:'ch_euro', '{"n": 12}') > 0 AS ok;
SELECT outbox._log_insert(:'ch_ascii', '{"n": 13}') > 0 AS ok;
SELECT outbox._log_insert('kt', '{"n": 14}', repeat('k', 9000), 't') > 0 AS ok;
SELECT outbox._log_insert('kt', '{"n": 15}', 'k', repeat('t', 9000)) > 0 AS ok;
SELECT outbox._log_insert('kt', '{"n": 16}', repeat('ü', 3990), NULL) > 0 AS ok;
-- a payload of many small values: 7485 bytes as the compact text NOTIFY carries, 8884 as jsonb's
-- text (a blank after every ':' and ','): sent whole (the reference measured jsonb's text and cut it)
SELECT outbox._log_insert('kt', (SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, 700) g)) > 0 AS ok;
-- envelopes of 7996 and 8002 bytes (pos and id of two digits, seq of one, no epoch yet)
SELECT octet_length(outbox._log_envelope(10, 1, 10, NULL, NULL, '{"p": ""}', 0, false)) AS env_base \gset
SELECT outbox._log_insert('kt', jsonb_build_object('p', repeat('p', 7999 - :env_base - 3))) > 0 AS ok;
SELECT outbox._log_insert('kt', jsonb_build_object('p', repeat('p', 7999 - :env_base + 3))) > 0 AS ok;
BEGIN;
SELECT outbox._log_pass_sql(2147483647) AS reference;
SELECT pg_temp.published() AS ref \gset
ROLLBACK;
SELECT outbox._log_pass(2147483647) AS c_pass;
SELECT pg_temp.published() = :'ref'::jsonb AS same_as_reference;
SELECT pg_temp.collect(10) AS notified;
-- every envelope the C pass sent is the reference's, on the event's own channel
SELECT count(*) AS envelopes,
       count(*) FILTER (WHERE n.env::jsonb = outbox._log_envelope(e.pos, e.seq, e.id, e.key, e.type, e.payload, e.epoch,
                                                                  false)::jsonb
                          AND n.channel = e.channel) AS as_reference
  FROM notes n JOIN outbox._log_replay(4) e ON e.pos = (n.env::jsonb->>'pos')::bigint;
SELECT channel = :'ch_ascii' AS is_ascii, channel = :'ch_multi' AS is_multi, env::jsonb->'seq' AS seq,
       env::jsonb ? 'key' AS has_key, env::jsonb ? 'type' AS has_type, env::jsonb ? 'payload' AS has_payload,
       env::jsonb ? 'truncated' AS truncated, octet_length(env) AS bytes
  FROM notes ORDER BY ord;
SELECT dblink_disconnect('listener');

-- 4. log_state.cur_seg out of range: refused when it is set (the reference pass and the producers
-- took it modulo the number of segments or named a table that does not exist)
SELECT pg_temp.err($$UPDATE outbox.log_state SET cur_seg = 3$$);
SELECT pg_temp.err($$UPDATE outbox.log_state SET cur_seg = -1$$);
SELECT pg_temp.err($$UPDATE outbox.log_state SET cur_seg = NULL$$);
SELECT cur_seg FROM outbox.log_state;
SELECT outbox._log_insert('a', '{"n": 20}') > 0 AS ok;
SELECT outbox._log_pass() AS published;

-- 5. A DBA's index on (xid DESC, id DESC) of a segment and on (first_pos DESC) of a batch table,
-- older than the extension's once REINDEX CONCURRENTLY gave those new OIDs: the pass keeps to the
-- ascending btrees (it took the first index on the columns: it read the window backwards, cut
-- the batch after its newest row and continued after it: ids 1 and 2 were never published).
SELECT outbox._log_insert('i', jsonb_build_object('n', g)) > 0 AS ok FROM generate_series(1, 3) g;
CREATE INDEX dba_log_desc ON outbox.log_0 (xid DESC, id DESC);
CREATE INDEX dba_batches_desc ON outbox.batches_0 (first_pos DESC);
REINDEX INDEX CONCURRENTLY outbox.log_0_xid_id;
REINDEX INDEX CONCURRENTLY outbox.batches_0_pkey;
BEGIN;
SELECT outbox._log_pass_sql(1) + outbox._log_pass_sql(1) + outbox._log_pass_sql(1) + outbox._log_pass_sql(1) AS reference;
SELECT pg_temp.published() AS ref \gset
ROLLBACK;
SELECT outbox._log_pass(1) + outbox._log_pass(1) + outbox._log_pass(1) + outbox._log_pass(1) AS c_pass;
SELECT pg_temp.published() = :'ref'::jsonb AS same_as_reference;
SELECT pos, seq, channel, payload->>'n' AS n FROM outbox._log_replay(outbox._log_head() - 3);
-- with only the DBA's index, the pass says what is missing
DROP INDEX outbox.log_0_xid_id;
SELECT pg_temp.err($$SELECT outbox._log_pass()$$);

\c contrib_regression
DROP DATABASE pg_outbox_logca;
