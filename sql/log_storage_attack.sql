-- Red team of the log's first piece (src/sql/60_log.sql, issue #15): windows across segments,
-- cut windows, subtransactions, rotation between passes, readers at every boundary, privileges, bad
-- inputs, and an envelope longer than NOTIFY takes. Runs in a database of its own so that ids
-- and positions do not depend on the other tests. (The NOTIFYs themselves are not shown: psql
-- prints the sender's PID; the passes' counts, the batches and replay are.)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_log_attack;
CREATE DATABASE pg_outbox_log_attack;
RESET client_min_messages;
\c pg_outbox_log_attack
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\set err_style hint
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- bad inputs: each a 22023 with its message (a NULL channel was a bare 23502 of the NOT NULL
-- constraint of log_0, naming no argument)
SELECT pg_temp.err($$SELECT outbox._log_insert(NULL)$$);
SELECT pg_temp.err($$SELECT outbox._log_insert(NULL, '1', 'k', 't')$$);
SELECT pg_temp.err($$SELECT outbox._log_insert('')$$);
SELECT pg_temp.err($$SELECT outbox._log_pass_sql(NULL)$$);
SELECT pg_temp.err($$SELECT outbox._log_pass_sql(0)$$);
SELECT pg_temp.err($$SELECT outbox._log_pass_sql(-5)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(0, NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(0, 0)$$);
-- the pass outside READ COMMITTED: its snapshot would predate the batch lock (a pass that
-- waited for another recomputed the other's batch); refused, 25001, before it writes anything
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.err($$SELECT outbox._log_pass_sql(10)$$);
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT pg_temp.err($$SELECT outbox._log_pass_sql(10)$$);
COMMIT;
SELECT count(*) AS log_rows FROM outbox.log;  -- nothing was written by the refused calls
SELECT outbox._log_head() AS head, outbox._log_pass_sql(10) AS empty_pass;

-- one window with rows in all three segments (cur_seg 0: order 1, 2, 0), cut by 2, 7, 1
BEGIN; SELECT count(outbox._log_insert('a', to_jsonb(g))) FROM generate_series(1, 5) g; COMMIT;
INSERT INTO outbox.log_1 (channel, payload) SELECT 'b', to_jsonb(g) FROM generate_series(10, 14) g;
INSERT INTO outbox.log_2 (channel, payload) SELECT 'a', to_jsonb(g) FROM generate_series(20, 23) g;
SELECT outbox._log_pass_sql(2) AS p2, outbox._log_head() AS head_before; -- (the head is read before the pass, same statement)
SELECT outbox._log_pass_sql(7) AS p7, outbox._log_head() AS head_before;
SELECT outbox._log_pass_sql(1) AS p1, outbox._log_head() AS head_before;
-- no rotation in the middle of a cut window: the rest of it (in log_0) would be skipped
SELECT pg_temp.err($$UPDATE outbox.log_state SET cur_seg = 1$$);
SELECT cur_seg FROM outbox.log_state;
-- a larger max_events after a cut pass continues the cut window (no loss)
SELECT outbox._log_pass_sql(1000) AS p1000, outbox._log_head() AS head_before;
SELECT outbox._log_pass_sql(1000) AS p1000, outbox._log_head() AS head_before;
SELECT outbox._log_pass_sql(1000) AS nothing_left;
SELECT first_pos, n, seg, cut, channels, first_seqs, counts FROM outbox.batches ORDER BY first_pos;

-- savepoints: a rolled-back one leaves nothing, a released one its row (top-level xid)
BEGIN;
SELECT outbox._log_insert('p', '"kept 1"') IS NOT NULL AS ok;
SAVEPOINT s1; SELECT outbox._log_insert('p', '"rolled back"') IS NOT NULL AS ok; ROLLBACK TO s1;
SAVEPOINT s2; SELECT outbox._log_insert('p', '"kept 2"') IS NOT NULL AS ok; RELEASE s2;
SELECT count(DISTINCT xid) = 1 AS one_xid, bool_and(xid = pg_current_xact_id()) AS top_level FROM outbox.log_0 WHERE channel = 'p';
COMMIT;
-- rotation between passes (cur_seg 0 -> 1: order 2, 0, 1), rows in the new and the old segment
UPDATE outbox.log_state SET cur_seg = 1;
SELECT outbox._log_insert('p', '"kept 3"') IS NOT NULL AS ok;
SELECT outbox._log_pass_sql(2) AS p2;
SELECT outbox._log_pass_sql(2) AS p2_again;
SELECT outbox._log_pass_sql(2) AS nothing_left;
SELECT first_pos, n, seg, cut FROM outbox.batches WHERE first_pos > 14 ORDER BY first_pos;

-- replay: every (after_pos, max) equals the slice of the whole log, pos and seq
SELECT pos, seq, id, channel, payload FROM outbox._log_replay(0, 1000);
CREATE TEMP TABLE whole AS SELECT * FROM outbox._log_replay(0, 1000);
SELECT count(*) AS mismatches FROM generate_series(0, 18) a, generate_series(1, 19) m
 WHERE ARRAY(SELECT row(r.pos, r.seq, r.id)::text FROM outbox._log_replay(a, m) r)
       IS DISTINCT FROM ARRAY(SELECT row(w.pos, w.seq, w.id)::text FROM whole w WHERE w.pos > a ORDER BY w.pos LIMIT m);
SELECT outbox._log_head() AS head, (SELECT max(pos) FROM whole) AS max_pos;

-- an envelope longer than NOTIFY takes: sent truncated (payload, then key and type, left out);
-- the pass used to fail with "payload string too long" every time, and the log was stuck
SELECT outbox._log_insert('big', to_jsonb(repeat('x', 9000)), 'k', 't') AS big_payload;
SELECT outbox._log_insert('big', '1', repeat('k', 7990), 't') AS big_key;
SELECT outbox._log_insert('big', '2') AS small_after;
SELECT outbox._log_pass_sql(10) AS passed;
SELECT outbox._log_head() AS head;
SELECT pos, seq, id, octet_length(payload::text) AS payload_bytes, octet_length(key) AS key_bytes
  FROM outbox._log_replay(17, 10);

-- the envelopes the pass sends: whole, truncated when too long, id only when read rights exist
SELECT outbox._log_envelope(1, 1, 7, 'k', 't', '{"a": 1}', 0, false) AS whole;
SELECT outbox._log_envelope(1, 1, 7, 'k', 't', to_jsonb(repeat('x', 9000)), 0, false) AS too_long;
SELECT outbox._log_envelope(1, 1, 7, repeat('k', 7990), 't', '1', 0, false) AS key_too_long;
SELECT outbox._log_envelope(1, 1, 7, 'k', 't', '{"secret": 1}', 0, true) AS id_only;
-- with a read right granted, the pass sends id-only envelopes (the payload of a restricted
-- channel went to every listener); its count and replay are unchanged
INSERT INTO outbox.channel_rights (pattern, role, privilege) VALUES ('big', 'outbox_reader', 'read');
SELECT outbox._log_insert('big', '{"secret": 1}') AS secret;
SELECT outbox._log_pass_sql(10) AS passed;
SELECT pos, id, payload FROM outbox._log_replay(20, 10);
DELETE FROM outbox.channel_rights;

-- privileges: no function nor table of the log is usable by a role that is not superuser
CREATE ROLE log_attack_user LOGIN;
GRANT outbox_publisher, outbox_reader TO log_attack_user;
SELECT p.oid::regprocedure AS function FROM pg_proc p
 WHERE p.pronamespace = 'outbox'::regnamespace AND p.proname LIKE '\_log%'
   AND has_function_privilege('log_attack_user', p.oid, 'EXECUTE');
SELECT c.relname AS rel FROM pg_class c
 WHERE c.relnamespace = 'outbox'::regnamespace AND (c.relname LIKE 'log%' OR c.relname LIKE 'batches%') AND c.relkind = 'r'
   AND (has_table_privilege('log_attack_user', c.oid, 'SELECT') OR has_table_privilege('log_attack_user', c.oid, 'INSERT')
        OR has_table_privilege('log_attack_user', c.oid, 'UPDATE') OR has_table_privilege('log_attack_user', c.oid, 'DELETE')
        OR has_table_privilege('log_attack_user', c.oid, 'TRUNCATE'));
SET ROLE log_attack_user;
SELECT pg_temp.err($$SELECT outbox._log_insert('a')$$);
SELECT pg_temp.err($$SELECT outbox._log_pass_sql(1)$$);
SELECT pg_temp.err($$SELECT * FROM outbox._log_replay(0)$$);
SELECT pg_temp.err($$SELECT outbox._log_head()$$);
SELECT pg_temp.err($$INSERT INTO outbox.log_0 (channel) VALUES ('a')$$);
SELECT pg_temp.err($$SELECT * FROM outbox.batches$$);
SELECT pg_temp.err($$UPDATE outbox.log_state SET cur_seg = 2$$);
RESET ROLE;
-- the ACLs of a fresh install, then those of an upgrade from 1.2: the same. The two queries are
-- kept once, in the psql variable log_acls, and run in each database (a variable outlives \c, a
-- pg_temp function would not)
SELECT $q$SELECT c.relname, (SELECT string_agg(format('%s=%s', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                                   a.privilege_type), ',' ORDER BY a.grantee::regrole::text, a.privilege_type)
          FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner) AS granted_to_others FROM pg_class c
 WHERE c.relnamespace = 'outbox'::regnamespace AND (c.relname LIKE 'log%' OR c.relname LIKE 'batches%') AND c.relkind = 'r'
 ORDER BY 1;
SELECT p.oid::regprocedure AS function, p.proacl::text FROM pg_proc p
 WHERE p.pronamespace = 'outbox'::regnamespace AND p.proname LIKE '\_log%' ORDER BY 1::text;$q$ AS log_acls \gset
:log_acls
\c postgres
SET client_min_messages = warning;
DROP DATABASE IF EXISTS pg_outbox_log_attack_up;
CREATE DATABASE pg_outbox_log_attack_up;
RESET client_min_messages;
\c pg_outbox_log_attack_up
SET client_min_messages = warning;
CREATE EXTENSION pg_outbox VERSION '1.2';
ALTER EXTENSION pg_outbox UPDATE;
RESET client_min_messages;
:log_acls
\c postgres
DROP DATABASE pg_outbox_log_attack_up;
DROP DATABASE pg_outbox_log_attack;
DROP ROLE log_attack_user;
