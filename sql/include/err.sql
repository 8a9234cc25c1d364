\set ECHO none
-- pg_temp.err(stmt): runs stmt and returns 'no error', or the SQLSTATE and message of the error
-- it raised, so that a regress test shows an error and goes on. Shared by the tests in sql/; a
-- test reads it with
--     \getenv abs_srcdir PG_ABS_SRCDIR
--     \i :abs_srcdir/sql/include/err.sql
-- (pg_regress sets PG_ABS_SRCDIR to its --inputdir: this tree with `make installcheck`, the
-- copy test/run_tests.sh makes; psql echoes the \i line, not the path it expands to).
--
-- Why a psql include, not a first test that creates the function once in a schema of its own:
--  * several tests run in databases of their own (\c pg_outbox_log, ...), where a schema that
--    a first test made in contrib_regression does not exist; an include works after any \c;
--  * the calls stay pg_temp.err(...), so the expected files do not change at every call, and a
--    pg_temp function goes with its session: nothing is left in the database, no DROP SCHEMA,
--    DROP OWNED or DROP EXTENSION of a test can take it away, and no test depends on the order
--    pg_regress runs them in (alphabetical in run_tests.sh) or on another test having run;
--  * ECHO is off while it runs, so each test's expected file shows the three lines above, not
--    this file: a change here does not touch every expected file.
--
-- How the error is shown: the default (`full`) suits most tests; a test whose expected output
-- was written with another form sets err_style before the \i (e.g. \set err_style hint):
--   full          'no error' | 'SQLSTATE: message | detail: ... | hint: ...' (the parts that exist)
--   hint          'no error' | 'SQLSTATE: message | hint: ...'
--   hint_numbers  as hint, with every run of 2 or more digits in the message shown as N (ids,
--                 positions that depend on what ran before)
--   message       'no error' | 'SQLSTATE: message'
--   message_ok    'ok'       | 'SQLSTATE: message'
--   detail_ok     'ok'       | 'SQLSTATE: message (detail)'
--   lines         'no error' | 'SQLSTATE: message', then a DETAIL: and a HINT: line, always
-- The style is also the function's second argument: pg_temp.err(stmt, 'message') for one call.
-- EXECUTE is granted to PUBLIC, so that a role a test switches to (SET ROLE) can call it.
\if :{?err_style}
\else
\set err_style full
\endif
CREATE FUNCTION pg_temp.err(stmt text, style text DEFAULT :'err_style') RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hnt text;
BEGIN
    IF style NOT IN ('full', 'hint', 'hint_numbers', 'message', 'message_ok', 'detail_ok', 'lines') THEN
        RAISE EXCEPTION 'pg_temp.err: unknown style "%"', style USING ERRCODE = 'invalid_parameter_value',
            HINT = 'The styles are full, hint, hint_numbers, message, message_ok, detail_ok and lines (sql/include/err.sql).';
    END IF;
    BEGIN
        EXECUTE stmt;
        RETURN CASE WHEN style IN ('message_ok', 'detail_ok') THEN 'ok' ELSE 'no error' END;
    EXCEPTION WHEN others THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                                hnt = PG_EXCEPTION_HINT;
    END;
    RETURN st || ': ' || CASE style
        WHEN 'full' THEN msg || coalesce(' | detail: ' || nullif(det, ''), '') || coalesce(' | hint: ' || nullif(hnt, ''), '')
        WHEN 'hint' THEN msg || coalesce(' | hint: ' || nullif(hnt, ''), '')
        WHEN 'hint_numbers' THEN regexp_replace(msg, '[0-9]{2,}', 'N', 'g') || coalesce(' | hint: ' || nullif(hnt, ''), '')
        WHEN 'message' THEN msg
        WHEN 'message_ok' THEN msg
        WHEN 'detail_ok' THEN msg || coalesce(' (' || nullif(det, '') || ')', '')
        WHEN 'lines' THEN msg || E'\nDETAIL: ' || coalesce(det, '') || E'\nHINT: ' || coalesce(hnt, '')
    END;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.err(text, text) TO PUBLIC;
\set ECHO all
