-- The producer into the log in C, outbox._log_publish() (src/log_publish.cpp), against the
-- reference producer outbox._log_insert() (PL/pgSQL): the same script of events written by each
-- (sql/include/log_produce.sql: three segments, savepoints, a rolled-back transaction, NULLs, an
-- oversized payload and key), then drained by the C pass outbox._log_pass(): the same batches,
-- the same events at the same positions and seqs. Then what only the C producer's row can get
-- wrong (the top-level xid from a subtransaction, the id sequence, created_at), the segment read
-- once per transaction, bad input (the errors of outbox.publish()), a DBA's trigger on a segment
-- (written through SQL then), row-level security. A database of its own.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_logpub;
CREATE DATABASE pg_outbox_logpub;
RESET client_min_messages;
\c pg_outbox_logpub
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

CREATE TEMP TABLE got_batches AS
    SELECT ''::text AS kind, first_pos, n, seg, cut, skipped, channels, first_seqs, counts, epoch
      FROM outbox.batches WHERE false;
CREATE TEMP TABLE got_events AS
    SELECT ''::text AS kind, 0::bigint AS nth_id, pos, seq, channel, key, type, payload, created_at, 0::bigint AS tx
      FROM outbox._log_replay(0, 1) WHERE false;
-- passes of the C pass, each in its own transaction, until one publishes nothing
CREATE PROCEDURE pg_temp.drain_all(m integer) LANGUAGE plpgsql AS $$
DECLARE k bigint; passes integer := 0;
BEGIN
    LOOP
        k := outbox._log_pass(m);
        COMMIT;
        passes := passes + 1;
        EXIT WHEN k = 0 OR passes > 10000;
    END LOOP;
END $$;
-- record what the producer wrote and the pass published, then empty the log for the next run
-- (ids are shown as their rank, transactions as the rank of their xid: both differ per run)
CREATE FUNCTION pg_temp.record(k text) RETURNS TABLE (batches bigint, events bigint) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO got_batches SELECT k, b.first_pos, b.n, b.seg, b.cut, b.skipped, b.channels, b.first_seqs, b.counts,
           b.epoch FROM outbox.batches b;
    INSERT INTO got_events
    SELECT k, dense_rank() OVER (ORDER BY r.id), r.pos, r.seq, r.channel, r.key, r.type, r.payload, r.created_at,
           dense_rank() OVER (ORDER BY l.xid)
      FROM outbox._log_replay(0, 100000) r JOIN outbox.log l ON l.id = r.id;
    TRUNCATE outbox.log_0, outbox.log_1, outbox.log_2, outbox.batches_0, outbox.batches_1, outbox.batches_2,
             outbox.log_channels;
    UPDATE outbox.log_state SET cur_seg = 0, channels_flushed_pos = 0;
    RETURN QUERY SELECT (SELECT count(*) FROM got_batches g WHERE g.kind = k),
                        (SELECT count(*) FROM got_events g WHERE g.kind = k);
END $$;

-- run 1: the reference producer; run 2: the C producer; both drained by the C pass in batches of 2
\set f _log_insert
\i :abs_srcdir/sql/include/log_produce.sql
CALL pg_temp.drain_all(2);
SELECT * FROM pg_temp.record('sql');
\set f _log_publish
\i :abs_srcdir/sql/include/log_produce.sql
CALL pg_temp.drain_all(2);
SELECT * FROM pg_temp.record('c');
-- the same: batches and events of one run and not the other (0 and 0)
SELECT (SELECT count(*) FROM (SELECT first_pos, n, seg, cut, skipped, channels, first_seqs, counts, epoch FROM got_batches WHERE kind = 'sql'
                              EXCEPT ALL
                              SELECT first_pos, n, seg, cut, skipped, channels, first_seqs, counts, epoch FROM got_batches WHERE kind = 'c') x) AS batches_only_sql,
       (SELECT count(*) FROM (SELECT first_pos, n, seg, cut, skipped, channels, first_seqs, counts, epoch FROM got_batches WHERE kind = 'c'
                              EXCEPT ALL
                              SELECT first_pos, n, seg, cut, skipped, channels, first_seqs, counts, epoch FROM got_batches WHERE kind = 'sql') x) AS batches_only_c,
       (SELECT count(*) FROM (SELECT nth_id, pos, seq, channel, key, type, payload, tx FROM got_events WHERE kind = 'sql'
                              EXCEPT ALL
                              SELECT nth_id, pos, seq, channel, key, type, payload, tx FROM got_events WHERE kind = 'c') x) AS events_only_sql,
       (SELECT count(*) FROM (SELECT nth_id, pos, seq, channel, key, type, payload, tx FROM got_events WHERE kind = 'c'
                              EXCEPT ALL
                              SELECT nth_id, pos, seq, channel, key, type, payload, tx FROM got_events WHERE kind = 'sql') x) AS events_only_c;
-- what the C producer's events became
SELECT first_pos, n, seg, cut, channels, first_seqs, counts FROM got_batches WHERE kind = 'c' ORDER BY first_pos;
SELECT pos, seq, nth_id, tx, channel, payload->>'n' AS n, left(key, 8) AS key, type FROM got_events WHERE kind = 'c' ORDER BY pos;
-- created_at is now() of the producer's transaction: one per transaction, as with the reference
SELECT kind, count(DISTINCT created_at) AS created_ats, count(DISTINCT tx) AS transactions
  FROM got_events GROUP BY kind ORDER BY kind;

-- the row: the top-level xid, also from a subtransaction (the pass's windows are of top-level
-- xids: a subtransaction's xid would be published in the wrong window, or never); the id from
-- outbox.pending_id_seq (as the column default); created_at now()
BEGIN;
SAVEPOINT s;
SELECT outbox._log_publish('x', '{"sub": 1}') = currval('outbox.pending_id_seq') AS id_from_the_sequence;
SAVEPOINT s2;
SELECT outbox._log_publish('x', '{"sub": 2}') > 0 AS ok;
SELECT count(*) AS rows, bool_and(xid = pg_current_xact_id()) AS top_level_xid, bool_and(created_at = now()) AS created_now
  FROM outbox.log WHERE channel = 'x';
COMMIT;
SELECT outbox.publish('y') < outbox._log_publish('y') AS ids_shared_with_publish;

-- cur_seg is read once per transaction: a rotation committed meanwhile is seen by the next one
-- (a stale segment is harmless: the pass reads every segment)
TRUNCATE outbox.log_0, outbox.log_1, outbox.log_2;
BEGIN;
SELECT outbox._log_publish('s', '{"n": 1}') > 0 AS ok;
UPDATE outbox.log_state SET cur_seg = 1;
SELECT outbox._log_publish('s', '{"n": 2}') > 0 AS ok;
COMMIT;
SELECT outbox._log_publish('s', '{"n": 3}') > 0 AS ok;
SELECT tableoid::regclass AS seg, payload->>'n' AS n FROM outbox.log WHERE channel = 's' ORDER BY id;
UPDATE outbox.log_state SET cur_seg = 0;
-- the segment is remembered across transactions (isolation log_rotate_producer: another
-- session's rotation or UPDATE) and forgotten with a change of cur_seg that rolls back: the
-- producer that wrote the uncommitted segment leaves the next transaction on the committed one
-- (a transaction keeps the segment it chose, even after ROLLBACK TO SAVEPOINT: n 4 is in log_2)
BEGIN;
UPDATE outbox.log_state SET cur_seg = 1;
SELECT outbox._log_publish('r', '{"n": 1}') > 0 AS ok;
ROLLBACK;
SELECT outbox._log_publish('r', '{"n": 2}') > 0 AS ok;
BEGIN;
SAVEPOINT s;
UPDATE outbox.log_state SET cur_seg = 2;
SELECT outbox._log_publish('r', '{"n": 3}') > 0 AS ok;
ROLLBACK TO SAVEPOINT s;
SELECT outbox._log_publish('r', '{"n": 4}') > 0 AS ok;
COMMIT;
SELECT outbox._log_publish('r', '{"n": 5}') > 0 AS ok;
-- ... and a committed UPDATE of this session
UPDATE outbox.log_state SET cur_seg = 1;
SELECT outbox._log_publish('r', '{"n": 6}') > 0 AS ok;
SELECT tableoid::regclass AS seg, payload->>'n' AS n FROM outbox.log WHERE channel = 'r' ORDER BY id;
TRUNCATE outbox.log_0, outbox.log_1, outbox.log_2;
UPDATE outbox.log_state SET cur_seg = 0;

-- bad input: the errors of outbox.publish()
SELECT pg_temp.err($$SELECT outbox._log_publish(NULL)$$);
SELECT pg_temp.err($$SELECT outbox._log_publish(NULL, '{}')$$);
SELECT pg_temp.err($$SELECT outbox._log_publish('')$$);
SELECT pg_temp.err($$SELECT outbox._log_publish(repeat('x', 64))$$);
SELECT pg_temp.err($$SELECT outbox._log_publish(repeat('é', 32))$$);
SELECT pg_temp.err($$SELECT outbox.publish(repeat('é', 32))$$);
BEGIN READ ONLY;
SELECT pg_temp.err($$SELECT outbox._log_publish('a')$$);
ROLLBACK;
-- internal: granted to nobody
CREATE ROLE logpub_nobody;
CREATE ROLE logpub_publisher IN ROLE outbox_publisher;
SET ROLE logpub_nobody;
SELECT pg_temp.err($$SELECT outbox._log_publish('a')$$);
SET ROLE logpub_publisher;
SELECT pg_temp.err($$SELECT outbox._log_publish('a')$$);
RESET ROLE;
DROP ROLE logpub_nobody;
DROP ROLE logpub_publisher;

-- a DBA's trigger on a segment: the row is inserted through SQL, which fires it (as publish()
-- does for outbox.pending, with search_path pinned: the trigger names its table); the xid and
-- created_at are the column defaults then
TRUNCATE outbox.log_0, outbox.log_1, outbox.log_2;
CREATE TABLE seen (id bigint, channel text, payload jsonb);
CREATE FUNCTION see_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.seen VALUES (NEW.id, NEW.channel, NEW.payload); RETURN NEW; END $$;
CREATE TRIGGER see AFTER INSERT ON outbox.log_0 FOR EACH ROW EXECUTE FUNCTION see_event();
BEGIN;
SAVEPOINT s;
SELECT outbox._log_publish('t', '{"n": 1}', 'k', 'ty') AS id \gset
SELECT id = :id AS same_id, channel, payload FROM seen;
SELECT count(*) AS rows, bool_and(xid = pg_current_xact_id()) AS top_level_xid FROM outbox.log;
COMMIT;
-- ... a BEFORE trigger that changes the row, and one that skips it (NULL: no event)
CREATE FUNCTION tag_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.type := 'tagged'; RETURN NEW; END $$;
CREATE TRIGGER tag BEFORE INSERT ON outbox.log_0 FOR EACH ROW EXECUTE FUNCTION tag_event();
SELECT outbox._log_publish('t', '{"n": 2}') > 0 AS ok;
CREATE FUNCTION skip_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER tag_zskip BEFORE INSERT ON outbox.log_0 FOR EACH ROW EXECUTE FUNCTION skip_event();
SELECT outbox._log_publish('t', '{"n": 3}') IS NULL AS skipped;
SELECT payload->>'n' AS n, type FROM outbox.log WHERE channel = 't' ORDER BY id;
SELECT count(*) AS seen FROM seen;
-- ... disabled: the direct path again (the trigger no longer fires)
ALTER TABLE outbox.log_0 DISABLE TRIGGER USER;
SELECT outbox._log_publish('t', '{"n": 4}') > 0 AS ok;
SELECT count(*) AS seen FROM seen;
DROP TRIGGER see ON outbox.log_0;
DROP TRIGGER tag ON outbox.log_0;
DROP TRIGGER tag_zskip ON outbox.log_0;
-- the events a trigger saw are published like the others
CALL pg_temp.drain_all(1000);
SELECT r.channel, r.payload->>'n' AS n, r.type FROM outbox._log_replay(0, 1000) r WHERE r.channel = 't' ORDER BY r.pos;

-- row-level security on a segment: refused, as for outbox.pending
ALTER TABLE outbox.log_0 ENABLE ROW LEVEL SECURITY;
SELECT pg_temp.err($$SELECT outbox._log_publish('a')$$);
ALTER TABLE outbox.log_0 DISABLE ROW LEVEL SECURITY;
SELECT outbox._log_publish('a') > 0 AS ok;

-- the change trigger's outbox mode in log mode (set by hand: this log is not empty, so
-- outbox.use_log_storage() would refuse it): its events are rows of the log, in the
-- writer's transaction (a savepoint rolled back takes its event with it), outbox.pending stays empty
CREATE TABLE u (id int PRIMARY KEY, name text);
SELECT outbox.attach('u', mode => 'outbox') IS NOT NULL AS attached;
UPDATE outbox.log_state SET active = true;
BEGIN;
INSERT INTO u VALUES (1, 'a'), (2, 'b');
SAVEPOINT s;
INSERT INTO u VALUES (3, 'c');
ROLLBACK TO s;
SELECT count(*) AS rows, bool_and(xid = pg_current_xact_id()) AS top_level_xid FROM outbox.log WHERE channel = 'public.u';
COMMIT;
SELECT count(*) AS pending_u FROM outbox.pending WHERE channel = 'public.u';
CALL pg_temp.drain_all(1000);
SELECT r.channel, r.seq, r.key, r.type, r.payload FROM outbox._log_replay(0, 1000) r WHERE r.channel = 'public.u' ORDER BY r.pos;
-- ... and after that transaction: the log again, never outbox.pending
INSERT INTO u VALUES (4, 'd');
SELECT count(*) AS pending_u FROM outbox.pending WHERE channel = 'public.u';

-- A DBA's CHECK constraint, column default or index expression on the segment runs with
-- search_path pinned, as the SQL path does, whoever writes (publish() as its caller, the change
-- trigger as the owner): a writer's own length() ahead of pg_catalog is not what the DBA's
-- function calls. (The extension's own tables have none of these: their rows are written without
-- the pin.)
CREATE FUNCTION public.dba_channel_ok(c text) RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN RETURN length(c) > 0; END $$;
CREATE FUNCTION public.dba_tag() RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN RETURN 'tag' || length('xyz'); END $$;
CREATE FUNCTION public.dba_len(c text) RETURNS int LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN RETURN length(c); END $$;
CREATE ROLE logpub_writer IN ROLE outbox_publisher;
GRANT INSERT ON u TO logpub_writer;
CREATE SEQUENCE u_ids START 1000;
GRANT USAGE ON u_ids TO logpub_writer;
CREATE SCHEMA logpub_evil AUTHORIZATION logpub_writer;
SET ROLE logpub_writer;
CREATE FUNCTION logpub_evil.length(text) RETURNS int LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'hijacked by %', current_user; END $$;
RESET ROLE;
-- what each path writes, one DBA object at a time
CREATE FUNCTION pg_temp.writes(what text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE n int := 10;
BEGIN
    FOR n IN 10..11 LOOP
        BEGIN
            SET LOCAL ROLE logpub_writer;
            PERFORM set_config('search_path', 'logpub_evil, pg_catalog, public', true);
            IF n = 10 THEN
                PERFORM outbox.publish('dba', '{}');
            ELSE
                INSERT INTO public.u VALUES (nextval('public.u_ids'), 'x');
            END IF;
            RESET ROLE;
            RESET search_path;
            RETURN NEXT format('%s, %s: written', what, CASE n WHEN 10 THEN 'publish()' ELSE 'change trigger' END);
        EXCEPTION WHEN OTHERS THEN
            RESET ROLE;
            RESET search_path;
            RETURN NEXT format('%s, %s: %s', what, CASE n WHEN 10 THEN 'publish()' ELSE 'change trigger' END, SQLERRM);
        END;
    END LOOP;
END $$;
ALTER TABLE outbox.log_0 ADD CONSTRAINT dba_check CHECK (public.dba_channel_ok(channel));
SELECT * FROM pg_temp.writes('check constraint');
SELECT count(*) AS written_into_log_0 FROM outbox.log_0 WHERE channel IN ('dba', 'public.u');
ALTER TABLE outbox.log_0 DROP CONSTRAINT dba_check;
ALTER TABLE outbox.log_0 ADD COLUMN dba_tag text DEFAULT public.dba_tag();
SELECT * FROM pg_temp.writes('column default');
SELECT DISTINCT dba_tag FROM outbox.log_0 WHERE dba_tag IS NOT NULL;
ALTER TABLE outbox.log_0 DROP COLUMN dba_tag;
CREATE INDEX dba_index ON outbox.log_0 (public.dba_len(channel));
SELECT * FROM pg_temp.writes('index expression');
DROP INDEX outbox.dba_index;
-- ... and nothing of the DBA's: written, the writer's search_path untouched by the write
SELECT * FROM pg_temp.writes('nothing');
SET ROLE logpub_writer;
SET search_path = logpub_evil, pg_catalog, public;
SELECT outbox.publish('dba', '{}') > 0 AS published, current_setting('search_path') AS search_path;
RESET search_path;
RESET ROLE;
DROP SCHEMA logpub_evil CASCADE;
REVOKE INSERT ON u FROM logpub_writer;
REVOKE USAGE ON u_ids FROM logpub_writer;
DROP ROLE logpub_writer;

-- the change trigger writes as outbox.pending's owner, remembered until the table's owner changes
-- (a DBA's column default on the segment shows who wrote the row)
ALTER TABLE outbox.log_0 ADD COLUMN dba_who text DEFAULT current_user;
CREATE ROLE logpub_owner;
INSERT INTO u VALUES (20, 'before');
ALTER TABLE outbox.pending OWNER TO logpub_owner;
INSERT INTO u VALUES (21, 'after');
ALTER TABLE outbox.pending OWNER TO CURRENT_USER;
INSERT INTO u VALUES (22, 'back');
SELECT key, dba_who FROM (SELECT id, key, dba_who FROM outbox.log_0 WHERE channel = 'public.u' ORDER BY id DESC LIMIT 3) l
 ORDER BY id;
ALTER TABLE outbox.log_0 DROP COLUMN dba_who;
DROP ROLE logpub_owner;

-- the segment remembered, then the extension dropped and created again in the session (new
-- tables, cur_seg 0): the event goes into the new log_0
UPDATE outbox.log_state SET cur_seg = 2;
SELECT outbox._log_publish('z') > 0 AS ok;
-- what the DROP's WARNING counts: the log's unpublished events and outbox.pending's rows
SELECT (SELECT count(*) FROM outbox._log_pending()) AS log_pending, (SELECT count(*) FROM outbox.pending) AS table_rows;
SET client_min_messages = warning;
DROP EXTENSION pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
SELECT outbox._log_publish('z') > 0 AS ok;
SELECT tableoid::regclass AS seg, channel FROM outbox.log;

\c contrib_regression
DROP DATABASE pg_outbox_logpub;
