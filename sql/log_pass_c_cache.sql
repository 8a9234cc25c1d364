-- Red team of the seq cache's write-behind and bounded cache (issue #15): each part is a
-- finding, with what goes wrong without its fix.
--
-- 1. A write-behind that fails inside a subtransaction the caller rolls back (a PL/pgSQL
--    EXCEPTION block) left the pass's "flushing" mark set for the rest of the transaction: a
--    write into outbox.log_channels later in that transaction (a restore raising a seq) sent no
--    invalidation, and another session's cache handed out the seqs below it again (x got 2, not
--    the 101 the reference pass gives).
-- 2. A pass's notifications reach listeners at its commit, which must be durable first (as
--    outbox.drain() makes it): under synchronous_commit = off a crash right after the commit
--    lost the batch that listeners had seen, and the next pass handed its positions and seqs out
--    again. Both passes now set synchronous_commit = on for their transaction (it stayed off).
-- 3. The C pass in a READ ONLY transaction wrote its batch row (without the executor, which
--    checks) and sent its notifications, where the reference pass's INSERT is refused; only a
--    write-behind that happened to be due failed. It is now refused with check_writable()'s error.
SET client_min_messages = warning;
DROP DATABASE IF EXISTS pg_outbox_red4;
CREATE DATABASE pg_outbox_red4;
RESET client_min_messages;
\c pg_outbox_red4
SET client_min_messages = warning;
CREATE EXTENSION pg_outbox;
CREATE EXTENSION dblink;
RESET client_min_messages;
CREATE FUNCTION conn(name text) RETURNS text LANGUAGE sql AS $$
    SELECT dblink_connect(name, format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
                                       current_setting('port'), current_database())) $$;
-- a DBA's trigger that makes c's write into outbox.log_channels fail (DDL now: its relcache
-- invalidation would reset every cache later)
CREATE FUNCTION red4_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('red4.refuse', true) = 'on' THEN
        RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER red4_refuse BEFORE INSERT ON outbox.log_channels FOR EACH ROW EXECUTE FUNCTION red4_refuse();
SELECT conn('b'), conn('c');
-- b's seq cache learns channel x (seq 1)
SELECT outbox._log_insert('x', '{}') IS NOT NULL AS inserted;
SELECT * FROM dblink('b', 'SELECT outbox._log_pass(10)') AS t(n bigint);
-- c's first pass writes behind (its first flush is due at once), and the write fails (the DBA's
-- trigger); c catches the error in a savepoint and, in the same transaction, raises x's seq in
-- outbox.log_channels (as a restore may)
SELECT outbox._log_insert('boom', '{}') IS NOT NULL AS inserted;
SELECT dblink_exec('c', 'BEGIN');
SELECT dblink_exec('c', 'SET LOCAL red4.refuse = on');
SELECT * FROM dblink('c', $q$DO $$ BEGIN PERFORM outbox._log_pass(10); EXCEPTION WHEN check_violation THEN RAISE NOTICE 'caught'; END $$$q$) AS t(r text);
SELECT dblink_exec('c', 'SET LOCAL red4.refuse = off');
SELECT dblink_exec('c', $q$INSERT INTO outbox.log_channels AS c (channel, last_seq, last_pos) VALUES ('x', 100, 1)
                          ON CONFLICT (channel) DO UPDATE SET last_seq = 100$q$);
SELECT dblink_exec('c', 'COMMIT');
-- b's next event on x follows the raised seq: 101, as the reference says (2 if b's cache was
-- not told of c's write)
SELECT outbox._log_last_seq('x') AS reference_last_seq;
SELECT outbox._log_insert('x', '{}') IS NOT NULL AS inserted;
SELECT * FROM dblink('b', 'SELECT outbox._log_pass(10)') AS t(n bigint);
SELECT u.ch, b.first_seqs[u.i] AS first_seq FROM outbox.batches b, unnest(b.channels) WITH ORDINALITY u(ch, i)
 ORDER BY b.first_pos, u.ch;
SELECT dblink_disconnect('b'), dblink_disconnect('c');
-- 2. the pass's transaction commits durably, whatever the session says
SELECT outbox._log_insert('x', '{}') IS NOT NULL AS inserted;
BEGIN;
SET LOCAL synchronous_commit = off;
SELECT outbox._log_pass(10);
SELECT current_setting('synchronous_commit') AS c_pass_commit;
COMMIT;
SELECT outbox._log_insert('x', '{}') IS NOT NULL AS inserted;
BEGIN;
SET LOCAL synchronous_commit = off;
SELECT outbox._log_pass_sql(10);
SELECT current_setting('synchronous_commit') AS reference_pass_commit;
COMMIT;
SHOW synchronous_commit;
-- 3. a read-only transaction: refused, as the reference pass is (right after a pass, so that no
-- write-behind is due)
SELECT outbox._log_insert('x', '{}') IS NOT NULL AS inserted;
SELECT outbox._log_pass(10);
SELECT outbox._log_insert('x', '{}') IS NOT NULL AS inserted;
BEGIN READ ONLY;
SELECT outbox._log_pass(10);
ROLLBACK;
\set VERBOSITY terse
BEGIN READ ONLY;
SELECT outbox._log_pass_sql(10);
ROLLBACK;
\set VERBOSITY default
SELECT count(*) AS unpublished FROM outbox.log l
 WHERE NOT EXISTS (SELECT FROM outbox._log_replay(0, 1000) r WHERE r.id = l.id);
\c contrib_regression
DROP DATABASE pg_outbox_red4;
