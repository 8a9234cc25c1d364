-- A red team against the switch to the log, outbox.use_log_storage() (src/sql/65_log_switch.sql,
-- src/storage_mode.cpp). Each case starts from a fresh extension in 1.2 mode with one event
-- published and drained (the 1.2 head is 1):
-- 1. producers before and after the switch in the switch's own transaction: the events after it
--    stayed in outbox.pending forever (the once-per-transaction mode still said 1.2);
-- 2. a switch rolled back (ROLLBACK TO SAVEPOINT, a PL/pgSQL EXCEPTION block): the events after
--    it went into the log of a database still in 1.2 mode;
-- 3. a log used before the switch (outbox._log_publish(), passes, rotations) then emptied by the
--    TRUNCATE the switch's hint suggests: purged_pos, channels_flushed_pos and log_channels rows
--    of that use survived the switch (false OB001, 40001 in replay_channel, skipped seqs);
-- 4. failures being retried in 1.2: the switch refuses (the log has no failure path yet); a dead
--    letter stays one and retry() puts it into the log;
-- 5. a DBA's trigger, rule, constraint or row security on outbox.pending, or the extension's own
--    trigger disabled: the switch refuses (they would stop applying to publish() and the change
--    trigger);
-- 6. a transaction that holds its lock on outbox.pending: the switch waits at most lock_timeout
--    (5s when it is 0) and fails with 55P03 instead of waiting forever;
-- 7. found attacking the fixes: in log mode a row inserted into outbox.pending under
--    session_replication_role = replica (by hand, retry() of a dead letter) stayed there forever.
-- (8, 9: see below) 10. DELETE FROM outbox.log_state before a data-only restore: a pooled backend
--    that remembered log mode wrote a log nothing drained; 11. ALTER SCHEMA outbox RENAME and back,
--    DROP/CREATE EXTENSION: the mode and outbox.log_state a session remembered; 12. log mode whose
--    base_pos is below the 1.2 head (a data-only restore into a database that published meanwhile).
SET client_min_messages = warning;
DROP DATABASE IF EXISTS pg_outbox_swattack;
CREATE DATABASE pg_outbox_swattack;
RESET client_min_messages;
\c pg_outbox_swattack
SET client_min_messages = warning;
CREATE EXTENSION dblink;
RESET client_min_messages;
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
-- a fresh 1.2 database: the extension again, one event published and drained
CREATE PROCEDURE fresh() LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL client_min_messages = error; -- DROP EXTENSION warns of the pending events it drops
    DROP EXTENSION IF EXISTS pg_outbox CASCADE;
    CREATE EXTENSION pg_outbox;
    PERFORM outbox.publish('a', jsonb_build_object('n', 0));
    PERFORM outbox.drain();
END $$;
-- every event of the database: where it is, published or not (a function with its body unchecked:
-- DROP EXTENSION would take a view with it)
SET check_function_bodies = off;
CREATE FUNCTION everything() RETURNS TABLE (storage text, pos bigint, seq bigint, channel text, n text)
    LANGUAGE sql AS $$
    SELECT 'pending', NULL::bigint, NULL::bigint, channel, payload->>'n' FROM outbox.pending
    UNION ALL
    SELECT 'published', pos, seq, channel, payload->>'n' FROM outbox.replay(0, NULL, 1000)
    UNION ALL
    SELECT 'log, not published', NULL, NULL, l.channel, l.payload->>'n' FROM outbox.log l
     WHERE NOT EXISTS (SELECT FROM outbox.replay(0, NULL, 1000) r WHERE r.id = l.id) $$;
RESET check_function_bodies;

-- 1. in the switch's own transaction: publish(), the change trigger, an INSERT by hand, before and after
CALL fresh();
CREATE TABLE orders (id int PRIMARY KEY);
SELECT outbox.attach('orders', 'orders') IS NOT NULL AS attached;
BEGIN;
SELECT outbox.publish('a', jsonb_build_object('n', 1)) IS NOT NULL AS published;
INSERT INTO orders VALUES (1);
SELECT events_moved, base_pos FROM outbox.use_log_storage();
SELECT outbox.publish('a', jsonb_build_object('n', 2)) IS NOT NULL AS published;
INSERT INTO orders VALUES (2);
INSERT INTO outbox.pending (channel, payload) VALUES ('a', jsonb_build_object('n', 3));
COMMIT;
SELECT outbox._log_active() AS log_mode, (SELECT count(*) FROM outbox.pending) AS pending, outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;
DROP TABLE orders;

-- 2a. a switch rolled back to a savepoint: 1.2 mode, the event after it in outbox.pending
CALL fresh();
BEGIN;
SAVEPOINT a;
SELECT events_moved, base_pos FROM outbox.use_log_storage();
SELECT outbox.publish('a', jsonb_build_object('n', 1)) IS NOT NULL AS published;
ROLLBACK TO SAVEPOINT a;
SELECT outbox.publish('a', jsonb_build_object('n', 2)) IS NOT NULL AS published;
COMMIT;
SELECT outbox._log_active() AS log_mode, (SELECT count(*) FROM outbox.log) AS in_log;
SELECT outbox.drain() AS drained;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;
-- 2b. the same with a producer before the savepoint (its mode read first, as 1.2)
CALL fresh();
BEGIN;
SELECT outbox.publish('a', jsonb_build_object('n', 1)) IS NOT NULL AS published;
SAVEPOINT a;
SELECT events_moved, base_pos FROM outbox.use_log_storage();
SELECT outbox.publish('a', jsonb_build_object('n', 2)) IS NOT NULL AS published;
ROLLBACK TO SAVEPOINT a;
SELECT outbox.publish('a', jsonb_build_object('n', 3)) IS NOT NULL AS published;
COMMIT;
SELECT outbox._log_active() AS log_mode, (SELECT count(*) FROM outbox.log) AS in_log, outbox.drain() AS drained;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;
-- 2c. a PL/pgSQL EXCEPTION block around the switch that fails after it
CALL fresh();
BEGIN;
DO $$
BEGIN
    PERFORM outbox.use_log_storage();
    PERFORM outbox.publish('a', jsonb_build_object('n', 1));
    RAISE EXCEPTION 'fails after the switch';
EXCEPTION WHEN raise_exception THEN
    RAISE NOTICE 'caught: %', SQLERRM;
END $$;
SELECT outbox.publish('a', jsonb_build_object('n', 2)) IS NOT NULL AS published;
COMMIT;
SELECT outbox._log_active() AS log_mode, (SELECT count(*) FROM outbox.log) AS in_log, outbox.drain() AS drained;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;
-- 2d. a switch released (RELEASE SAVEPOINT) stays: the event after it is in the log
CALL fresh();
BEGIN;
SAVEPOINT a;
SELECT events_moved, base_pos FROM outbox.use_log_storage();
RELEASE SAVEPOINT a;
SAVEPOINT b;
SELECT outbox.publish('a', jsonb_build_object('rolled', 'back')) IS NOT NULL AS published;
ROLLBACK TO SAVEPOINT b;
SELECT outbox.publish('a', jsonb_build_object('n', 1)) IS NOT NULL AS published;
COMMIT;
SELECT outbox._log_active() AS log_mode, (SELECT count(*) FROM outbox.pending) AS pending, outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;

-- 3. a log used before the switch, then emptied as the switch's hint says
CALL fresh();
SELECT outbox.publish('b', jsonb_build_object('n', 1)) IS NOT NULL AS published; -- 1.2: a seq 1, b seq 1
SELECT outbox.drain() AS drained;
SELECT count(*) AS log_events FROM (SELECT outbox._log_publish(c, '{}') FROM unnest(ARRAY['a', 'a', 'a', 'b', 'z']) c) p;
SELECT outbox._log_pass(100) AS passed;
SELECT outbox._log_rotate('0') AS rotation;
SELECT outbox._log_publish('z', '{}') IS NOT NULL AS published;
SELECT outbox._log_pass(100) AS passed;
SELECT outbox._log_rotate('0') AS rotation;
SELECT outbox._log_rotate('0') AS rotation;
SELECT cur_seg, base_pos, purged_pos FROM outbox.log_state;
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
TRUNCATE outbox.log_0, outbox.log_1, outbox.log_2, outbox.batches_0, outbox.batches_1, outbox.batches_2;
SELECT events_moved, base_pos FROM outbox.use_log_storage();
-- the log as a log never used would be after the switch: nothing removed, seqs from 1.2's
SELECT base_pos, purged_pos, channels_flushed_pos, active FROM outbox.log_state;
SELECT channel, last_seq, last_pos FROM outbox.log_channels ORDER BY channel;
SELECT outbox.publish(c, jsonb_build_object('n', 2)) IS NOT NULL AS published FROM unnest(ARRAY['a', 'b', 'z']) c;
SELECT outbox._log_pass(100) AS passed;
SELECT pg_temp.err('SELECT count(*) FROM outbox.replay(0, NULL, 100)');
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;
SELECT c, pg_temp.err(format('SELECT count(*) FROM outbox.replay_channel(%L, 0, 100)', c)) FROM unnest(ARRAY['a', 'b', 'z']) c;
SELECT r.channel, r.seq, r.pos FROM unnest(ARRAY['a', 'b', 'z']) c, outbox.replay_channel(c, 0, 100) r ORDER BY r.channel, r.seq;
SELECT c, outbox.head(c) FROM unnest(ARRAY['a', 'b', 'z']) c;
-- purged_pos goes back only in the switch: by hand it is still refused
SELECT pg_temp.err('UPDATE outbox.log_state SET purged_pos = purged_pos - 1');
SELECT pg_temp.err('UPDATE outbox.log_state SET purged_pos = -1, active = true');

-- 4. failures being retried in 1.2: refused, nothing changed; a dead letter is not a failure
CALL fresh();
SELECT outbox.publish('a', jsonb_build_object('n', 1)) AS f1 \gset
INSERT INTO outbox.failures VALUES (:f1, 3, now(), now(), now(), 'boom', 'XX000');
INSERT INTO outbox.dead_letter VALUES (1000000, 'd', 'dk', 'dt', '{"n": 9}', now(), now(), 'boom', 'XX000');
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
SELECT outbox._log_active() AS log_mode, (SELECT count(*) FROM outbox.pending) AS pending,
       (SELECT count(*) FROM outbox.failures) AS failures;
-- once the failure is gone (here: the drain delivers the event), the switch goes through
SELECT outbox.drain() AS drained;
DELETE FROM outbox.failures;
SELECT * FROM outbox.use_log_storage();
SELECT count(*) AS dead_letters FROM outbox.dead_letter;
SELECT outbox.retry(1000000);
SELECT outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;

-- 5. a DBA's trigger, rule, constraint, row security on outbox.pending: refused, named in the message
CALL fresh();
CREATE FUNCTION redact() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.payload := NEW.payload - 'secret'; RETURN NEW; END $$;
CREATE TRIGGER redact_secrets BEFORE INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION redact();
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
-- a trigger of the DBA's named as the extension's own, on a function of the DBA's
ALTER TRIGGER pending_wake ON outbox.pending RENAME TO pending_wake_renamed;
CREATE TRIGGER pending_wake AFTER INSERT ON outbox.pending FOR EACH STATEMENT EXECUTE FUNCTION redact();
DROP TRIGGER redact_secrets ON outbox.pending;
SELECT pg_temp.err('SELECT outbox.use_log_storage()', 'message');
DROP TRIGGER pending_wake ON outbox.pending;
ALTER TRIGGER pending_wake_renamed ON outbox.pending RENAME TO pending_wake;
-- the extension's own trigger disabled (an INSERT by hand in log mode would stay in outbox.pending)
ALTER TABLE outbox.pending DISABLE TRIGGER pending_to_log;
SELECT pg_temp.err('SELECT outbox.use_log_storage()', 'message');
ALTER TABLE outbox.pending ENABLE ALWAYS TRIGGER pending_to_log;
CREATE RULE no_tests AS ON INSERT TO outbox.pending WHERE NEW.channel = 'test' DO INSTEAD NOTHING;
SELECT pg_temp.err('SELECT outbox.use_log_storage()', 'message');
DROP RULE no_tests ON outbox.pending;
ALTER TABLE outbox.pending ADD CONSTRAINT small_payloads CHECK (pg_column_size(payload) < 1000);
SELECT pg_temp.err('SELECT outbox.use_log_storage()', 'message');
ALTER TABLE outbox.pending DROP CONSTRAINT small_payloads;
ALTER TABLE outbox.pending ENABLE ROW LEVEL SECURITY;
SELECT pg_temp.err('SELECT outbox.use_log_storage()', 'message');
ALTER TABLE outbox.pending DISABLE ROW LEVEL SECURITY;
SELECT outbox._log_active() AS log_mode;
-- all gone: the switch goes through
SELECT events_moved, base_pos FROM outbox.use_log_storage();

-- 6. a transaction of another session that published and is still open: the switch waits at most
-- 5s (lock_timeout 0), or the caller's lock_timeout, then fails; the caller's setting is kept
CALL fresh();
CREATE FUNCTION conn(name text) RETURNS text LANGUAGE sql AS $$
    SELECT dblink_connect(name, format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
                                       current_setting('port'), current_database())) $$;
SELECT conn('holder');
SELECT dblink_exec('holder', 'BEGIN');
SELECT * FROM dblink('holder', $$SELECT outbox.publish('a', jsonb_build_object('n', 1)) > 0$$) AS t(ok boolean);
SHOW lock_timeout;
BEGIN;
SELECT pg_temp.err('SELECT outbox.use_log_storage()');
SHOW lock_timeout;
COMMIT;
SET lock_timeout = '50ms';
BEGIN;
SELECT pg_temp.err('SELECT outbox.use_log_storage()', 'message');
SHOW lock_timeout;
COMMIT;
RESET lock_timeout;
SELECT outbox._log_active() AS log_mode;
SELECT dblink_exec('holder', 'COMMIT');
SELECT dblink_disconnect('holder');
SELECT events_moved, base_pos FROM outbox.use_log_storage();
SELECT outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;

-- 7. (found attacking the fixes) in log mode, a row inserted into outbox.pending under
-- session_replication_role = replica (a replication tool's or a DBA's session), by hand or by
-- retry() of a dead letter: pending_to_log is ALWAYS, so it goes into the log, not into
-- outbox.pending, where nothing drains it in log mode
CALL fresh();
SELECT events_moved, base_pos FROM outbox.use_log_storage();
INSERT INTO outbox.dead_letter VALUES (1000000, 'd', 'dk', 'dt', '{"n": 9}', now(), now(), 'boom', 'XX000');
SET session_replication_role = replica;
INSERT INTO outbox.pending (channel, payload) VALUES ('a', jsonb_build_object('n', 1));
SELECT outbox.retry(1000000);
RESET session_replication_role;
SELECT (SELECT count(*) FROM outbox.pending) AS pending, (SELECT count(*) FROM outbox.dead_letter) AS dead_letters,
       outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;
-- and the switch refuses while pending_to_log is not ALWAYS (ENABLE TRIGGER ALL leaves it ORIGIN)
CALL fresh();
ALTER TABLE outbox.pending ENABLE TRIGGER pending_to_log;
SELECT pg_temp.err('SELECT outbox.use_log_storage()', 'message');
ALTER TABLE outbox.pending ENABLE ALWAYS TRIGGER pending_to_log;
SELECT events_moved, base_pos FROM outbox.use_log_storage();

-- 8. a backend that wrote the log remembers log mode across its transactions (src/storage_mode.cpp:
-- no lock and no read per transaction once a log-writing transaction committed); the extension
-- dropped and created again (1.2 mode) makes it forget: the next publish() is in outbox.pending
CALL fresh();
SELECT events_moved, base_pos FROM outbox.use_log_storage();
SELECT outbox.publish('a', jsonb_build_object('n', 1)) > 0 AS published; -- commits: log mode remembered
SELECT outbox.publish('a', jsonb_build_object('n', 2)) > 0 AS published;
SELECT (SELECT count(*) FROM outbox.log) AS in_log, (SELECT count(*) FROM outbox.pending) AS in_pending;
CALL fresh();
SELECT outbox._log_active() AS log_mode;
SELECT outbox.publish('a', jsonb_build_object('n', 3)) > 0 AS published;
SELECT (SELECT count(*) FROM outbox.log) AS in_log, (SELECT count(*) FROM outbox.pending) AS in_pending;
-- ... and a switch rolled back after a committed log-mode transaction cannot happen: 1.2 is read
-- again by every transaction until one that wrote the log commits
BEGIN;
SELECT events_moved FROM outbox.use_log_storage();
SELECT outbox.publish('a', jsonb_build_object('n', 4)) > 0 AS published;
ROLLBACK;
SELECT outbox.publish('a', jsonb_build_object('n', 5)) > 0 AS published;
SELECT (SELECT count(*) FROM outbox.log) AS in_log, (SELECT count(*) FROM outbox.pending) AS in_pending;

-- 9. a transaction that took its xid before passes ran, in a new connection (its first write into
-- the log in that process: the check of a log restored from a cluster ahead runs then): those
-- passes' hi snapshots have its xid in progress, their xmax above it; its publish() is not refused
-- (it was, comparing the batches' xmax with the producer's own xid) and the event is published once
CALL fresh();
SELECT events_moved, base_pos FROM outbox.use_log_storage();
SELECT conn('early');
SELECT dblink_exec('early', 'BEGIN');
SELECT * FROM dblink('early', $$SELECT pg_current_xact_id() IS NOT NULL$$) AS t(has_xid boolean);
SELECT outbox.publish('a', jsonb_build_object('n', 1)) > 0 AS published;
SELECT outbox._log_pass(100) AS passed; -- its hi: 'early' in progress
SELECT * FROM dblink('early', $$SELECT outbox.publish('a', jsonb_build_object('n', 2)) > 0$$) AS t(published boolean);
SELECT dblink_exec('early', 'COMMIT');
SELECT dblink_disconnect('early');
SELECT outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;

-- 10. a pooled backend ('pool') that wrote the log remembers log mode; a DBA prepares a data-only
-- restore (pg_restore --data-only) with DELETE FROM outbox.log_state: that DELETE sends no
-- invalidation, so 'pool' went on writing the log of a database that was now in 1.2 mode (no row:
-- active false), and the restored row of a 1.2 dump (active false) kept it there, its events in a
-- log nothing drains. The row of a database in log mode cannot be removed (DELETE, TRUNCATE, also
-- under session_replication_role = replica); a restored row is merged into it (active stays true),
-- and 'pool', a new connection and the pass agree: log mode, every event published once
CALL fresh();
SELECT events_moved, base_pos FROM outbox.use_log_storage();
SELECT conn('pool');
SELECT * FROM dblink('pool', $$SELECT outbox.publish('a', jsonb_build_object('n', 1)) > 0$$) AS t(published boolean);
SELECT pg_temp.err('DELETE FROM outbox.log_state');
SELECT pg_temp.err('TRUNCATE outbox.log_state');
SET session_replication_role = replica;
SELECT pg_temp.err('DELETE FROM outbox.log_state', 'message');
RESET session_replication_role;
-- the 1.2 dump's row, as pg_restore --data-only inserts it
INSERT INTO outbox.log_state DEFAULT VALUES;
SELECT active, cur_seg, base_pos FROM outbox.log_state;
SELECT * FROM dblink('pool', $$SELECT outbox.publish('a', jsonb_build_object('n', 2)) > 0$$) AS t(published boolean);
SELECT outbox.publish('a', jsonb_build_object('n', 3)) > 0 AS published;
SELECT (SELECT count(*) FROM outbox.pending) AS in_pending, outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;
SELECT dblink_disconnect('pool');
-- in 1.2 mode the pristine row may go (a data-only restore's merge deletes it, and so may a DBA)
CALL fresh();
BEGIN;
DELETE FROM outbox.log_state;
SELECT count(*) AS log_state_rows FROM outbox.log_state;
ROLLBACK;

-- 11. outbox.log_state found by name (log_state_relid(), remembered): ALTER SCHEMA outbox RENAME TO
-- and back in a session that remembers it, in 1.2 mode (the switch then runs in another session)
-- and in log mode; then DROP and CREATE EXTENSION in the same session: each publish() goes where
-- the mode of the database says
CALL fresh();
SELECT outbox.publish('a', jsonb_build_object('n', 1)) > 0 AS published; -- 1.2: log_state's relid remembered
ALTER SCHEMA outbox RENAME TO outbox_away;
SELECT pg_temp.err($$SELECT outbox_away.publish('a', jsonb_build_object('n', 2))$$, 'message');
ALTER SCHEMA outbox_away RENAME TO outbox;
SELECT conn('switcher');
SELECT * FROM dblink('switcher', $$SELECT events_moved FROM outbox.use_log_storage()$$) AS t(events_moved bigint);
SELECT outbox.publish('a', jsonb_build_object('n', 3)) > 0 AS published;
SELECT (SELECT count(*) FROM outbox.log) AS in_log, (SELECT count(*) FROM outbox.pending) AS in_pending;
-- log mode: a producer while the schema has another name (this session, and a new one that has
-- remembered nothing) writes the log: outbox.log_state was found by the name "outbox", and
-- publish() through the renamed schema went into outbox.pending, which log mode never publishes
ALTER SCHEMA outbox RENAME TO outbox_away;
SELECT outbox_away.publish('a', jsonb_build_object('n', 4)) > 0 AS published;
SELECT conn('newcomer');
SELECT * FROM dblink('newcomer', $$SELECT outbox_away.publish('a', jsonb_build_object('n', 5)) > 0$$) AS t(published boolean);
SELECT dblink_disconnect('newcomer');
SELECT (SELECT count(*) FROM outbox_away.log) AS in_log, (SELECT count(*) FROM outbox_away.pending) AS in_pending;
ALTER SCHEMA outbox_away RENAME TO outbox;
SELECT outbox.publish('a', jsonb_build_object('n', 6)) > 0 AS published;
SELECT (SELECT count(*) FROM outbox.log) AS in_log, (SELECT count(*) FROM outbox.pending) AS in_pending,
       outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;
CALL fresh(); -- DROP and CREATE EXTENSION: 1.2 mode, a new outbox.log_state
SELECT outbox.publish('a', jsonb_build_object('n', 7)) > 0 AS published;
SELECT (SELECT count(*) FROM outbox.log) AS in_log, (SELECT count(*) FROM outbox.pending) AS in_pending;
SELECT * FROM dblink('switcher', $$SELECT events_moved FROM outbox.use_log_storage()$$) AS t(events_moved bigint);
SELECT outbox.publish('a', jsonb_build_object('n', 8)) > 0 AS published;
SELECT (SELECT count(*) FROM outbox.log) AS in_log, (SELECT count(*) FROM outbox.pending) AS in_pending,
       outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;
SELECT dblink_disconnect('switcher');

-- 12. log mode whose positions start below the 1.2 head: a data-only restore of a log-mode dump
-- (its row inserted: active, base_pos 0) into a database that published in 1.2 mode meanwhile
-- replaced the pristine row, and the log handed out position 1 again (1.2's event at 1 was then
-- invisible to replay(), which reads 1.2's history up to base_pos only). Refused, as is the same
-- switch by UPDATE; the row the switch computes (base_pos at the 1.2 head) goes in (with the
-- channels' seqs in log_channels, as a restore brings them)
CALL fresh(); -- the 1.2 head is 1
SELECT pg_temp.err($$INSERT INTO outbox.log_state (cur_seg, base_pos, active) VALUES (0, 0, true)$$);
SELECT pg_temp.err($$UPDATE outbox.log_state SET active = true$$, 'message');
UPDATE outbox.log_state SET cur_seg = 1; -- not pristine: the restored row is merged by the check
SELECT pg_temp.err($$INSERT INTO outbox.log_state (cur_seg, base_pos, active) VALUES (0, 0, true)$$, 'message');
SELECT active, base_pos FROM outbox.log_state;
INSERT INTO outbox.log_channels (channel, last_seq, last_pos) SELECT channel, last_seq, 1 FROM outbox.channels;
INSERT INTO outbox.log_state (cur_seg, base_pos, channels_flushed_pos, active) VALUES (1, 1, 1, true);
SELECT active, base_pos FROM outbox.log_state;
SELECT outbox.publish('a', jsonb_build_object('n', 1)) > 0 AS published;
SELECT outbox._log_pass(100) AS passed;
SELECT storage, pos, seq, channel, n FROM everything() ORDER BY pos, n;

\c contrib_regression
DROP DATABASE pg_outbox_swattack;
