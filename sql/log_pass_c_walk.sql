-- A random walk over the log (issue #15, red team): five producer sessions (dblink) open
-- transactions, insert events on five channels, set savepoints and roll back to them, commit or
-- roll back; passes run between them, committed or rolled back, of 1, 2, 3 or 1000 events, some
-- inside a producer's open transaction (its own events then wait for the pass after its commit);
-- rotation with a retention of 0 truncates segments as soon as it may. The same walk (same seed)
-- runs three times: with the C pass outbox._log_pass() only, the reference _log_pass_sql() only,
-- and both at random; then passes until nothing is left. Asserted: the three runs publish the same
-- batches (first_pos, n, seg, cut, channels, first seqs, counts) and the same events (pos, id,
-- seq, channel), and every row of the log is in exactly one kept batch, with every batch whole.
-- Ids, positions and seqs start at 1 in each run (a new extension); xids differ, and are not compared.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_logfz;
CREATE DATABASE pg_outbox_logfz;
RESET client_min_messages;
\c pg_outbox_logfz
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
RESET client_min_messages;
-- a producer's state: in a transaction, in a savepoint, has run a pass (holds the batch lock)
CREATE TYPE fz_state AS (c int, open boolean, sp boolean, locked boolean);
CREATE PROCEDURE fz(seed float8, steps int, nconn int, mode text) LANGUAGE plpgsql AS $$
DECLARE i int; cn int; r float8; st fz_state; conn text; m int; holder int; fn text; S fz_state[] := '{}';
BEGIN
    PERFORM setseed(seed);
    FOR cn IN 1..nconn LOOP
        conn := 'fz' || cn;
        IF NOT (conn = ANY (coalesce(dblink_get_connections(), '{}'))) THEN
            PERFORM dblink_connect(conn, format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1), current_setting('port'), current_database()));
        END IF;
        S := S || ROW(cn, false, false, false)::fz_state;
    END LOOP;
    COMMIT;
    FOR i IN 1..steps LOOP
        r := random();
        cn := 1 + floor(random() * nconn)::int;
        conn := 'fz' || cn;
        st := S[cn];
        SELECT s.c INTO holder FROM unnest(S) s WHERE s.locked;
        m := (ARRAY[1, 2, 3, 1000])[1 + floor(random() * 4)::int];
        fn := CASE WHEN random() < 0.5 THEN '_log_pass' ELSE '_log_pass_sql' END;
        IF mode = 'c' THEN fn := '_log_pass'; ELSIF mode = 'sql' THEN fn := '_log_pass_sql'; END IF;
        IF r < 0.25 THEN
            IF NOT st.open THEN PERFORM dblink_exec(conn, 'BEGIN'); S[cn].open := true; END IF;
            PERFORM * FROM dblink(conn, format('SELECT outbox._log_insert(%L, %L)', 'ch' || floor(random() * 5), jsonb_build_object('i', i))) AS t(x bigint);
        ELSIF r < 0.35 THEN
            IF st.open AND NOT st.sp THEN
                PERFORM dblink_exec(conn, 'SAVEPOINT s'); S[cn].sp := true;
            ELSIF st.sp THEN
                IF random() < 0.5 AND NOT st.locked THEN PERFORM dblink_exec(conn, 'ROLLBACK TO SAVEPOINT s');
                ELSE PERFORM dblink_exec(conn, 'RELEASE SAVEPOINT s'); END IF;
                S[cn].sp := false;
            END IF;
        ELSIF r < 0.50 THEN
            IF st.open THEN
                PERFORM dblink_exec(conn, CASE WHEN random() < 0.8 THEN 'COMMIT' ELSE 'ROLLBACK' END);
                S[cn].open := false; S[cn].sp := false; S[cn].locked := false;
            END IF;
        ELSIF r < 0.60 THEN
            IF NOT st.open THEN
                PERFORM * FROM dblink(conn, format('SELECT outbox._log_insert(%L, %L)', 'ch' || floor(random() * 5), jsonb_build_object('i', i))) AS t(x bigint);
            END IF;
        ELSIF r < 0.78 THEN
            IF holder IS NULL THEN
                EXECUTE format('SELECT outbox.%s(%s)', fn, m);
                IF random() < 0.9 THEN COMMIT; ELSE ROLLBACK; END IF;
            END IF;
        ELSIF r < 0.84 THEN
            IF st.open AND (holder IS NULL OR holder = cn) THEN -- a pass inside a producer's transaction
                PERFORM * FROM dblink(conn, format('SELECT outbox.%s(%s)', fn, m)) AS t(x bigint);
                S[cn].locked := true;
            END IF;
        ELSIF r < 0.88 THEN
            PERFORM outbox._log_rotate('0');
            COMMIT;
        END IF;
    END LOOP;
    FOR cn IN 1..nconn LOOP
        IF S[cn].open THEN PERFORM dblink_exec('fz' || cn, 'COMMIT'); END IF;
    END LOOP;
    COMMIT;
    LOOP
        EXIT WHEN (CASE WHEN mode = 'sql' THEN outbox._log_pass_sql(7) ELSE outbox._log_pass(7) END) = 0;
        COMMIT;
    END LOOP;
    COMMIT;
END $$;
-- what a run published: a digest of its events and one of its batches (the extension is made
-- again by each run: the bodies are checked when they run)
SET check_function_bodies = off;
CREATE FUNCTION fz_digest() RETURNS TABLE (events text, batches text) LANGUAGE sql AS $$
    SELECT (SELECT md5(string_agg(concat_ws(':', e.pos, e.id, e.seq, e.channel), ' ' ORDER BY e.pos))
              FROM outbox.batches b, outbox._log_batch_events(b) e),
           (SELECT md5(string_agg(concat_ws(':', first_pos, n, seg, cut, channels, first_seqs, counts), ' '
                                  ORDER BY first_pos)) FROM outbox.batches)
$$;
-- rows of the log in no kept batch, or in two; batches whose recomputation is not n events long
CREATE FUNCTION fz_check() RETURNS TABLE (log_rows bigint, unpublished bigint, twice bigint, short_batches bigint)
    LANGUAGE sql AS $$
    WITH ev AS (SELECT b.first_pos AS bf, e.* FROM outbox.batches b, outbox._log_batch_events(b) e)
    SELECT (SELECT count(*) FROM outbox.log),
           (SELECT count(*) FROM outbox.log l WHERE l.id NOT IN (SELECT id FROM ev)),
           (SELECT count(*) - count(DISTINCT id) FROM ev),
           (SELECT count(*) FROM outbox.batches b WHERE b.n <> (SELECT count(*) FROM ev WHERE ev.bf = b.first_pos))
$$;
RESET check_function_bodies;
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
CALL fz(0.11, 800, 5, 'c');
SELECT events AS ev_c, batches AS b_c FROM fz_digest() \gset
SELECT * FROM fz_check();
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
CALL fz(0.11, 800, 5, 'sql');
SELECT events AS ev_sql, batches AS b_sql FROM fz_digest() \gset
SELECT * FROM fz_check();
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
CALL fz(0.11, 800, 5, 'mix');
SELECT events AS ev_mix, batches AS b_mix FROM fz_digest() \gset
SELECT * FROM fz_check();
SELECT :'ev_c' = :'ev_sql' AS c_events_as_reference, :'b_c' = :'b_sql' AS c_batches_as_reference,
       :'ev_mix' = :'ev_sql' AS mixed_events_as_reference, :'b_mix' = :'b_sql' AS mixed_batches_as_reference;
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
CALL fz(0.44, 800, 5, 'c');
SELECT events AS ev_c, batches AS b_c FROM fz_digest() \gset
SELECT * FROM fz_check();
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
CALL fz(0.44, 800, 5, 'sql');
SELECT events AS ev_sql, batches AS b_sql FROM fz_digest() \gset
SELECT * FROM fz_check();
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
CALL fz(0.44, 800, 5, 'mix');
SELECT events AS ev_mix, batches AS b_mix FROM fz_digest() \gset
SELECT * FROM fz_check();
SELECT :'ev_c' = :'ev_sql' AS c_events_as_reference, :'b_c' = :'b_sql' AS c_batches_as_reference,
       :'ev_mix' = :'ev_sql' AS mixed_events_as_reference, :'b_mix' = :'b_sql' AS mixed_batches_as_reference;
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
CALL fz(0.66, 800, 5, 'c');
SELECT events AS ev_c, batches AS b_c FROM fz_digest() \gset
SELECT * FROM fz_check();
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
CALL fz(0.66, 800, 5, 'sql');
SELECT events AS ev_sql, batches AS b_sql FROM fz_digest() \gset
SELECT * FROM fz_check();
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
CALL fz(0.66, 800, 5, 'mix');
SELECT events AS ev_mix, batches AS b_mix FROM fz_digest() \gset
SELECT * FROM fz_check();
SELECT :'ev_c' = :'ev_sql' AS c_events_as_reference, :'b_c' = :'b_sql' AS c_batches_as_reference,
       :'ev_mix' = :'ev_sql' AS mixed_events_as_reference, :'b_mix' = :'b_sql' AS mixed_batches_as_reference;

\c contrib_regression
DROP DATABASE pg_outbox_logfz;
