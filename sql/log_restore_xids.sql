-- A red team against the producers' check of a log restored from a cluster ahead
-- (check_log_xids_producer(), src/log_pass.cpp). A restore is played here by moving the first
-- window's lo (outbox.log_state.base_snap, what a dump of a log that has no batch carries) 40
-- transactions ahead of this cluster's counter, then burning transactions until the counter has
-- passed it: what the pass and the producers see after a restore into a cluster behind, once the
-- counter has caught up. A producer whose event has an xid below that lo is lost: the next window
-- opens there and the event looks published already.
-- 1. a transaction that took its xid while the counter was still behind (an UPDATE, then publish()
--    once the counter has passed): its publish() was accepted, checked against this cluster's next
--    xid only, and the event never published;
-- 2. a connection that wrote the log before the extension was dropped, created and restored into
--    again (a pooled connection): its "checked once per process" memo survived the new extension,
--    its publish() was not checked, and the event never published;
-- 3. a REPEATABLE READ transaction whose snapshot is older than the restore: the check read the
--    log with that snapshot (no restored batch, the pristine base_snap), passed, and called the
--    log checked for the process: its events and those of its later transactions were lost.
SET client_min_messages = warning;
DROP DATABASE IF EXISTS pg_outbox_rxids;
CREATE DATABASE pg_outbox_rxids;
RESET client_min_messages;
\c pg_outbox_rxids
SET client_min_messages = warning;
CREATE EXTENSION dblink;
RESET client_min_messages;
\set err_style hint_numbers
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
-- a fresh database in log mode
CREATE PROCEDURE fresh() LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL client_min_messages = error;
    DROP EXTENSION IF EXISTS pg_outbox CASCADE;
    CREATE EXTENSION pg_outbox;
    PERFORM outbox.use_log_storage();
END $$;
-- this cluster's counter past that lo
CREATE PROCEDURE catch_up() LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..50 LOOP
        PERFORM pg_current_xact_id();
        COMMIT;
    END LOOP;
END $$;
CREATE FUNCTION conn(name text) RETURNS text LANGUAGE sql AS $$
    SELECT dblink_connect(name, format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
                                       current_setting('port'), current_database())) $$;
SET check_function_bodies = off; -- the extension is created later, and again
-- the log "restored from a cluster ahead": its first window opens 40 transactions ahead of ours
CREATE PROCEDURE restored_ahead() LANGUAGE sql AS $$
    UPDATE outbox.log_state SET base_snap = format('%1$s:%1$s:', pg_current_xact_id()::text::bigint + 40)::pg_snapshot $$;
-- every event of the log: published (its position) or not
CREATE FUNCTION everything() RETURNS TABLE (storage text, pos bigint, channel text, n text)
    LANGUAGE sql AS $$
    SELECT 'published', pos, channel, coalesce(payload->>'n', 'key ' || key) FROM outbox.replay(0, NULL, 1000)
    UNION ALL
    SELECT 'log, not published', NULL, l.channel, coalesce(l.payload->>'n', 'key ' || l.key) FROM outbox.log l
     WHERE NOT EXISTS (SELECT FROM outbox.replay(0, NULL, 1000) r WHERE r.id = l.id) $$;
-- the error stmt raised, its message without the transaction ids (they depend on what ran before)
CREATE FUNCTION refused(stmt text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(pg_temp.err(stmt, 'message'), '(transaction|next is) [0-9]+', '\1 N', 'g') $$;
RESET check_function_bodies;

-- 1. a transaction that took its xid while the counter was behind the restored log
CALL fresh();
CALL restored_ahead();
SELECT refused($$SELECT outbox.publish('a', '{"n": 0}')$$) AS behind; -- refused, as it should
SELECT conn('early');
SELECT dblink_exec('early', 'BEGIN');
SELECT * FROM dblink('early', $$SELECT pg_current_xact_id() IS NOT NULL$$) AS t(has_xid boolean);
CALL catch_up();
SELECT outbox.publish('a', '{"n": 1}') > 0 AS published; -- a new transaction: above the restored log
-- its xid is below the restored log's lo: its event would look published already
SELECT pg_temp.err($$SELECT * FROM dblink('early', 'SELECT outbox.publish(''a'', ''{"n": 2}'')') AS t(id bigint)$$) AS early;
SELECT dblink_exec('early', 'COMMIT');
-- in a new transaction the same connection publishes
SELECT * FROM dblink('early', $$SELECT outbox.publish('a', '{"n": 3}') > 0$$) AS t(published boolean);
SELECT outbox._log_pass(100) AS passed;
SELECT storage, pos, channel, n FROM everything() ORDER BY pos, n;
-- in a subtransaction (the rows carry the top-level xid, the windows judge it): refused too; and
-- so is the change trigger of such a transaction
CALL fresh();
CREATE TABLE orders (id int PRIMARY KEY);
SELECT outbox.attach('orders', 'orders') IS NOT NULL AS attached;
CALL restored_ahead();
SELECT dblink_exec('early', 'BEGIN');
SELECT * FROM dblink('early', $$SELECT pg_current_xact_id() IS NOT NULL$$) AS t(has_xid boolean);
SELECT dblink_exec('early', 'SAVEPOINT s');
CALL catch_up();
SELECT pg_temp.err($$SELECT * FROM dblink('early', 'SELECT outbox.publish(''a'', ''{"n": 4}'')') AS t(id bigint)$$) AS early_subxact;
SELECT dblink_exec('early', 'ROLLBACK TO SAVEPOINT s');
SELECT pg_temp.err($$SELECT dblink_exec('early', 'INSERT INTO orders VALUES (5)')$$) AS early_trigger;
SELECT dblink_exec('early', 'COMMIT');
SELECT dblink_exec('early', 'INSERT INTO orders VALUES (6)'); -- a new transaction
SELECT dblink_disconnect('early');
SELECT outbox._log_pass(100) AS passed;
SELECT storage, pos, channel, n FROM everything() ORDER BY pos, n;
DROP TABLE orders;

-- 2. a connection that wrote the log, then the extension dropped, created and restored into
CALL fresh();
SELECT conn('pooled');
SELECT * FROM dblink('pooled', $$SELECT outbox.publish('a', '{"n": 1}') > 0$$) AS t(published boolean);
CALL fresh();
CALL restored_ahead();
SELECT refused($$SELECT * FROM dblink('pooled', 'SELECT outbox.publish(''a'', ''{"n": 2}'')') AS t(id bigint)$$) AS pooled;
CALL catch_up();
SELECT * FROM dblink('pooled', $$SELECT outbox.publish('a', '{"n": 3}') > 0$$) AS t(published boolean);
SELECT dblink_disconnect('pooled');
SELECT outbox._log_pass(100) AS passed;
SELECT storage, pos, channel, n FROM everything() ORDER BY pos, n;

-- 3. a REPEATABLE READ transaction whose snapshot was taken before the restore
CALL fresh();
SELECT conn('rr');
SELECT dblink_exec('rr', 'BEGIN ISOLATION LEVEL REPEATABLE READ');
SELECT * FROM dblink('rr', $$SELECT count(*) FROM outbox.log$$) AS t(n bigint);
CALL restored_ahead();
SELECT refused($$SELECT * FROM dblink('rr', 'SELECT outbox.publish(''a'', ''{"n": 1}'')') AS t(id bigint)$$) AS rr;
SELECT dblink_exec('rr', 'COMMIT');
SELECT refused($$SELECT * FROM dblink('rr', 'SELECT outbox.publish(''a'', ''{"n": 2}'')') AS t(id bigint)$$) AS rr_next;
CALL catch_up();
SELECT * FROM dblink('rr', $$SELECT outbox.publish('a', '{"n": 3}') > 0$$) AS t(published boolean);
SELECT dblink_disconnect('rr');
SELECT outbox._log_pass(100) AS passed;
SELECT storage, pos, channel, n FROM everything() ORDER BY pos, n;

\c contrib_regression
DROP DATABASE pg_outbox_rxids;
