-- The C++/Postgres error boundary: a C++ exception inside a SQL function becomes a clean SQL
-- error, a Postgres error raised under live C++ objects runs their destructors, and the
-- session goes on working.
-- every test file starts from a fresh extension: its output does not depend on the others
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
-- the self-test lives in a test module of its own (test/selftest), not in pg_outbox
CREATE FUNCTION boundary_selftest(what text) RETURNS text
    LANGUAGE c VOLATILE STRICT AS 'pg_outbox_selftest', 'outbox_boundary_selftest';

-- sqlstate, message, detail and hint of an error, as one line
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

SELECT boundary_selftest('ok');
SELECT pg_temp.err($$SELECT boundary_selftest('std')$$);
SELECT pg_temp.err($$SELECT boundary_selftest('bad_alloc')$$);
SELECT pg_temp.err($$SELECT boundary_selftest('error')$$);
SELECT pg_temp.err($$SELECT boundary_selftest('int')$$);
-- a Postgres error under live C++ objects keeps its own SQLSTATE and message
SELECT pg_temp.err($$SELECT boundary_selftest('pg')$$);
SELECT pg_temp.err($$SELECT boundary_selftest('nonsense')$$);
-- the errors also reach the client directly
SELECT boundary_selftest('std');
SELECT boundary_selftest('pg');
-- every C++ object created by the calls above was destroyed: nothing leaked past a longjmp
SELECT boundary_selftest('live') AS objects_left_alive;
-- the session, and a transaction with a savepoint, go on working
BEGIN;
SAVEPOINT before_error;
SELECT boundary_selftest('error');
ROLLBACK TO SAVEPOINT before_error;
SELECT boundary_selftest('ok');
COMMIT;
-- many errors in a row leave nothing behind either
SELECT count(pg_temp.err($$SELECT boundary_selftest('pg')$$)) FROM generate_series(1, 1000);
SELECT boundary_selftest('live') AS objects_left_alive;
DROP FUNCTION boundary_selftest(text);
